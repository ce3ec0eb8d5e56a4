"""`shadowllm` command-line interface: one subcommand per workflow step.

Every Snakemake rule calls one of these, so any single output can be rebuilt by hand, e.g.
    shadowllm eval-ppl --model results/models/tiny-opt/model --out results/eval/tiny-opt/dense/perplexity.json
Stage packages add their own subcommands through a `register(subparsers)` function listed in STAGES.
"""
from __future__ import annotations

import argparse
import importlib
import sys

STAGES = [
    "shadowllm.commands",            # data, train, evaluation, masks, tables, figures
    "shadowllm.importance.cli",      # importance traces (criteria)
    "shadowllm.sparse.cli",          # sliced execution and latency
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shadowllm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in STAGES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # stage not present in this checkout
                continue
            raise
        mod.register(sub)
    return p


def main(argv=None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one subcommand; bad input (ValueError, FileNotFoundError, ModelNotAvailable) exits 2 with one line."""
    from .loading import ModelNotAvailable

    args = (parser or build_parser()).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ModelNotAvailable) as e:
        print(f"shadowllm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
