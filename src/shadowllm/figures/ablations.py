"""Ablation figures (paper Figs. 3, 6-10 and the protocols) from the ablation table (ablations/tables.py), drawn
with matplotlib on seaborn's theme from tidy pandas frames, each as PNG and PDF.

Every line figure is read off one long frame, `points`: one row per (grid point, quantity), quantity "perplexity"
(the perplexity task's ppl_metric) or "mean accuracy" (mean acc over the zero-shot tasks, points with every task
only). Each `*_data` returns the rows its figure draws, with a `line` column (the legend label) and a `panel`
column. The comparisons hold fixed the reference criterion (plainact where present) and the pooled shots label
(the static rows' most frequent).

Newer grids add two axes: `normalize` (the score space: raw / layer / example; 'none' for dense and random) and
`seed` (the predictor's seed). The figures group by whichever axes the table has: one normalisation is drawn
(`raw` unless asked otherwise), and the seeds of a point are pooled (mean accuracy; geometric mean perplexity, as
report/stats.py pools them).

Given the per-document table (`samples`), every line carries its 95 % bootstrap interval (report/stats.py: a band,
or an error bar at a lone point), the accuracy panels a majority-class baseline (the mean over the tasks of
always answering each task's most frequent gold answer) and Fig. 10 the paired interval of ShadowLLM - DejaVu.
Panels without data are left out; a figure without any data is one panel saying so (the workflow declares every
file as an output).
"""
from __future__ import annotations

import sys
from math import ceil
from pathlib import Path

import numpy as np

from ..layout.grid import AXES, PROTOCOLS
from ..ablations.tables import pooled_shots, read_samples, read_table, reference_criterion
from . import pyplot, save_all
from ..layout.figures import names

PPL, ACC = "perplexity", "mean accuracy"
NEW_AXES = ("normalize", "seed")   # axes of newer grids, used where the table has them
POOLED = ("seed",)                 # replicates of one point (report/stats.py POOLED)
# the sources compared, each in the style it is compared in (dejavu has local top-k only)
COMPARED = {"predicted": "global", "dejavu": "local", "static": "global", "oracle": "global", "random": "global"}
PREDICTORS = ("predicted", "dejavu")  # the sources that run under a protocol; the others have one pseudo-protocol
COLOURS = {"predicted": "tab:blue", "dejavu": "tab:red", "static": "tab:green", "oracle": "tab:purple",
           "random": "tab:gray", "mean": "k"}
NAMES = {"predicted": "ShadowLLM (predicted)", "static": "static"}
NO_DATA = "no points for this figure in this grid"
GAP = "ShadowLLM - DejaVu acc"
MEAN = "mean over tasks"
REFERENCES = ("dense", "majority class", "no difference")   # the reference lines, listed last in a legend


def keys(df) -> list[str]:
    """The grid axes the frame has: AXES, then the newer ones (normalize, seed) where present."""
    return [a for a in AXES if a in df.columns] + [a for a in NEW_AXES if a in df.columns and a not in AXES]


def point_keys(df) -> list[str]:
    """The axes that name a point (its seeds pooled)."""
    return [a for a in keys(df) if a not in POOLED]


def pick_normalize(df, want: str = "raw") -> str | None:
    """The normalisation drawn: `want` where the table has it, else its first; None without a normalize axis."""
    if df is None or "normalize" not in df.columns:
        return None
    have = sorted(set(df.normalize.astype(str)) - {"none"})
    return want if want in have or not have else have[0]


def only_normalize(df, norm: str | None):
    """The rows of one normalisation (and the 'none' of dense and random)."""
    if df is None or norm is None or "normalize" not in df.columns:
        return df
    return df[df.normalize.astype(str).isin([norm, "none"])]


