"""The paper's claims as data: each states what it says, the paper's numbers, and how our tables decide it.

A claim's `judge(t)` reads one model's results tables (`Tables`) and returns a `Verdict`. A claim is decided by
one comparison, the paper's own pairing at the paper's setting (or the nearest the grid ran), and only by its
95 % interval (report/stats.py): held when the interval excludes no difference in the claim's favour, not held
when it excludes it against the claim, otherwise not resolved. Our other pairings follow it, each with its own
interval and mark, and decide nothing. A claim the run has no tables for is not testable here. A new claim is
one decorated function, like a criterion or a mask source, plus its entry in paper.yaml (what it says, the paper's
numbers and the sparsity it compares at): no paper number is written here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .. import paper
from ..ablations.tables import pooled_shots
from . import stats

HELD, NOT_HELD, UNRESOLVED, UNTESTABLE = "held", "not held", "not resolved", "not testable here"
VERDICTS = (HELD, NOT_HELD, UNRESOLVED, UNTESTABLE)
PPL = "word_perplexity"


@dataclass
class Verdict:
    verdict: str
    ours: str          # our numbers, with their protocol, units and normalisation named
    why: str = ""


@dataclass
class Claim:
    key: str
    text: str
    paper: str         # the paper's numbers as printed (src/shadowllm/paper.yaml)
    judge: Callable[["Tables"], Verdict]


CLAIMS: dict[str, Claim] = {}


def claim(key: str):
    """Register fn(t, ref) as the judge of claim `key`: ref is its paper.yaml entry (text, numbers, sparsity)."""
    ref = paper.claim(key)

    def deco(fn):
        CLAIMS[key] = Claim(key, ref["text"], ref["paper"], lambda t: fn(t, ref))
        return fn
    return deco


# ---- the tables of one model ----------------------------------------------------------------------------

@dataclass
class Tables:
    ablations: pd.DataFrame | None = None     # tables/{model}/ablations.csv
    predictors: pd.DataFrame | None = None    # tables/{model}/predictors.csv
    latency: pd.DataFrame | None = None       # latency tables (this run's, and any measured elsewhere)
    dependence: pd.DataFrame | None = None    # importance/{model}/input_dependence.csv
    flops: pd.DataFrame | None = None         # latency/predictor_flops.csv
    samples: pd.DataFrame | None = None       # tables/{model}/samples.csv: per-document results
    questions: int = 0                        # zero-shot questions behind one mean accuracy (for the text)
    ppl_metric: str = PPL
    normalize: str = "raw"                    # the normalisation the claims read first (the paper's: raw)
    units: str | None = None                  # the units the claims read first (None: each claim's own order)

    def point(self, metric: str, **axes) -> float | None:
        """The value of one grid point (mean over tasks for acc), or None when the grid did not run it."""
        d = self.ablations
        if d is None:
            return None
        d = d[d.metric == metric]
        if "shots" not in axes:  # static tables: the usual pooled traces, unless a point names its shots
            d = d[(d.source != "static") | (d.shots.astype(str) == pooled_shots(self.ablations))]
        if "normalize" not in axes and "normalize" in d:   # the claims' normalisation, unless a point names one
            d = d[d.normalize.astype(str).isin([self.normalize, "none"])]
        for k, v in axes.items():
            if k in d:
                d = d[d[k].astype(str) == str(v)]
        if d.empty:
            return None
        return float(d.value.astype(float).mean())

    def ppl(self, **axes) -> float | None:
        return self.point(self.ppl_metric, **axes)

    def acc(self, **axes) -> float | None:
        return self.point("acc", **axes)

    def sparsities(self, **axes) -> list[float]:
        d = self.ablations
        if d is None:
            return []
        for k, v in axes.items():
            if k in d:
                d = d[d[k].astype(str) == str(v)]
        return sorted({float(s) for s in d.sparsity if float(s) > 0})

    def normalisations(self) -> list[str]:
        """The normalisations the grid ran, the claims' own first ([] for a table without the axis)."""
        d = self.ablations
        if d is None or "normalize" not in d:
            return []
        have = sorted(set(d.normalize.astype(str)) - {"none"})
        return sorted(have, key=lambda n: n != self.normalize)

    def arm(self, source: str, criterion: str, units: str, sparsity: float, style: str = "global",
            protocol: str = "none", normalize: str | None = None, **more) -> dict:
        """The axes that name one arm of a comparison (the pooled traces, the claims' normalisation)."""
        a = dict(source=source, criterion=criterion, units=units, sparsity=sparsity, style=style,
                 protocol=protocol, **more)
        if source == "static" and "shots" not in more and self.ablations is not None:   # not a few-shot table
            a["shots"] = pooled_shots(self.ablations)
        if self.ablations is not None and "normalize" in self.ablations:
            a["normalize"] = normalize or self.normalize
        return a

    def compare(self, metric: str, a: dict, b: dict) -> stats.Interval | None:
        """ppl(a) / ppl(b) or acc(a) - acc(b) with its paired 95 % interval; None when either point is missing."""
        if self.samples is None or self.samples.empty:
            return None
        return stats.paired(self.samples, metric, a, b)

    def units_order(self, default: tuple) -> tuple:
        return (self.units,) + tuple(u for u in default if u != self.units) if self.units else default


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


