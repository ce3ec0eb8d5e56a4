"""Tidy results tables: one row per (grid point, task, metric), one column per axis of the grid."""
from __future__ import annotations

import json
from pathlib import Path

# The axes of a grid point, in the order of the table's columns and of its sort.
AXES = ["model", "source", "criterion", "placement", "style", "units", "protocol", "sparsity"]
COLUMNS = AXES + ["task", "metric", "value"]
DENSE_POINT = {"source": "dense", "criterion": "none", "placement": 0, "style": "none", "units": "none",
               "protocol": "none", "sparsity": 0.0}


def load_results(paths, axes=AXES, drop_metrics=(), rerun="shadowllm evaluate-model"):
    """Result JSONs ({"point": {axis: value}, "results": {task: {metric: value}}}) -> tidy DataFrame with the
    columns axes + task, metric, value; two results for the same point, task and metric are an error."""
    import pandas as pd

    rows = []
    for p in paths:
        r = json.loads(Path(p).read_text())
        point = r.get("point")
        if point is None or set(point) != set(axes):
            raise ValueError(f"{p}: no grid point with the axes {list(axes)} (got {point!r}); rerun `{rerun}`")
        for task, metrics in r["results"].items():
            for metric, value in metrics.items():
                if metric not in drop_metrics:
                    rows.append({**point, "task": task, "metric": metric, "value": value})
    df = pd.DataFrame(rows, columns=list(axes) + ["task", "metric", "value"])
    key = list(axes) + ["task", "metric"]
    dup = df.duplicated(subset=key, keep=False)
    if dup.any():
        raise ValueError(f"two results for the same grid point, task and metric: {df[dup].iloc[0][key].to_dict()}")
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def settings(df) -> list[str]:
    """The axes other than model and sparsity that vary among the pruned rows."""
    pruned = df[df.source != "dense"]
    return [a for a in AXES if a not in ("model", "sparsity") and pruned[a].nunique() > 1]


def pivot(df, metrics=("acc", "acc_norm", "word_perplexity", "bits_per_byte")):
    """(task, metric) x grid point, with no aggregation (one value per cell, or an error)."""
    d = df[df.metric.isin(list(metrics))].copy()
    vary = settings(df)
    d["column"] = [(" ".join(str(r[a]) for a in vary) + " " if vary and r["source"] != "dense" else "")
                   + f"{r['sparsity']:.0%}" for _, r in d.iterrows()]
    d["order"] = list(zip(*(d[a] for a in vary + ["sparsity"]))) if vary else d["sparsity"]
    cols = list(dict.fromkeys(d.sort_values("order", kind="stable")["column"]))
    return d.pivot(index=["task", "metric"], columns="column", values="value")[cols]


def write_table(paths, out, command: str = "collect-eval", **load_kw) -> "object":
    """load_results(paths, **load_kw) written atomically as CSV, with its sidecar."""
    from .. import provenance
    from ..io import atomic_path

    df = load_results(paths, **load_kw)
    with atomic_path(out, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    provenance.write_meta(out, config={"command": command}, inputs=paths)
    return df


def report_markdown(df, model: str, train: dict | None = None) -> str:
    lines = [f"# {model}: evaluation", ""]
    if train:
        c = train["config"]
        lines += [f"Tiny OPT trained here: {train['params'] / 1e6:.2f}M parameters, {c['n_layers']} layers, "
                  f"{c['n_heads']} heads, d_model {c['d_model']}, FFN {c['ffn_dim']}, context {c['seq_len']}, "
                  f"{c['steps']} steps of {c['batch_size']}x{c['seq_len']} tokens ({train['epochs']:.2f} epochs) "
                  f"in {train['train_seconds'] / 60:.1f} min; held-out token perplexity "
                  f"**{train['test_perplexity']:.1f}** over {train['test_tokens']} tokens.", ""]
    pruned = df[df.source != "dense"]
    fixed = {a: pruned[a].iloc[0] for a in ("source", "criterion", "placement", "style", "units", "protocol")
             if len(pruned) and pruned[a].nunique() == 1}
    desc = ", ".join(f"{k} {v}" for k, v in fixed.items())
    lines += [f"Columns: sparsity of the mask ({desc}; layers up to the placement kept); "
              "0% is the unpruned model.", "", pivot(df).to_markdown(floatfmt=".4g"), ""]
    return "\n".join(lines)
