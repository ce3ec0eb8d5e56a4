"""`shadowllm` command line: one subcommand per workflow step, so any single output can be rebuilt by hand.

Each stage owns its command-line module (`register(subparsers)`); STAGES lists them, in help order. Every name is
verb-object (ALIASES maps the old names for one release). The model arguments are defined once here
(`add_model_args`); flag defaults that are config keys come from the workflow schema (shadowllm.defaults).
"""
from __future__ import annotations

import argparse
import importlib
import sys


STAGES = [
    "shadowllm.data.cli",            # prepare-tasks, convert-gguf, download-model, download-datasets
    "shadowllm.train.cli",           # train-model (the embedded tiny OPT)
    "shadowllm.masks.cli",           # make-mask
    "shadowllm.evaluate.cli",        # evaluate-model, collect-eval, report-eval
    "shadowllm.importance.cli",      # trace-importance, measure-dependence, bench-importance, measure-oracle
    "shadowllm.predictors.cli",      # train-predictor, collect-predictors, measure-predictor-size
    "shadowllm.ablations.cli",       # ablate-point, collect-ablations, report-ablations, bench-ablation
    "shadowllm.sparse.cli",          # bench-latency, measure-predictor-flops
    "shadowllm.figures.cli",         # plot-*: every figure, drawn from results tables
    "shadowllm.workflow_cli",        # check-config, publish-run
    "shadowllm.report.build",        # report-claims: the paper's claims, held / not held / not testable here
    "shadowllm.audit",               # audit-output: how an output was made, whether its inputs changed, --rerun
]

# Old subcommand names (before every name became verb-object), accepted with a warning for one release.
ALIASES = {
    "train": "train-model", "evaluate": "evaluate-model", "table": "collect-eval",
    "importance": "trace-importance", "input-dependence": "measure-dependence",
    "importance-bench": "bench-importance", "importance-oracle": "measure-oracle",
    "predictor-size": "measure-predictor-size", "predictor-table": "collect-predictors",
    "ablate": "ablate-point", "ablation-table": "collect-ablations", "ablation-bench": "bench-ablation",
    "predictor-flops": "measure-predictor-flops", "latency-figures": "plot-latency",
    "publish": "publish-run", "report": "report-claims", "audit": "audit-output",
}

DTYPES = ("float32", "float16", "bfloat16")


def add_model_args(p: argparse.ArgumentParser, model_help: str = "hub id or local model folder",
                   model: bool = True, gguf: bool = True) -> None:
    """--model, --gguf-file, --dtype, --device, --threads: one definition, defaults from the workflow schema."""
    from .defaults import schema_default

    g = p.add_argument_group("model")
    if model:
        g.add_argument("--model", required=True, help=model_help)
    if gguf:
        g.add_argument("--gguf-file", default=None, help="GGUF file inside the --model folder")
    g.add_argument("--dtype", default=schema_default("models.*.dtype"), choices=DTYPES)
    g.add_argument("--device", default=schema_default("device"), help="cpu, cuda, cuda:N or auto (cuda if available)")
    # 0 is the command line's own: leave torch's thread count alone (the schema's threads >= 1 is per workflow job)
    g.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; the workflow fixes it for repeatable numbers)")


def args_config(args) -> dict:
    """The parsed arguments as a JSON-able dict (for provenance sidecars)."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def build_parser(stages=STAGES) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shadowllm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in stages:
        importlib.import_module(name).register(sub)
    return p


def commands(parser: argparse.ArgumentParser) -> set[str]:
    """The subcommand names a parser knows."""
    return {n for a in parser._actions if isinstance(a, argparse._SubParsersAction) for n in a.choices}


def rename_alias(argv: list[str], known: set[str]) -> list[str]:
    """argv with an old subcommand name replaced by its new one (said once on stderr); a name the parser still
    registers itself is left alone."""
    old = argv[0] if argv else None
    if old in ALIASES and old not in known and ALIASES[old] in known:
        print(f"shadowllm: {old!r} is now {ALIASES[old]!r}; the old name goes in the next release", file=sys.stderr)
        return [ALIASES[old], *argv[1:]]
    return argv


def main(argv=None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one subcommand; bad input (ValueError, FileNotFoundError, ModelNotAvailable) exits 2 with one line."""
    from .loading import ModelNotAvailable
    from .provenance import start_run

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = parser or build_parser()
    argv = rename_alias(argv, commands(parser))
    args = parser.parse_args(argv)
    start_run(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ModelNotAvailable) as e:
        print(f"shadowllm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
