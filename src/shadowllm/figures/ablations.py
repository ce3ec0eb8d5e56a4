"""Ablation figures (paper Figs. 3, 6-10 and the protocols) from the ablation table (ablations/tables.py), drawn
with seaborn on tidy pandas frames, each as PNG and PDF.

Every figure is read off one long frame, `points`: one row per (grid point, quantity), quantity "perplexity"
(the perplexity task's ppl_metric) or "mean accuracy" (mean acc over the zero-shot tasks, points with every task
only). Each `*_data` returns the rows its figure draws, with a `line` column (the legend label) and, where the
figure has panels, a `panel` column. The comparisons hold fixed the reference criterion (plainact where present)
and the pooled shots label (the static rows' most frequent). Every file is always written: a panel without
data says why it is empty (the workflow declares each file as an output).
"""
from __future__ import annotations

from pathlib import Path

from ..ablations.grid import AXES, PROTOCOLS
from ..ablations.tables import (
    mean_accuracy,
    pooled_shots,
    read_table,
    reference_criterion,
)
from . import pyplot, save_all, sns

PPL, ACC = "perplexity", "mean accuracy"
# the sources compared, each in the style it is compared in (dejavu has local top-k only)
COMPARED = {"predicted": "global", "dejavu": "local", "static": "global", "oracle": "global", "random": "global"}
PREDICTORS = ("predicted", "dejavu")  # the sources that run under a protocol; the others have one pseudo-protocol
COLOURS = {"predicted": "tab:blue", "dejavu": "tab:red", "static": "tab:green", "oracle": "tab:purple",
           "random": "tab:gray"}
NO_DATA = {PPL: "no perplexity points in this grid", ACC: "no zero-shot points in this grid"}


def ppl_points(df, ppl_metric: str = "word_perplexity"):
    """AXES + value: one row per point that has perplexity (points under protocol 'prompt' have none)."""
    return df.loc[df.metric == ppl_metric, AXES + ["value"]].reset_index(drop=True)


def mean_acc_points(df):
    """AXES + value: mean acc over the zero-shot tasks, for the points that have every task of the table."""
    return mean_accuracy(df[AXES + ["task", "metric", "value"]])


def points(df, ppl_metric: str = "word_perplexity"):
    """AXES + quantity + value: both quantities of every point in one frame."""
    import pandas as pd

    return pd.concat([ppl_points(df, ppl_metric).assign(quantity=PPL), mean_acc_points(df).assign(quantity=ACC)],
                     ignore_index=True)


def dense_values(df, ppl_metric: str = "word_perplexity") -> dict:
    """{quantity: the dense model's value, or None}: the dashed reference line of every line panel."""
    p = points(df, ppl_metric)
    p = p[p.source == "dense"]
    return {q: (float(p.loc[p.quantity == q, "value"].mean()) if (p.quantity == q).any() else None) for q in (PPL, ACC)}


def _eq(d, **eq):
    for k, v in eq.items():
        d = d[d[k] == v]
    return d


def criteria_data(df, ppl_metric: str = "word_perplexity"):
    """Figs. 6-7: static global masks of every criterion on the pooled traces; line = criterion, panel = units."""
    d = _eq(points(df, ppl_metric), source="static", style="global", shots=pooled_shots(df))
    return d.assign(line=d.criterion, panel=d.units)


def styles_data(df, ppl_metric: str = "word_perplexity"):
    """Fig. 3: the reference criterion's static masks, units both; line = style (local, global, hybrid)."""
    d = _eq(points(df, ppl_metric), source="static", criterion=reference_criterion(df), units="both",
            shots=pooled_shots(df))
    return d.assign(line=d["style"], panel=d.quantity)


def fewshot_data(df, ppl_metric: str = "word_perplexity"):
    """Fig. 8: the reference criterion's static global masks, units both; line = the traces' shots label."""
    d = _eq(points(df, ppl_metric), source="static", criterion=reference_criterion(df), style="global",
            units="both")
    return d.assign(line=d.shots, panel=d.quantity)


