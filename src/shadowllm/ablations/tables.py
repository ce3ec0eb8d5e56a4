"""The ablation table: one row per (grid point, task, metric), one column per axis (grid.COLUMNS)."""
from __future__ import annotations

import json
from pathlib import Path

from .grid import AXES, COLUMNS


def load_results(paths):
    """ablate JSONs -> tidy DataFrame; two results for one point, task and metric are an error."""
    import pandas as pd

    rows = []
    for p in paths:
        r = json.loads(Path(p).read_text())
        point = r.get("point")
        if point is None or set(point) != set(AXES):
            raise ValueError(f"{p}: no grid point with the axes {AXES} (got {point!r}); rerun `shadowllm ablate`")
        for task, metrics in r["results"].items():
            for metric, value in metrics.items():
                if metric != "sample_len":
                    rows.append({**point, "task": task, "metric": metric, "value": value})
    df = pd.DataFrame(rows, columns=COLUMNS)
    dup = df.duplicated(subset=AXES + ["task", "metric"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError(f"two results for one grid point, task and metric: {first[AXES + ['task', 'metric']].to_dict()}")
    return df.sort_values(AXES + ["task", "metric"], kind="stable").reset_index(drop=True)


def write_table(paths, out):
    from .. import provenance
    from ..io import atomic_path

    df = load_results(paths)
    with atomic_path(out, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    provenance.write_meta(out, config={"command": "ablation-table"}, inputs=paths)
    return df


STR_COLUMNS = ["model", "source", "design", "criterion", "shots", "style", "units", "protocol", "task", "metric"]


def read_table(table):
    """The tidy CSV with its axes kept as written: shots '0', '5', '0+5' and 'none' stay strings."""
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        return table.copy()
    df = pd.read_csv(table, dtype={c: str for c in STR_COLUMNS}, keep_default_na=False)
    return df.astype({"placement": int, "sparsity": float}).assign(value=pd.to_numeric(df["value"], errors="coerce"))


def mean_accuracy(df, metric: str = "acc"):
    """Mean over zero-shot tasks per grid point (points with every task only)."""
    d = df[df.metric == metric]
    n_tasks = d.task.nunique()
    g = d.groupby([a for a in AXES], dropna=False)["value"]
    out = g.agg(["mean", "count"]).reset_index()
    return out[out["count"] == n_tasks].drop(columns="count").rename(columns={"mean": "value"})
