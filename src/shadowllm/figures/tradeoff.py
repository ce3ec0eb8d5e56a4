"""Fig. 1 counterpart: mean zero-shot accuracy against decode latency, per method, coloured by sparsity (seaborn,
PNG and PDF).

Accuracy comes from the ablation table (one model), latency from the latency table (the sliced decoder at a
benchmarked shape); a method's point exists where both tables have its sparsity. Each method pairs a decoder mode
with the mask source and protocol that mode implements:
  shadowllm-prompt <- predicted under `prompt`; shadowllm-token <- predicted under `token` (else `sequence`);
  dejavu <- dejavu under `token` (else `prompt`); static <- static; dense <- dense.
"""
from __future__ import annotations

from pathlib import Path

from ..ablations.tables import pooled_shots
from . import pyplot, save_all, sns
from .latency import MODE_STYLE, _load

PAIRS = {"dense": [("dense", "none")], "static": [("static", "none")],
         "shadowllm-prompt": [("predicted", "prompt")],
         "shadowllm-token": [("predicted", "token"), ("predicted", "sequence")],
         "dejavu": [("dejavu", "token"), ("dejavu", "prompt")]}


def tradeoff_points(ab, lat, latency_model: str | None = None):
    """Rows (mode, sparsity, acc, ms_per_token, protocol) where both tables have the point."""
    import pandas as pd

    acc = ab[ab.metric == "acc"]
    crit = "plainact" if "plainact" in set(acc.criterion) else None
    if latency_model is None:  # the largest benchmarked shape with more than the dense row
        sizes = lat.groupby("model").size().sort_values()
        latency_model = sizes.index[-1] if len(sizes) else None
    lat = lat[lat.model == latency_model]
    rows = []
    for mode, pairs in PAIRS.items():
        for src, proto in pairs:
            a = acc[(acc.source == src) & (acc.protocol == proto)]
            if crit and src not in ("dense", "random"):
                a = a[a.criterion == crit]
            if src in ("predicted", "static"):  # heads and neurons, global, the usual traces
                a = a[(a["style"] == "global") & (a.units == "both")]
                if src == "static":
                    a = a[a.shots.astype(str) == pooled_shots(ab)]
            if a.empty:
                continue
            for s, g in a.groupby("sparsity"):
                m = lat[(lat["mode"] == mode) & ((lat.sparsity.astype(float) - float(s)).abs() < 1e-9)]
                if mode == "dense":
                    m = lat[lat["mode"] == "dense"]
                if len(m):
                    rows.append({"mode": mode, "sparsity": float(s), "acc": float(g.value.astype(float).mean()),
                                 "ms_per_token": float(m.ms_per_token.astype(float).median()), "protocol": proto})
            break
    return pd.DataFrame(rows, columns=["mode", "sparsity", "acc", "ms_per_token", "protocol"]), latency_model


def accuracy_vs_latency(ablations_csv, latency_csvs, out, title: str = "", latency_model: str | None = None
                        ) -> list[Path]:
    """Write the figure as PNG and PDF beside `out` (its suffix replaced); return both paths."""
    import pandas as pd

    plt = pyplot()
    ab = pd.read_csv(ablations_csv)
    lat = _load(latency_csvs)
    if latency_model is None and title in set(lat.model):   # the model's own shape, where it was benchmarked
        latency_model = title
    d, lm = tradeoff_points(ab, lat, latency_model)
    fig, ax = plt.subplots(figsize=(6, 4))
    if d.empty:
        ax.text(0.5, 0.5, "no method has both accuracy and latency at one sparsity", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="0.4")
    else:
        norm = plt.Normalize(0, max(0.9, d.sparsity.max()))
        for mode, g in d.sort_values(["mode", "sparsity"], kind="stable").groupby("mode", sort=True):
            colour, marker = MODE_STYLE.get(mode, ("k", "o"))
            # the mode's path in order of sparsity (not of latency), then its points filled by sparsity
            sns().lineplot(data=g, x="ms_per_token", y="acc", sort=False, estimator=None, errorbar=None,
                           color=colour, lw=0.8, alpha=0.6, ax=ax)
            sns().scatterplot(data=g, x="ms_per_token", y="acc", hue="sparsity", hue_norm=norm, palette="viridis",
                              marker=marker, edgecolor=colour, linewidth=1.2, s=60, legend=False, ax=ax,
                              label=f"{mode} ({g.protocol.iloc[0]})")
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="sparsity")
        ax.legend(fontsize=7)
    ax.set(xlabel=f"decode ms / token ({lm}, sliced decoder)", ylabel="mean zero-shot acc")
    ax.set_title(f"{title}: accuracy vs latency".strip(": "), fontsize=9)
    return save_all(fig, out, [ablations_csv, *latency_csvs], dpi=120, bbox_inches="tight")
