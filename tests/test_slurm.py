"""The workflow on a real SLURM cluster, through `workflow/profiles/slurm-test`.

Needs a cluster that answers `sinfo` (CI starts one on loopback with `.ci/slurm/start.sh DIR --fake-gpus 2`).
Without one these tests are skipped; with SHADOWLLM_REQUIRE_SLURM=1 (set by CI) they fail instead.

What is checked:
  * the small DAG (config/test-small.yaml) runs through SLURM: every job that produces files is a SLURM job,
    GPU rules are submitted with a GPU request (`--gpus`) and CPU rules without, partition from
    SHADOWLLM_SLURM_PARTITION reaches sbatch, and SLURM itself reports every job COMPLETED;
  * its outputs (results/, reports/, figures/) equal those of a local run (`--cores 2`) of the same config:
    bytes, or parsed values where a format is not byte-stable (safetensors metadata order, timings, commit);
  * a failing job is retried with more memory (rule `selftest_retry`), and a job that always fails stops the
    run with an error naming the rule, the SLURM job id and the log (rule `selftest_fail`).

Each snakemake run happens in its own temporary directory holding symlinks to the workflow sources, so runs
never touch the repository's results/ and never collide. Job ids are recorded in `slurm_jobs.tsv` there.
Environment knobs: SHADOWLLM_SLURM_TEST_TIMEOUT (seconds for the DAG runs, default 480).
"""

from __future__ import annotations

import collections
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm-test"
TEST_CONFIG = "config/test-small.yaml"
# what a run directory needs from the repository (symlinked, read-only use)
SOURCES = ("Snakefile", "workflow", "config", "envs", "reports")   # reports: the latency table the claims read
REQUIRE = os.environ.get("SHADOWLLM_REQUIRE_SLURM", "") not in ("", "0")
DAG_TIMEOUT = int(os.environ.get("SHADOWLLM_SLURM_TEST_TIMEOUT", "480"))
# keys/columns whose values legitimately differ between two runs (timings, hosts; `inputs`: the sidecars' sha256 of
# input files, whose bytes hold timings or safetensors' per-process metadata order; those files are compared here)
VOLATILE = re.compile(r"(time|latency|elapsed|seconds|duration|throughput|per_s(ec)?$|_s$|date|host|pid|commit|^inputs$)",
                      re.I)


# --------------------------------------------------------------------------------------------- helpers
def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"{reason} (SHADOWLLM_REQUIRE_SLURM=1, so this is an error, not a skip)")
    pytest.skip(reason)


def _snakemake_exe() -> str:
    cand = Path(sys.executable).parent / "snakemake"
    return str(cand) if cand.exists() else (shutil.which("snakemake") or "snakemake")