def _compared(d, df):
    """Rows of the compared sources at the reference criterion, units both, each in its style (any protocol)."""
    keep = (d.source.map(COMPARED).eq(d["style"]) & d.criterion.isin([reference_criterion(df), "none"])
            & (d.units == "both") & d.shots.isin([pooled_shots(df), "none"]))
    d = d[keep]
    return d.assign(line=d.source + " (" + d["style"] + ")")


def sources_data(df, ppl_metric: str = "word_perplexity"):
    """Fig. 9: the sources side by side, the predictors under the authors' protocol (sequence)."""
    d = _compared(points(df, ppl_metric), df)
    d = d[~d.source.isin(PREDICTORS) | (d.protocol == "sequence")]
    return d.assign(panel=d.quantity)


def protocols_data(df, ppl_metric: str = "word_perplexity"):
    """The predictors under each protocol (panel = protocol); the other sources carry panel 'all' (every panel)."""
    d = _compared(points(df, ppl_metric), df)
    return d.assign(panel=d.protocol.where(d.source.isin(PREDICTORS), "all"))


def per_task_data(df):
    """Fig. 10: acc(point) - acc(dense) per zero-shot task, at the highest sparsity with zero-shot results of the
    reference criterion; the predictors under protocol 'prompt' (the mask never sees the answer: the fair one)."""
    acc = df[df.metric == "acc"]
    dense = acc[acc.source == "dense"].groupby("task")["value"].mean()
    d = _compared(acc, df)
    d = d[~d.source.isin(PREDICTORS) | (d.protocol == "prompt")]
    at = d[d.criterion == reference_criterion(df)] if (d.criterion == reference_criterion(df)).any() else d
    if len(at):
        d = d[(d.sparsity - at.sparsity.max()).abs() < 1e-9]
    return d.assign(value=d.value - d.task.map(dense).astype(float)).dropna(subset=["value"]).sort_values(["task", "line"])


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _palette(labels) -> dict:
    """One colour per label, the same in every panel of a figure (source colours for 'source (style)')."""
    labels = sorted(set(labels))
    return {lab: COLOURS.get(lab.split(" ")[0], f"C{i % 10}") for i, lab in enumerate(labels)}


def _lines(ax, d, quantity, dense, colours, ppl_metric, ls="-", alpha=1.0) -> None:
    """One line per d.line against sparsity (%), markers so one-sparsity lines still show; log y for perplexity."""
    d = d.assign(pct=d.sparsity * 100).sort_values(["line", "sparsity"], kind="stable")
    sns().lineplot(data=d, x="pct", y="value", hue="line", hue_order=sorted(set(d.line)), palette=colours,
                   marker="o", linestyle=ls, alpha=alpha, errorbar=None, ax=ax)   # no bootstrap: same bytes
    if dense is not None:
        ax.axhline(dense, color="k", ls="--", lw=1, label="dense")
        ax.update_datalim([(0, dense)], updatex=False)   # the reference line stays inside the axes
        ax.autoscale_view()
    if quantity == PPL:
        ax.set_yscale("log")
    ax.set(xlabel="sparsity (%)", ylabel=ppl_metric.replace("_", " ") if quantity == PPL else "mean zero-shot acc")
    ax.legend(fontsize=7)   # seaborn's per-call legend replaced by one over every call (no 'line' title)


