"""Subcommand: train-model (the embedded tiny OPT), written atomically as a whole folder."""
from __future__ import annotations

import json

from ..defaults import schema_default


def cmd_train_model(args):
    from .run import train_config, train_model

    train_model(train_config(json.loads(args.params) if args.params else {}, args.seed, args.threads), args.out,
                args.metrics)


def register(sub) -> None:
    p = sub.add_parser("train-model", help="train the embedded tiny OPT (tokenizer + model) on the shipped corpus")
    p.add_argument("--out", required=True, help="model folder (save_pretrained)")
    p.add_argument("--metrics", required=True, help="JSON with held-out perplexity etc.")
    p.add_argument("--params", default="", help="JSON object of TrainConfig fields")
    p.add_argument("--seed", type=int, default=schema_default("seed"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: TrainConfig's fixed default)")
    p.set_defaults(func=cmd_train_model)