@pytest.fixture(scope="module")
def cluster():
    """A SLURM cluster that answers, and the partition to submit to."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        _unavailable("SLURM client tools (sinfo/sbatch) not installed; CI installs them with .ci/slurm/install.sh")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%a|%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        _unavailable("no SLURM cluster answers: `sinfo` timed out")
    if out.returncode != 0 or not out.stdout.strip():
        _unavailable(f"no SLURM cluster answers: `sinfo` said: {(out.stderr or out.stdout).strip()[:300]}")
    rows = [line.split("|") for line in out.stdout.split()]
    usable = [r for r in rows if r[1] == "up" and r[2].rstrip("*~#") in ("idle", "mix", "mixed", "alloc", "allocated")]
    if not usable:
        _unavailable(f"SLURM answers but no partition is up with a usable node: {out.stdout.strip()}")
    default = [r for r in usable if r[0].endswith("*")]
    partition = (os.environ.get("SHADOWLLM_SLURM_PARTITION") or (default or usable)[0][0]).rstrip("*")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')")
    for name in ("Snakefile", TEST_CONFIG):
        if not (REPO / name).exists():
            pytest.fail(f"{REPO / name} is missing: the SLURM test runs the real workflow")
    return {"partition": partition}


def _workdir(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir(parents=True)
    for src in SOURCES:
        if (REPO / src).exists():
            (d / src).symlink_to(REPO / src)
    return d


def _env(cluster) -> dict:
    env = dict(os.environ)
    # jobs inherit this environment (sbatch --export=ALL): they must find this venv's python and shadowllm
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["SHADOWLLM_SLURM_PARTITION"] = cluster["partition"]
    env.pop("SHADOWLLM_SLURM_ACCOUNT", None)  # the loopback cluster has no accounts
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cmd(args, timeout):
    # SIGTERM does not stop a snakemake that waits on cluster jobs: interrupt it, then kill.
    return ["timeout", "-s", "INT", "-k", "30", str(timeout), _snakemake_exe(), *args]


def _start(workdir: Path, args, env, timeout, logname="snakemake.log"):
    log = open(workdir / logname, "w")
    proc = subprocess.Popen(_cmd(args, timeout), cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _finish(workdir: Path, started, logname="snakemake.log"):
    proc, log = started
    rc = proc.wait()
    log.close()
    return rc, (workdir / logname).read_text(errors="replace")


def _run(workdir: Path, args, env, timeout, logname="snakemake.log"):
    return _finish(workdir, _start(workdir, args, env, timeout, logname), logname)


def _slurm_args(*extra):
    return ["-s", "Snakefile", "--profile", str(PROFILE), "--verbose", *extra]


def _tail(text: str, n=80) -> str:
    return "\n".join(text.splitlines()[-n:])


# --------------------------------------------------------------------------------------------- log parsing
_BLOCK = re.compile(r"^(local)?rule (\w+):$")
_SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
_SBATCH = re.compile(r"^sbatch call: (sbatch .*)$")


def strip_failed_logs(text: str) -> str:
    """Drop the log files that `show-failed-logs` prints (a failed job's inner snakemake output, with its own
    job blocks) so that only the main snakemake's own lines remain. Each is framed by two equal '=' rules."""
    out, sep = [], None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if sep is None and line.startswith("Logfile ") and line.rstrip().endswith(":") and i + 1 < len(lines) \
                and re.fullmatch(r"={10,}", lines[i + 1].strip()):
            sep = lines[i + 1].strip()
            i += 2
            continue
        if sep is not None:
            if line.strip() == sep:
                sep = None
        else:
            out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def parse_jobs(text: str):
    """Snakemake job blocks: jobid -> dict(rule, local, outputs, resources, shell)."""
    jobs, cur = {}, None
    for line in strip_failed_logs(text).splitlines():
        m = _BLOCK.match(line.strip()) if not line.startswith(" ") else None
        if m:
            cur = {"rule": m.group(2), "local": bool(m.group(1)), "output": False, "resources": {}, "shell": None}
            continue
        if cur is None:
            continue
        s = line.strip()
        if s.startswith("output:"):
            cur["output"] = True
        elif s.startswith("resources:"):
            for item in s[len("resources:"):].split(","):
                if "=" in item:
                    k, v = item.strip().split("=", 1)
                    cur["resources"][k] = v
        elif s.startswith("jobid:"):
            cur["jobid"] = int(s.split()[1])
        elif s.startswith("Shell command:"):
            cur["shell"] = s[len("Shell command:"):].strip()
        elif not line.startswith(" ") and "jobid" in cur:
            # a block ends at the first unindented line; a job id may be printed again on retry (same dict)
            jobs.setdefault(cur["jobid"], cur)
            cur = None
    if cur is not None and "jobid" in cur:
        jobs.setdefault(cur["jobid"], cur)
    return jobs


def parse_submissions(text: str):
    """Every submission, in order: dict(jobid, slurm_id, log, sbatch)."""
    pending = []  # sbatch calls not yet matched with their "has been submitted" line
    subs = []
    for line in strip_failed_logs(text).splitlines():
        m = _SBATCH.match(line.strip())
        if m:
            pending.append(m.group(1))
            continue
        m = _SUBMITTED.search(line)
        if m:
            jobid, slurm_id, log = int(m.group(1)), m.group(2), m.group(3)
            call = None
            for i, c in enumerate(pending):  # the call whose --output pattern gives this log path
                om = re.search(r"--output (\S+)", c)
                if om and om.group(1).strip("'\"").replace("%j", slurm_id) == log:
                    call = pending.pop(i)
                    break
            subs.append({"jobid": jobid, "slurm_id": slurm_id, "log": log, "sbatch": call})
    return subs


def slurm_states(ids):
    """SLURM's own view of the jobs: id -> (state, tres_per_job, min_memory, partition)."""
    if not ids:
        return {}
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ",".join(ids),
         "-O", "JobID:30,State:30,tres-per-job:40,MinMemory:20,Partition:30"],
        capture_output=True, text=True, timeout=30,
    )
    res = {}
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) >= 5:
            res[f[0]] = tuple(f[1:5])
    return res


