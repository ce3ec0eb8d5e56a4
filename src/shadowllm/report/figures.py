"""The paper's figures and tables as data: for each, the paper's numbers, our counterpart files, the claims it
backs, and (where no claim reads it) our numbers off the same tables; rendered beside the claims.

Titles and the paper's numbers come from paper.yaml; a row's figures are registry names
(shadowllm.layout.figures), by default those whose counterpart is the row's paper figure. A figure's files sit
under the model's figures ("model" scope) or the run's (the latency study); the report links the PNG (its PDF sits
beside it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .. import paper
from ..layout import figures as registry
from .claims import STATIC, Tables, _fmt

OURS = "ours"   # the key of a row for a figure of ours the paper lacks (its text: paper.yaml's `ours`)

# which tables a figure group is drawn from: without them, this configuration does not make the file
NEEDS = {"dependence": ("dependence",), "predictors": ("predictors",), "ablations": ("ablations",),
         "tradeoff": ("ablations", "latency"), "latency": ("latency",)}


@dataclass
class Figure:
    key: str                                   # "Fig. 6" or "Table" (paper.yaml's figures), or OURS
    claims: list[str] = field(default_factory=list)
    ours: Callable[[Tables], str] | None = None   # our numbers, for figures no claim reads
    stems: tuple[str, ...] = ()                # registry names; default: those whose paper counterpart is `key`
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)   # reports/ CSV -> the tables it needs
    title: str = field(init=False, default="")     # from paper.yaml: what it shows
    paper: str = field(init=False, default="")     # from paper.yaml: the paper's numbers

    def __post_init__(self):
        if not self.stems and self.key != OURS:
            self.stems = tuple(f.name for f in registry.FIGURES.values() if f.paper == self.key)
        for stem in self.stems:
            if registry.get(stem).group not in NEEDS:
                raise ValueError(f"figure {stem!r}: the report knows no tables for its group "
                                 f"{registry.get(stem).group!r} (one of {sorted(NEEDS)})")
        if not self.stems and not self.tables:
            raise ValueError(f"report row {self.key!r} has no figure in the registry and no table")
        entry = paper.ours(self.stems[0]) if self.key == OURS else paper.figure(self.key)
        self.title, self.paper = entry["title"], entry["paper"]

    def made(self, t: Tables) -> list[str]:
        """The counterparts (figure names, then tables) this run has the tables for."""
        need = {**{s: NEEDS[registry.get(s).group] for s in self.stems}, **self.tables}
        return [c for c, n in need.items() if all(getattr(t, a) is not None for a in n)]


def _pct(x: float) -> str:
    """A sparsity as the report prints it (50 %)."""
    return f"{x * 100:.0f} %"


def _criteria_ppl_or_acc(t: Tables, metric: str, units: str, want: float) -> str:
    d = t.ablations
    if d is None:
        return "no ablation table"
    d = d[(d.source == "static") & (d["style"] == "global") & (d.units == units) & (d.metric == metric)]
    if d.empty:
        return f"no static {units} points with {metric}"
    have = sorted({float(s) for s in d.sparsity})
    s = want if want in have else have[-1]
    vals = {c: t.point(metric, criterion=c, units=units, sparsity=s, **STATIC) for c in sorted(set(d.criterion))}
    vals = {c: v for c, v in vals.items() if v is not None}
    best_first = sorted(vals, key=vals.get, reverse=metric == "acc")
    return f"{units}, {s:.0%}: " + ", ".join(f"{c} {_fmt(vals[c])}" for c in best_first)


def _fig5(t: Tables) -> str:
    p = t.predictors
    if p is None:
        return "no predictor table"
    p = p[(p.metric == "spearman") & (p.scope == "model") & (p.design == "shadowllm")
          & (p.position.astype(str) == "context") & (p.placement.astype(str) == "0")]
    out = []
    for unit, g in p.groupby("unit"):
        m = g.groupby("criterion").value.mean().sort_values(ascending=False)
        out.append(f"{unit}: " + ", ".join(f"{c} {v:.3f}" for c, v in m.items()))
    return ("; ".join(out) + " (ShadowLLM, held-out Spearman over all of the model's heads or neurons, as the paper "
            "averages it; the figure shows the within-layer rho that per-layer top-k uses)") if out else \
        "no ShadowLLM predictors in the grid"


def _fig7(t: Tables) -> str:
    return _criteria_ppl_or_acc(t, "acc", "both", paper.figure("Fig. 7")["sparsity"]) + \
        " (mean zero-shot acc, static global)"


def _fig10(t: Tables) -> str:
    """ShadowLLM minus DejaVu accuracy per task and sparsity (the paper's Fig. 10), with paired intervals."""
    if t.samples is None or t.ablations is None:
        return "no per-document results" if t.ablations is not None else "no ablation table"
    d = t.ablations
    out = []
    for proto in ("sequence", "prompt"):
        for s in t.sparsities(source="dejavu", protocol=proto):
            for task in sorted(set(d[(d.metric == "acc") & (d.source == "dejavu")].task)):
                a = {**t.arm("predicted", "plainact", "both", s, protocol=proto), "task": task}
                b = {**t.arm("dejavu", "plainact", "both", s, style="local", protocol=proto), "task": task}
                iv = t.compare("acc", a, b)
                if iv is not None:
                    out.append(f"{task} {s:.0%} {iv.value:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}]")
        if out:
            return f"ShadowLLM global minus DejaVu, plainact, {proto} protocol, acc: " + "; ".join(out)
    return "no predicted and dejavu zero-shot points"


def _fig2(t: Tables) -> str:
    d = t.dependence
    if d is None or d.empty:
        return "no input-dependence table"
    layer = d.layer.astype(str)
    v = d[~layer.str.startswith("ref:")].rank_var.astype(float)
    ref = d[layer == "ref:random_rank_var"].rank_var.astype(float)
    return (f"mean rank variance {v.mean():.1f} over {len(v)} heads" +
            (f" (ranks drawn at random: {ref.iloc[0]:.1f})" if len(ref) else "") +
            f"; {float((v > 0).mean()):.0%} of heads vary (no claim: variance above zero cannot fail)")


def _fig11(t: Tables) -> str:
    d = t.latency
    if d is None or d.empty:
        return "no latency table in this run"
    at = paper.figure("Fig. 11")["sparsity"]
    d = d[d.sparsity.astype(float).isin([0.0, at]) | (d["mode"] == "dense")]
    out = []
    for (model, device), g in d.groupby(["model", "device"]):
        order = ["dense", "static", "shadowllm-prompt", "shadowllm-token", "dejavu"]
        ms = {m: float(x.ms_per_token.astype(float).median()) for m, x in
              sorted(g.groupby("mode"), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
              if m == "dense" or (x.sparsity.astype(float) == at).any()}
        if len(ms) > 1:
            out.append(f"{model} {device}: " + ", ".join(f"{m} {v:.1f}" for m, v in ms.items()))
    return "; ".join(out) + f" (ms/token, {_pct(at)}, random weights of the shape)" if out else \
        f"no {_pct(at)} rows"


def _table_flops(t: Tables) -> str:
    d = t.flops
    if d is None or d.empty:
        return "no predictor-FLOPs table in this run"
    return "DejaVu / ShadowLLM predictor MACs per token: " + ", ".join(
        f"{r.model} {float(r.dejavu_over_shadowllm):.2f}x" for r in d.itertuples()) + f" (p = {int(d.p.iloc[0])})"


FIGURES = [
    Figure("Fig. 1", ["shadowllm_beats_dejavu_acc", "per_token_shadowllm_faster_than_dejavu"]),
    Figure("Fig. 2", ours=_fig2),
    Figure("Fig. 3", ["global_beats_local"]),
    Figure("Fig. 4", ["first_layer_predictor_suffices"]),
    Figure("Fig. 5", ["predictor_ordering"], ours=_fig5),
    Figure("Fig. 6", ["plainact_beats_magnitude", "fisher_plainact_lead"]),
    Figure("Fig. 7", ours=_fig7),
    Figure("Fig. 8", ["fewshot_traces_help"]),
    Figure("Fig. 9", ["shadowllm_beats_dejavu_ppl", "predicted_beats_static"]),
    Figure("Fig. 10", ours=_fig10),
    Figure("Fig. 11", ["per_token_shadowllm_faster_than_dejavu", "latency_grows_with_size_and_length"], ours=_fig11),
    Figure("Table", ["predictor_flops_lower"], ours=_table_flops, tables={"predictor_flops.csv": ("flops",)}),
    Figure(OURS, stems=("ablation_protocols",)),
    Figure(OURS, stems=("predictors_by_placement",)),
]


def link(name: str, model: str, shared: str = "../../figures", own: str | None = None) -> str:
    """The Markdown path of a counterpart (a registry name or one of the run's tables), relative to the published
    report reports/{run}/{model}/report.md: the run's tables sit one folder up; `shared` is where the run's
    figures (the latency study) sit and `own` the model's (default ../../figures/{model}), relative to the report."""
    if name not in registry.FIGURES:
        return f"../{name}"
    if registry.get(name).scope == "model":
        return f"{own or f'../../figures/{model}'}/{name}.png"
    return f"{shared}/{name}.png"
