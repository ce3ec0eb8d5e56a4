"""Provenance sidecars (`<file>.meta.json`): the config, code state, versions and inputs behind an output."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import subprocess
from pathlib import Path

from .io import write_json

SIDECAR = ".meta.json"


def _git(*args) -> str | None:
    """stdout of a git command run in the package's checkout; None without git or outside a checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout if out.returncode == 0 else None
    except Exception:
        return None


def git_dirty() -> bool | None:
    """True when tracked files have uncommitted changes: the commit alone then does not describe the code."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def git_commit() -> str | None:
    out = _git("rev-parse", "HEAD")
    return (out or "").strip() or None


def package_versions() -> dict[str, str]:
    from importlib import metadata

    names = ["shadowllm", "torch", "transformers", "tokenizers", "lm_eval", "numpy", "safetensors"]
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def input_record(paths) -> dict[str, str | None]:
    """{path: sha256} of each input file (None for a folder or a missing path), so a later audit can
    tell whether an input changed."""
    out = {}
    for p in paths or []:
        p = Path(p)
        out[str(p)] = file_sha256(p) if p.is_file() else None
    return out


def meta(config: dict | None = None, seed: int | None = None, device: str | None = None, inputs=None,
         **extra) -> dict:
    """The provenance record stored beside every result file."""
    rec = {
        "config": config or {},
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "versions": package_versions(),
        "python": platform.python_version(),
        "host": platform.node(),
        "seed": seed,
        "device": device,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    if inputs is not None:
        rec["inputs"] = input_record(inputs)
    return rec


def sidecar(result_path) -> Path:
    return Path(str(result_path) + SIDECAR)


def write_meta(result_path, **kwargs) -> Path:
    """Write `<result_path>.meta.json` (see `meta`)."""
    p = sidecar(result_path)
    write_json(p, meta(**kwargs))
    return p


def read_meta(result_path) -> dict:
    p = sidecar(result_path)
    if not p.is_file():
        raise FileNotFoundError(f"{str(result_path)!r} has no provenance sidecar {p.name!r}")
    return json.loads(p.read_text())
