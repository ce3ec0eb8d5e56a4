"""Subcommands: train-predictor (one grid point: train on pooled traces, score the held-out examples),
collect-predictors (every point's metrics in one tidy CSV) and measure-predictor-size (sizes at OPT shapes)."""
from __future__ import annotations

from ..cli import add_model_args, args_config
from ..loading import set_threads
from ..defaults import schema_default

KINDS = ("heads", "neurons")
OPT_SIZES = ["opt-1.3b", "opt-6.7b", "opt-13b", "opt-30b", "opt-66b"]


def cmd_train_predictor(args) -> int:
    import resource

    from .run import train_and_score

    set_threads(args.threads)
    per_kind = {k: {"hidden": getattr(args, f"hidden_{k}"), "epochs": getattr(args, f"epochs_{k}"),
                    "batch_size": getattr(args, f"batch_size_{k}")} for k in KINDS}
    info = train_and_score(args.traces, args.criterion, args.design, args.out_dir, per_kind, position=args.position,
                           placement=args.placement, normalize=args.normalize, lr=args.lr,
                           weight_decay=args.weight_decay, val_fraction=args.val_fraction, patience=args.patience,
                           held_out=args.held_out, sparsities=args.sparsities, seed=args.seed,
                           held_out_seed=args.held_out_seed, config=args_config(args))
    df = info["rows"]
    point = {k: info[k] for k in ("model", "criterion", "design", "position", "placement", "normalize", "seed")}
    rho = df[(df.metric == "spearman") & (df.scope == "model")]
    # peak memory: the job's benchmark file (max_rss) and this line
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[predictor] {point}: {info['n_train']} train / {info['n_test']} held out, parameters {info['n_params']}, "
          f"{info['train_seconds']:.1f}s, peak RSS {peak:.0f} MB; rho "
          + ", ".join(f"{u} {v:.3f}" for u, v in zip(rho.unit, rho.value)))
    return 0


def cmd_collect_predictors(args) -> int:
    from .run import collect_predictors

    df = collect_predictors(args.inputs, args.out)
    m = df[(df.scope == "model") & (df.metric == "spearman")]
    print(m.pivot_table(index=["criterion", "position"], columns=["unit", "design"], values="value").round(3)
          .to_string())
    return 0


def cmd_measure_predictor_size(args) -> int:
    import pandas as pd

    from .size import project_hours, size_rows

    df = pd.DataFrame(size_rows(args.sizes, args.hidden_heads, args.hidden_neurons, args.batch_size_neurons))
    if args.from_curve:
        df, design = project_hours(df, args.from_curve, args.examples,
                                   {"heads": args.epochs_heads, "neurons": args.epochs_neurons})
        print(f"projected from {args.from_curve} ({design}, measured here): {args.examples} examples, "
              f"epochs heads {args.epochs_heads} / neurons {args.epochs_neurons}")
    print(f"predictor sizes (hidden heads {args.hidden_heads}, neurons {args.hidden_neurons}; "
          f"neuron batch {args.batch_size_neurons}); targets_MB_per_example = float16 trace rows read per example")
    print(df.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    return 0


def _default(key: str):
    """The schema's default of predictors.<key>."""
    return schema_default(f"predictors.{key}")


def _network_args(p, kinds=KINDS, batch_kinds=KINDS) -> None:
    """--hidden-, --epochs- and --batch-size-{heads,neurons}: the networks' sizes (the schema's are the paper's)."""
    for kind in kinds:
        p.add_argument(f"--hidden-{kind}", type=int, default=_default(f"{kind}.hidden"),
                       help=f"hidden width of the {kind} network")
        p.add_argument(f"--epochs-{kind}", type=int, default=_default(f"{kind}.epochs"),
                       help=f"most epochs for the {kind} network")
    for kind in batch_kinds:
        p.add_argument(f"--batch-size-{kind}", type=int, default=_default(f"{kind}.batch_size"))


def register(sub) -> None:
    from .designs import DESIGNS
    from .normalize import NORMALIZE

    p = sub.add_parser("train-predictor", help="train one predictor on importance traces; metrics on held-out "
                                               "examples (rho, tau, top-k recall)")
    p.add_argument("--traces", nargs="+", required=True, help="trace folders of one model (pooled)")
    p.add_argument("--criterion", required=True)
    p.add_argument("--design", required=True, choices=sorted(DESIGNS))
    p.add_argument("--position", default="context", choices=["full", "context"],
                   help="input at the last token of context + gold (full) or the last context token (context)")
    p.add_argument("--placement", type=int, default=_default("placement"),
                   help="layer whose attention output the predictor reads")
    _network_args(p)
    p.add_argument("--normalize", default=_default("normalize"), choices=list(NORMALIZE),
                   help="the space targets (and the held-out truth) are normalised into: raw (the criterion's own "
                        "scores, the paper's), layer (min-max per example and layer, the paper's b1eL) or example "
                        "(per-example rank over every unit of a kind after the placement, onto [0, 1])")
    p.add_argument("--lr", type=float, default=_default("lr"))
    p.add_argument("--weight-decay", type=float, default=_default("weight_decay"))
    p.add_argument("--val-fraction", type=float, default=_default("val_fraction"),
                   help="of the training examples, for early stopping")
    p.add_argument("--patience", type=int, default=_default("patience"))
    p.add_argument("--held-out", type=float, default=_default("held_out"),
                   help="fraction of examples held out for the metrics")
    p.add_argument("--sparsities", type=float, nargs="+", default=_default("sparsities"))
    p.add_argument("--seed", type=int, default=schema_default("seed"),
                   help="the predictor's training seed (validation split, initialisation, shuffling): its grid axis")
    p.add_argument("--held-out-seed", type=int, default=None,
                   help="seed of the held-out split by example id (default: --seed); the workflow fixes it to the "
                        "config's seed so that every predictor seed is scored on the same examples")
    add_model_args(p, model=False, gguf=False)
    p.add_argument("--out-dir", required=True, help="predictor.safetensors, curve.json, metrics.csv")
    p.set_defaults(func=cmd_train_predictor)

    p = sub.add_parser("collect-predictors", help="collect train-predictor metrics into one tidy CSV")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_collect_predictors)

    p = sub.add_parser("measure-predictor-size", help="parameters and training memory of the predictor designs at "
                                                      "OPT shapes (prints a table)")
    p.add_argument("--sizes", nargs="+", default=OPT_SIZES)
    _network_args(p, batch_kinds=("neurons",))
    p.add_argument("--from-curve", help="a trained predictor's curve.json: add projected training hours")
    p.add_argument("--examples", type=int, default=3400, help="training examples of the projection")
    p.set_defaults(func=cmd_measure_predictor_size)
