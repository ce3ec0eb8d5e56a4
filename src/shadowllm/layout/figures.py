"""Every figure of the study as data: its file stem, the table it is drawn from, where it lives and what it shows.

Torch- and matplotlib-free: the workflow plans with it (which figures a run draws and publishes), the report links
from it, the Snakemake report captions read it. Adding a figure is one FigureSpec here plus its drawing function.
"""
from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("png", "pdf")   # every figure is written in both: PNG to look at, PDF to put in a paper

# what draws a group of figures (one rule each) and the table it reads
GROUPS = ("eval", "dependence", "predictors", "ablations", "tradeoff", "latency")


@dataclass(frozen=True)
class FigureSpec:
    name: str                 # file stem: {name}.png and {name}.pdf
    group: str                # one of GROUPS: the rule (and table) that draws it
    scope: str                # "model": figures/{run}/{model}/; "run": figures/{run}/ (the latency study)
    table: str                # the results table it is drawn from
    paper: str | None = None  # the paper's counterpart ("Fig. 6"), None where the figure is ours only
    caption: str = ""         # one paragraph: what it shows and how to read it ("{model}": the model, see caption())


# shared sentences of the captions (the figures of a group read the same way)
_BANDS = ("Bands are 95 % intervals of each point's change from the dense model, from a bootstrap over the documents "
          "(questions) both scored, drawn around the point; predictor seeds are pooled; the dashed line is the dense "
          "model, the dotted one the majority-class baseline (mean over the tasks). One score normalisation is drawn "
          "(raw unless asked otherwise).")
_PRED = ("Quality is the mean per-example Spearman rho between predicted and true per-layer unit scores on held-out "
         "examples of {model}. Designs: ShadowLLM (one predictor at the placement layer), DejaVu-style (one per "
         "layer), static (the calibration mean, no predictor).")
_LAT = ("Sliced (contextually sparse) decoding at random-weight OPT shapes: dense, a static mask, ShadowLLM with one "
        "mask per prompt, ShadowLLM re-predicting every token, and DejaVu-style per-layer predictors; medians over "
        "repeated calls with interquartile-range bars, drawn from the bench tables of this run.")
_ABL = "tables/{model}/ablations.csv"

