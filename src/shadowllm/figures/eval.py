"""Accuracy and perplexity against sparsity, from a tidy evaluation table (evaluate/tables.py)."""
from __future__ import annotations

from . import pyplot, save


def eval_vs_sparsity(table, out, title: str = ""):
    import pandas as pd

    from ..evaluate.tables import settings

    plt = pyplot()
    df = pd.read_csv(table)
    vary = settings(df)
    pruned = df[df.source != "dense"]
    groups = [g for _, g in pruned.groupby(vary)] if vary else [pruned]
    dense = df[df.source == "dense"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, g in enumerate(groups):
        d = pd.concat([dense, g])
        tag = " ".join(str(g[a].iloc[0]) for a in vary)
        ls = ["-", "--", ":", "-."][i % 4]
        for task, gt in d[d.metric == "acc"].groupby("task"):
            gt = gt.sort_values("sparsity")
            a1.plot(gt.sparsity * 100, gt.value * 100, marker="o", ls=ls, label=f"{task} {tag}".strip())
        gp = d[d.metric == "word_perplexity"].sort_values("sparsity")
        a2.plot(gp.sparsity * 100, gp.value, marker="o", ls=ls, color="k", label=tag or None)
    src = ", ".join(sorted(set(pruned.source))) or "none"
    a1.set(xlabel=f"sparsity (% of prunable heads and neurons, {src} mask)", ylabel="zero-shot accuracy (%)",
           title=f"{title}: accuracy")
    a1.legend(fontsize=7)
    a2.set(xlabel="sparsity (%)", ylabel="word perplexity", yscale="log", title=f"{title}: held-out perplexity")
    if vary:
        a2.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out, [table], dpi=120)
