"""`shadowllm audit-output PATH`: how one output was made, whether its inputs are unchanged, and (--rerun) whether the
same command rebuilds the same numbers.

The chain is read from provenance sidecars (`<file>.meta.json`): each records the command line, commit, versions,
seed, device, runtime and the sha256 of its input files; every input with a sidecar of its own is followed in
turn (an ablation point -> its predictor -> the traces -> ...), so the tree ends at the model and shipped data.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .provenance import fingerprint, sidecar

VOLATILE = {"seconds", "time", "runtime_s", "elapsed_s"}   # numbers that measure the run, not the result


@dataclass
class Node:
    path: str
    depth: int
    meta: dict | None          # None: no sidecar (a shipped file, a model folder)
    inputs: list[tuple[str, str]]  # (input path, "unchanged" | "changed" | "missing" | "folder")


def input_states(meta: dict, root: Path) -> list[tuple[str, str]]:
    out = []
    for p, sha in sorted((meta.get("inputs") or {}).items()):
        f = root / p
        if sha is None:
            out.append((p, "folder" if f.is_dir() else ("missing" if not f.exists() else "unrecorded")))
        elif not f.is_file():
            out.append((p, "missing"))
        else:
            out.append((p, "unchanged" if fingerprint(f) == sha else "changed"))
    return out


def chain(path: str | Path, root: Path = Path("."), max_depth: int = 8) -> list[Node]:
    """The output and, depth first, every input that has a sidecar (each visited once)."""
    nodes, seen = [], set()

    def visit(p: str, depth: int) -> None:
        if p in seen or depth > max_depth:
            return
        seen.add(p)
        sc = sidecar(root / p)
        meta = json.loads(sc.read_text()) if sc.is_file() else None
        states = input_states(meta, root) if meta else []
        nodes.append(Node(p, depth, meta, states))
        for q, _ in states:
            if sidecar(root / q).is_file():
                visit(q, depth + 1)

    visit(str(path), 0)
    return nodes


def command_of(meta: dict) -> str:
    if meta.get("argv"):
        env = " ".join(f"{k}={v}" for k, v in (meta.get("env") or {}).items())
        return (f"env {env} " if env else "") + "shadowllm " + " ".join(meta["argv"])
    cfg = meta.get("config") or {}
    return f"shadowllm {cfg.get('command', '?')} (no command line recorded)"


def render(nodes: list[Node]) -> str:
    lines = []
    for n in nodes:
        pad = "  " * n.depth
        lines.append(f"{pad}{n.path}")
        m = n.meta
        if m is None:
            lines.append(f"{pad}  (no provenance sidecar)")
            continue
        commit = (m.get("git_commit") or "unknown")[:12] + (" (modified checkout)" if m.get("git_dirty") else "")
        v = m.get("versions") or {}
        lines.append(f"{pad}  made by: {command_of(m)}")
        lines.append(f"{pad}  commit {commit}; torch {v.get('torch', '?')}, transformers {v.get('transformers', '?')}"
                     f", lm_eval {v.get('lm_eval', '?')}; seed {m.get('seed')}; device {m.get('device')}; "
                     f"{m.get('time', '?')}" + (f"; {m['runtime_s']:.1f} s" if m.get("runtime_s") is not None else ""))
        for p, state in n.inputs:
            flag = "" if state in ("unchanged", "folder") else "   <-- " + state.upper()
            lines.append(f"{pad}  input {p}: {state}{flag}")
    return "\n".join(lines)


# ---- rerun -----------------------------------------------------------------------------------------

def _numbers_equal(a, b, rtol: float, path: str = "") -> list[str]:
    """Differences between two JSON values (numbers within rtol; keys in VOLATILE ignored)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in VOLATILE:
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: present in one only")
            else:
                out += _numbers_equal(a[k], b[k], rtol, f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _numbers_equal(x, y, rtol, f"{path}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        ok = math.isclose(a, b, rel_tol=rtol, abs_tol=0) or (math.isnan(a) and math.isnan(b))
        return [] if ok else [f"{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def compare(old: Path, new: Path, rtol: float) -> list[str]:
    if old.suffix == ".json":
        return _numbers_equal(json.loads(old.read_text()), json.loads(new.read_text()), rtol)
    return [] if old.read_bytes() == new.read_bytes() else [f"{old.name}: the bytes differ"]


def rerun(path: str | Path, root: Path = Path("."), rtol: float = 1e-9, workdir: Path | None = None,
          device: str | None = None) -> tuple[bool, str]:
    """Run the output's recorded command again with its output redirected into a temporary folder; compare."""
    path = Path(path)
    meta = json.loads(sidecar(root / path).read_text())
    argv = list(meta.get("argv") or [])
    if not argv:
        raise ValueError(f"{str(path)!r}: its sidecar records no command line (made before `audit` existed); "
                         "rebuild it with the workflow first")
    tmp = Path(workdir or tempfile.mkdtemp(prefix="shadowllm-audit-"))
    target = str(path)
    new = tmp / path.name
    if target in argv:                                    # the output is an argument itself (--out FILE)
        argv = [str(new) if a == target else a for a in argv]
    elif str(path.parent) in argv:                        # ... or it sits in an output folder (--out DIR)
        argv = [str(tmp) if a == str(path.parent) else a for a in argv]
    else:
        raise ValueError(f"{str(path)!r}: neither it nor its folder is an argument of {command_of(meta)!r}")
    if device and "--device" in argv:
        argv[argv.index("--device") + 1] = device
    cwd = meta.get("cwd") if meta.get("cwd") and Path(meta["cwd"]).is_dir() else root
    env = {**os.environ, **(meta.get("env") or {})}     # the hub settings it ran under (offline, its caches)
    r = subprocess.run([sys.executable, "-m", "shadowllm.cli", *argv], cwd=cwd, env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        return False, f"rerun failed (rc {r.returncode}): {r.stderr.strip()[-2000:]}"
    diffs = compare(root / path, new, rtol)
    if diffs:
        return False, f"rerun differs from {path} ({len(diffs)} values):\n  " + "\n  ".join(diffs[:20])
    return True, f"rerun reproduces {path} (numbers within rtol {rtol}; rebuilt in {tmp})"


# ---- command line ----------------------------------------------------------------------------------

def cmd_audit(args) -> int:
    path = Path(args.path)
    if not path.exists():
        raise FileNotFoundError(f"audit: {args.path!r} does not exist")
    if not sidecar(path).is_file():
        raise FileNotFoundError(f"audit: {args.path!r} has no provenance sidecar {sidecar(path).name!r}")
    nodes = chain(path, max_depth=args.depth)
    print(render(nodes))
    bad = [(n.path, p, s) for n in nodes for p, s in n.inputs if s in ("changed", "missing")]
    rc = 0
    if bad:
        print(f"\n{len(bad)} input(s) changed or missing since they were used:")
        for out, p, s in bad:
            print(f"  {p} ({s}), an input of {out}")
        rc = 1
    if args.rerun:
        ok, msg = rerun(path, rtol=args.rtol, device=args.device)
        print("\n" + msg)
        rc = rc or (0 if ok else 1)
    return rc


def register(sub) -> None:
    p = sub.add_parser("audit-output", help="how an output was made, whether its inputs changed; --rerun rebuilds it",
                       description=__doc__.splitlines()[0])
    p.add_argument("path", help="an output with a .meta.json sidecar")
    p.add_argument("--rerun", action="store_true", help="rebuild this one output in a temporary folder and compare")
    p.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance of the numbers (--rerun)")
    p.add_argument("--device", default=None, help="device of the rerun (e.g. cpu for a GPU-made output)")
    p.add_argument("--depth", type=int, default=8, help="how many links of the input chain to follow")
    p.set_defaults(func=cmd_audit)