STATIC = dict(source="static", style="global", protocol="none")


# ---- comparisons and the verdict they give -------------------------------------------------------------

@dataclass
class Row:
    label: str                      # what is compared, in words (setting named)
    metric: str
    a: float | None
    b: float | None
    iv: stats.Interval | None

    def mark(self) -> int:
        """+1 the claimed side wins (interval clear of no difference), -1 it loses, 0 not resolved."""
        if self.iv is None:
            return 0
        s = self.iv.side()
        return -s if self.metric in stats.PPL_METRICS else s

    def text(self) -> str:
        kind = "ratio" if self.metric in stats.PPL_METRICS else "diff"
        nums = f"{_fmt(self.a)} vs {_fmt(self.b)}" if self.metric in stats.PPL_METRICS else \
            f"{self.a:.3f} vs {self.b:.3f}"
        if self.iv is None:
            return f"{self.label}: {nums} (no per-document results: no interval)"
        word = {1: HELD, -1: NOT_HELD, 0: UNRESOLVED}[self.mark()]
        return f"{self.label}: {nums}, {self.iv.fmt(kind)} ({word})"


def _row(t: Tables, label: str, metric: str, a: dict, b: dict) -> Row | None:
    va, vb = t.point(metric, **a), t.point(metric, **b)
    if va is None or vb is None:
        return None
    return Row(label, metric, va, vb, t.compare(metric, a, b))


SHOWN = 5   # comparisons written out per claim; the tally counts them all


def decide(rows: list[Row | None], missing: str, setting: str = "", paper: str = "") -> Verdict:
    """The first row (the paper's pairing, whose label starts with `paper`) decides; the rest are shown beside it."""
    rows = [r for r in rows if r is not None]
    if not rows:
        return Verdict(UNTESTABLE, "-", missing)
    first = rows[0]
    shown = rows[:SHOWN]
    ours = "; ".join(r.text() for r in shown) + (f"; {len(rows) - SHOWN} more in the tables" if len(rows) > SHOWN
                                                   else "") + (f" ({setting})" if setting else "")
    if first.iv is None:
        return Verdict(UNRESOLVED, ours, "the run kept no per-document results, so no difference has an interval")
    verdict = {1: HELD, -1: NOT_HELD, 0: UNRESOLVED}[first.mark()]
    others = rows[1:]
    tally = ""
    if others:
        marks = [r.mark() for r in others]
        tally = (f"; beside it, {marks.count(1)} of {len(others)} of our other pairings agree, "
                 f"{marks.count(-1)} disagree, {marks.count(0)} are not resolved")
    kind, null = ("ratio", "1") if first.metric in stats.PPL_METRICS else ("difference", "0")
    lead = "decided by the first pairing" if first.label.startswith(paper) else \
        f"the paper's pairing was not run; decided by the first of ours ({first.label})"
    why = (f"{lead}: its 95 % interval of the {kind} " + ("holds" if verdict == UNRESOLVED else "excludes")
           + f" {null} (no difference)" + tally)
    return Verdict(verdict, ours, why)


def _near(have: list[float], want: float) -> list[float]:
    """The sparsities the grid ran, nearest to `want` first."""
    return sorted(have, key=lambda s: (abs(s - want), s))


