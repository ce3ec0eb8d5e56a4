"""Training the embedded tiny OPT into a model folder that appears whole or not at all (train-model)."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from .. import io, provenance


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_tmp(parent: Path, prefix: str) -> None:
    """Remove the temporary folders a killed run for the same output left behind (their writer is gone)."""
    for d in parent.glob(prefix + "*"):
        if not d.is_dir():
            continue
        try:
            pid = int((d / ".pid").read_text())
        except (OSError, ValueError):
            pid = None
        if pid is None or not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def train_config(params: dict, seed: int = 0, threads: int = 0):
    """A TrainConfig from JSON parameters; an unknown name is an error naming it. threads 0: TrainConfig's own."""
    from .tiny import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(params) - fields)
    if bad:
        raise ValueError(f"unknown train parameter(s) {bad}; expected some of {sorted(fields)}")
    return TrainConfig(**{**params, "seed": seed, "threads": threads or TrainConfig.threads})


def train_model(cfg, out, metrics) -> dict:
    """Train on the shipped corpus into the folder `out` (atomically) and write the held-out metrics JSON."""
    from .. import data
    from .tiny import train

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out.parent, f".tmp-{out.name}-")
    with io.atomic_dir(out) as tmp:   # same file system as out; .pid marks it as a live run's
        (tmp / ".pid").write_text(str(os.getpid()))
        result = train(cfg, data.corpus_docs("train"), data.corpus_docs("test"), tmp,
                       log=lambda m: print(m, flush=True))
        # the weights carry the run's record, so an audit's chain reaches the training run
        provenance.write_meta(tmp / "model.safetensors", config=dataclasses.asdict(cfg), seed=cfg.seed, device="cpu")
        (tmp / ".pid").unlink(missing_ok=True)
    io.write_json(metrics, result)
    provenance.write_meta(metrics, config=dataclasses.asdict(cfg), seed=cfg.seed, device="cpu")
    return result