def _pool(d, quantity: str, by=()):
    """One row per point (and `by`), its seeds pooled: mean accuracy, geometric mean perplexity."""
    if "seed" not in d.columns or d.empty:
        return d.drop(columns=[c for c in POOLED if c in d.columns]).reset_index(drop=True)
    agg = (lambda v: float(np.exp(np.log(v.astype(float)).mean()))) if quantity == PPL else "mean"
    return d.groupby(point_keys(d) + list(by), dropna=False, sort=True)["value"].agg(agg).reset_index()


def ppl_points(df, ppl_metric: str = "word_perplexity"):
    """Axes + value: one row per point that has perplexity (points under protocol 'prompt' have none)."""
    return _pool(df.loc[df.metric == ppl_metric, keys(df) + ["value"]], PPL)


def task_acc(df):
    """Axes + task + value: each point's acc per zero-shot task, seeds pooled."""
    return _pool(df.loc[df.metric == "acc", keys(df) + ["task", "value"]], ACC, by=["task"])


def mean_acc_points(df):
    """Axes + value: mean acc over the zero-shot tasks, for the points (each seed) that have every task."""
    d = df[df.metric == "acc"]
    g = d.groupby(keys(d), dropna=False, sort=True)["value"].agg(["mean", "count"]).reset_index()
    g = g[g["count"] == d.task.nunique()].drop(columns="count").rename(columns={"mean": "value"})
    return _pool(g, ACC)


def points(df, ppl_metric: str = "word_perplexity"):
    """Axes + quantity + value: both quantities of every point in one frame."""
    import pandas as pd

    return pd.concat([ppl_points(df, ppl_metric).assign(quantity=PPL), mean_acc_points(df).assign(quantity=ACC)],
                     ignore_index=True)


def dense_values(df, ppl_metric: str = "word_perplexity") -> dict:
    """{quantity: the dense model's value, or None}: the dashed reference line of every line panel."""
    p = points(df, ppl_metric)
    p = p[p.source == "dense"]
    return {q: (float(p.loc[p.quantity == q, "value"].mean()) if (p.quantity == q).any() else None) for q in (PPL, ACC)}


def majority_value(samples, tasks) -> float | None:
    """Mean over `tasks` of each task's majority-class accuracy (stats.majority_baseline); None unless every task
    has one."""
    from ..report.stats import majority_baseline

    if samples is None or not len(tasks):
        return None
    base = [majority_baseline(samples, t) for t in sorted(tasks)]
    return float(np.mean([b[0] for b in base])) if all(base) else None


def _eq(d, **eq):
    for k, v in eq.items():
        d = d[d[k] == v]
    return d


def criteria_data(df, ppl_metric: str = "word_perplexity"):
    """Figs. 6-7: static global masks of every criterion on the pooled traces; line = criterion, panel = units."""
    d = _eq(points(df, ppl_metric), source="static", style="global", shots=pooled_shots(df))
    return d.assign(line=d.criterion, panel=d.units)


def main_units(df) -> str:
    """The units the comparisons hold fixed: both where the grid pruned them, else its most frequent (heads-only)."""
    u = df.loc[df.source != "dense", "units"].astype(str)
    return "both" if (u == "both").any() or u.empty else u.value_counts().index[0]


def styles_data(df, ppl_metric: str = "word_perplexity"):
    """Fig. 3: global, local and hybrid masks of the reference criterion, units both, the pooled shots, for
    ShadowLLM (source predicted, the authors' protocol 'sequence') and static; line = style, panel = source."""
    p = points(df, ppl_metric)
    d = p[p.source.isin(list(NAMES)) & (p.criterion == reference_criterion(df)) & (p.units == main_units(df))
          & (p.shots == pooled_shots(df)) & p.protocol.isin(["sequence", "none"])]
    return d.assign(line=d["style"], panel=d.source)


def fewshot_data(df, ppl_metric: str = "word_perplexity"):
    """Fig. 8: the reference criterion's static global masks, units both; line = the traces' shots label."""
    d = _eq(points(df, ppl_metric), source="static", criterion=reference_criterion(df), style="global",
            units=main_units(df))
    return d.assign(line=d.shots, panel=d.quantity)