# ---- the claims -------------------------------------------------------------------------------------------

@claim("plainact_beats_magnitude")
def _plainact_vs_l2(t: Tables, ref: dict) -> Verdict:
    rows = []
    for units in t.units_order(("heads", "both")):
        for norm in t.normalisations() or [None]:
            for s in _near(t.sparsities(source="static", criterion="plainact", units=units), ref["sparsity"]):
                a, b = (t.arm("static", c, units, s, normalize=norm) for c in ("plainact", "l2_norm"))
                rows.append(_row(t, f"static {units} {s:.0%}" + (f" {norm}" if norm else ""), PPL, a, b))
    for s in _near(t.sparsities(source="oracle", criterion="plainact", units="heads"), ref["sparsity"]):
        a, b = (t.arm("oracle", c, "heads", s, protocol="gold") for c in ("plainact", "l2_norm"))
        rows.append(_row(t, f"oracle heads {s:.0%}", PPL, a, b))
    return decide(rows, "the grid has no static plainact and l2_norm points at one sparsity",
                  "perplexity, global top-k, plainact vs l2_norm", paper=f"static heads {ref['sparsity']:.0%}"
                  + (f" {t.normalize}" if t.normalisations() else ""))


@claim("fisher_plainact_lead")
def _criteria_rank(t: Tables, ref: dict) -> Verdict:
    d = t.ablations
    for units in t.units_order(("heads", "both")):
        for s in _near(t.sparsities(source="static", units=units), ref["sparsity"]):
            vals = {}
            for c in sorted(set(d[(d.source == "static") & (d.units == units)].criterion)):
                v = t.ppl(**t.arm("static", c, units, s))
                if v is not None:
                    vals[c] = v
            lead = [c for c in ("fisher", "plainact") if c in vals]
            rest = [c for c in vals if c not in lead]
            if len(vals) < 3 or not lead or not rest:
                continue
            worst_lead, best_rest = max(lead, key=vals.get), min(rest, key=vals.get)
            ranked = ", ".join(f"{c} {_fmt(v)}" for c, v in sorted(vals.items(), key=lambda kv: kv[1]))
            row = _row(t, f"{worst_lead} (the weaker of {' and '.join(lead)}) vs {best_rest} (the best of the "
                          f"rest)", PPL, t.arm("static", worst_lead, units, s), t.arm("static", best_rest, units, s))
            v = decide([row], "", f"static global, {units}, {s:.0%}, {t.normalize} scores; all: {ranked}")
            return v
    return Verdict(UNTESTABLE, "-", "fewer than three static criteria (with fisher or plainact) at one sparsity")


@claim("global_beats_local")
def _global_local(t: Tables, ref: dict) -> Verdict:
    rows = []
    for src, proto in (("predicted", "sequence"), ("static", "none")):
        for units in t.units_order(("both", "heads")):
            for s in _near(t.sparsities(source=src, style="local", units=units), ref["sparsity"]):
                a, b = (t.arm(src, "plainact", units, s, style=st, protocol=proto) for st in ("global", "local"))
                rows.append(_row(t, f"{'ShadowLLM' if src == 'predicted' else src} {units} {s:.0%}", PPL, a, b))
    return decide(rows, "no local points in the grid", "plainact, perplexity, global vs local", paper="ShadowLLM")


def _sd_rows(t: Tables, metric: str, protocols: tuple, at: float) -> list[Row | None]:
    """ShadowLLM vs DejaVu: the paper's pairing first (ShadowLLM plainact global vs DejaVu l2_norm, which runs
    local), then the same-criterion pair and the same-style pair, at every protocol and sparsity (nearest `at`)."""
    rows = []
    pairs = [("paper's pair: ShadowLLM plainact global vs DejaVu l2_norm", "plainact", "global", "l2_norm"),
             ("same criterion: ShadowLLM plainact global vs DejaVu plainact", "plainact", "global", "plainact"),
             ("same style: ShadowLLM plainact local vs DejaVu plainact", "plainact", "local", "plainact")]
    for label, crit, style, dcrit in pairs:
        for proto in protocols:
            for units in t.units_order(("both", "heads")):
                for s in _near(t.sparsities(source="predicted", protocol=proto, units=units), at):
                    a = t.arm("predicted", crit, units, s, style=style, protocol=proto)
                    b = t.arm("dejavu", dcrit, units, s, style="local", protocol=proto)
                    rows.append(_row(t, f"{label}, {proto}, {units} {s:.0%}", metric, a, b))
    return rows