def wait_slurm_final(ids, timeout=30):
    """squeue may report a job as COMPLETING for a moment after snakemake saw it finish."""
    t0 = time.time()
    while True:
        st = slurm_states(ids)
        if all(s[0] not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING") for s in st.values()) or \
                time.time() - t0 > timeout:
            return st
        time.sleep(1)


def record(workdir: Path, subs, jobs):
    with open(workdir / "slurm_jobs.tsv", "w") as f:
        f.write("slurm_jobid\tsnakemake_jobid\trule\tsbatch\n")
        for s in subs:
            f.write(f"{s['slurm_id']}\t{s['jobid']}\t{jobs.get(s['jobid'], {}).get('rule', '?')}\t{s['sbatch']}\n")


def gpu_requested(job) -> int:
    try:
        return int(float(job["resources"].get("gpu", "0")))
    except ValueError:
        return 0


# --------------------------------------------------------------------------------------------- output comparison
def _close(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) \
        or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def _cmp_json(a, b, path, diffs):
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            diffs.append(f"{path}: keys differ {sorted(set(a) ^ set(b))}")
        for k in set(a) & set(b):
            if not VOLATILE.search(str(k)):
                _cmp_json(a[k], b[k], f"{path}.{k}", diffs)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diffs.append(f"{path}: lengths {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _cmp_json(x, y, f"{path}[{i}]", diffs)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not _close(float(a), float(b)):
            diffs.append(f"{path}: {a!r} != {b!r}")
    elif a != b:
        diffs.append(f"{path}: {a!r} != {b!r}")


def _cmp_table(pa: Path, ta: str, tb: str, diffs):
    delim = "\t" if pa.suffix == ".tsv" else ","
    ra = list(csv.reader(ta.splitlines(), delimiter=delim))
    rb = list(csv.reader(tb.splitlines(), delimiter=delim))
    if len(ra) != len(rb) or (ra and ra[0] != rb[0]):
        diffs.append(f"{pa.name}: shape/header differ")
        return
    header = ra[0] if ra else []
    for i, (x, y) in enumerate(zip(ra[1:], rb[1:]), 1):
        for j, (u, v) in enumerate(zip(x, y)):
            col = header[j] if j < len(header) else str(j)
            if VOLATILE.search(col):
                continue
            nu, nv = _num(u), _num(v)
            if (nu is not None and nv is not None and not _close(nu, nv)) or \
                    ((nu is None or nv is None) and u != v):
                diffs.append(f"{pa.name} row {i} col {col}: {u!r} != {v!r}")


def _text(p: Path, root: Path):
    """A file's text with its run directory replaced (some outputs hold absolute paths), or None if binary."""
    try:
        t = p.read_text()
    except UnicodeDecodeError:
        return None
    return t.replace(str(root.parent), "<RUNDIR>")


def _cmp_safetensors(rel, pa: Path, pb: Path, diffs):
    """Tensors and metadata; not bytes: safetensors writes its metadata map in a per-process random order."""
    import numpy as np
    from safetensors import safe_open

    with safe_open(str(pa), "np") as a, safe_open(str(pb), "np") as b:
        if (a.metadata() or {}) != (b.metadata() or {}):
            diffs.append(f"{rel}: metadata {a.metadata()} != {b.metadata()}")
        if set(a.keys()) != set(b.keys()):
            diffs.append(f"{rel}: tensors differ {sorted(set(a.keys()) ^ set(b.keys()))}")
        for k in set(a.keys()) & set(b.keys()):
            x, y = a.get_tensor(k), b.get_tensor(k)
            if x.shape != y.shape or x.dtype != y.dtype:
                diffs.append(f"{rel}[{k}]: {x.dtype}{x.shape} != {y.dtype}{y.shape}")
            elif not np.array_equal(x, y) and not (
                    x.dtype.kind == "f" and np.allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True)):
                diffs.append(f"{rel}[{k}]: values differ")


def compare_results(ra: Path, rb: Path):
    """Differences between two results/ trees (selftest outputs excluded); [] when equal."""
    def files(root):
        if not root.is_dir():
            return set()
        return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and "selftest" not in p.parts}
    fa, fb = files(ra), files(rb)
    diffs = [f"only in local run: {p}" for p in sorted(fa - fb)] + [f"only in SLURM run: {p}" for p in sorted(fb - fa)]
    for rel in sorted(fa & fb):
        pa, pb = ra / rel, rb / rel
        if pa.read_bytes() == pb.read_bytes():
            continue
        ta, tb = _text(pa, ra), _text(pb, rb)
        if ta is not None and ta == tb:
            continue
        sub = []
        if pa.suffix == ".json" and ta is not None and tb is not None:
            _cmp_json(json.loads(ta), json.loads(tb), str(rel), sub)
        elif pa.suffix == ".safetensors":
            _cmp_safetensors(rel, pa, pb, sub)
        elif pa.suffix in (".csv", ".tsv") and ta is not None and tb is not None:
            _cmp_table(pa, ta, tb, sub)
        else:
            sub.append(f"{rel}: bytes differ")
        diffs += sub
    return diffs, len(fa & fb)


