"""Subcommands: train-predictor (one grid point: train on pooled traces, score the held-out examples) and
predictor-table (every point's metrics in one tidy CSV)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .. import io, provenance

AXES = ["model", "criterion", "design", "position", "placement", "normalize", "seed"]
EVAL_CHUNK = 256  # held-out examples predicted and scored at a time
PAPER = {"heads": (2048, 100, 32), "neurons": (1024, 20, 16)}  # hidden, epochs, batch size (the paper's)


def _held_out_rows(design, model, ts, test_idx, args) -> list[dict]:
    """Metrics on the held-out examples, predicted and scored chunk by chunk against the true scores normalised
    in the space the predictor ranks in (args.normalize)."""
    import torch

    from .metrics import MetricAccumulator

    acc = MetricAccumulator(ts.n_heads, sparsities=args.sparsities, placement=args.placement,
                            normalize=args.normalize)
    X = ts.X.take(test_idx)
    Y = {k: y.take(test_idx) for k, y in ts.Y.items()}
    for i in range(0, len(test_idx), EVAL_CHUNK):
        sl = slice(i, i + EVAL_CHUNK)
        acc.add(design.predict(model, X.take(sl)), torch.cat([Y[k][sl] for k in Y], -1))
    return acc.rows()


def cmd_train_predictor(args) -> int:
    import resource

    from ..cli import args_config, set_threads
    from .data import held_out, load_trace_set
    from .designs import get_design
    from .train import train_predictor

    set_threads(args.threads)
    design = get_design(args.design)
    ts = load_trace_set(args.traces, args.criterion, args.position, args.placement, inputs=design.input_kind)
    held_seed = args.seed if args.held_out_seed is None else args.held_out_seed
    train_idx, test_idx = held_out(ts.ids, args.held_out, held_seed)
    per_kind = {k: {"hidden": getattr(args, f"hidden_{k}"), "epochs": getattr(args, f"epochs_{k}"),
                    "batch_size": getattr(args, f"batch_size_{k}")} for k in ("heads", "neurons")}
    t0 = time.time()
    ends = {}  # kind -> time its last epoch was logged

    def log(row):
        ends[row["kind"]] = time.time()
        print(json.dumps(row), flush=True)

    model, curve = train_predictor(design, ts.X.take(train_idx), {k: y.take(train_idx) for k, y in ts.Y.items()},
                                   placement=args.placement, per_kind=per_kind, lr=args.lr,
                                   weight_decay=args.weight_decay, val_fraction=args.val_fraction,
                                   patience=args.patience, seed=args.seed, normalize_targets=args.normalize,
                                   groups=[ts.ids[i] for i in train_idx.tolist()], log=log)
    seconds = time.time() - t0
    starts = dict(zip(ends, [t0, *list(ends.values())[:-1]]))
    kind_seconds = {k: ends[k] - starts[k] for k in ends}
    rows = _held_out_rows(design, model, ts, test_idx, args)
    point = {"model": ts.model, "criterion": args.criterion, "design": args.design, "position": args.position,
             "placement": args.placement, "normalize": args.normalize, "seed": args.seed}
    n_params = {k: sum(p.numel() for p in design.parameters(model, k)) for k in ts.Y}
    epochs = {k: sum(r["kind"] == k for r in curve) for k in ts.Y}
    # seconds per parameter x example x epoch (validation included): what `predictor-size --from-curve` scales
    cost = {k: kind_seconds[k] / (n_params[k] * len(train_idx) * epochs[k]) for k in ts.Y if n_params[k]}
    # peak memory: the job's benchmark file (max_rss) and the line printed below
    info = {**point, "held_out_seed": held_seed, "n_train": len(train_idx), "n_test": len(test_idx),
            "n_params": n_params, "target_scale": dict(getattr(model, "target_scale", {})),
            "train_seconds": seconds, "kind_seconds": kind_seconds, "epochs_run": epochs,
            "seconds_per_param_example_epoch": cost}
    out = Path(args.out_dir)
    cfg = args_config(args)
    inputs = [str(Path(t) / n) for t in args.traces for n in ("inputs.safetensors", f"{args.criterion}.safetensors")]
    if design.input_kind == "seq":
        inputs += [str(Path(t) / "sequence_inputs.safetensors") for t in args.traces]
    model.cpu().save(out / "predictor.safetensors", meta=point)
    io.write_json(out / "curve.json", {**info, "curve": curve})
    import pandas as pd

    df = pd.DataFrame([{**point, **r} for r in rows])
    with io.atomic_path(out / "metrics.csv", suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    for name in ("predictor.safetensors", "curve.json", "metrics.csv"):
        provenance.write_meta(out / name, config=cfg, seed=args.seed, device="cpu", inputs=inputs)
    rho = df[(df.metric == "spearman") & (df.scope == "model")]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[predictor] {point}: {len(train_idx)} train / {len(test_idx)} held out, parameters {n_params}, "
          f"{seconds:.1f}s, peak RSS {peak:.0f} MB; rho " + ", ".join(f"{u} {v:.3f}" for u, v in zip(rho.unit, rho.value)))
    return 0


def cmd_predictor_table(args) -> int:
    import pandas as pd

    frames = [pd.read_csv(p) for p in args.inputs]
    df = pd.concat(frames, ignore_index=True)
    key = AXES + ["unit", "scope", "layer", "metric", "sparsity"]
    dup = df.duplicated(subset=key, keep=False)
    if dup.any():
        raise ValueError(f"two results for one cell: {df[dup].iloc[0][key].to_dict()}")
    df = df.sort_values(key, kind="stable", na_position="first")
    with io.atomic_path(args.out, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    provenance.write_meta(args.out, config={"command": "predictor-table"}, inputs=args.inputs)
    m = df[(df.scope == "model") & (df.metric == "spearman")]
    print(m.pivot_table(index=["criterion", "position"], columns=["unit", "design"], values="value").round(3)
          .to_string())
    return 0


def size_rows(sizes, hidden_heads: int, hidden_neurons: int, batch_neurons: int) -> list[dict]:
    """Parameters and training memory of each network design at real OPT shapes (counted, nothing built).

    Training keeps every weight (fp32) and, for the kind being trained, its gradient and AdamW's two moments:
    peak = 4 B x all parameters + 12 B x the larger kind's. Targets stream by batch: fp32 [batch, L, F]."""
    from ..sparse.shapes import OPT_SHAPES
    from .model import n_parameters

    rows = []
    for name in sizes:
        if name not in OPT_SHAPES:
            raise ValueError(f"unknown OPT size {name!r}; expected one of {sorted(OPT_SHAPES)}")
        s = OPT_SHAPES[name]
        for design in ("shadowllm", "dejavu", "fullseq"):
            n = n_parameters(design, s.hidden, s.layers, s.heads, s.ffn, hidden_heads, hidden_neurons)
            total = sum(n.values())
            rows.append({"size": name, "design": design, "heads_M": n["heads"] / 1e6, "neurons_M": n["neurons"] / 1e6,
                         "weights_GiB": 4 * total / 2 ** 30,
                         "train_peak_GiB": (4 * total + 12 * max(n.values())) / 2 ** 30,
                         "targets_MB_per_example": 2 * s.layers * (s.heads + s.ffn) / 1e6,
                         "neuron_batch_MB": 4 * batch_neurons * s.layers * s.ffn / 1e6})
    return rows