@claim("shadowllm_beats_dejavu_ppl")
def _shadow_dejavu(t: Tables, ref: dict) -> Verdict:
    return decide(_sd_rows(t, PPL, ("sequence", "token"), ref["sparsity"]),
                  "no predicted and dejavu points with perplexity",
                  "perplexity", paper="paper's pair")


@claim("shadowllm_beats_dejavu_acc")
def _shadow_dejavu_acc(t: Tables, ref: dict) -> Verdict:
    return decide(_sd_rows(t, "acc", ("sequence", "prompt"), ref["sparsity"]),
                  "no zero-shot predicted and dejavu points",
                  f"mean acc over {t.questions or 'the'} questions", paper="paper's pair")


@claim("predicted_beats_static")
def _predicted_vs_static(t: Tables, ref: dict) -> Verdict:
    rows = []
    for metric, protos in ((PPL, ("sequence", "token")), ("acc", ("sequence", "prompt"))):
        for proto in protos:
            for units in t.units_order(("both", "heads")):
                for s in _near(t.sparsities(source="predicted", protocol=proto, units=units), ref["sparsity"]):
                    a = t.arm("predicted", "plainact", units, s, protocol=proto)
                    b = t.arm("static", "plainact", units, s)
                    rows.append(_row(t, f"ShadowLLM vs static, {'perplexity' if metric == PPL else 'acc'}, "
                                        f"{proto}, {units} {s:.0%}", metric, a, b))
    for units in ("both", "heads"):
        for s in _near(t.sparsities(source="oracle", criterion="plainact", units=units), ref["sparsity"]):
            a = t.arm("oracle", "plainact", units, s, protocol="gold")
            rows.append(_row(t, f"(ceiling) oracle vs static, perplexity, {units} {s:.0%}", PPL, a,
                             t.arm("static", "plainact", units, s)))
    return decide(rows, "no predicted and static plainact points at one sparsity", "plainact, global top-k")


@claim("fewshot_traces_help")
def _fewshot(t: Tables, ref: dict) -> Verdict:
    d = t.ablations
    if d is None:
        return Verdict(UNTESTABLE, "-", "no ablation table")
    d = d[(d.source == "static") & (d.metric == t.ppl_metric) & (d["style"] == "global")]
    single = sorted({k for k in d.shots.astype(str) if k not in ("none",) and "+" not in k}, key=int)
    if "0" not in single or len(single) < 2:
        return Verdict(UNTESTABLE, "-", f"the grid traced shots {sorted(set(d.shots.astype(str)))}; "
                                        "a 0-shot and a k-shot table are needed")
    k = single[-1]
    crits = [c for c in ("fisher", "plainact") if c in set(d[d.shots.astype(str) == k].criterion)] or \
        sorted(set(d[d.shots.astype(str) == k].criterion))
    rows = []
    for crit in crits:
        for units in t.units_order(("both", "heads")):
            for s in _near(t.sparsities(source="static", criterion=crit, shots=k, units=units), ref["sparsity"]):
                a, b = (t.arm("static", crit, units, s, shots=sh) for sh in (k, "0"))
                rows.append(_row(t, f"{crit} {units} {s:.0%}", PPL, a, b))
    return decide(rows, "no criterion has both a 0-shot and a k-shot static point",
                  f"{k}-shot vs 0-shot traces, perplexity", paper="fisher")


def _rho(t: Tables) -> pd.DataFrame | None:
    p = t.predictors
    if p is None:
        return None
    p = p[(p.metric == "spearman") & (p.scope == "model") & (p.position.astype(str) == "context")
          & (p.placement.astype(str) == "0")]
    if "normalize" in p:
        want = t.normalize if t.normalize in set(p.normalize.astype(str)) else p.normalize.astype(str).iloc[0] \
            if len(p) else t.normalize
        p = p[p.normalize.astype(str) == want]
    return p


