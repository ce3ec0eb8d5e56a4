"""`shadowllm` command line: one subcommand per workflow step, so any single output can be rebuilt by hand.

Each stage owns its command-line module (`register(subparsers)`); STAGES lists them, in help order.
The model arguments and their defaults are defined once here (`add_model_args`).
"""
from __future__ import annotations

import argparse
import importlib
import sys

STAGES = [
    "shadowllm.data.cli",            # prepare-tasks
    "shadowllm.train.cli",           # train (the embedded tiny OPT)
    "shadowllm.masks.cli",           # make-mask
    "shadowllm.evaluate.cli",        # evaluate, table, report-eval
    "shadowllm.importance.cli",      # importance traces, input dependence, benchmarks
    "shadowllm.predictors.cli",      # train-predictor, predictor-table
    "shadowllm.ablations.cli",       # ablate, ablation-table, report-ablations, ablation-bench
    "shadowllm.sparse.cli",          # sliced execution and latency
    "shadowllm.figures.cli",         # every figure, drawn from results tables
    "shadowllm.workflow_cli",        # check-config, publish
    "shadowllm.report.build",        # report: the paper's claims, held / not held / not testable here
    "shadowllm.audit",               # audit: how an output was made, whether its inputs changed, --rerun
]

# The one set of defaults for the model arguments of every subcommand.
MODEL_DEFAULTS = {"dtype": "float32", "device": "auto", "threads": 0}
DTYPES = ("float32", "float16", "bfloat16")


def add_model_args(p: argparse.ArgumentParser, model_help: str = "hub id or local model folder",
                   model: bool = True, gguf: bool = True) -> None:
    """--model, --gguf-file, --dtype, --device, --threads with the shared defaults."""
    g = p.add_argument_group("model")
    if model:
        g.add_argument("--model", required=True, help=model_help)
    if gguf:
        g.add_argument("--gguf-file", default=None, help="GGUF file inside the --model folder")
    g.add_argument("--dtype", default=MODEL_DEFAULTS["dtype"], choices=DTYPES)
    g.add_argument("--device", default=MODEL_DEFAULTS["device"], help="cpu, cuda, cuda:N or auto (cuda if available)")
    g.add_argument("--threads", type=int, default=MODEL_DEFAULTS["threads"],
                   help="torch CPU threads (0: torch's default; the workflow fixes it for repeatable numbers)")


def set_threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def args_config(args) -> dict:
    """The parsed arguments as a JSON-able dict (for provenance sidecars)."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def build_parser(stages=STAGES) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shadowllm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in stages:
        importlib.import_module(name).register(sub)
    return p


def main(argv=None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one subcommand; bad input (ValueError, FileNotFoundError, ModelNotAvailable) exits 2 with one line."""
    from .loading import ModelNotAvailable
    from .provenance import start_run

    argv = sys.argv[1:] if argv is None else list(argv)
    args = (parser or build_parser()).parse_args(argv)
    start_run(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ModelNotAvailable) as e:
        print(f"shadowllm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
