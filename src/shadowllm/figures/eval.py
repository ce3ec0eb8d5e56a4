"""Accuracy and perplexity against sparsity, from a tidy evaluation table (evaluate/tables.py); seaborn, PNG and
PDF."""
from __future__ import annotations

from . import pyplot, save_all, sns

DASHES = ["", (4, 1.5), (1, 1), (3, 1.25, 1.5, 1.25)]   # -, --, :, -. : one per setting of the pruned rows


def eval_vs_sparsity(table, out, title: str = ""):
    import pandas as pd

    from ..evaluate.tables import settings

    plt = pyplot()
    df = pd.read_csv(table)
    vary = settings(df)
    pruned = df[df.source != "dense"]
    groups = [g for _, g in pruned.groupby(vary)] if vary else [pruned]
    dense = df[df.source == "dense"]
    # one line per setting (dense rows joined to each), named by its task and setting, dashed by setting
    d = pd.concat([pd.concat([dense, g]).assign(i=i, tag=" ".join(str(g[a].iloc[0]) for a in vary))
                   for i, g in enumerate(groups)], ignore_index=True)
    d = d.assign(pct=d.sparsity * 100, line=(d.task + " " + d.tag).str.strip(), dash=[DASHES[i % 4] for i in d.i])
    acc = d[d.metric == "acc"].sort_values(["i", "task"], kind="stable").assign(value=lambda t: t.value * 100)
    many = acc.line.nunique() > 8   # a long legend goes beside the panel, not over its lines
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15 if many else 10, 3.8))
    for ax, t, hue, colour in ((a1, acc, "line", None), (a2, d[d.metric == "word_perplexity"], "tag", "k")):
        dashes = dict(zip(t[hue], t.dash))
        if dashes:
            sns().lineplot(data=t, x="pct", y="value", hue=hue, style=hue, hue_order=list(dashes),
                           style_order=list(dashes), palette=colour and dict.fromkeys(dashes, colour), dashes=dashes,
                           markers=dict.fromkeys(dashes, "o"), errorbar=None, markersize=6,
                           legend=ax is a1 or bool(vary), ax=ax)
    src = ", ".join(sorted(set(pruned.source))) or "none"
    a1.set(xlabel=f"sparsity (% of prunable heads and neurons, {src} mask)", ylabel="zero-shot accuracy (%)",
           title=f"{title}: accuracy")
    a1.legend(fontsize=7, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1)} if many else {}))
    a2.set(xlabel="sparsity (%)", ylabel="word perplexity", yscale="log", title=f"{title}: held-out perplexity")
    if vary:
        a2.legend(fontsize=7)
    fig.tight_layout()
    return save_all(fig, out, [table], dpi=120)
