"""Atomic writes and provenance sidecars (`<file>.meta.json`)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success move it into place atomically.

    A killed process leaves only a `.tmp-*` file behind, never a half-written `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp makes 0600 files; give results the usual permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> None:
    """UTF-8 with \\n newlines, so the bytes on disk are the same on every platform."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _git(*args) -> str | None:
    """stdout of a git command run in the package's checkout; None without git or outside a checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout if out.returncode == 0 else None
    except Exception:
        return None


def git_dirty() -> bool | None:
    """True when the checkout has uncommitted changes to tracked files (the commit alone does not then
    describe the code that ran)."""
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


def meta(config: dict | None = None, seed: int | None = None, device: str | None = None, **extra) -> dict:
    """The provenance record stored beside every result file."""
    return {
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


def write_meta(result_path, **kwargs) -> Path:
    """Write `<result_path>.meta.json` (see `meta`)."""
    p = Path(str(result_path) + ".meta.json")
    write_json(p, meta(**kwargs))
    return p
