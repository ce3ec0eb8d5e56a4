"""Fig. 1 counterpart: mean zero-shot accuracy against decode latency, one curve per method through its
sparsities (markers filled and labelled by sparsity), PNG and PDF.

Accuracy comes from the ablation table (one model; mean over the zero-shot tasks, seeds pooled, one score
normalisation), latency from the latency table (the sliced decoder at a benchmarked shape); a method's point exists
where both tables have its sparsity. Each method pairs a decoder mode with the mask source and protocol that mode
implements:
  shadowllm-prompt <- predicted under `prompt`; shadowllm-token <- predicted under `token` (else `sequence`);
  dejavu <- dejavu under `token` (else `prompt`); static <- static; dense <- dense.
"""
from __future__ import annotations

from pathlib import Path

from ..ablations.tables import pooled_shots, read_table
from . import pyplot, save_all
from .ablations import mean_acc_points, only_normalize, pick_normalize
from .latency import MODE_STYLE, _load

PAIRS = {"dense": [("dense", "none")], "static": [("static", "none")],
         "shadowllm-prompt": [("predicted", "prompt")],
         "shadowllm-token": [("predicted", "token"), ("predicted", "sequence")],
         "dejavu": [("dejavu", "token"), ("dejavu", "prompt")]}


def tradeoff_points(ab, lat, latency_model: str | None = None):
    """Rows (mode, sparsity, acc, ms_per_token, protocol) where both tables have the point."""
    import pandas as pd

    acc = mean_acc_points(ab)   # one row per point: mean acc over the tasks, seeds pooled
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


def accuracy_vs_latency(ablations_csv, latency_csvs, out, title: str = "", latency_model: str | None = None,
                        normalize: str = "raw") -> list[Path]:
    """Write the figure as PNG and PDF beside `out` (its suffix replaced); return both paths."""
    ab = read_table(ablations_csv)
    norm = pick_normalize(ab, normalize)
    ab = only_normalize(ab, norm)
    lat = _load(latency_csvs)
    if latency_model is None and title in set(lat.model):   # the model's own shape, where it was benchmarked
        latency_model = title
    d, lm = tradeoff_points(ab, lat, latency_model)
    tag = f", normalize {norm}" if norm not in (None, "none") else ""
    return save_all(tradeoff_figure(d, lm, f"{title}: accuracy vs latency, one curve per method over sparsity{tag}"),
                    out, [ablations_csv, *latency_csvs], dpi=120, bbox_inches="tight")


def tradeoff_figure(d, lm, title: str):
    """tradeoff_points' rows drawn: one curve per mode through its sparsities, each marker labelled with its own."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if d.empty:
        ax.text(0.5, 0.5, "no method has both accuracy and latency at one sparsity", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="0.4")
        ax.set(xticks=[], yticks=[])
    else:
        cmap, top = plt.get_cmap("viridis"), max(0.9, d.sparsity.max())
        for mode, g in d.sort_values(["mode", "sparsity"], kind="stable").groupby("mode", sort=True):
            colour, marker = MODE_STYLE.get(mode, ("k", "o"))
            # the method's curve in order of sparsity; each marker filled by its sparsity and labelled with it
            ax.plot(g.ms_per_token, g.acc, color=colour, marker=marker, ms=8, lw=1.6, mfc="white", mew=1.5,
                    label=f"{mode} ({g.protocol.iloc[0]})", zorder=2)
            ax.scatter(g.ms_per_token, g.acc, c=[cmap(s / top) for s in g.sparsity], marker=marker, s=30,
                       linewidths=0, zorder=3)
            for x, y, s in zip(g.ms_per_token, g.acc, g.sparsity):
                ax.annotate(f"{s:.0%}", (x, y), xytext=(5, 4), textcoords="offset points", fontsize=6.5,
                            color=colour)
        fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(0, top), cmap=cmap), ax=ax, label="sparsity")
        ax.legend(fontsize=7, loc="best")
    ax.set(xlabel=f"decode ms / token ({lm}, sliced decoder)", ylabel="mean zero-shot acc")
    ax.set_title(title.strip(": "), fontsize=9)
    return fig
