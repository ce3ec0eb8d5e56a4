"""The workflow as a user runs it: lint-clean, configurations that never collide, the small run end to end."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (REPO / "config").glob("*.yaml"))
SOURCES = ("Snakefile", "workflow", "config", "envs")


def snakemake(*args, cwd=REPO, timeout=300, env=None):
    exe = Path(sys.executable).parent / "snakemake"
    path = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    env = dict(os.environ, **(env or {}), PATH=path)
    return subprocess.run([str(exe) if exe.exists() else "snakemake", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def config_args(name):
    return [] if name == "config.yaml" else ["--configfile", f"config/{name}"]


def tracked_files() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        pytest.skip("not a git checkout")
    return set(out.stdout.split())


def planned_paths(name) -> tuple[set[str], set[str]]:
    """(every output and log path a dry run of the configuration plans, the files its publish step writes)."""
    r = snakemake("-n", "--summary", *config_args(name))
    assert r.returncode == 0, r.stderr[-3000:]
    paths = set()
    for line in r.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) >= 4 and cols[0] != "output_file":
            paths.add(cols[0])
            paths.update(x for x in cols[3].split(",") if x not in ("-", ""))
    r = snakemake("-n", "-p", "--forceall", *config_args(name))
    published = set()
    for line in r.stdout.splitlines():
        if "shadowllm publish-run " in line:
            published = {item.split("=", 1)[1] for item in line.split() if "=" in item}
    return paths, published


@pytest.mark.parametrize("name", CONFIGS)
def test_lint_is_clean(name):
    r = snakemake("--lint", *config_args(name))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr, r.stdout[-3000:]


def test_configurations_never_collide_and_publish_into_their_own_folders():
    tracked = tracked_files()
    plans = {name: planned_paths(name) for name in CONFIGS}
    assert len(plans) >= 4
    # resources/ (with its logs and benchmarks) is a cache shared by every run, e.g. a converted GGUF model
    cache = ("resources/", "logs/resources/", "benchmarks/resources/")
    plans = {name: ({p for p in paths if not p.startswith(cache)}, published)
             for name, (paths, published) in plans.items()}
    for name, (paths, published) in plans.items():
        assert paths, f"{name}: the dry run plans no output"
        run = {p.split("/")[1] for p in paths if p.startswith(("results/", "logs/"))}
        assert len(run) == 1, f"{name}: outputs under several run folders {run}"
        assert not (paths & tracked), f"{name}: jobs write committed files {sorted(paths & tracked)[:5]}"
        assert all(p.startswith(("results/", "logs/", "benchmarks/")) for p in paths), \
            f"{name}: outputs outside results/: {[p for p in paths if not p.startswith('results/')][:5]}"
        (run,) = run
        own = {p for p in published if p.startswith((f"figures/{run}/", f"reports/{run}/"))}
        assert own == published, f"{name} publishes outside its run's folders: {sorted(published - own)[:5]}"
        # the committed runs' outputs sit where their publish steps write them (the older SmolLM2 run kept no
        # per-document results: its samples.csv is the one file it would add)
        missing = {"smollm2.yaml": {"reports/smollm2/smollm2-135m/samples.csv"}}.get(name, set())
        if name in ("config.yaml", "smollm2.yaml", "smollm2-decide.yaml", "gpu-h200.yaml"):
            assert published and published - missing <= tracked, \
                f"{name} publishes {sorted(published - missing - tracked)[:5]}"
    names = list(plans)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = plans[a][0] & plans[b][0]
            assert not shared, f"{a} and {b} share outputs: {sorted(shared)[:5]}"


@pytest.mark.parametrize("name", CONFIGS)
def test_every_configuration_plans_without_torch(name, tmp_path):
    """`snakemake -n` parses and plans with torch, transformers, lm-eval, matplotlib, safetensors and scipy absent:
    the workflow reads its grids and paths from shadowllm.layout (pandas and numpy stay: the SLURM executor
    plugin imports pandas)."""
    heavy = ("torch", "transformers", "lm_eval", "matplotlib", "safetensors", "scipy")
    (tmp_path / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in heavy))
    pythonpath = os.pathsep.join([str(tmp_path), str(REPO / "src")])
    r = snakemake("-n", "-q", "--forceall", *config_args(name), env={"PYTHONPATH": pythonpath})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


def test_the_paper_plan_fetches_hub_data_once_and_runs_every_model_job_offline():
    r = snakemake("-n", "-p", "--configfile", "config/paper.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    cmds = [line.split("Shell command: ", 1)[1] for line in r.stdout.splitlines() if "Shell command: " in line]
    fetch = [c for c in cmds if "shadowllm download-datasets" in c]
    assert len(fetch) == 1 and "HF_HUB_OFFLINE" not in fetch[0]
    assert fetch[0].split("--tasks ")[1].split(" --")[0].split() == sorted(
        ["piqa", "copa", "openbookqa", "winogrande", "rte", "hellaswag", "arc_easy", "wikitext"])
    models = [c for c in cmds if any(f"shadowllm {s} " in c for s in ("ablate-point", "trace-importance"))]
    assert len(models) > 1000
    offline = "env HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_DATASETS_CACHE=resources/datasets/datasets "
    assert all(c.startswith(offline) for c in models), [c for c in models if not c.startswith(offline)][:2]
    # the fetch and the model downloads are local jobs (the login node has the network)
    local = (REPO / "Snakefile").read_text().split("localrules:")[1].split("\n\n")[0]
    assert {"download_datasets", "download_model"} <= {w.strip(" ,") for w in local.split()}


SMALL = ["-s", "Snakefile", "--cores", "2", "--configfile", "config/test-small.yaml"]


def _workdir(path: Path) -> Path:
    for s in SOURCES:
        (path / s).symlink_to(REPO / s)
    return path


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """The small configuration run once, uninterrupted, in its own folder."""
    d = _workdir(tmp_path_factory.mktemp("small"))
    r = snakemake(*SMALL, cwd=d, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d


@pytest.mark.slow
def test_small_configuration_runs_locally_and_then_has_nothing_to_do(small_run):
    tmp_path, args = small_run, SMALL
    res = tmp_path / "results" / "test-small"
    assert (res / "tables/tiny-opt/eval.csv").is_file()
    assert (res / "figures/tiny-opt/input_dependence.png").stat().st_size > 0
    assert not (tmp_path / "figures").exists() and not (tmp_path / "reports").exists()
    r = snakemake(*args, "-n", cwd=tmp_path)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]
    # every output has its provenance sidecar, and none was written from a modified checkout by this run
    for f in res.rglob("*.json"):
        if f.name.endswith(".meta.json") or f.parent.name == "model":
            continue
        assert Path(str(f) + ".meta.json").is_file(), f


def _complete(res: Path) -> None:
    """Every file a killed run left under results/ (temporary .tmp-* files aside) is whole: JSON parses,
    safetensors headers and tables read."""
    import json

    from safetensors import safe_open

    for f in res.rglob("*"):
        if not f.is_file() or f.name.startswith(".tmp-") or any(p.name.startswith(".tmp-") for p in f.parents):
            continue
        if f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".safetensors":
            with safe_open(str(f), "pt") as h:
                for k in h.keys():
                    h.get_tensor(k)
        elif f.suffix == ".csv":
            assert f.read_text().endswith("\n"), f


@pytest.mark.slow
def test_sigkill_then_restart_gives_the_tables_of_an_uninterrupted_run(small_run, tmp_path):
    """SIGKILL the whole workflow (Snakemake and its jobs) at a few points, restart each time as the README says
    (unlock, then the same command); the final tables equal the uninterrupted run's, byte for byte."""
    import signal
    import time

    d = _workdir(tmp_path)
    exe = Path(sys.executable).parent / "snakemake"
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    res = d / "results" / "test-small"
    kills = 0
    for delay in (12, 25, 40):
        p = subprocess.Popen([str(exe), *SMALL, "--rerun-incomplete"], cwd=d, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            kills += 1
            time.sleep(0.5)
            _complete(res)
            assert snakemake(*SMALL, "--unlock", cwd=d).returncode == 0
    assert kills >= 2, "the small run finished before it could be killed twice"
    r = snakemake(*SMALL, "--rerun-incomplete", cwd=d, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tables = sorted((small_run / "results" / "test-small" / "tables").rglob("*.csv"))
    assert len(tables) >= 3
    for t in tables:
        twin = res / t.relative_to(small_run / "results" / "test-small")
        assert twin.read_bytes() == t.read_bytes(), f"{twin.name} differs after the kills"


def _planned(workdir: Path, cfg: dict, tmp_path: Path) -> dict[str, int]:
    """{rule: jobs} that a dry run of this configuration plans in a finished run's folder."""
    import re

    import yaml

    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(cfg))
    r = snakemake("-s", "Snakefile", "-n", "--configfile", str(f), cwd=workdir)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout + r.stderr
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow
def test_the_html_report_bundles_the_figures_and_the_report_with_their_captions(small_run, tmp_path):
    out = tmp_path / "report.html"
    r = snakemake("-s", "Snakefile", "--configfile", "config/test-small.yaml", "--report", str(out), cwd=small_run)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    html = out.read_text()
    model = next(p.name for p in (small_run / "results").glob("*/reports/*") if (p / "report.md").is_file())
    assert f"The report of {model}. First the paper's claims" in html           # the caption, rendered
    assert "report.md" in html and "ablation_sources.png" in html and "ablation_sources.pdf" in html


@pytest.mark.slow
def test_a_new_sparsity_or_a_figure_style_plans_only_their_jobs(small_run, tmp_path):
    """Dry runs against the finished small run: one more ablation sparsity plans only its new grid points and the
    jobs that read the ablation table; a figure style (config['figures']) plans only the figure jobs."""
    import yaml

    cfg = yaml.safe_load((REPO / "config" / "test-small.yaml").read_text())
    assert _planned(small_run, cfg, tmp_path) == {}
    jobs = _planned(small_run, dict(cfg, ablations=dict(cfg["ablations"], sparsity=[0.5, 0.7])), tmp_path)
    # at 0.7, every_source: static, oracle, random, predicted and dejavu under 3 protocols; heads_only: static for
    # the 2 predictor criteria
    assert jobs.pop("ablate") == 1 + 1 + 1 + 3 + 3 + 2, jobs
    assert set(jobs) == {"ablation_table", "figure_ablations", "report_ablations", "report_claims", "all",
                         "total"}, jobs
    jobs = _planned(small_run, dict(cfg, figures={"dpi": 90}), tmp_path)
    assert set(jobs) == {"figure_eval", "figure_dependence", "figure_predictors", "figure_ablations", "all",
                         "total"}, jobs


def test_check_config_works_from_a_wheel(tmp_path):
    """`shadowllm check-config` reads its schema and task list from the installed package, not the checkout."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path / "wheel"), str(REPO)], capture_output=True, text=True, timeout=300)
    if r.returncode and "setuptools" in r.stderr:
        pytest.skip("no setuptools to build a wheel offline")
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = (tmp_path / "wheel").glob("shadowllm-*.whl")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(whl)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = tmp_path / "c.yaml"
    shutil.copy(REPO / "config" / "config.yaml", cfg)
    (tmp_path / "reports" / "gpu-h200").mkdir(parents=True)   # the latency table the claims read beside (committed)
    shutil.copy(REPO / "reports" / "gpu-h200" / "latency_cuda.csv", tmp_path / "reports" / "gpu-h200")
    env = dict(os.environ, PYTHONPATH=str(site))
    code = ("import shadowllm, sys; from shadowllm.cli import main; "
            "assert shadowllm.__file__.startswith(sys.argv[1]), shadowllm.__file__; "
            "sys.exit(main(['check-config', sys.argv[2]]))")
    r = subprocess.run([sys.executable, "-c", code, str(site), str(cfg)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "'embedded' is valid" in r.stdout, r.stdout + r.stderr
    cfg.write_text(cfg.read_text().replace("bb_winowhy, bb_strategyqa]", "bb_winowhy, bb_nosuch]"))
    r = subprocess.run([sys.executable, "-c", code, str(site), str(cfg)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "'bb_nosuch'" in r.stderr, r.stdout + r.stderr


def test_conda_post_deploy_installs_the_package_from_the_workflow_source(tmp_path):
    """Snakemake runs envs/shadowllm.post-deploy.sh from a copy under .snakemake/conda/, inside the new env: the
    script must install from SHADOWLLM_SRC, which the workflow exports as its own source folder."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text('#!/bin/sh\necho "$@" > "$SHIM_OUT"\n')
    (shim / "python").chmod(0o755)
    copy = tmp_path / "conda" / "abc.post-deploy.sh"   # where Snakemake puts it
    copy.parent.mkdir()
    shutil.copy(REPO / "envs" / "shadowllm.post-deploy.sh", copy)
    env = dict(os.environ, PATH=f"{shim}{os.pathsep}{os.environ['PATH']}", SHIM_OUT=str(tmp_path / "args"),
               SHADOWLLM_SRC=str(REPO))
    r = subprocess.run(["bash", str(copy)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "args").read_text().split() == ["-m", "pip", "install", "--no-deps", "-e", str(REPO)]
    env.pop("SHADOWLLM_SRC")
    r = subprocess.run(["bash", str(copy)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "SHADOWLLM_SRC" in r.stderr
    common = (REPO / "workflow/rules/common.smk").read_text()
    assert '"SHADOWLLM_SRC": str(Path(workflow.basedir).resolve())' in common
