"""Predictor quality from the predictors table: rho per criterion (paper Fig. 5), per design (Fig. 4), and
rho / top-k recall against the placement layer (the paper's open question 1)."""
from __future__ import annotations

from pathlib import Path

from . import pyplot, save

DESIGN_COLOURS = {"shadowllm": "tab:blue", "dejavu": "tab:red", "fullseq": "tab:green", "static": "tab:gray"}


def layer_mean(df, metric: str, sparsity=None):
    """Mean over layers of the per-layer metric (within-layer ranking: what per-layer top-k uses)."""
    d = df[(df.scope == "layer") & (df.metric == metric)]
    if sparsity is not None:
        d = d[(d.sparsity - sparsity).abs() < 1e-9]
    keys = ["criterion", "design", "position", "placement", "unit"]
    return d.groupby(keys, as_index=False)["value"].mean()


def _bars(ax, d, groups, hue, colours=None):
    import numpy as np

    hues = list(dict.fromkeys(d[hue]))
    w = 0.8 / max(len(hues), 1)
    for i, h in enumerate(hues):
        dh = d[d[hue] == h].set_index(groups[0]).reindex(groups[1])
        ax.bar(np.arange(len(groups[1])) + i * w - 0.4 + w / 2, dh["value"], w, label=str(h),
               color=(colours or {}).get(h))
    ax.set_xticks(range(len(groups[1])))
    ax.set_xticklabels(groups[1], rotation=30, ha="right", fontsize=8)


def predictor_figures(table, outdir, title: str = "") -> list[Path]:
    import pandas as pd

    plt = pyplot()
    df = pd.read_csv(table)
    out = Path(outdir)
    rho = layer_mean(df, "spearman")
    base = rho[rho.placement == rho.placement.min()]
    written = []
    units = [u for u in ("heads", "neurons") if u in set(base.unit)]

    # the criterion of the design and placement figures: the one swept over placements (plainact on ties)
    n_pl = rho.groupby("criterion").placement.nunique()
    c0 = max(n_pl.index, key=lambda c: (n_pl[c], c == "plainact"))
    # 1. per criterion (input at the last context token where present)
    pos = "context" if "context" in set(base.position) else base.position.iloc[0]
    fig, axes = plt.subplots(1, len(units), figsize=(6 * len(units), 3.6), squeeze=False)
    crits = list(dict.fromkeys(base.criterion))
    for ax, u in zip(axes[0], units):
        _bars(ax, base[(base.unit == u) & (base.position == pos)], ("criterion", crits), "design", DESIGN_COLOURS)
        ax.set(title=f"{title}: {u}, input at {pos}", ylabel="held-out Spearman rho (within layer)")
        ax.legend(fontsize=7)
    written.append(save(fig, out / "predictors_by_criterion.png", [table], dpi=120, bbox_inches="tight"))

    # 2. per design and input position
    fig, axes = plt.subplots(1, len(units), figsize=(5 * len(units), 3.4), squeeze=False)
    designs = list(dict.fromkeys(base.design))
    for ax, u in zip(axes[0], units):
        _bars(ax, base[(base.unit == u) & (base.criterion == c0)], ("design", designs), "position")
        ax.set(title=f"{title}: {c0}, {u}", ylabel="held-out Spearman rho (within layer)")
        ax.legend(fontsize=7, title="input at")
    written.append(save(fig, out / "predictors_by_design.png", [table], dpi=120, bbox_inches="tight"))

    # 3. against the placement layer (input at the last context token)
    rec = layer_mean(df, "recall", sparsity=0.5)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, d, lab in ((axes[0], rho, "Spearman rho (within layer)"), (axes[1], rec, "top-k recall at 50 %")):
        d = d[(d.criterion == c0) & (d.position == pos)]
        for (design, u), g in d.groupby(["design", "unit"]):
            g = g.sort_values("placement")
            ax.plot(g.placement, g.value, marker="o", color=DESIGN_COLOURS.get(design),
                    ls="-" if u == "heads" else "--", label=f"{design} {u}")
        ax.set(xlabel="placement layer (layers up to it dense)", ylabel=lab, title=f"{title}: {c0}")
        ax.legend(fontsize=7)
    written.append(save(fig, out / "predictors_by_placement.png", [table], dpi=120, bbox_inches="tight"))
    return written
