"""Subcommand: train (the embedded tiny OPT), written atomically as a whole folder."""
from __future__ import annotations

import dataclasses
import json
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


def _remove_stale_tmp(parent: Path, prefix: str) -> None:
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


def cmd_train(args):
    from .. import data
    from .tiny import TrainConfig, train

    params = json.loads(args.params) if args.params else {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(params) - fields)
    if bad:
        raise ValueError(f"unknown train parameter(s) {bad}; expected some of {sorted(fields)}")
    cfg = TrainConfig(**{**params, "seed": args.seed, "threads": args.threads or TrainConfig.threads})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out.parent, f".tmp-{out.name}-")
    with io.atomic_dir(out) as tmp:   # same file system as out; .pid marks it as a live run's
        (tmp / ".pid").write_text(str(os.getpid()))
        metrics = train(cfg, data.corpus_docs("train"), data.corpus_docs("test"), tmp,
                        log=lambda m: print(m, flush=True))
        # the weights carry the run's record, so an audit's chain reaches the training run
        provenance.write_meta(tmp / "model.safetensors", config=dataclasses.asdict(cfg), seed=cfg.seed, device="cpu")
        (tmp / ".pid").unlink(missing_ok=True)
    io.write_json(args.metrics, metrics)
    provenance.write_meta(args.metrics, config=dataclasses.asdict(cfg), seed=cfg.seed, device="cpu")


def register(sub) -> None:
    p = sub.add_parser("train", help="train the embedded tiny OPT (tokenizer + model) on the shipped corpus")
    p.add_argument("--out", required=True, help="model folder (save_pretrained)")
    p.add_argument("--metrics", required=True, help="JSON with held-out perplexity etc.")
    p.add_argument("--params", default="", help="JSON object of TrainConfig fields")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: TrainConfig's fixed default)")
    p.set_defaults(func=cmd_train)
