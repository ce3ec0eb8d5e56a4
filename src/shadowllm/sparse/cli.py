"""Subcommands: bench-latency, predictor-flops, latency-figures.

Registered into `shadowllm` by shadowllm.cli; also runnable alone (no other stage imported, e.g. on a GPU
machine without lm-eval):  PYTHONPATH=src python -m shadowllm.sparse.cli bench-latency ...
"""
from __future__ import annotations

import argparse

from .decoder import KV_POLICIES, MODES
from .gather import BACKENDS


def _floats(xs):
    return [float(x) for x in xs]


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def cmd_bench_latency(args) -> int:
    import torch

    from .bench import bench_and_write

    if args.threads:
        torch.set_num_threads(args.threads)
    for s in args.sparsity:
        if not 0.0 <= s < 1.0:
            raise ValueError(f"sparsity {s} is outside [0, 1)")
    kw = dict(models=args.model, modes=args.modes, sparsities=args.sparsity, gen_tokens=args.gen_tokens,
              dtype=args.dtype, device=args.device, batch=args.batch, prompt_len=args.prompt_len,
              repeats=args.repeats, warmup=args.warmup, cuda_graph=args.cuda_graph, kv_policy=args.kv_policy,
              gather=args.gather, lookahead=args.lookahead, predictor_hidden=args.predictor_hidden,
              time_budget_s=args.time_budget)
    bench_and_write(args.out, config=dict(kw, command="bench-latency"), seed=args.seed, **kw)
    from . import kernels_triton

    for key, cfg in kernels_triton.TUNED.items():  # the launch configs the CUDA runs chose
        print(f"[bench] triton {key[0]} B={key[1]} K={key[2]} N={key[3]} D={key[4]} {key[5]}: {cfg}")
    print(f"[bench] wrote {args.out}")
    return 0


def cmd_predictor_flops(args) -> int:
    from ..io import write_meta
    from .bench import FLOPS_FIELDS, predictor_flops_rows, write_csv

    rows = predictor_flops_rows(p=args.p, names=args.models or None)
    write_csv(args.out, rows, FLOPS_FIELDS)
    write_meta(args.out, config={"command": "predictor-flops", "p": args.p, "models": args.models})
    for r in rows:
        print(f"{r['model']:9s} DejaVu {r['dejavu_macs'] / 1e6:9.1f} M  ShadowLLM {r['shadowllm_macs'] / 1e6:9.1f} M  "
              f"ratio {r['dejavu_over_shadowllm']:.3f}")
    return 0


def cmd_latency_figures(args) -> int:
    from .figures import latency_figures

    outs = latency_figures(args.csv, args.outdir, sparsity=args.sparsity, fmt=args.format)
    if args.table:
        from .figures import latency_table

        outs.append(latency_table(args.csv, args.table))
    for o in outs:
        print(f"[figures] wrote {o}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench-latency", help="latency of dense / static / ShadowLLM / DejaVu sparse decoding",
                       description="Random-weight (or local-folder) OPT latency benchmark of the sliced decoder.")
    p.add_argument("--model", nargs="+", required=True,
                   help="OPT sizes (opt-125m, opt-1.3b, opt-2.7b, opt-6.7b, opt-13b, opt-30b, opt-66b; "
                        "'_L<k>' keeps the first k layers, e.g. opt-1.3b_L8) or local model folders")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--sparsity", nargs="+", type=float, default=[0.5])
    p.add_argument("--gen-tokens", nargs="+", type=int, default=[32])
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default: float16 on cuda, "
                                                  "float32 on cpu)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--cuda-graph", type=_bool, default=None, help="default: true on cuda")
    p.add_argument("--kv-policy", default="full", choices=KV_POLICIES)
    p.add_argument("--gather", default="auto", choices=BACKENDS)
    p.add_argument("--lookahead", type=_bool, default=None,
                   help="DejaVu predictor for layer l+1 on layer l's input, on a side stream (default: on cuda)")
    p.add_argument("--predictor-hidden", type=int, default=1024)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--time-budget", type=float, default=None, help="stop starting new runs after this many s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="CSV path (a .meta.json is written beside it)")
    p.set_defaults(func=_with_dtype(cmd_bench_latency))

    p = sub.add_parser("predictor-flops", help="DejaVu vs ShadowLLM predictor FLOPs per token for OPT sizes")
    p.add_argument("--p", type=int, default=1024, help="predictor hidden width")
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_predictor_flops)

    p = sub.add_parser("latency-figures", help="latency vs model size / sparsity / generation length")
    p.add_argument("--csv", nargs="+", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--sparsity", type=float, default=0.5, help="sparsity shown in the size / length plots")
    p.add_argument("--format", default="pdf")
    p.add_argument("--table", default=None, help="also write the combined latency table (CSV) here")
    p.set_defaults(func=cmd_latency_figures)


def _with_dtype(fn):
    def run(args):
        if args.dtype is None:
            args.dtype = "float16" if str(args.device).startswith("cuda") else "float32"
        return fn(args)
    return run


def main(argv=None) -> int:
    """`python -m shadowllm.sparse.cli`: the latency subcommands alone (no lm-eval needed, e.g. on a GPU box)."""
    from ..cli import main as run

    p = argparse.ArgumentParser(prog="python -m shadowllm.sparse.cli")
    register(p.add_subparsers(dest="command", required=True))
    return run(argv, parser=p)


if __name__ == "__main__":
    raise SystemExit(main())