def _panels(plt, d, panels, quantity_of, dense, ppl_metric, title, empty=NO_DATA):
    """A row of line panels: panel name -> (rows with d.panel == name, quantity_of(name))."""
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.5 * max(len(panels), 1), 3.4), squeeze=False)
    colours = _palette(d.line)
    for ax, name in zip(axes[0], panels):
        q = quantity_of(name)
        g = d[(d.panel == name) & (d.quantity == q)]
        ax.set_title(q if name == q else f"units {name}", fontsize=9)
        if g.empty:
            _empty(ax, empty[q])
        else:
            _lines(ax, g, q, dense[q], colours, ppl_metric)
    if not panels:
        _empty(axes[0][0], "no points in this grid")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _protocols_fig(plt, d, dense, ppl_metric, title):
    """2 x 3: rows mean accuracy, perplexity; columns the protocols; the other sources dashed in every panel."""
    fig, axes = plt.subplots(2, len(PROTOCOLS), figsize=(4.5 * len(PROTOCOLS), 6.5), squeeze=False)
    colours = _palette(d.line)
    for row, q in zip(axes, (ACC, PPL)):
        for ax, proto in zip(row, PROTOCOLS):
            own, ref = d[(d.panel == proto) & (d.quantity == q)], d[(d.panel == "all") & (d.quantity == q)]
            ax.set_title(f"{proto}: {q}", fontsize=9)
            if own.empty:
                _empty(ax, "no perplexity: a window has no prompt" if (proto, q) == ("prompt", PPL)
                       else f"no predictor points under {proto}")
                continue
            if len(ref):
                _lines(ax, ref, q, None, colours, ppl_metric, ls="--", alpha=0.5)
            _lines(ax, own, q, dense[q], colours, ppl_metric)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _per_task_fig(plt, d, title):
    """Bars: x = task, one bar per source label, height = acc change vs dense."""
    tasks, labels = sorted(set(d.task)), sorted(set(d.line))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(tasks) + 2), 3.6))
    if d.empty:
        _empty(ax, NO_DATA[ACC])
    else:
        sns().barplot(data=d, x="task", y="value", hue="line", order=tasks, hue_order=labels,
                      palette=_palette(labels), saturation=1, errorbar=None, ax=ax)   # mean, no bootstrap
        ax.axhline(0, color="k", lw=0.8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        for t in ax.get_xticklabels():
            t.set_ha("right")
        ax.set(xlabel="", ylabel="acc - dense acc")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    sp = f", sparsity {d.sparsity.iloc[0]:.0%}" if len(d) else ""
    ax.set_title(f"{title}: change in accuracy per task{sp} (predictors: prompt protocol)", fontsize=9)
    fig.tight_layout()
    return fig


def ablation_figures(table, outdir, title: str = "", ppl_metric: str = "word_perplexity") -> list[Path]:
    """Write the seven ablation figures, each as PNG and PDF, into outdir; return the 14 paths."""
    plt = pyplot()
    df = read_table(table)
    inputs = [] if not isinstance(table, (str, Path)) else [table]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    dense, ref, pooled = dense_values(df, ppl_metric), reference_criterion(df), pooled_shots(df)
    crit = criteria_data(df, ppl_metric)
    units = [u for u in ("both", "heads", "neurons") if u in set(crit.units)]
    by_q = [PPL, ACC]
    figs = {
        "ablation_criteria_ppl": _panels(plt, crit, units, lambda u: PPL, dense, ppl_metric,
                                         f"{title}: static global masks per criterion (shots {pooled})"),
        "ablation_criteria_acc": _panels(plt, crit, units, lambda u: ACC, dense, ppl_metric,
                                         f"{title}: static global masks per criterion (shots {pooled})"),
        "ablation_styles": _panels(plt, styles_data(df, ppl_metric), by_q, lambda q: q, dense, ppl_metric,
                                   f"{title}: pruning style ({ref}, static, units both, shots {pooled})"),
        "ablation_fewshot": _panels(plt, fewshot_data(df, ppl_metric), by_q, lambda q: q, dense, ppl_metric,
                                    f"{title}: shots of the traces ({ref}, static global, units both)"),
        "ablation_sources": _panels(plt, sources_data(df, ppl_metric), by_q, lambda q: q, dense, ppl_metric,
                                    f"{title}: mask sources ({ref}, units both, predictors: sequence protocol)"),
        "ablation_protocols": _protocols_fig(plt, protocols_data(df, ppl_metric), dense, ppl_metric,
                                             f"{title}: protocols of the predictors ({ref}, units both)"),
        "ablation_per_task": _per_task_fig(plt, per_task_data(df), title),
    }
    # save_all closes the figure after the PNG; a closed figure still saves the PDF
    return [p for stem, fig in figs.items() for p in save_all(fig, out / stem, inputs, dpi=120, bbox_inches="tight")]
