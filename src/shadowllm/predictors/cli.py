"""Subcommands: train-predictor (one grid point: train on pooled traces, score the held-out examples) and
predictor-table (every point's metrics in one tidy CSV)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .. import io, provenance

AXES = ["model", "criterion", "design", "position", "placement", "normalize"]


def _save_static(model, path, meta: dict) -> None:
    from safetensors.torch import save_file

    md = {"format_version": "1", "config": json.dumps({"design": "static", "n_layers": model.L,
                                                        "n_units": model.U, "placement": model.placement}),
          "meta": json.dumps(meta)}
    with io.atomic_path(path, suffix=".safetensors") as tmp:
        save_file({"table": model.table.contiguous()}, str(tmp), metadata=md)


def cmd_train_predictor(args) -> int:
    import resource

    from ..cli import args_config, set_threads
    from .data import held_out, load_trace_set
    from .designs import get_design
    from .metrics import evaluate_predictions
    from .train import train_predictor

    set_threads(args.threads)
    design = get_design(args.design)
    ts = load_trace_set(args.traces, args.criterion, args.position, args.placement,
                        per_layer=design.input_rank == 3)
    train_idx, test_idx = held_out(ts.ids, args.held_out, args.seed)
    t0 = time.time()
    model, curve = train_predictor(design, ts.X[train_idx], ts.Y[train_idx], placement=args.placement,
                                   hidden=args.hidden, n_heads=ts.n_heads, epochs=args.epochs, lr=args.lr,
                                   weight_decay=args.weight_decay, batch_size=args.batch_size,
                                   val_fraction=args.val_fraction, patience=args.patience, seed=args.seed,
                                   normalize_targets=args.normalize,
                                   log=lambda r: print(json.dumps(r), flush=True))
    seconds = time.time() - t0
    pred = design.predict(model, ts.X[test_idx])
    rows = evaluate_predictions(pred, ts.Y[test_idx], ts.n_heads, sparsities=args.sparsities,
                                placement=args.placement)
    point = {"model": ts.model, "criterion": args.criterion, "design": args.design, "position": args.position,
             "placement": args.placement, "normalize": args.normalize}
    n_params = sum(p.numel() for p in model.parameters())
    info = {**point, "n_train": len(train_idx), "n_test": len(test_idx), "n_params": n_params,
            "train_seconds": seconds}  # peak memory: the job's benchmark file (max_rss) and the line printed below
    out = Path(args.out_dir)
    cfg = args_config(args)
    inputs = [str(Path(t) / n) for t in args.traces for n in ("inputs.safetensors", f"{args.criterion}.safetensors")]
    if args.design == "static":
        _save_static(model, out / "predictor.safetensors", point)
    else:
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
    print(f"[predictor] {point}: {len(train_idx)} train / {len(test_idx)} held out, {n_params} parameters, "
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


def register(sub) -> None:
    from ..cli import add_model_args
    from .designs import DESIGNS

    p = sub.add_parser("train-predictor", help="train one predictor on importance traces; metrics on held-out "
                                               "examples (rho, tau, top-k recall)")
    p.add_argument("--traces", nargs="+", required=True, help="trace folders of one model (pooled)")
    p.add_argument("--criterion", required=True)
    p.add_argument("--design", required=True, choices=sorted(DESIGNS))
    p.add_argument("--position", default="context", choices=["full", "context"],
                   help="input at the last token of context + gold (full) or the last context token (context)")
    p.add_argument("--placement", type=int, default=0, help="layer whose attention output the predictor reads")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--normalize", default="per_layer", choices=["per_layer", "global"],
                   help="targets min-max per (example, layer) (the paper's b1eL) or per example (b1e)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-fraction", type=float, default=0.1, help="of the training examples, for early stopping")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--held-out", type=float, default=0.2, help="fraction of examples held out for the metrics")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    p.add_argument("--seed", type=int, default=0)
    add_model_args(p, model=False, gguf=False)
    p.add_argument("--out-dir", required=True, help="predictor.safetensors, curve.json, metrics.csv")
    p.set_defaults(func=cmd_train_predictor)

    p = sub.add_parser("predictor-table", help="collect train-predictor metrics into one tidy CSV")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_predictor_table)
