"""Provenance sidecars (`<file>.meta.json`): the config, code state, versions and inputs behind an output."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from .io import write_json

SIDECAR = ".meta.json"

_RUN: dict = {}   # the running command: argv, working folder, start time (set by shadowllm.cli.main)


def start_run(argv) -> None:
    """Remember the command line this process runs, so every sidecar it writes can be rerun (`shadowllm audit-output`)."""
    _RUN.update(argv=[str(a) for a in argv], cwd=os.getcwd(), t0=time.time(), env=hub_env())


HUB_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE", "HF_HUB_CACHE", "HF_HOME")


def hub_env() -> dict:
    """The hub settings the command ran under (where its datasets came from), so a rerun can use the same."""
    return {k: os.environ[k] for k in HUB_VARS if k in os.environ}


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


SAMPLED_ABOVE = 2 << 30   # bytes; larger inputs (big checkpoints) are fingerprinted from their ends and size
_SAMPLE = 64 << 20


def fingerprint(path) -> str:
    """sha256 of a file, or for one above SAMPLED_ABOVE bytes 'sampled-sha256:' of its size and its first and last
    64 MiB (hashing a 26 GB checkpoint for every job would cost more than the job)."""
    path = Path(path)
    size = path.stat().st_size
    if size <= SAMPLED_ABOVE:
        return file_sha256(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_SAMPLE))
        f.seek(size - _SAMPLE)
        h.update(f.read(_SAMPLE))
    return "sampled-sha256:" + h.hexdigest()


def input_record(paths) -> dict[str, str | None]:
    """{path: fingerprint} of each input file (None for a folder or a missing path), so a later audit can
    tell whether an input changed."""
    out = {}
    for p in paths or []:
        p = Path(p)
        out[str(p)] = fingerprint(p) if p.is_file() else None
    return out


def model_files(model: str | None, gguf_file: str | None = None) -> list[str]:
    """The files that define a local model folder (config, weights, tokenizer): the model as an input of a job.
    A hub id (no such folder) gives none: its revision is in the hub cache, not here."""
    if not model or not Path(model).is_dir():
        return []
    p = Path(model)
    files = [p / n for n in ("config.json", "tokenizer.json", "tokenizer_config.json") if (p / n).is_file()]
    files += sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin"))
    if gguf_file and (p / gguf_file).is_file():
        files.append(p / gguf_file)
    return [str(f) for f in files]


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
    if _RUN:
        rec.setdefault("argv", _RUN["argv"])
        rec.setdefault("cwd", _RUN["cwd"])
        if _RUN.get("env"):
            rec.setdefault("env", _RUN["env"])
        rec.setdefault("runtime_s", round(time.time() - _RUN["t0"], 3))
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