FIGURES: dict[str, FigureSpec] = {f.name: f for f in (
    FigureSpec("eval_vs_sparsity", "eval", "model", "tables/{model}/eval.csv", None,
               "Zero-shot accuracy (left, one line per task) and held-out word perplexity (right) of {model}: "
               "unpruned (0 %) and under the configured static masks (random: the same fraction of attention heads "
               "and FFN neurons, layers up to the placement kept). A baseline for the importance-based masks of "
               "later stages."),
    FigureSpec("input_dependence", "dependence", "model", "importance/{model}/input_dependence.csv", "Fig. 2",
               "Input dependence of head importance for {model}: per layer, the variance across inputs of each "
               "head's importance rank, against the variance expected if ranks were random and under the power-law "
               "reference. High variance means the important heads change from prompt to prompt, which is what "
               "contextual sparsity exploits."),
    FigureSpec("predictors_by_criterion", "predictors", "model", "tables/{model}/predictors.csv", "Fig. 5",
               "Predictor quality per importance criterion, heads and neurons in their own panels, one bar per "
               "design; inputs read at the last context token (what a mask may see before the answer). " + _PRED),
    FigureSpec("predictors_by_design", "predictors", "model", "tables/{model}/predictors.csv", "Fig. 4",
               "Predictor quality per design for the criterion swept over placements, inputs read at the last "
               "context token (``context``, what a mask may see before the answer) or at the last token of context "
               "+ gold answer (``full``, what the authors trained on). " + _PRED),
    FigureSpec("predictors_by_placement", "predictors", "model", "tables/{model}/predictors.csv", None,
               "Predictor quality against the placement layer (layers up to it kept dense): Spearman rho (left) and "
               "top-k recall at 50 % sparsity (right) per design and unit, for the criterion swept over placements. "
               + _PRED),
    FigureSpec("ablation_criteria_ppl", "ablations", "model", _ABL, "Fig. 6",
               "Word perplexity of {model} against sparsity under static (calibration-mean) global masks, one line "
               "per importance criterion, one panel per units pruned. " + _BANDS),
    FigureSpec("ablation_criteria_acc", "ablations", "model", _ABL, "Fig. 7",
               "Mean zero-shot accuracy of {model} against sparsity under static (calibration-mean) global masks, "
               "one line per importance criterion, one panel per units pruned. " + _BANDS),
    FigureSpec("ablation_styles", "ablations", "model", _ABL, "Fig. 3",
               "Global vs local vs hybrid top-k: perplexity and mean zero-shot accuracy of {model} against sparsity "
               "for ShadowLLM (predicted masks, sequence protocol) and for static masks, with the reference "
               "criterion. " + _BANDS),
    FigureSpec("ablation_fewshot", "ablations", "model", _ABL, "Fig. 8",
               "Shots of the importance traces: perplexity and mean zero-shot accuracy of {model} against sparsity "
               "under static global masks fitted on traces of each number of shots. " + _BANDS),
    FigureSpec("ablation_sources", "ablations", "model", _ABL, "Fig. 9",
               "Mask sources: perplexity and mean zero-shot accuracy of {model} against sparsity for ShadowLLM "
               "(global top-k) and DejaVu-style per-layer predictors (local) under the sequence protocol, the static "
               "ranking, random masks and the oracle (it reads the gold answer: a ceiling). " + _BANDS),
    FigureSpec("ablation_protocols", "ablations", "model", _ABL, None,
               "Protocols of the predictors, what a mask may see: the whole scored sequence, the prompt only, or "
               "each token causally; perplexity and mean zero-shot accuracy of {model} against sparsity, the other "
               "sources pale and dashed. " + _BANDS),
    FigureSpec("ablation_per_task", "ablations", "model", _ABL, "Fig. 10",
               "ShadowLLM (global) minus DejaVu (local) zero-shot accuracy of {model} per task against sparsity, one "
               "panel per protocol; error bars are the paired 95 % interval of the difference from a bootstrap over "
               "the questions both scored; predictor seeds are pooled."),
    FigureSpec("accuracy_vs_latency", "tradeoff", "model", _ABL, "Fig. 1",
               "Mean zero-shot accuracy of {model} against the decode latency of the sliced decoder, one curve per "
               "method through its sparsities, each marker filled and labelled by its sparsity: each decoder mode is "
               "paired with the mask source and protocol it implements (ShadowLLM per prompt with the predicted mask "
               "under the prompt protocol, per token under the token protocol, DejaVu with its per-layer "
               "predictors, the static ranking, dense). Latency is measured on random weights of a benchmarked "
               "shape, so the two axes may come from different models."),
    FigureSpec("latency_vs_size", "latency", "run", "latency/latency.csv", "Fig. 11",
               "Decode milliseconds per token against model size (parameters as benchmarked) at one sparsity. "
               + _LAT),
    FigureSpec("latency_vs_sparsity", "latency", "run", "latency/latency.csv", "Fig. 11",
               "Decode milliseconds per token against sparsity, one panel per model swept (at its generation length "
               "with the most sparsities), the dense model dashed. " + _LAT),
    FigureSpec("latency_vs_genlen", "latency", "run", "latency/latency.csv", "Fig. 11",
               "Milliseconds per generate call against the number of generated tokens at one sparsity, one panel "
               "per model benchmarked at several lengths. " + _LAT),
)}


def names(group: str) -> list[str]:
    """The stems of a group's figures, in drawing order."""
    if group not in GROUPS:
        raise ValueError(f"figure group {group!r} is not one of {list(GROUPS)}")
    return [f.name for f in FIGURES.values() if f.group == group]


def get(name: str) -> FigureSpec:
    if name not in FIGURES:
        raise ValueError(f"figure {name!r} is not one of {sorted(FIGURES)}")
    return FIGURES[name]


def caption(key: str, model: str | None = None) -> str:
    """The caption (reStructuredText) of one figure or of a group's figures, for the Snakemake report: one paragraph
    per figure, headed by its name and the paper's counterpart; {model} becomes `model` (default: "the model")."""
    specs = [get(key)] if key in FIGURES else [FIGURES[n] for n in names(key)]
    return "\n\n".join(f"**{f.name}**" + (f" (the paper's {f.paper})" if f.paper else " (ours)") + ": "
                       + f.caption.replace("{model}", model or "the model") for f in specs)