@claim("first_layer_predictor_suffices")
def _predictor_design(t: Tables, ref: dict) -> Verdict:
    p = _rho(t)
    if p is None or p.empty:
        return Verdict(UNTESTABLE, "-", "no predictor table")
    m = p.groupby(["design", "criterion", "unit"]).value.mean().unstack("design")
    if "shadowllm" not in m or "dejavu" not in m:
        return Verdict(UNTESTABLE, "-", "the grid trained no shadowllm and dejavu pair")
    pairs = m[["shadowllm", "dejavu"]].dropna()
    iv = stats.mean_interval((pairs.shadowllm - pairs.dejavu).to_numpy())
    ours = (f"shadowllm {pairs.shadowllm.mean():.3f} vs dejavu {pairs.dejavu.mean():.3f}, {iv.fmt('diff')} over "
            f"{len(pairs)} criterion x unit pairs (held-out Spearman over the whole model, bootstrap over the pairs)")
    verdict = {1: HELD, -1: NOT_HELD, 0: UNRESOLVED}[iv.side()]
    return Verdict(verdict, ours, "the interval of the mean difference " +
                   ("holds zero" if verdict == UNRESOLVED else "excludes zero"))


@claim("predictor_ordering")
def _predictor_ordering(t: Tables, ref: dict) -> Verdict:
    p = _rho(t)
    if p is None or p.empty:
        return Verdict(UNTESTABLE, "-", "no predictor table")
    ours = p[(p.design == "shadowllm") & (p.unit == "heads")].groupby("criterion").value.mean()
    theirs = ref["values"]                 # the paper's rho per criterion, heads
    common = [c for c in theirs if c in ours.index]
    if len(common) < 4:
        return Verdict(UNTESTABLE, ", ".join(f"{c} {v:.3f}" for c, v in ours.items()) or "-",
                       f"{len(common)} of the paper's criteria were trained here; the ordering needs at least 4")
    r, p_hi, p_lo = stats.rank_agreement(np.array([theirs[c] for c in common]), ours[common].to_numpy())
    text = (", ".join(f"{c} {ours[c]:.3f}" for c in sorted(common, key=lambda c: -ours[c]))
            + f"; rank correlation with the paper's order {r:+.2f} (permutation p = {p_hi:.3f} for agreement, "
              f"{p_lo:.3f} for reversal; {len(common)} criteria)")
    verdict = HELD if p_hi < 0.05 else NOT_HELD if p_lo < 0.05 else UNRESOLVED
    return Verdict(verdict, text, "held: the order agrees beyond what random orderings reach 95 % of the time; "
                                  "not held: it is reversed beyond that; else not resolved")


@claim("predictor_flops_lower")
def _flops(t: Tables, ref: dict) -> Verdict:
    d = t.flops
    if d is None or d.empty:
        return Verdict(UNTESTABLE, "-", "no predictor-FLOPs table in this run")
    r = d.dejavu_over_shadowllm.astype(float)
    ours = ", ".join(f"{m} {x:.2f}x" for m, x in zip(d.model, r)) + " (DejaVu / ShadowLLM MACs per token)"
    return Verdict(HELD if (r > 1).all() else NOT_HELD, ours,
                   "exact counts of the two designs at each shape: no sampling, no interval")


LAT_KEYS = ["model", "device", "dtype", "batch", "prompt_len", "gen_tokens", "sparsity"]


def _faster(a: pd.Series, b: pd.Series) -> int:
    """+1 a is faster than b by more than their two interquartile ranges together, -1 slower, 0 a tie."""
    gap = float(b.ms_per_token) - float(a.ms_per_token)
    noise = float(a.get("ms_per_token_iqr", 0) or 0) + float(b.get("ms_per_token_iqr", 0) or 0)
    return 0 if abs(gap) <= noise else (1 if gap > 0 else -1)


def _lat_text(a, b, mark: int, what: str) -> str:
    return (f"{what}: {float(a.ms_per_token):.2f} vs {float(b.ms_per_token):.2f} ms/token "
            f"(IQR {float(a.get('ms_per_token_iqr', 0) or 0):.2f}, {float(b.get('ms_per_token_iqr', 0) or 0):.2f}; "
            f"{ {1: HELD, -1: NOT_HELD, 0: UNRESOLVED}[mark]})")


