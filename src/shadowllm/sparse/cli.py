"""Subcommands: bench-latency, measure-predictor-flops (latency figures: shadowllm.figures).

Registered into `shadowllm` by shadowllm.cli; also runnable alone (no other stage imported, e.g. on a GPU
machine without lm-eval):  PYTHONPATH=src python -m shadowllm.sparse.cli bench-latency ...
"""
from __future__ import annotations

import argparse

from .modes import KV_POLICIES, MODES
from .gather import BACKENDS


def _bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


SPEC_KEYS = {"sizes": "model", "sparsities": "sparsity", "gen_tokens": "gen_tokens", "modes": "modes",
             "device": "device", "dtype": "dtype", "batch": "batch", "prompt_len": "prompt_len",
             "repeats": "repeats", "warmup": "warmup", "kv_policy": "kv_policy", "lookahead": "lookahead",
             "placement": "placement", "time_budget": "time_budget"}


def _apply_spec(args) -> None:
    """Settings of a configured latency bench (--spec JSON from the workflow, or --config FILE --bench NAME)
    replace the flags: one definition of each bench for the workflow and for the GPU script."""
    import json

    from ..config import latency_bench

    if args.spec:
        spec = json.loads(args.spec)
    elif args.config:
        import yaml

        from .. import config as C

        cfg = yaml.safe_load(open(args.config)) or {}
        try:
            cfg = C.validate(cfg)
        except ImportError:  # a bare GPU machine without jsonschema: defaults only
            cfg = C.fill_defaults(cfg)
        if not args.bench:
            raise ValueError(f"--config {args.config!r} needs --bench NAME")
        spec = latency_bench(cfg, args.bench)
    else:
        if not args.model:
            raise ValueError("bench-latency needs --model (or --spec, or --config with --bench)")
        return
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"latency spec has unknown key(s) {unknown}; expected some of {sorted(SPEC_KEYS)}")
    for k, v in spec.items():
        setattr(args, SPEC_KEYS[k], v)


def cmd_bench_latency(args) -> int:
    from ..cli import args_config
    from ..loading import set_threads
    from ..loading import resolve_device
    from .bench import bench_and_write

    _apply_spec(args)
    set_threads(args.threads)
    args.device = resolve_device(args.device)
    for s in args.sparsity:
        if not 0.0 <= s < 1.0:
            raise ValueError(f"sparsity {s} is outside [0, 1)")
    kw = dict(models=args.model, modes=args.modes, sparsities=args.sparsity, gen_tokens=args.gen_tokens,
              dtype=args.dtype, device=args.device, batch=args.batch, prompt_len=args.prompt_len,
              repeats=args.repeats, warmup=args.warmup, cuda_graph=args.cuda_graph, kv_policy=args.kv_policy,
              gather=args.gather, lookahead=args.lookahead, predictor_hidden=args.predictor_hidden,
              time_budget_s=args.time_budget, placement=args.placement, predictors=args.predictor)
    bench_and_write(args.out, config=dict(args_config(args), command="bench-latency"), seed=args.seed, **kw)
    from . import kernels_triton

    for key, cfg in kernels_triton.TUNED.items():  # the launch configs the CUDA runs chose
        print(f"[bench] triton {key[0]} B={key[1]} K={key[2]} N={key[3]} D={key[4]} {key[5]}: {cfg}")
    print(f"[bench] wrote {args.out}")
    return 0


def cmd_predictor_flops(args) -> int:
    from ..provenance import write_meta
    from .bench import write_csv
    from .flops import FLOPS_FIELDS, predictor_flops_rows

    rows = predictor_flops_rows(p=args.p, names=args.models or None)
    write_csv(args.out, rows, FLOPS_FIELDS)
    write_meta(args.out, config={"command": "measure-predictor-flops", "p": args.p, "models": args.models})
    for r in rows:
        print(f"{r['model']:9s} DejaVu {r['dejavu_macs'] / 1e6:9.1f} M  ShadowLLM {r['shadowllm_macs'] / 1e6:9.1f} M  "
              f"ratio {r['dejavu_over_shadowllm']:.3f}")
    return 0


def register(sub) -> None:
    from ..cli import add_model_args
    from ..defaults import schema_default

    def lat(key):  # one definition: the configured benches' defaults (the latency section of the schema)
        return schema_default(f"latency.{key}")

    p = sub.add_parser("bench-latency", help="latency of dense / static / ShadowLLM / DejaVu sparse decoding",
                       description="Random-weight (or local-folder) OPT / Llama latency benchmark of the sliced "
                                   "decoder.")
    p.add_argument("--model", nargs="+", default=None,
                   help="model shapes (opt-125m ... opt-66b, smollm2-135m, llama-3.2-1b, llama-2-7b, llama-3-8b; "
                        "'_L<k>' keeps the first k layers, e.g. llama-3-8b_L4) or local OPT / Llama model folders")
    p.add_argument("--modes", nargs="+", default=lat("modes"), choices=MODES)
    p.add_argument("--sparsity", nargs="+", type=float, default=[0.5])
    p.add_argument("--gen-tokens", nargs="+", type=int, default=[32])
    p.add_argument("--prompt-len", type=int, default=lat("prompt_len"))
    p.add_argument("--batch", type=int, default=lat("batch"))
    p.add_argument("--repeats", type=int, default=lat("repeats"))
    p.add_argument("--warmup", type=int, default=lat("warmup"))
    p.add_argument("--cuda-graph", type=_bool, default=None, help="default: true on cuda")
    p.add_argument("--kv-policy", default=lat("kv_policy"), choices=KV_POLICIES)
    p.add_argument("--gather", default="auto", choices=BACKENDS)
    p.add_argument("--lookahead", type=_bool, default=lat("lookahead"),
                   help="DejaVu predictor for layer l+1 on layer l's input, on a side stream (default: on cuda)")
    p.add_argument("--predictor-hidden", type=int, default=1024)
    p.add_argument("--placement", type=int, default=lat("placement"),
                   help="layers 0..placement run dense; the ShadowLLM predictor reads this layer's attention "
                        "output, DejaVu predicts the layers after it (static and dense ignore it)")
    add_model_args(p, model=False, gguf=False)
    p.add_argument("--predictor", action="append", default=[],
                   help="trained predictor file (train-predictor; repeat for a shadowllm and a dejavu one): its "
                        "weights replace the random ones of its modes; --model must then be a model folder")
    p.add_argument("--spec", default=None, help="JSON of a configured bench (as the workflow passes it)")
    p.add_argument("--config", default=None, help="a workflow config file; with --bench, run that bench")
    p.add_argument("--bench", default=None, help="name of a bench under latency.benches of --config")
    p.add_argument("--time-budget", type=float, default=None, help="stop starting new runs after this many s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="CSV path (a .meta.json is written beside it)")
    p.set_defaults(func=cmd_bench_latency)

    p = sub.add_parser("measure-predictor-flops", help="DejaVu vs ShadowLLM predictor FLOPs per token for OPT sizes")
    p.add_argument("--p", type=int, default=lat("flops_hidden"), help="predictor hidden width")
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_predictor_flops)


def main(argv=None) -> int:
    """`python -m shadowllm.sparse.cli`: the latency subcommands alone (no lm-eval needed, e.g. on a GPU box)."""
    from ..cli import main as run

    p = argparse.ArgumentParser(prog="python -m shadowllm.sparse.cli")
    register(p.add_subparsers(dest="command", required=True))
    return run(argv, parser=p)


if __name__ == "__main__":
    raise SystemExit(main())
