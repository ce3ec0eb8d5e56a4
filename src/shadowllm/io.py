"""Atomic writes: a killed job never leaves a half-written output (provenance sidecars: provenance.py)."""
from __future__ import annotations

import contextlib
import json
import os
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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it replaces `path` (renamed into place).

    A killed process leaves only a `.tmp-*` folder behind, never a partial `path`.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    tmp.chmod(0o755)   # mkdtemp makes 0700 folders; give results the usual permissions
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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


_NP_DTYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "I32": "int32", "I64": "int64"}


def mmap_safetensors(path) -> dict:
    """{name: read-only numpy memory map} of every tensor of a safetensors file: nothing is read until indexed,
    so a reader of a few rows of a large trace touches only those rows."""
    import struct

    import numpy as np

    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _NP_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, expected one of {sorted(_NP_DTYPES)}")
        dtype, shape = np.dtype(_NP_DTYPES[info["dtype"]]), tuple(info["shape"])
        a, b = info["data_offsets"]
        out[name] = np.zeros(shape, dtype) if a == b else \
            np.memmap(path, dtype=dtype, mode="r", offset=8 + n + a, shape=shape)  # numpy cannot map 0 bytes
    return out
