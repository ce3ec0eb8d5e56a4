"""One predictor grid point trained and scored on held-out examples (train-predictor), and every point's metrics
in one table (collect-predictors)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .. import io, provenance

AXES = ["model", "criterion", "design", "position", "placement", "normalize", "seed"]
EVAL_CHUNK = 256  # held-out examples predicted and scored at a time


def held_out_rows(design, model, ts, test_idx, sparsities, placement: int, normalize: str) -> list[dict]:
    """Metrics on the held-out examples, predicted and scored chunk by chunk against the true scores normalised
    in the space the predictor ranks in."""
    import torch

    from .metrics import MetricAccumulator

    acc = MetricAccumulator(ts.n_heads, sparsities=sparsities, placement=placement, normalize=normalize)
    X = ts.X.take(test_idx)
    Y = {k: y.take(test_idx) for k, y in ts.Y.items()}
    for i in range(0, len(test_idx), EVAL_CHUNK):
        sl = slice(i, i + EVAL_CHUNK)
        acc.add(design.predict(model, X.take(sl)), torch.cat([Y[k][sl] for k in Y], -1))
    return acc.rows()


def train_and_score(traces, criterion: str, design: str, out_dir, per_kind: dict, position: str = "context",
                    placement: int = 0, normalize: str = "raw", lr: float = 1e-3, weight_decay: float = 0.01,
                    val_fraction: float = 0.1, patience: int = 5, held_out: float = 0.2, sparsities=(0.3, 0.5, 0.7),
                    seed: int = 0, held_out_seed: int | None = None, config: dict | None = None) -> dict:
    """Train one predictor on pooled traces, score it on the held-out examples and write predictor.safetensors,
    curve.json and metrics.csv; per_kind: {heads|neurons: {hidden, epochs, batch_size}}. Returns curve.json's
    summary with the metrics rows under "rows"."""
    from .data import held_out as split_held_out, load_trace_set
    from .designs import get_design
    from .train import train_predictor

    des = get_design(design)
    ts = load_trace_set(traces, criterion, position, placement, inputs=des.input_kind)
    held_seed = seed if held_out_seed is None else held_out_seed
    train_idx, test_idx = split_held_out(ts.ids, held_out, held_seed)
    t0 = time.time()
    ends = {}  # kind -> time its last epoch was logged

    def log(row):
        ends[row["kind"]] = time.time()
        print(json.dumps(row), flush=True)

    model, curve = train_predictor(des, ts.X.take(train_idx), {k: y.take(train_idx) for k, y in ts.Y.items()},
                                   placement=placement, per_kind=per_kind, lr=lr, weight_decay=weight_decay,
                                   val_fraction=val_fraction, patience=patience, seed=seed,
                                   normalize_targets=normalize, groups=[ts.ids[i] for i in train_idx.tolist()],
                                   log=log)
    seconds = time.time() - t0
    starts = dict(zip(ends, [t0, *list(ends.values())[:-1]]))
    kind_seconds = {k: ends[k] - starts[k] for k in ends}
    rows = held_out_rows(des, model, ts, test_idx, sparsities, placement, normalize)
    point = {"model": ts.model, "criterion": criterion, "design": design, "position": position,
             "placement": placement, "normalize": normalize, "seed": seed}
    n_params = {k: sum(p.numel() for p in des.parameters(model, k)) for k in ts.Y}
    epochs = {k: sum(r["kind"] == k for r in curve) for k in ts.Y}
    # seconds per parameter x example x epoch (validation included): what measure-predictor-size --from-curve scales
    cost = {k: kind_seconds[k] / (n_params[k] * len(train_idx) * epochs[k]) for k in ts.Y if n_params[k]}
    info = {**point, "held_out_seed": held_seed, "n_train": len(train_idx), "n_test": len(test_idx),
            "n_params": n_params, "target_scale": dict(getattr(model, "target_scale", {})),
            "train_seconds": seconds, "kind_seconds": kind_seconds, "epochs_run": epochs,
            "seconds_per_param_example_epoch": cost}
    out = Path(out_dir)
    inputs = [str(Path(t) / n) for t in traces for n in ("inputs.safetensors", f"{criterion}.safetensors")]
    if des.input_kind == "seq":
        inputs += [str(Path(t) / "sequence_inputs.safetensors") for t in traces]
    model.cpu().save(out / "predictor.safetensors", meta=point)
    io.write_json(out / "curve.json", {**info, "curve": curve})
    import pandas as pd

    df = pd.DataFrame([{**point, **r} for r in rows])
    with io.atomic_path(out / "metrics.csv", suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    for name in ("predictor.safetensors", "curve.json", "metrics.csv"):
        provenance.write_meta(out / name, config=config or {}, seed=seed, device="cpu", inputs=inputs)
    return {**info, "rows": df}


def collect_predictors(inputs, out):
    """Every train-predictor metrics.csv in one tidy CSV, sorted by the grid's axes; two rows for one cell are an
    error. Returns the DataFrame."""
    import pandas as pd

    df = pd.concat([pd.read_csv(p) for p in inputs], ignore_index=True)
    key = AXES + ["unit", "scope", "layer", "metric", "sparsity"]
    dup = df.duplicated(subset=key, keep=False)
    if dup.any():
        raise ValueError(f"two results for one cell: {df[dup].iloc[0][key].to_dict()}")
    df = df.sort_values(key, kind="stable", na_position="first")
    with io.atomic_path(out, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    provenance.write_meta(out, config={"command": "collect-predictors"}, inputs=inputs)
    return df