# --------------------------------------------------------------------------------------------- the DAG
@pytest.fixture(scope="module")
def dag_runs(cluster, tmp_path_factory):
    """The small DAG run twice at the same time: locally (--cores 2) and through SLURM."""
    base = tmp_path_factory.mktemp("dag")
    env = _env(cluster)
    local_dir, slurm_dir = _workdir(base, "local"), _workdir(base, "slurm")
    t0 = time.time()
    local = _start(local_dir, ["-s", "Snakefile", "--cores", "2", "--configfile", TEST_CONFIG], env, DAG_TIMEOUT)
    slurm = _start(slurm_dir, _slurm_args("--configfile", TEST_CONFIG), env, DAG_TIMEOUT)
    rc_s, log_s = _finish(slurm_dir, slurm)
    rc_l, log_l = _finish(local_dir, local)
    print(f"DAG runs took {time.time() - t0:.0f} s; logs in {local_dir} and {slurm_dir}")
    assert rc_l == 0, f"local run failed (rc {rc_l}); log {local_dir / 'snakemake.log'}:\n{_tail(log_l)}"
    assert rc_s == 0, f"SLURM run failed (rc {rc_s}; 124 = timeout); log {slurm_dir / 'snakemake.log'}:\n{_tail(log_s)}"
    jobs, subs = parse_jobs(log_s), parse_submissions(log_s)
    record(slurm_dir, subs, jobs)
    return {"local_dir": local_dir, "slurm_dir": slurm_dir, "local_log": log_l, "slurm_log": log_s,
            "jobs": jobs, "subs": subs, "partition": cluster["partition"]}


def test_every_job_ran_on_slurm(dag_runs):
    jobs, subs = dag_runs["jobs"], dag_runs["subs"]
    assert subs, "no job was submitted to SLURM"
    submitted = {s["jobid"] for s in subs}
    # a job that writes files must have been a SLURM job; only target-only rules (no output, no command) stay local
    ran_locally = [j for j in jobs.values() if j["local"] and (j["output"] or j["shell"] not in (None, "None"))]
    assert not ran_locally, f"jobs executed on the submit host instead of SLURM: {ran_locally}"
    remote = {jid for jid, j in jobs.items() if not j["local"]}
    assert remote == submitted, f"jobs without a SLURM submission: {sorted(remote - submitted)}"
    for s in subs:
        assert s["sbatch"], f"no sbatch call found for SLURM job {s['slurm_id']}"
        assert re.search(rf"(^|\s)-p '?{re.escape(dag_runs['partition'])}'?(\s|$)", s["sbatch"]), \
            f"partition from SHADOWLLM_SLURM_PARTITION not passed: {s['sbatch'][:300]}"
    # the same work as the local run: one SLURM job per local job that produced files
    local_rules = collections.Counter(j["rule"] for j in parse_jobs(dag_runs["local_log"]).values() if j["output"])
    slurm_rules = collections.Counter(jobs[j]["rule"] for j in submitted)
    assert local_rules == slurm_rules, f"local vs SLURM jobs per rule: {local_rules} != {slurm_rules}"
    # and SLURM agrees that they all completed (MinJobAge keeps finished jobs visible to squeue)
    states = wait_slurm_final([s["slurm_id"] for s in subs])
    final = {}
    for s in subs:  # last submission per snakemake job (earlier ones may have failed and been retried)
        final[s["jobid"]] = s["slurm_id"]
    bad = {i: states.get(i) for i in final.values() if states.get(i, ("?",))[0] != "COMPLETED"}
    assert not bad, f"SLURM does not report these jobs COMPLETED: {bad}"


def test_gpu_rules_request_gpus_and_cpu_rules_do_not(dag_runs):
    jobs, subs = dag_runs["jobs"], dag_runs["subs"]
    states = slurm_states([s["slurm_id"] for s in subs])
    n_gpu = 0
    for s in subs:
        job = jobs[s["jobid"]]
        want = gpu_requested(job)
        has = re.search(r"--gpus=(\S+)", s["sbatch"] or "")
        tres = states.get(s["slurm_id"], ("?", "?"))[1]
        if want:
            n_gpu += 1
            assert has and has.group(1).split(":")[-1] == str(want), \
                f"GPU rule {job['rule']} submitted without --gpus={want}: {s['sbatch'][:400]}"
            assert "gpu" in tres, f"SLURM job {s['slurm_id']} ({job['rule']}) has no GPU in TRES: {tres}"
        else:
            assert not has and "--gres" not in (s["sbatch"] or ""), \
                f"CPU rule {job['rule']} submitted with a GPU request: {s['sbatch'][:400]}"
            assert "gpu" not in tres, f"SLURM job {s['slurm_id']} ({job['rule']}) got a GPU: {tres}"
        assert "--mem " in (s["sbatch"] or "") and " -t " in (s["sbatch"] or ""), \
            f"{job['rule']}: no memory or runtime request: {s['sbatch'][:400]}"
    assert n_gpu, "the small DAG has no GPU rule (resources: gpu=1): nothing checks GPU submission"


