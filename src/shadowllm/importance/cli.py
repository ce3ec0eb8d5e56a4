"""Subcommands: `importance` (collect traces), `input-dependence` (the statistics of Figure 2, as a CSV),
`importance-bench` and `importance-oracle` (benchmark and oracle check; they print their numbers)."""
from __future__ import annotations

import argparse
import sys
import time


def cmd_importance(args) -> int:
    from ..cli import args_config, set_threads
    from ..loading import load_model, resolve_device
    from .collect import collect, task_examples
    from .criteria import get_criteria
    from .traces import write_traces

    crits = [c.name for c in get_criteria(args.criteria)]          # fail fast on a bad name
    device = resolve_device(args.device)
    set_threads(args.threads)
    model, tok = load_model(args.model, dtype=args.dtype, device=device, gguf_file=args.gguf_file)
    max_len = min(args.max_length, getattr(model.config, "max_position_embeddings", args.max_length))
    exs = task_examples(args.task, args.k, tok, seed=args.seed, max_examples=args.max_examples, max_length=max_len,
                        include=args.include)
    t0 = time.time()

    def progress(done, total):
        print(f"[importance] {args.task} k={args.k}: {done}/{total} examples, {time.time() - t0:.1f}s",
              file=sys.stderr, flush=True)

    col = collect(model, exs, crits, batch_size=args.batch_size, placement_layers=args.placement_layers,
                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0, progress=progress,
                  layer_inputs=args.layer_inputs, grasp_hvp=args.grasp_hvp, sequence_inputs=args.sequence_inputs)
    from ..provenance import model_files

    cfg = args_config(args)
    paths = write_traces(args.out, col, model=args.model_name or args.model, task=args.task, k=args.k,
                         seed=args.seed, neuron_traces=args.neuron_traces, config=cfg, device=device,
                         inputs=model_files(args.model, args.gguf_file))
    for p in paths:
        print(p)
    return 0


def cmd_input_dependence(args) -> int:
    import numpy as np

    from .dependence import input_dependence
    from .traces import load_scores

    scores = np.concatenate([load_scores(p, "heads").numpy() for p in args.traces], axis=0)
    s = input_dependence(scores, args.out_csv, seed=args.seed,
                         meta_config={"traces": [str(p) for p in args.traces]}, inputs=args.traces)
    print(f"inputs {s['n_inputs']}: mean rank variance {s['mean_rank_var']:.1f} "
          f"(random {s['random_rank_var']:.1f}, power-law {s['powerlaw_rank_var_sim']:.1f})")
    return 0


def register(sub) -> None:
    from ..cli import add_model_args
    from .collect import GRASP_HVP
    from .criteria import CRITERIA

    p = sub.add_parser("importance", help="collect per-example importance traces for one model, task and k",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_args(p)
    p.add_argument("--model-name", default=None, help="name recorded in the files (default: --model)")
    p.add_argument("--task", required=True, help="a shipped task, or an lm-eval multiple-choice task (the paper's)")
    p.add_argument("--include", default=None, help="an extra lm-eval task folder, for --task outside the shipped ones")
    p.add_argument("--k", type=int, default=5, help="few-shot demonstrations per example")
    p.add_argument("--criteria", default=",".join(CRITERIA), help="comma-separated: " + ",".join(CRITERIA))
    p.add_argument("--out", required=True, help="output folder (one per model/task/k)")
    p.add_argument("--max-examples", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--placement-layers", type=lambda s: [int(x) for x in s.split(",") if x.strip()],
                   default=[0], help="layers whose predictor input (last token) is stored; 0 always is")
    p.add_argument("--layer-inputs", action=argparse.BooleanOptionalAction, default=True,
                   help="also store every layer's input (residual stream) at both positions: DejaVu's predictor input")
    p.add_argument("--sequence-inputs", action=argparse.BooleanOptionalAction, default=False,
                   help="also store the placement layers' predictor input at every real token "
                        "(sequence_inputs.safetensors, for full-sequence predictors; large, see FORMAT.md)")
    p.add_argument("--grasp-hvp", choices=GRASP_HVP, default="finite_difference",
                   help="grasp's gate Hessian-vector product: one more forward + backward (finite_difference) "
                        "or a double backward (exact: all nine ~1.3-1.4x slower on CPU; needed for float16/bfloat16)")
    p.add_argument("--neuron-traces", default="all",
                   help="'all', 'none' or comma-separated criteria whose per-example neuron scores are kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=2048)
    p.set_defaults(func=cmd_importance)

    p = sub.add_parser("input-dependence", help="variance of head importance ranks across inputs (Figure 2's CSV)")
    p.add_argument("--traces", nargs="+", required=True, help="criterion trace files (examples are concatenated)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_input_dependence)

    from . import bench
    bench.register(sub)