def _compared(d, df):
    """Rows of the compared sources at the reference criterion, units both, each in its style (any protocol)."""
    keep = (d.source.map(COMPARED).eq(d["style"]) & d.criterion.isin([reference_criterion(df), "none"])
            & (d.units == main_units(df)) & d.shots.isin([pooled_shots(df), "none"]))
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
    """acc(point) - acc(dense) per zero-shot task, at the highest sparsity with zero-shot results of the reference
    criterion; the predictors under protocol 'prompt' (the report's Fig. 10 summary reads this)."""
    acc = task_acc(df)
    dense = acc[acc.source == "dense"].groupby("task")["value"].mean()
    d = _compared(acc, df)
    d = d[~d.source.isin(PREDICTORS) | (d.protocol == "prompt")]
    at = d[d.criterion == reference_criterion(df)] if (d.criterion == reference_criterion(df)).any() else d
    if len(at):
        d = d[(d.sparsity - at.sparsity.max()).abs() < 1e-9]
    return d.assign(value=d.value - d.task.map(dense).astype(float)).dropna(subset=["value"]).sort_values(["task", "line"])


def dejavu_gap_data(df):
    """Fig. 10: acc(ShadowLLM) - acc(DejaVu) per zero-shot task against sparsity: source predicted (global) against
    source dejavu (local) at the reference criterion, units both, under the same protocol (panel); line = task, and
    MEAN (mean over the tasks, where both scored every task). Columns a, b: the two points' axes (for the paired
    interval; a task's rows name the task)."""
    import pandas as pd

    cols = ["panel", "line", "protocol", "sparsity", "value", "a", "b"]
    c = _compared(task_acc(df), df)
    k = point_keys(c)
    pred, dv = c[c.source == "predicted"], c[c.source == "dejavu"]
    m = pred.merge(dv, on=["task", "protocol", "sparsity"], suffixes=("", "_b"))
    if m.empty:
        return pd.DataFrame(columns=cols)
    m["a"] = [{x: r[x] for x in k} for r in m.to_dict("records")]
    m["b"] = [{x: r[x + "_b"] if x + "_b" in r else r[x] for x in k} for r in m.to_dict("records")]
    m = m.assign(value=m.value - m.value_b, line=m.task, panel=m.protocol)
    n = df.loc[df.metric == "acc", "task"].nunique()
    mean = [{"line": MEAN, "protocol": p, "sparsity": s, "value": g.value.mean(), "a": g.a.iloc[0], "b": g.b.iloc[0],
             "panel": p} for (p, s), g in m.groupby(["protocol", "sparsity"], sort=True) if g.task.nunique() == n]
    m["a"] = [{**a, "task": t} for a, t in zip(m.a, m.task)]
    m["b"] = [{**b, "task": t} for b, t in zip(m.b, m.task)]
    return pd.concat([m[cols], pd.DataFrame(mean, columns=cols)], ignore_index=True)