def test_slurm_outputs_equal_local(dag_runs):
    diffs, n = [], 0
    for sub in ("results", "reports", "figures"):  # everything `rule all` builds, and what it is built from
        d, k = compare_results(dag_runs["local_dir"] / sub, dag_runs["slurm_dir"] / sub)
        diffs, n = diffs + [f"{sub}/{x}" for x in d], n + k
    assert n, "the runs produced no output files to compare"
    assert not diffs, "SLURM and local results differ:\n" + "\n".join(diffs[:40])


# --------------------------------------------------------------------------------------------- failure behaviour
def test_selftest_retry_with_more_memory_and_gpu_env(cluster, tmp_path):
    wd = _workdir(tmp_path, "selftest")
    rc, log = _run(wd, _slurm_args("selftest"), _env(cluster), 240)
    assert rc == 0, f"selftest run failed (rc {rc}):\n{_tail(log)}"
    jobs, subs = parse_jobs(log), parse_submissions(log)
    record(wd, subs, jobs)
    by_rule = collections.defaultdict(list)
    for s in subs:
        by_rule[jobs[s["jobid"]]["rule"]].append(s)

    retry = by_rule["selftest_retry"]
    assert len(retry) == 2, f"selftest_retry: expected 2 SLURM submissions, got {[s['sbatch'] for s in retry]}"
    mems = [int(re.search(r"--mem (\d+)", s["sbatch"]).group(1)) for s in retry]
    assert mems[1] > mems[0], f"the retry did not ask for more memory: {mems}"
    states = wait_slurm_final([s["slurm_id"] for s in retry])
    assert [states[s["slurm_id"]][0] for s in retry] == ["FAILED", "COMPLETED"], states
    ok = (wd / "results/selftest/retry_ok.txt").read_text()
    assert f"SLURM_JOB_ID={retry[1]['slurm_id']}" in ok and f"mem_mb={mems[1]}" in ok, ok

    venv_bin = str(Path(sys.executable).parent)
    for rule, gpu in (("selftest_gpu", True), ("selftest_cpu", False)):
        (s,) = by_rule[rule]
        assert ("--gpus=1" in s["sbatch"]) == gpu, s["sbatch"]
        info = dict(line.split("=", 1) for line in (wd / f"results/selftest/{rule[9:]}.txt").read_text().split())
        assert info["SLURM_JOB_ID"] == s["slurm_id"]
        assert (info["CUDA_VISIBLE_DEVICES"] != "none") == gpu, info
        # jobs inherit the submitting environment: this venv's python and console script
        assert info["python"].startswith(venv_bin) and info["shadowllm"].startswith(venv_bin), info


def test_failing_job_stops_run_with_useful_message(cluster, tmp_path):
    wd = _workdir(tmp_path, "fail")
    # --retries 0: one submission is enough to check the message (retries are checked above)
    rc, log = _run(wd, _slurm_args("selftest_fail", "--retries", "0"), _env(cluster), 180)
    assert rc not in (0, 124, 137), f"expected snakemake to fail by itself, rc {rc}:\n{_tail(log)}"
    subs = parse_submissions(log)
    record(wd, subs, parse_jobs(log))
    assert len(subs) == 1, subs
    sid = subs[0]["slurm_id"]
    m = re.search(r"^Error in rule selftest_fail:\n((?:\s+.*\n)+)", strip_failed_logs(log), re.M)
    assert m, f"no 'Error in rule selftest_fail' block:\n{_tail(log)}"
    block = m.group(1)
    assert f"SLURM-job '{sid}' failed" in block or f"external_jobid: {sid}" in block, block
    assert "logs/selftest/fail.log" in block, block
    assert subs[0]["log"] in block, f"SLURM log {subs[0]['log']} not named:\n{block}"
    assert wait_slurm_final([sid])[sid][0] == "FAILED"
    assert "Exiting because a job execution failed" in log
