"""Input dependence of head importance (paper Fig. 2), from the CSV of `shadowllm measure-dependence`; seaborn,
PNG and PDF."""
from __future__ import annotations

import numpy as np

from . import pyplot, save_all, sns


def input_dependence_figure(csv_path, out, title: str = ""):
    import pandas as pd

    from ..importance.dependence import read_dependence

    plt = pyplot()
    rv, hv, ref = read_dependence(csv_path)
    L, H = rv.shape
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    cmap = plt.get_cmap("viridis", L)
    heads = pd.DataFrame({"head": np.arange(L * H), "layer": np.repeat(np.arange(L), H)})
    for ax, vals, rr, pp, lab in ((axes[0], rv, ref["random_rank_var"], ref["powerlaw_rank_var_sim"],
                                   "rank variance across inputs"),
                                  (axes[1], hv, ref["random_hist_var_sim"], ref["powerlaw_hist_var_sim"],
                                   "rank-histogram variance (authors' statistic)")):
        sns().scatterplot(data=heads.assign(value=vals.ravel()), x="head", y="value", hue="layer",
                          palette={l: cmap(l) for l in range(L)}, s=10, linewidth=0, legend=False, ax=ax)
        for l in range(L):
            ax.axvspan(l * H, (l + 1) * H, color=cmap(l), alpha=0.08, lw=0)
        ax.axhline(rr, color="firebrick", ls="--", label="random")
        ax.axhline(pp, color="tab:blue", ls=":", label="power-law (shuffled)")
        ax.set_xlabel("head (ordered by layer)")
        ax.set_ylabel(lab)
        if vals.min() > 0:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(title or "input dependence of head importance")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, L - 1))
    fig.colorbar(sm, ax=axes, label="layer")
    return save_all(fig, out, [csv_path], dpi=150, bbox_inches="tight")
