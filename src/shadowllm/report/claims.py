"""The paper's claims as data: each states what it says, the paper's numbers, and how our tables decide it.

A claim's `judge(t)` reads the results tables of one model (`Tables`) and returns a `Verdict`: held, not held, or
not testable here (with why); a new claim is one decorated function, like a criterion or a mask source.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from ..ablations.tables import pooled_shots

HELD, NOT_HELD, UNTESTABLE = "held", "not held", "not testable here"


@dataclass
class Verdict:
    verdict: str
    ours: str          # our numbers, with their protocol and units named
    why: str = ""


@dataclass
class Claim:
    key: str
    text: str
    paper: str         # the paper's numbers (from ../shared/paper/reference-numbers.md)
    judge: Callable[["Tables"], Verdict]


CLAIMS: dict[str, Claim] = {}


def claim(key: str, text: str, paper: str):
    def deco(fn):
        CLAIMS[key] = Claim(key, text, paper, fn)
        return fn
    return deco


# ---- the tables of one model ----------------------------------------------------------------------------

@dataclass
class Tables:
    ablations: pd.DataFrame | None = None     # tables/{model}/ablations.csv
    predictors: pd.DataFrame | None = None    # tables/{model}/predictors.csv
    latency: pd.DataFrame | None = None       # latency/latency.csv (random-weight shapes, any model)
    dependence: pd.DataFrame | None = None    # importance/{model}/input_dependence.csv
    flops: pd.DataFrame | None = None         # latency/predictor_flops.csv
    questions: int = 0                        # zero-shot questions behind one mean accuracy (for its error)
    ppl_metric: str = "word_perplexity"

    def point(self, metric: str, **axes) -> float | None:
        """The value of one grid point (mean over tasks for acc), or None when the grid did not run it."""
        d = self.ablations
        if d is None:
            return None
        d = d[d.metric == metric]
        if "shots" not in axes:  # static tables: the usual pooled traces, unless a point names its shots
            d = d[(d.source != "static") | (d.shots.astype(str) == pooled_shots(self.ablations))]
        for k, v in axes.items():
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
            d = d[d[k].astype(str) == str(v)]
        return sorted({float(s) for s in d.sparsity if float(s) > 0})

    def acc_resolution(self) -> float:
        """Two standard errors of a mean accuracy near 0.5 over `questions` questions (0 when the count is not
        known: whole tasks, where every difference is counted)."""
        return 2 * (0.25 / self.questions) ** 0.5 if self.questions else 0.0


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _both(t: Tables, units: str, s: float, a: dict, b: dict) -> tuple[float | None, float | None]:
    return t.ppl(units=units, sparsity=s, **a), t.ppl(units=units, sparsity=s, **b)


def _best_sparsity(t: Tables, want: list[float], **axes) -> float | None:
    have = t.sparsities(**axes)
    for s in want:
        if s in have:
            return s
    return have[-1] if have else None


PPL_TIE = 0.02   # perplexities within 2 % of each other are a tie: such orderings swapped between two trainings


def _beats(a: float, b: float) -> bool | None:
    """Whether perplexity a beats b: True, False, or None for a tie (within PPL_TIE of each other)."""
    if a < b * (1 - PPL_TIE):
        return True
    if a > b * (1 + PPL_TIE):
        return False
    return None


def _tally(rows: list[str], wins: list[bool | None], setting: str, missing: str, losing: str) -> Verdict:
    """Held when the claim wins every decided comparison (ties, None, decide nothing); `losing` names who beat it
    (e.g. 'local wins'), `missing` why nothing could be compared."""
    if not wins:
        return Verdict(UNTESTABLE, "-", missing)
    ours = "; ".join(rows) + f" ({setting})"
    decided = [w for w in wins if w is not None]
    ties = f"; {len(wins) - len(decided)} of {len(wins)} within {PPL_TIE:.0%} (ties)" if len(decided) < len(wins) else ""
    if not decided:
        return Verdict(UNTESTABLE, ours, f"every difference is within {PPL_TIE:.0%}, a tie")
    why = "" if all(decided) else f"{losing} {decided.count(False)} of {len(decided)} decided comparisons"
    return Verdict(HELD if all(decided) else NOT_HELD, ours, (why + ties).lstrip("; "))


STATIC = dict(source="static", style="global", protocol="none")


# ---- the claims -------------------------------------------------------------------------------------------

@claim("plainact_beats_magnitude", "PlainAct (gradient x activation) ranks heads better than magnitude (l2_norm)",
       "OPT-1.3B, heads, static global, 50 %: WikiText2 ppl 42.8 vs 376.5")
def _plainact_vs_l2(t: Tables) -> Verdict:
    out, wins = [], []
    for units in ("heads", "both"):
        s = _best_sparsity(t, [0.5], criterion="plainact", units=units, **STATIC)
        if s is None:
            continue
        pa, l2 = _both(t, units, s, dict(criterion="plainact", **STATIC), dict(criterion="l2_norm", **STATIC))
        if pa is None or l2 is None:
            continue
        out.append(f"{units} {s:.0%}: {_fmt(pa)} vs {_fmt(l2)}")
        wins.append(_beats(pa, l2))
    return _tally(out, wins, "static, global, perplexity",
                  "the grid has no static plainact and l2_norm points at one sparsity", "l2_norm is better in")


@claim("fisher_plainact_lead", "Fisher and PlainAct are the best static criteria",
       "OPT-1.3B, heads, 50 %: Fisher 33.6, PlainAct 42.8, then NWOT 45.2 ... L2Norm 376.5")
def _criteria_rank(t: Tables) -> Verdict:
    for units in ("heads", "both"):
        s = _best_sparsity(t, [0.5], units=units, **STATIC)
        if s is None:
            continue
        d = t.ablations
        d = d[(d.metric == t.ppl_metric) & (d.source == "static") & (d["style"] == "global") & (d.units == units)
              & (d.sparsity.astype(float) == s) & (d.shots.astype(str) == pooled_shots(t.ablations))]
        ranks = d.groupby("criterion").value.mean().astype(float).sort_values()
        if len(ranks) < 4:
            continue
        top = list(ranks.index[:2])
        ours = ", ".join(f"{c} {_fmt(v)}" for c, v in ranks.items())
        lead = min(float(ranks[c]) for c in ("fisher", "plainact") if c in ranks.index) \
            if {"fisher", "plainact"} & set(ranks.index) else float("inf")
        held = lead <= float(ranks.iloc[1]) * (1 + PPL_TIE)      # among the best two, or tied with the second
        return Verdict(HELD if held else NOT_HELD, f"{units}, {s:.0%}: {ours}",
                       "" if held else f"the two best here are {top[0]} and {top[1]}")
    return Verdict(UNTESTABLE, "-", "fewer than four static criteria in the grid")


@claim("global_beats_local", "Global top-k (one budget over all layers) beats local (per-layer) top-k",
       "OPT-1.3B ShadowLLM, 20/30/40/50 %: global 17.21/18.62/22.37/30.75 vs local 17.71/19.61/23.59/36.80")
def _global_local(t: Tables) -> Verdict:
    rows, wins = [], []
    for src, proto in (("static", "none"), ("predicted", "sequence")):
        for s in t.sparsities(source=src, style="local"):
            g = t.ppl(source=src, style="global", protocol=proto, criterion="plainact", units="both", sparsity=s)
            lo = t.ppl(source=src, style="local", protocol=proto, criterion="plainact", units="both", sparsity=s)
            if g is not None and lo is not None:
                rows.append(f"{src} {s:.0%}: {_fmt(g)} vs {_fmt(lo)}")
                wins.append(_beats(g, lo))
    return _tally(rows, wins, "plainact, perplexity, global vs local", "no local points in the grid", "local wins")


def _shadow_vs_dejavu(t: Tables, value, protocols) -> list[tuple[str, float, float, float]]:
    """(protocol, sparsity, ShadowLLM global, DejaVu) wherever both ran: plainact, heads and neurons."""
    out = []
    for proto in protocols:
        for s in t.sparsities(source="predicted", protocol=proto, criterion="plainact"):
            sh = value(source="predicted", style="global", protocol=proto, criterion="plainact", units="both",
                       sparsity=s)
            dv = value(source="dejavu", protocol=proto, criterion="plainact", units="both", sparsity=s)
            if sh is not None and dv is not None:
                out.append((proto, s, sh, dv))
    return out


@claim("shadowllm_beats_dejavu_ppl", "One ShadowLLM predictor beats per-layer DejaVu-style predictors (perplexity)",
       "OPT-13B, global, 40/50/60 %: 12.70/13.90/17.10 vs 13.00/17.37/3380; OPT-30B 50 %: 12.13 vs 35.05")
def _shadow_dejavu(t: Tables) -> Verdict:
    rows, wins = [], []
    for _, s, sh, dv in _shadow_vs_dejavu(t, t.ppl, ["sequence"]):
        st = t.ppl(source="static", criterion="plainact", units="both", sparsity=s, style="global", protocol="none")
        rows.append(f"{s:.0%}: {_fmt(sh)} vs {_fmt(dv)} (static {_fmt(st)})")
        wins.append(_beats(sh, dv))
    return _tally(rows, wins, "plainact, sequence protocol, ShadowLLM global vs DejaVu local",
                  "no predicted and dejavu points under the sequence protocol", "DejaVu is better in")


@claim("shadowllm_beats_dejavu_acc", "ShadowLLM keeps more zero-shot accuracy than DejaVu-style at high sparsity",
       "OPT-13B mean accuracy (7 tasks), 50 % / 70 %: 61.19 vs 58.32, 56.97 vs 46.71")
def _shadow_dejavu_acc(t: Tables) -> Verdict:
    res = t.acc_resolution()
    pairs = _shadow_vs_dejavu(t, t.acc, ["prompt", "sequence"])
    rows = [f"{proto} {s:.0%}: {sh:.3f} vs {dv:.3f}" for proto, s, sh, dv in pairs]
    diffs = [sh - dv for _, _, sh, dv in pairs]
    if not diffs:
        return Verdict(UNTESTABLE, "-", "no zero-shot predicted and dejavu points")
    ours = "; ".join(rows) + " (mean acc, plainact)"
    if max(abs(x) for x in diffs) < res:
        return Verdict(UNTESTABLE, ours, f"every difference is below two standard errors ({res:.3f}) of "
                                         f"{t.questions} questions")
    decisive = [x for x in diffs if abs(x) >= res]
    v = HELD if all(x > 0 for x in decisive) else NOT_HELD
    return Verdict(v, ours, f"{len(decisive)} of {len(diffs)} differences exceed two standard errors ({res:.3f})")


@claim("fewshot_traces_help", "Importance traced on few-shot contexts gives better static masks than 0-shot",
       "Fisher, WikiText2 at 40 %: 0-shot 31.8, 3-shot 22.9, 5-shot 21.4")
def _fewshot(t: Tables) -> Verdict:
    d = t.ablations
    if d is None:
        return Verdict(UNTESTABLE, "-", "no ablation table")
    d = d[(d.source == "static") & (d.metric == t.ppl_metric) & (d["style"] == "global") & (d.units == "both")]
    shots = sorted(set(d.shots.astype(str)))
    if "0" not in shots or not any(k not in ("0", "none") and "+" not in k for k in shots):
        return Verdict(UNTESTABLE, "-", f"the grid traced shots {shots}; a 0-shot and a k-shot table are needed")
    k = max((x for x in shots if x not in ("0", "none") and "+" not in x), key=int)
    rows, wins = [], []
    for crit in sorted(set(d.criterion)):
        for s in sorted(set(d.sparsity.astype(float))):
            z = t.ppl(source="static", criterion=crit, shots="0", sparsity=s, style="global", units="both")
            f = t.ppl(source="static", criterion=crit, shots=k, sparsity=s, style="global", units="both")
            if z is not None and f is not None:
                rows.append(f"{crit} {s:.0%}: {_fmt(z)} vs {_fmt(f)}")
                wins.append(_beats(f, z))
    return _tally(rows, wins, f"0-shot vs {k}-shot traces, perplexity",
                  "no criterion has both a 0-shot and a k-shot static point", "0-shot wins")


@claim("first_layer_predictor_suffices", "A first-layer predictor ranks as well as per-layer predictors",
       "Spearman rho, mean over tasks and criteria: ShadowLLM 0.810, DejaVu per-layer 0.759")
def _predictor_design(t: Tables) -> Verdict:
    p = t.predictors
    if p is None:
        return Verdict(UNTESTABLE, "-", "no predictor table")
    p = p[(p.metric == "spearman") & (p.scope == "model") & (p.position.astype(str) == "context")
          & (p.placement.astype(str) == "0")]
    m = p.groupby("design").value.mean()
    if "shadowllm" not in m or "dejavu" not in m:
        return Verdict(UNTESTABLE, "-", "the grid trained no shadowllm and dejavu pair")
    ours = ", ".join(f"{k} {v:.3f}" for k, v in m.sort_values(ascending=False).items())
    held = m["shadowllm"] >= m["dejavu"] - 0.01
    return Verdict(HELD if held else NOT_HELD, ours + " (held-out Spearman, mean over criteria and units)",
                   "" if held else "the per-layer predictors rank better")


@claim("importance_is_input_dependent", "Head importance depends on the input (its rank varies across inputs)",
       "Fig. 2: rank variance of heads across inputs, by layer, well above zero")
def _dependence(t: Tables) -> Verdict:
    d = t.dependence
    if d is None or d.empty:
        return Verdict(UNTESTABLE, "-", "no input-dependence table")
    layer = d.layer.astype(str)
    heads = d[~layer.str.startswith("ref:")]
    v = heads.rank_var.astype(float)
    ref = d[layer == "ref:random_rank_var"].rank_var.astype(float)
    share = float((v > 0).mean())
    ours = (f"mean rank variance {v.mean():.1f} over {len(v)} heads"
            + (f" (ranks drawn at random: {ref.iloc[0]:.1f})" if len(ref) else "") + f"; {share:.0%} of heads vary")
    return Verdict(HELD if share > 0.5 else NOT_HELD, ours,
                   "ranks move with the input, though far less than at random" if len(ref) and v.mean() < ref.iloc[0]
                   else "")


@claim("per_token_shadowllm_faster_than_dejavu", "Re-predicting per token, ShadowLLM decodes faster than DejaVu",
       "A100, 50 %: ShadowLLM 12 % faster at OPT-13B (1154 vs 1315 ms per call); 11.6-19.2 % over the 30B sweep")
def _latency(t: Tables) -> Verdict:
    d = t.latency
    if d is None or d.empty:
        return Verdict(UNTESTABLE, "-", "no latency table in this run")
    d = d[d.sparsity.astype(float) == 0.5]
    rows, wins = [], []
    for (model, device), g in d.groupby(["model", "device"]):
        a = g[g["mode"] == "shadowllm-token"].ms_per_token.astype(float)
        b = g[g["mode"] == "dejavu"].ms_per_token.astype(float)
        if len(a) and len(b):
            rows.append(f"{model} {device}: {a.iloc[0]:.1f} vs {b.iloc[0]:.1f} ms/token")
            wins.append(a.iloc[0] < b.iloc[0])
    return _tally(rows, wins, "random weights of the shape, 50 %", "no per-token ShadowLLM and DejaVu rows at 50 %",
                  "DejaVu is faster in")