@claim("per_token_shadowllm_faster_than_dejavu")
def _latency(t: Tables, ref: dict) -> Verdict:
    d = t.latency
    if d is None or d.empty:
        return Verdict(UNTESTABLE, "-", "no latency table in this run")
    d = d[d.sparsity.astype(float) == ref["sparsity"]]
    found = []
    for key, g in d.groupby([k for k in LAT_KEYS if k in d], dropna=False):
        a, b = g[g["mode"] == "shadowllm-token"], g[g["mode"] == "dejavu"]
        if len(a) and len(b):
            s = dict(zip([k for k in LAT_KEYS if k in d], key))
            found.append((s.get("device") != "cuda", -float(a.params_b.iloc[0]) if "params_b" in a else 0,
                          s, a.iloc[0], b.iloc[0]))
    if not found:
        return Verdict(UNTESTABLE, "-", "no per-token ShadowLLM and DejaVu rows at 50 % with the same settings")
    found.sort(key=lambda f: f[:2])     # a GPU shape first (the paper measured on one), the largest first
    rows = []
    for _, _, s, a, b in found:
        rows.append((_faster(a, b), _lat_text(a, b, _faster(a, b),
                                              f"{s['model']} {s['device']} {s.get('dtype', '')} "
                                              f"{s.get('gen_tokens', '')} tokens")))
    verdict = {1: HELD, -1: NOT_HELD, 0: UNRESOLVED}[rows[0][0]]
    return Verdict(verdict, "; ".join(r for _, r in rows[:SHOWN]) + (f"; {len(rows) - SHOWN} more"
                                                                     if len(rows) > SHOWN else "")
                   + " (random weights of the shape, same settings)",
                   "decided by the first row (a GPU shape where measured, the largest); a gap within the two "
                   "interquartile ranges of the repeated calls is a tie")


@claim("latency_grows_with_size_and_length")
def _latency_trends(t: Tables, ref: dict) -> Verdict:
    d = t.latency
    if d is None or d.empty or "params_b" not in d:
        return Verdict(UNTESTABLE, "-", "no latency table in this run")
    marks, text = [], []
    keys = [k for k in ("device", "dtype", "gen_tokens", "prompt_len", "sparsity", "mode") if k in d]
    for key, g in d.groupby(keys, dropna=False):
        g = g.drop_duplicates("model").sort_values("params_b")
        if len(g) < 2:
            continue
        steps = [_faster(a, b) for (_, a), (_, b) in zip(g.iterrows(), list(g.iterrows())[1:])]  # +1: larger slower
        marks += steps
        s = dict(zip(keys, key))
        text.append(f"size, {s.get('mode')} {s.get('device')} {float(s.get('sparsity', 0)):.0%}: "
                    + " < ".join(f"{m} {float(v):.1f}" for m, v in zip(g.model, g.ms_per_token)))
    if "call_ms" in d:
        keys = [k for k in ("model", "device", "dtype", "prompt_len", "sparsity", "mode") if k in d]
        for key, g in d.groupby(keys, dropna=False):
            g = g.drop_duplicates("gen_tokens").sort_values("gen_tokens")
            if len(g) < 2:
                continue
            for (_, a), (_, b) in zip(g.iterrows(), list(g.iterrows())[1:]):
                gap = float(b.call_ms) - float(a.call_ms)
                noise = float(a.get("call_ms_iqr", 0) or 0) + float(b.get("call_ms_iqr", 0) or 0)
                marks.append(0 if abs(gap) <= noise else (1 if gap > 0 else -1))
            s = dict(zip(keys, key))
            text.append(f"length, {s['model']} {s.get('mode')}: " + " < ".join(
                f"{int(n)} tokens {float(v):.0f} ms" for n, v in zip(g.gen_tokens, g.call_ms)))
    if not marks:
        return Verdict(UNTESTABLE, "-", "the latency tables sweep neither size nor generation length")
    verdict = NOT_HELD if -1 in marks else HELD if 1 in marks else UNRESOLVED
    return Verdict(verdict, "; ".join(text[:6]) + (f"; and {len(text) - 6} more sweeps" if len(text) > 6 else ""),
                   f"{marks.count(1)} of {len(marks)} steps grow beyond the interquartile ranges of the calls, "
                   f"{marks.count(-1)} shrink, {marks.count(0)} are ties")