class Intervals:
    """95 % intervals from the per-document table (report/stats.py), computed once per point; the samples are
    split by point up front so that each bootstrap reads its own rows only. None where a point has no documents."""

    def __init__(self, samples):
        self.keys = point_keys(samples)
        by = [samples[k].astype(str) for k in self.keys]
        self.groups = {tuple(k): g for k, g in samples.groupby(by, sort=False)}
        self.none = samples.iloc[0:0]
        self.cache = {}
        keyed = [dict(zip(self.keys, k)) for k in self.groups]
        self.dense = next((k for k in keyed if k.get("source") == "dense"), None)

    def vs_dense(self, metric: str, a: dict):
        """(lo, hi) of a point placed by its paired interval against the dense model on the same documents:
        dense x ratio for perplexity, dense + difference for accuracy. What a band means then is the change from
        dense that the documents resolve; a point's own interval would mostly show how documents differ."""
        dense = self.dense
        if dense is None or str(a.get("source")) == "dense":
            return None
        ref, rel = self(metric, dense), self(metric, a, dense)
        if ref is None or rel is None:
            return None
        if metric == "acc":
            return ref.value + rel.lo, ref.value + rel.hi
        return ref.value * rel.lo, ref.value * rel.hi

    def _rows(self, axes: dict):
        return self.groups.get(tuple(str(axes[k]) for k in self.keys), self.none)

    def __call__(self, metric: str, a: dict, b: dict | None = None):
        from ..report import stats

        key = (metric, tuple(a.items()), tuple(b.items()) if b else None)
        if key not in self.cache:
            try:
                if b is None:
                    self.cache[key] = stats.point(self._rows(a), metric, **a)
                else:
                    import pandas as pd

                    self.cache[key] = stats.paired(pd.concat([self._rows(a), self._rows(b)]), metric, a, b)
            except (ValueError, KeyError) as e:
                print(f"[figures] no interval for {a}" + (f" vs {b}" if b else "") + f": {e}", file=sys.stderr)
                self.cache[key] = None
        return self.cache[key]


def with_intervals(d, iv: Intervals | None, ppl_metric: str = "word_perplexity"):
    """d with lo and hi: each row's 95 % interval (its perplexity or mean accuracy; for rows with columns a and b,
    the paired acc difference), NaN without samples."""
    if iv is None or d.empty:
        return d.assign(lo=np.nan, hi=np.nan)
    if "a" in d.columns:
        out = [iv("acc", a, b) for a, b in zip(d.a, d.b)]
    else:
        k = point_keys(d)
        out = [iv.vs_dense(ppl_metric if q == PPL else "acc", {c: r[c] for c in k})
               for r, q in zip(d[k].to_dict("records"), d.quantity)]
        return d.assign(lo=[o[0] if o else np.nan for o in out], hi=[o[1] if o else np.nan for o in out])
    return d.assign(lo=[o.lo if o else np.nan for o in out], hi=[o.hi if o else np.nan for o in out])


def _interval(ax, x, y, lo, hi, colour, bars=False, alpha=1.0) -> None:
    """A line's 95 % intervals: a shaded band through its points, or error bars (asked for, or a lone point)."""
    x, y, lo, hi = (np.asarray(v, dtype=float) for v in (x, y, lo, hi))
    ok = ~(np.isnan(lo) | np.isnan(hi))
    if bars or ok.sum() == 1:
        err = np.clip([y[ok] - lo[ok], hi[ok] - y[ok]], 0, None)
        ax.errorbar(x[ok], y[ok], yerr=err, fmt="none", ecolor=colour, elinewidth=1, capsize=2.5, alpha=alpha)
    elif ok.any():
        ax.fill_between(x[ok], lo[ok], hi[ok], color=colour, alpha=0.18 * alpha, lw=0)


def _palette(labels) -> dict:
    """One colour per label, the same in every panel of a figure (source colours for 'source (style)')."""
    labels = sorted(set(labels))
    return {lab: COLOURS.get(lab.split(" ")[0], f"C{i % 10}") for i, lab in enumerate(labels)}


def _lines(ax, d, colours, ls="-", alpha=1.0, bars=False, dodge=0.0) -> None:
    """One line per d.line against sparsity (%), markers so one-sparsity lines still show, with its intervals
    (lines dodged sideways by `dodge` % each so that error bars at one sparsity stay apart)."""
    labels = sorted(set(d.line), key=lambda s: (s == MEAN, s))
    for i, lab in enumerate(labels):
        g = d[d.line == lab].sort_values("sparsity", kind="stable")
        x = g.sparsity.to_numpy(float) * 100 + dodge * (i - (len(labels) - 1) / 2)
        ax.plot(x, g.value, marker="o", ms=3.5, ls=ls, color=colours[lab], alpha=alpha, label=lab,
                lw=2 if lab == MEAN else 1.4)
        if "lo" in g:
            _interval(ax, x, g.value, g.lo, g.hi, colours[lab], bars, alpha)
    pct = sorted(set(np.round(d.sparsity.to_numpy(float) * 100, 6)))
    if 0 < len(pct) <= 10:
        ax.set_xticks(pct, [f"{p:g}" for p in pct])


