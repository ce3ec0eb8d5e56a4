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
    caption: str = ""         # one paragraph: what it shows and how to read it


FIGURES: dict[str, FigureSpec] = {f.name: f for f in (
    FigureSpec("eval_vs_sparsity", "eval", "model", "tables/{model}/eval.csv"),
    FigureSpec("input_dependence", "dependence", "model", "importance/{model}/input_dependence.csv", "Fig. 2"),
    FigureSpec("predictors_by_criterion", "predictors", "model", "tables/{model}/predictors.csv", "Fig. 5"),
    FigureSpec("predictors_by_design", "predictors", "model", "tables/{model}/predictors.csv", "Fig. 4"),
    FigureSpec("predictors_by_placement", "predictors", "model", "tables/{model}/predictors.csv"),
    FigureSpec("ablation_criteria_ppl", "ablations", "model", "tables/{model}/ablations.csv", "Fig. 6"),
    FigureSpec("ablation_criteria_acc", "ablations", "model", "tables/{model}/ablations.csv", "Fig. 7"),
    FigureSpec("ablation_styles", "ablations", "model", "tables/{model}/ablations.csv", "Fig. 3"),
    FigureSpec("ablation_fewshot", "ablations", "model", "tables/{model}/ablations.csv", "Fig. 8"),
    FigureSpec("ablation_sources", "ablations", "model", "tables/{model}/ablations.csv", "Fig. 9"),
    FigureSpec("ablation_protocols", "ablations", "model", "tables/{model}/ablations.csv"),
    FigureSpec("ablation_per_task", "ablations", "model", "tables/{model}/ablations.csv", "Fig. 10"),
    FigureSpec("accuracy_vs_latency", "tradeoff", "model", "tables/{model}/ablations.csv", "Fig. 1"),
    FigureSpec("latency_vs_size", "latency", "run", "latency/latency.csv", "Fig. 11"),
    FigureSpec("latency_vs_sparsity", "latency", "run", "latency/latency.csv", "Fig. 11"),
    FigureSpec("latency_vs_genlen", "latency", "run", "latency/latency.csv", "Fig. 11"),
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
