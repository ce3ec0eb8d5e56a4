"""The paper's figures and tables as data: for each, the paper's numbers, our counterpart files, the claims it
backs, and (where no claim reads it) our numbers off the same tables; rendered beside the claims.

A figure's files are stems under figures/{model}/ ("model") or figures/ ("shared": the latency study); the report
links the PNG (its PDF sits beside it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .claims import STATIC, Tables, _fmt


@dataclass
class Figure:
    key: str                     # "Fig. 6" or "Table"
    title: str
    paper: str                   # the paper's numbers (../shared/paper/reference-numbers.md)
    files: list[str]             # our counterparts: "model:stem" or "shared:stem" or a reports/ CSV path
    claims: list[str] = field(default_factory=list)
    ours: Callable[[Tables], str] | None = None   # our numbers, for figures no claim reads


def _criteria_ppl_or_acc(t: Tables, metric: str, units: str, want: float = 0.5) -> str:
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
    return _criteria_ppl_or_acc(t, "acc", "both") + " (mean zero-shot acc, static global)"


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
    d = d[d.sparsity.astype(float).isin([0.0, 0.5]) | (d["mode"] == "dense")]
    out = []
    for (model, device), g in d.groupby(["model", "device"]):
        order = ["dense", "static", "shadowllm-prompt", "shadowllm-token", "dejavu"]
        ms = {m: float(x.ms_per_token.astype(float).median()) for m, x in
              sorted(g.groupby("mode"), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
              if m == "dense" or (x.sparsity.astype(float) == 0.5).any()}
        if len(ms) > 1:
            out.append(f"{model} {device}: " + ", ".join(f"{m} {v:.1f}" for m, v in ms.items()))
    return "; ".join(out) + " (ms/token, 50 %, random weights of the shape)" if out else "no 50 % rows"


def _table_flops(t: Tables) -> str:
    d = t.flops
    if d is None or d.empty:
        return "no predictor-FLOPs table in this run"
    return "DejaVu / ShadowLLM predictor MACs per token: " + ", ".join(
        f"{r.model} {float(r.dejavu_over_shadowllm):.2f}x" for r in d.itertuples()) + f" (p = {int(d.p.iloc[0])})"


FIGURES = [
    Figure("Fig. 1", "Accuracy vs latency, ShadowLLM vs DejaVu, coloured by sparsity",
           "OPT-13B: ShadowLLM above and left of DejaVu-style at every sparsity", ["model:accuracy_vs_latency"],
           ["shadowllm_beats_dejavu_acc", "per_token_shadowllm_faster_than_dejavu"]),
    Figure("Fig. 2", "Input dependence of head importance (rank variance across inputs, by layer)",
           "rank variance well above zero in every layer", ["model:input_dependence"], ours=_fig2),
    Figure("Fig. 3", "Global vs local pruning, perplexity vs sparsity",
           "OPT-1.3B ShadowLLM, 20/30/40/50 %: global 17.21/18.62/22.37/30.75, local 17.71/19.61/23.59/36.80",
           ["model:ablation_styles"], ["global_beats_local"]),
    Figure("Fig. 4", "Predictor design: first-layer vs per-layer vs full-sequence",
           "Spearman rho: full-sequence 0.815, ShadowLLM 0.810, DejaVu per-layer 0.759",
           ["model:predictors_by_design"], ["first_layer_predictor_suffices"]),
    Figure("Fig. 5", "Predictor quality per criterion",
           "OPT-1.3B heads: SNIP 0.999, L2Norm 0.979, GradNorm 0.968, PlainAct 0.922, NWOT 0.786, Fisher 0.683, "
           "GRASP 0.013", ["model:predictors_by_criterion"], ["predictor_ordering"], ours=_fig5),
    Figure("Fig. 6", "Static criteria: perplexity vs sparsity",
           "OPT-1.3B heads, 50 %: Fisher 33.6, PlainAct 42.8, NWOT 45.2, GRASP 68.7, EPE-NAS 118, Jacov 125, "
           "GradNorm 126, SNIP 132, L2Norm 376.5", ["model:ablation_criteria_ppl"],
           ["plainact_beats_magnitude", "fisher_plainact_lead"]),
    Figure("Fig. 7", "Static criteria: mean zero-shot accuracy vs sparsity",
           "OPT-1.3B, 6 tasks, 50 %: Fisher 53.5, PlainAct 51.5, EPE-NAS 50.2, GRASP 49.2, Jacov 48.8, NWOT 47.8, "
           "L2Norm 46.8, GradNorm 42.9, SNIP 42.7", ["model:ablation_criteria_acc"], ours=_fig7),
    Figure("Fig. 8", "Few-shot ablation: importance from 0/3/5-shot contexts",
           "Fisher, WikiText2 at 40 %: 0-shot 31.8, 3-shot 22.9, 5-shot 21.4", ["model:ablation_fewshot"],
           ["fewshot_traces_help"]),
    Figure("Fig. 9", "ShadowLLM vs DejaVu perplexity vs sparsity",
           "OPT-13B global 40/50/60 %: 12.70/13.90/17.10 vs 13.00/17.37/3380; OPT-30B 50 %: 12.13 vs 35.05",
           ["model:ablation_sources"], ["shadowllm_beats_dejavu_ppl", "predicted_beats_static"]),
    Figure("Fig. 10", "Per-task accuracy at high sparsity",
           "OPT-13B: ShadowLLM minus DejaVu-style accuracy per task, positive on most tasks at 50-70 %",
           ["model:ablation_per_task"], ours=_fig10),
    Figure("Fig. 11", "Latency vs model size, vs sparsity, vs generation length",
           "A100, 50 %, ms per call, ShadowLLM / DejaVu / static: 1.3B 539/654/438; 13B 1154/1315/1017; "
           "30B 1811/2095/1584", ["shared:latency_vs_size", "shared:latency_vs_sparsity", "shared:latency_vs_genlen"],
           ["per_token_shadowllm_faster_than_dejavu", "latency_grows_with_size_and_length"], ours=_fig11),
    Figure("Table", "Predictor FLOPs", "DejaVu N(E p + p(H+F)) vs ShadowLLM E p + p N(H+F), p = 1024",
           ["reports/predictor_flops.csv"], ["predictor_flops_lower"], ours=_table_flops),
    Figure("ours", "The protocols: what a mask may see (sequence, prompt, per token)",
           "not in the paper: its accuracy masks read the whole sequence, its latency re-predicted per token",
           ["model:ablation_protocols"]),
    Figure("ours", "Predictor placement (the paper's open question 1)", "not in the paper",
           ["model:predictors_by_placement"]),
]


# which table each counterpart is drawn from: without it, this configuration does not make the file
NEEDS = {"accuracy_vs_latency": ("ablations", "latency"), "input_dependence": ("dependence",),
         "ablation": ("ablations",), "predictors": ("predictors",), "latency": ("latency",),
         "reports/predictor_flops.csv": ("flops",)}


def made(spec: str, t: Tables) -> bool:
    """Whether this run has the tables the counterpart is drawn from."""
    stem = spec.partition(":")[2] or spec
    need = next((v for k, v in NEEDS.items() if stem.startswith(k) or spec == k), ())
    return all(getattr(t, n) is not None for n in need)


def link(spec: str, model: str, shared: str = "../../figures", own: str | None = None) -> str:
    """The Markdown path of a counterpart, relative to reports/{model}/ (the same in results/ and committed);
    `shared` is where the latency figures sit and `own` the model's figures (default ../../figures/{model}),
    relative to the report."""
    scope, _, stem = spec.partition(":")
    if scope == "model":
        return f"{own or f'../../figures/{model}'}/{stem}.png"
    if scope == "shared":
        return f"{shared}/{stem}.png"
    return f"../../{spec}"