def _reference(ax, y, label, **kw) -> None:
    if y is not None:
        ax.axhline(y, lw=1, label=label, **kw)
        ax.update_datalim([(0, y)], updatex=False)   # the reference line stays inside the axes
        ax.autoscale_view()


def _line_panel(g, q, colours, refs, ppl_metric, dashed=None):
    """Draws one panel: the rows g (and `dashed`, paler) against sparsity, the reference lines of quantity q."""
    def draw(ax):
        if dashed is not None and len(dashed):
            _lines(ax, dashed, colours, ls="--", alpha=0.5)
        _lines(ax, g, colours)
        _reference(ax, refs.get(q), "dense", color="k", ls="--")
        if q == ACC:
            _reference(ax, refs.get("majority"), "majority class", color="0.45", ls=":")
        if q == PPL:
            ax.set_yscale("log")
        ax.set(xlabel="sparsity (%)", ylabel=ppl_metric.replace("_", " ") if q == PPL else "mean zero-shot acc")
    return draw


def _figure(plt, panels, title: str, ncols: int = 3, sharey: bool = False):
    """panels: [(title, draw)], those with data only; a grid of them and one legend of every line beside it. No
    panel: one axes saying there is no data (the file is still written)."""
    n = len(panels)
    cols = max(1, min(ncols, n))
    rows = max(1, ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False, sharey=sharey)
    for ax, (name, draw) in zip(axes.flat, panels):
        ax.set_title(name, fontsize=9)
        draw(ax)
    if not n:
        ax = axes[0][0]
        ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.4")
        ax.set(xticks=[], yticks=[])
    for ax in axes.flat[max(n, 1):]:
        ax.remove()
    seen = {}
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    order = sorted(seen, key=lambda lab: lab in REFERENCES)   # stable: the data lines first, then the references
    if seen:
        fig.legend([seen[lab] for lab in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7,
                   frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def build_figures(df, samples=None, title: str = "", ppl_metric: str = "word_perplexity",
                  normalize: str = "raw") -> dict:
    """{stem: figure} of the seven ablation figures from the ablation table (and the per-document table)."""
    plt = pyplot()
    norm = pick_normalize(df, normalize)
    df, samples = only_normalize(df, norm), only_normalize(samples, norm)
    iv = Intervals(samples) if samples is not None and len(samples) else None
    tag = f", normalize {norm}" if norm is not None and norm != "none" else ""
    ref, pooled = reference_criterion(df), pooled_shots(df)
    refs = {**dense_values(df, ppl_metric),
            "majority": majority_value(samples, set(df.loc[df.metric == "acc", "task"]))}

    def lines(d, specs, ttl, ncols=3, dashed=None):
        """specs: [(panel title, rows of d, quantity)]; d's intervals added, panels without rows left out;
        `dashed`: rows drawn pale and dashed in every panel of their quantity."""
        d = with_intervals(d, iv, ppl_metric)
        dashed = None if dashed is None else with_intervals(dashed, iv, ppl_metric)
        colours = _palette(list(d.line) + ([] if dashed is None else list(dashed.line)))
        panels = [(name, _line_panel(d.loc[sel], q, colours, refs, ppl_metric,
                                     None if dashed is None else dashed[dashed.quantity == q]))
                  for name, sel, q in specs if sel.any()]
        return _figure(plt, panels, ttl + tag, ncols)

    crit = criteria_data(df, ppl_metric)
    mu = main_units(df)
    units = [u for u in ("both", "heads", "neurons") if u in set(crit.units)]
    sty, few, src = styles_data(df, ppl_metric), fewshot_data(df, ppl_metric), sources_data(df, ppl_metric)
    pro = protocols_data(df, ppl_metric)
    figs = {
        f"ablation_criteria_{'ppl' if q == PPL else 'acc'}": lines(
            crit, [(f"units {u}", (crit.panel == u) & (crit.quantity == q), q) for u in units],
            f"{title}: static global masks per criterion (shots {pooled})")
        for q in (PPL, ACC)}
    figs["ablation_styles"] = lines(
        sty, [(f"{NAMES[s]}: {q}", (sty.panel == s) & (sty.quantity == q), q) for q in (PPL, ACC) for s in NAMES],
        f"{title}: global vs local vs hybrid top-k ({ref}, units {mu}, shots {pooled}; predicted: sequence protocol)",
        ncols=2)
    figs["ablation_fewshot"] = lines(few, [(q, few.quantity == q, q) for q in (PPL, ACC)],
                                     f"{title}: shots of the traces ({ref}, static global, units {mu})")
    figs["ablation_sources"] = lines(src, [(q, src.quantity == q, q) for q in (PPL, ACC)],
                                     f"{title}: mask sources ({ref}, units {mu}, predictors: sequence protocol)")
    figs["ablation_protocols"] = lines(
        pro[pro.panel != "all"], [(f"{p}: {q}", (pro.panel == p) & (pro.quantity == q), q)
                                  for q in (ACC, PPL) for p in PROTOCOLS],
        f"{title}: protocols of the predictors ({ref}, units {mu}; other sources dashed)",
        dashed=pro[pro.panel == "all"])
    figs["ablation_per_task"] = _gap_figure(plt, with_intervals(dejavu_gap_data(df), iv), ref, title, tag, mu)
    return figs


def _gap_figure(plt, d, ref: str, title: str, tag: str = "", units: str = "both"):
    """Fig. 10: per protocol, ShadowLLM - DejaVu acc per task against sparsity, paired intervals as error bars."""
    colours = _palette(d.line)

    def draw(g):
        def f(ax):
            _lines(ax, g, colours, bars=True, dodge=0.6)
            ax.axhline(0, color="k", lw=0.8, label="no difference")
            ax.set(xlabel="sparsity (%)", ylabel=GAP)
        return f
    panels = [(f"{p} protocol", draw(d[d.panel == p])) for p in PROTOCOLS if (d.panel == p).any()]
    return _figure(plt, panels, f"{title}: ShadowLLM (global) - DejaVu (local) accuracy per task ({ref}, units {units})"
                   f"{tag}", sharey=True)


def ablation_figures(table, outdir, title: str = "", ppl_metric: str = "word_perplexity", samples=None,
                     normalize: str = "raw") -> list[Path]:
    """Write the seven ablation figures, each as PNG and PDF, into outdir; return the 14 paths. `samples`: the
    per-document table (a path or frame) for the intervals and the majority baseline; None, or a path that does
    not exist (a table written before per-document results were kept): drawn without them."""
    if isinstance(samples, (str, Path)) and not Path(samples).is_file():
        print(f"[figures] no per-document table at {samples}: drawing without intervals", file=sys.stderr)
        samples = None
    inputs = [p for p in (table, samples) if isinstance(p, (str, Path))]
    s = None if samples is None else read_samples(samples)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    figs = build_figures(read_table(table), s, title, ppl_metric, normalize)
    stems = names("ablations")
    if set(figs) != set(stems):
        raise ValueError(f"ablation figures drawn {sorted(figs)} differ from the registry's {stems}")
    # save_all closes the figure after the PNG; a closed figure still saves the PDF
    return [p for stem in stems for p in save_all(figs[stem], out / stem, inputs, dpi=120, bbox_inches="tight")]
