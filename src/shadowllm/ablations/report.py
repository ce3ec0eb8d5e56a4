"""The ablation table as reviewable Markdown: one small table per question the paper asks, every number with its
protocol, and the dense model beside it."""
from __future__ import annotations

from ..layout.grid import AXES
from .tables import pooled_shots, reference_criterion


def _values(df, ppl_metric: str):
    """One row per point: perplexity and mean accuracy over the zero-shot tasks (when every task ran)."""
    from .tables import mean_accuracy

    keys = list(AXES)
    ppl = df[df.metric == ppl_metric].groupby(keys, as_index=False)["value"].first().rename(
        columns={"value": "ppl"})
    acc = mean_accuracy(df).rename(columns={"value": "acc"})
    return ppl.merge(acc, on=keys, how="outer")


def _table(v, label) -> str:
    """Rows = distinct label(point) values, columns = sparsity x (perplexity, mean accuracy)."""
    import pandas as pd

    if v.empty:
        return "(no points)\n"
    v = v.assign(name=[label(r) for _, r in v.iterrows()])
    out = []
    for name, g in v.groupby("name", sort=False):
        row = {"": name}
        for _, r in g.sort_values("sparsity").iterrows():
            s = f"{r.sparsity:.0%}"
            row[f"ppl {s}"] = "" if pd.isna(r.ppl) else f"{r.ppl:.4g}"
            row[f"acc {s}"] = "" if pd.isna(r.acc) else f"{r.acc:.3f}"
        out.append(row)
    t = pd.DataFrame(out).fillna("")
    cols = [""] + sorted([c for c in t.columns if c], key=lambda c: (float(c.split()[1][:-1]), c[:3] == "acc"))
    return t[cols].to_markdown(index=False) + "\n"


def report_markdown(df, model: str, ppl_metric: str = "word_perplexity") -> str:
    v = _values(df, ppl_metric)
    dense = v[v.source == "dense"]
    d_ppl = dense.ppl.iloc[0] if len(dense) else float("nan")
    d_acc = dense.acc.iloc[0] if len(dense) else float("nan")
    tasks = sorted(df[df.metric == "acc"].task.unique())
    ppl_task = ", ".join(sorted(df[df.metric == ppl_metric].task.unique()))
    pooled, crit0 = pooled_shots(v), reference_criterion(v)
    lines = [f"# {model}: the ablation grid", "",
             (f"{len(v)} grid points. Perplexity: {ppl_metric} on {ppl_task}; accuracy: mean `acc` over {tasks} "
             "(where a point ran every task). Protocols (what a mask may see): `none` input-independent "
             "(static, random), `gold` the oracle (the evaluated input with its gold answer: a ceiling), `sequence` "
             "the last input token of context + candidate (the authors' accuracy setting), `prompt` the last context "
             "token (one mask per question), `token` position t decides position t (causal decoding). Layers up to "
             "the placement stay dense; the same fraction of heads and of neurons is pruned."), "",
             f"Dense: perplexity {d_ppl:.4g}, mean accuracy {d_acc:.3f}.", ""]

    st = v[(v.source == "static") & (v.shots == pooled) & (v["style"] == "global")]
    lines += ["## Per criterion (static mask, global top-k)", ""]
    for units in ("both", "heads"):
        u = st[st.units == units]
        if len(u):
            lines += [f"Units: {units}.", "", _table(u, lambda r: r.criterion), ""]

    ref = v[(v.criterion.isin([crit0, "none"])) & (v.source != "dense")]
    src = ref[(ref.units == "both") & ((ref.source != "static") | ((ref["style"] == "global") & (ref.shots == pooled)))]
    lines += [f"## Mask sources and protocols ({crit0}, heads + neurons)", "",
              _table(src, lambda r: f"{r.source} ({r['style']}, {r.protocol})"), ""]

    sty = v[(v.source == "static") & (v.criterion == crit0) & (v.units == "both") & (v.shots == pooled)]
    lines += [f"## Selection style (static {crit0})", "", _table(sty, lambda r: r["style"]), ""]

    fs = v[(v.source == "static") & (v.criterion == crit0) & (v.units == "both") & (v["style"] == "global")]
    lines += [f"## Shots of the traces (static {crit0}, global)", "", _table(fs, lambda r: f"k = {r.shots}"), ""]

    acc = df[(df.metric == "acc")]
    if len(acc) and len(src):
        top = src[src.acc.notna()].sparsity.max()
        pts = src[(src.sparsity == top) & src.acc.notna()]
        import pandas as pd

        rows = []
        dense_acc = acc[acc.source == "dense"].set_index("task").value
        for _, r in pts.iterrows():
            m = acc
            for a in AXES:
                m = m[m[a] == r[a]]
            row = {"": f"{r.source} ({r['style']}, {r.protocol})"}
            row.update({t: f"{x - dense_acc.get(t, float('nan')):+.3f}" for t, x in zip(m.task, m.value)})
            rows.append(row)
        lines += [f"## Per task at {top:.0%}: accuracy minus dense", "",
                  pd.DataFrame(rows).to_markdown(index=False), ""]
    return "\n".join(lines)
