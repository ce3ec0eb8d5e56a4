"""Predictor quality from the predictors table: rho per criterion (paper Fig. 5), per design (Fig. 4), and
rho / top-k recall against the placement layer (the paper's open question 1); seaborn, PNG and PDF."""
from __future__ import annotations

from pathlib import Path

from . import pyplot, save_all, sns

DESIGN_COLOURS = {"shadowllm": "tab:blue", "dejavu": "tab:red", "fullseq": "tab:green", "static": "tab:gray"}


def layer_mean(df, metric: str, sparsity=None):
    """Mean over layers of the per-layer metric (within-layer ranking: what per-layer top-k uses)."""
    d = df[(df.scope == "layer") & (df.metric == metric)]
    if sparsity is not None:
        d = d[(d.sparsity - sparsity).abs() < 1e-9]
    keys = ["criterion", "design", "position", "placement", "unit"]
    return d.groupby(keys, as_index=False)["value"].mean()


def _palette(levels, colours=None) -> dict:
    """{level: colour}: the given colours, seaborn's palette for levels without one."""
    default = sns().color_palette(n_colors=max(len(levels), 1))
    return {h: (colours or {}).get(h, default[i]) for i, h in enumerate(levels)}


def _bars(ax, d, groups, hue, colours=None):
    hues = list(dict.fromkeys(d[hue]))
    sns().barplot(data=d, x=groups[0], y="value", hue=hue, order=groups[1], hue_order=hues,
                  palette=_palette(hues, colours), saturation=1, errorbar=None, ax=ax)
    ax.set_xlabel("")
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
    written += save_all(fig, out / "predictors_by_criterion", [table], dpi=120, bbox_inches="tight")

    # 2. per design and input position
    fig, axes = plt.subplots(1, len(units), figsize=(5 * len(units), 3.4), squeeze=False)
    designs = list(dict.fromkeys(base.design))
    for ax, u in zip(axes[0], units):
        _bars(ax, base[(base.unit == u) & (base.criterion == c0)], ("design", designs), "position")
        ax.set(title=f"{title}: {c0}, {u}", ylabel="held-out Spearman rho (within layer)")
        ax.legend(fontsize=7, title="input at")
    written += save_all(fig, out / "predictors_by_design", [table], dpi=120, bbox_inches="tight")

    # 3. against the placement layer (input at the last context token)
    rec = layer_mean(df, "recall", sparsity=0.5)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, d, lab in ((axes[0], rho, "Spearman rho (within layer)"), (axes[1], rec, "top-k recall at 50 %")):
        d = d[(d.criterion == c0) & (d.position == pos)]
        d = d.sort_values(["design", "unit"]).assign(line=lambda t: t.design + " " + t.unit)
        lines = list(dict.fromkeys(d.line))
        if lines:
            sns().lineplot(data=d, x="placement", y="value", hue="line", style="line", hue_order=lines,
                           palette={n: DESIGN_COLOURS.get(n.split()[0], "k") for n in lines},
                           markers={n: "o" for n in lines}, dashes={n: "" if n.endswith("heads") else (4, 2)
                                                                    for n in lines}, errorbar=None, markersize=6, ax=ax)
        ax.set(xlabel="placement layer (layers up to it dense)", ylabel=lab, title=f"{title}: {c0}")
        ax.legend(fontsize=7)
    written += save_all(fig, out / "predictors_by_placement", [table], dpi=120, bbox_inches="tight")
    return written
