"""The ablation table: one row per (grid point, task, metric), one column per axis (grid.COLUMNS)."""
from __future__ import annotations

from ..layout.grid import AXES


def load_results(paths):
    """ablate-point JSONs -> tidy DataFrame (lm-eval's sample counts dropped); duplicates are an error."""
    from ..evaluate.tables import load_results as load

    return load(paths, axes=AXES, drop_metrics=("sample_len",), rerun="shadowllm ablate-point")


def write_table(paths, out):
    from ..evaluate.tables import write_table as write

    return write(paths, out, command="collect-ablations", axes=AXES, drop_metrics=("sample_len",),
                 rerun="shadowllm ablate-point")


STR_COLUMNS = ["model", "source", "design", "criterion", "normalize", "shots", "style", "units", "protocol", "task",
               "metric"]


def read_table(table):
    """The tidy CSV with its axes kept as written: shots '0', '5', '0+5' and 'none' stay strings."""
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        return table.copy()
    df = pd.read_csv(table, dtype={c: str for c in STR_COLUMNS}, keep_default_na=False)
    df = df.astype({c: t for c, t in (("placement", int), ("sparsity", float), ("seed", int)) if c in df})
    return df.assign(value=pd.to_numeric(df["value"], errors="coerce"))


def mean_accuracy(df, metric: str = "acc"):
    """Mean over zero-shot tasks per grid point (points with every task only)."""
    d = df[df.metric == metric]
    n_tasks = d.task.nunique()
    g = d.groupby([a for a in AXES], dropna=False)["value"]
    out = g.agg(["mean", "count"]).reset_index()
    return out[out["count"] == n_tasks].drop(columns="count").rename(columns={"mean": "value"})


def _mode(s, default: str) -> str:
    counts = s.value_counts()
    return min(counts.index, key=lambda v: (-counts[v], v)) if len(counts) else default


def reference_criterion(df) -> str:
    """The criterion the style, shots and sources comparisons hold fixed: plainact, else the most frequent."""
    c = df.loc[(df.source != "dense") & (df.criterion != "none"), "criterion"]
    return "plainact" if "plainact" in set(c) else _mode(c, "none")


def pooled_shots(df) -> str:
    """The shots label of the usual traces (e.g. '0+5'): the most frequent among the static rows."""
    return _mode(df.loc[df.source == "static", "shots"], "none")


SAMPLE_COLUMNS = ["task", "doc_id", "ll", "words", "bytes", "acc", "acc_norm", "gold", "label", "n_choices"]


def load_samples(paths):
    """ablate-point JSONs -> one row per (grid point, task, document): the per-document results the intervals resample
    (ll, words, bytes for perplexity; acc, acc_norm, gold, label for multiple choice). A point written before
    per-document results were kept is an error naming it."""
    import json
    from pathlib import Path

    import pandas as pd

    frames = []
    for p in paths:
        r = json.loads(Path(p).read_text())
        if "samples" not in r:
            raise ValueError(f"{p}: no per-document results (written by an older shadowllm); "
                             "rerun `shadowllm ablate-point`")
        point = r["point"]
        for task, cols in r["samples"].items():
            d = pd.DataFrame(cols)
            for a in AXES:
                d[a] = point[a]
            d["task"] = task
            frames.append(d)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    df = df.reindex(columns=AXES + SAMPLE_COLUMNS)
    key = AXES + ["task", "doc_id"]
    dup = df.duplicated(subset=key, keep=False)
    if dup.any():
        raise ValueError(f"two results for the same grid point, task and document: {df[dup].iloc[0][key].to_dict()}")
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def write_samples(paths, out):
    """load_samples(paths) written atomically as CSV (log-likelihoods at full precision), with its sidecar."""
    from .. import provenance
    from ..io import atomic_path

    df = load_samples(paths)
    with atomic_path(out, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.10g")
    provenance.write_meta(out, config={"command": "collect-ablations --samples"}, inputs=paths)
    return df


def read_samples(path):
    """The per-document table with the axes typed as in read_table."""
    import pandas as pd

    if isinstance(path, pd.DataFrame):
        return path.copy()
    df = pd.read_csv(path, dtype={c: str for c in STR_COLUMNS + ["label"]}, keep_default_na=False,
                     na_values={c: [""] for c in ("ll", "words", "bytes", "acc", "acc_norm", "gold", "n_choices")})
    return df.astype({c: t for c, t in (("placement", int), ("sparsity", float), ("seed", int)) if c in df})