def cmd_predictor_size(args) -> int:
    import pandas as pd

    df = pd.DataFrame(size_rows(args.sizes, args.hidden_heads, args.hidden_neurons, args.batch_size_neurons))
    if args.from_curve:
        # projection: the measured seconds per parameter x example x epoch of each kind, scaled to each size
        info = json.loads(Path(args.from_curve).read_text())
        cost = info.get("seconds_per_param_example_epoch")
        if not cost:
            raise ValueError(f"{args.from_curve}: no seconds_per_param_example_epoch (a trained network's curve.json)")
        df = df[df.design == info["design"]].copy()
        epochs = {"heads": args.epochs_heads, "neurons": args.epochs_neurons}
        df["train_hours"] = sum(df[f"{k}_M"] * 1e6 * cost[k] * args.examples * epochs[k] for k in cost) / 3600
        print(f"projected from {args.from_curve} ({info['design']}, measured here): {args.examples} examples, "
              f"epochs heads {args.epochs_heads} / neurons {args.epochs_neurons}")
    print(f"predictor sizes (hidden heads {args.hidden_heads}, neurons {args.hidden_neurons}; "
          f"neuron batch {args.batch_size_neurons}); targets_MB_per_example = float16 trace rows read per example")
    print(df.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    return 0


def register(sub) -> None:
    from ..cli import add_model_args
    from .designs import DESIGNS
    from .normalize import NORMALIZE

    p = sub.add_parser("train-predictor", help="train one predictor on importance traces; metrics on held-out "
                                               "examples (rho, tau, top-k recall)")
    p.add_argument("--traces", nargs="+", required=True, help="trace folders of one model (pooled)")
    p.add_argument("--criterion", required=True)
    p.add_argument("--design", required=True, choices=sorted(DESIGNS))
    p.add_argument("--position", default="context", choices=["full", "context"],
                   help="input at the last token of context + gold (full) or the last context token (context)")
    p.add_argument("--placement", type=int, default=0, help="layer whose attention output the predictor reads")
    for kind, (hid, ep, bs) in PAPER.items():
        p.add_argument(f"--hidden-{kind}", type=int, default=hid, help=f"hidden width of the {kind} network")
        p.add_argument(f"--epochs-{kind}", type=int, default=ep, help=f"most epochs for the {kind} network")
        p.add_argument(f"--batch-size-{kind}", type=int, default=bs)
    p.add_argument("--normalize", default="raw", choices=list(NORMALIZE),
                   help="the space targets (and the held-out truth) are normalised into: raw (the criterion's own "
                        "scores, the paper's), layer (min-max per example and layer, the paper's b1eL) or example "
                        "(per-example rank over every unit of a kind after the placement, onto [0, 1])")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--val-fraction", type=float, default=0.1, help="of the training examples, for early stopping")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--held-out", type=float, default=0.2, help="fraction of examples held out for the metrics")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--seed", type=int, default=0,
                   help="the predictor's training seed (validation split, initialisation, shuffling): its grid axis")
    p.add_argument("--held-out-seed", type=int, default=None,
                   help="seed of the held-out split by example id (default: --seed); the workflow fixes it to the "
                        "config's seed so that every predictor seed is scored on the same examples")
    add_model_args(p, model=False, gguf=False)
    p.add_argument("--out-dir", required=True, help="predictor.safetensors, curve.json, metrics.csv")
    p.set_defaults(func=cmd_train_predictor)

    p = sub.add_parser("predictor-size", help="parameters and training memory of the predictor designs at OPT "
                                              "shapes (prints a table)")
    p.add_argument("--sizes", nargs="+", default=["opt-1.3b", "opt-6.7b", "opt-13b", "opt-30b", "opt-66b"])
    p.add_argument("--hidden-heads", type=int, default=PAPER["heads"][0])
    p.add_argument("--hidden-neurons", type=int, default=PAPER["neurons"][0])
    p.add_argument("--batch-size-neurons", type=int, default=PAPER["neurons"][2])
    p.add_argument("--from-curve", help="a trained predictor's curve.json: add projected training hours")
    p.add_argument("--examples", type=int, default=3400, help="training examples of the projection")
    p.add_argument("--epochs-heads", type=int, default=PAPER["heads"][1])
    p.add_argument("--epochs-neurons", type=int, default=PAPER["neurons"][1])
    p.set_defaults(func=cmd_predictor_size)

    p = sub.add_parser("predictor-table", help="collect train-predictor metrics into one tidy CSV")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_predictor_table)
