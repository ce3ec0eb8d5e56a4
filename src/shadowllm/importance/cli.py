"""Subcommands: trace-importance (collect traces), measure-dependence (the statistics of Figure 2, as a CSV),
bench-importance and measure-oracle (benchmark and oracle check; they print their numbers)."""
from __future__ import annotations

import argparse

from ..cli import add_model_args, args_config
from ..loading import set_threads
from ..defaults import schema_default


def cmd_trace_importance(args) -> int:
    from .run import trace_importance

    set_threads(args.threads)
    paths = trace_importance(args.model, args.task, args.k, args.out, args.criteria, model_name=args.model_name,
                             include=args.include, max_examples=args.max_examples, batch_size=args.batch_size,
                             placement_layers=args.placement_layers, layer_inputs=args.layer_inputs,
                             sequence_inputs=args.sequence_inputs, grasp_hvp=args.grasp_hvp,
                             neuron_traces=args.neuron_traces, seed=args.seed, max_length=args.max_length,
                             dtype=args.dtype, device=args.device, gguf_file=args.gguf_file, config=args_config(args))
    for p in paths:
        print(p)
    return 0


def cmd_measure_dependence(args) -> int:
    from .run import measure_dependence

    s = measure_dependence(args.traces, args.out_csv, seed=args.seed)
    print(f"inputs {s['n_inputs']}: mean rank variance {s['mean_rank_var']:.1f} "
          f"(random {s['random_rank_var']:.1f}, power-law {s['powerlaw_rank_var_sim']:.1f})")
    return 0


def cmd_bench_importance(args) -> int:
    from .bench import cmd_bench

    return cmd_bench(args)


def cmd_measure_oracle(args) -> int:
    from .bench import cmd_oracle

    return cmd_oracle(args)


def _int_list(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _workload_args(p, n: int) -> None:
    """The arguments bench-importance and measure-oracle share: which examples, how many, on what."""
    p.add_argument("--task", default="bb_cause_and_effect")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--n", type=int, default=n)
    p.add_argument("--batch-size", type=int, default=schema_default("importance.batch_size"))
    add_model_args(p, model=False, gguf=False)


def register(sub) -> None:
    from .collect import GRASP_HVP

    p = sub.add_parser("trace-importance", help="collect per-example importance traces for one model, task and k",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    p.add_argument("--model-name", default=None, help="name recorded in the files (default: --model)")
    p.add_argument("--task", required=True, help="a shipped task, or an lm-eval multiple-choice task (the paper's)")
    p.add_argument("--include", default=None, help="an extra lm-eval task folder, for --task outside the shipped ones")
    p.add_argument("--k", type=int, default=5, help="few-shot demonstrations per example")
    crits = schema_default("importance.criteria")
    p.add_argument("--criteria", default=",".join(crits), help="comma-separated: " + ",".join(crits))
    p.add_argument("--out", required=True, help="output folder (one per model/task/k)")
    p.add_argument("--max-examples", type=int, default=schema_default("importance.max_examples"))
    p.add_argument("--batch-size", type=int, default=schema_default("importance.batch_size"))
    p.add_argument("--placement-layers", type=_int_list, default=schema_default("importance.placement_layers"),
                   help="layers whose predictor input (last token) is stored; 0 always is")
    p.add_argument("--layer-inputs", action=argparse.BooleanOptionalAction,
                   default=schema_default("importance.layer_inputs"),
                   help="also store every layer's input (residual stream) at both positions: DejaVu's predictor input")
    p.add_argument("--sequence-inputs", action=argparse.BooleanOptionalAction,
                   default=schema_default("importance.sequence_inputs"),
                   help="also store the placement layers' predictor input at every real token "
                        "(sequence_inputs.safetensors, for full-sequence predictors; large, see FORMAT.md)")
    p.add_argument("--grasp-hvp", choices=GRASP_HVP, default=schema_default("importance.grasp_hvp"),
                   help="grasp's gate Hessian-vector product: one more forward + backward (finite_difference) "
                        "or a double backward (exact: all nine ~1.3-1.4x slower on CPU; needed for float16/bfloat16)")
    p.add_argument("--neuron-traces", default=schema_default("importance.neuron_traces"),
                   help="'all', 'none' or comma-separated criteria whose per-example neuron scores are kept")
    p.add_argument("--seed", type=int, default=schema_default("importance.seed"))
    p.add_argument("--max-length", type=int, default=2048)
    p.set_defaults(func=cmd_trace_importance)

    p = sub.add_parser("measure-dependence", help="variance of head importance ranks across inputs (Figure 2's CSV)")
    p.add_argument("--traces", nargs="+", required=True, help="criterion trace files (examples are concatenated)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--seed", type=int, default=schema_default("seed"))
    p.set_defaults(func=cmd_measure_dependence)

    p = sub.add_parser("bench-importance", help="time / memory of collecting all criteria vs plainact")
    p.add_argument("--model", default=None, help="model folder (default: a random OPT of the embedded shape)")
    _workload_args(p, n=32)
    p.add_argument("--grasp-hvp", default=GRASP_HVP[0],
                   help="comma-separated grasp HVP methods to time all nine with (finite_difference, exact)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the fastest counts")
    p.add_argument("--criteria", default="plainact", help=argparse.SUPPRESS)   # the child process's
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_bench_importance)

    p = sub.add_parser("measure-oracle", help="Spearman of head scores vs single-head removal loss increase")
    p.add_argument("--model", required=True, help="model folder")
    _workload_args(p, n=64)
    p.set_defaults(func=cmd_measure_oracle)
