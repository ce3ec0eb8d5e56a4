"""Parameters, training memory and projected training time of the predictor designs at real OPT shapes, counted
without building anything (measure-predictor-size)."""
from __future__ import annotations

import json
from pathlib import Path

DESIGNS = ("shadowllm", "dejavu", "fullseq")


def size_rows(sizes, hidden_heads: int, hidden_neurons: int, batch_neurons: int) -> list[dict]:
    """One row per OPT size and design.

    Training keeps every weight (fp32) and, for the kind being trained, its gradient and AdamW's two moments:
    peak = 4 B x all parameters + 12 B x the larger kind's. Targets stream by batch: fp32 [batch, L, F]."""
    from ..shapes import OPT_SHAPES
    from .model import n_parameters

    rows = []
    for name in sizes:
        if name not in OPT_SHAPES:
            raise ValueError(f"unknown OPT size {name!r}; expected one of {sorted(OPT_SHAPES)}")
        s = OPT_SHAPES[name]
        for design in DESIGNS:
            n = n_parameters(design, s.hidden, s.layers, s.heads, s.ffn, hidden_heads, hidden_neurons)
            total = sum(n.values())
            rows.append({"size": name, "design": design, "heads_M": n["heads"] / 1e6, "neurons_M": n["neurons"] / 1e6,
                         "weights_GiB": 4 * total / 2 ** 30,
                         "train_peak_GiB": (4 * total + 12 * max(n.values())) / 2 ** 30,
                         "targets_MB_per_example": 2 * s.layers * (s.heads + s.ffn) / 1e6,
                         "neuron_batch_MB": 4 * batch_neurons * s.layers * s.ffn / 1e6})
    return rows


def project_hours(df, curve, examples: int, epochs: dict):
    """The rows of the curve's design with train_hours: its measured seconds per parameter x example x epoch of
    each kind, scaled to each size; returns (rows, the curve's design)."""
    info = json.loads(Path(curve).read_text())
    cost = info.get("seconds_per_param_example_epoch")
    if not cost:
        raise ValueError(f"{curve}: no seconds_per_param_example_epoch (a trained network's curve.json)")
    df = df[df.design == info["design"]].copy()
    df["train_hours"] = sum(df[f"{k}_M"] * 1e6 * cost[k] * examples * epochs[k] for k in cost) / 3600
    return df, info["design"]
