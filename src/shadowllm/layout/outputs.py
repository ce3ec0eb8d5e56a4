"""What a run builds in the end and where it publishes it: figures/{run}/ and reports/{run}/ in the committed tree,
one folder per run, so that no two configurations write the same committed file."""
from __future__ import annotations

import os

from .figures import FIGURES, FORMATS, names
from .models import datasets_inputs, model_inputs
from .paths import dependence_csv, flops_table, latency_csvs, latency_table, table, traces
from .run import results, task_dir

STAGES = ("data", "importance", "predictors", "ablations", "latency", "figures", "report")


def figures_dir(cfg: dict, model: str | None = None) -> str:
    """Where a run publishes its figures: figures/{run}/{model}/, or figures/{run}/ for the run's own (latency)."""
    return f"figures/{cfg['run']}" + (f"/{model}" if model else "")


def reports_dir(cfg: dict, model: str | None = None) -> str:
    """Where a run publishes its reports and tables: reports/{run}/{model}/, or reports/{run}/ for the run's own."""
    return f"reports/{cfg['run']}" + (f"/{model}" if model else "")


def figure_pairs(cfg: dict, group: str, model: str | None = None) -> list[tuple[str, str]]:
    """(result, committed) of each figure of a registry group in every format; run-scoped ones at the run's root."""
    out = []
    for stem in names(group):
        m = model if FIGURES[stem].scope == "model" else None
        src = f"{results(cfg)}/figures" + (f"/{m}" if m else "")
        out += [(f"{src}/{stem}.{e}", f"{figures_dir(cfg, m)}/{stem}.{e}") for e in FORMATS]
    return out


def _model_outputs(cfg: dict, m: str) -> list[tuple[str, str]]:
    """(result, committed) of one model's figures, reports and tables."""
    R, rep = results(cfg), reports_dir(cfg, m)
    out = []
    if cfg.get("masks"):
        out += figure_pairs(cfg, "eval", m) + [(f"{R}/reports/{m}/eval.md", f"{rep}/eval.md")]
    if cfg.get("importance") and cfg["importance"]["tasks"]:
        out += figure_pairs(cfg, "dependence", m)
    if cfg.get("predictors"):
        out += figure_pairs(cfg, "predictors", m) + [(table(cfg, m, "predictors"), f"{rep}/predictors.csv")]
    if cfg.get("ablations"):
        out.append((f"{R}/reports/{m}/report.md", f"{rep}/report.md"))
        out += figure_pairs(cfg, "tradeoff", m) if cfg.get("latency") else []
        out += figure_pairs(cfg, "ablations", m)
        out += [(table(cfg, m, "ablations"), f"{rep}/ablations.csv"), (table(cfg, m, "samples"), f"{rep}/samples.csv"),
                (f"{R}/reports/{m}/ablations.md", f"{rep}/ablations.md")]
    return out


def final_outputs(cfg: dict) -> list[tuple[str, str]]:
    """(result path, committed path) of every final figure, report and table of this configuration."""
    out = [pair for m in cfg.get("models", {}) for pair in _model_outputs(cfg, m)]
    lat = cfg.get("latency")
    if lat:
        out += figure_pairs(cfg, "latency")
        out += [(latency_table(cfg), f"{reports_dir(cfg)}/latency_{lat['device'].split(':')[0]}.csv"),
                (flops_table(cfg), f"{reports_dir(cfg)}/predictor_flops.csv")]
    return out


def publish_pairs(cfg: dict) -> list[str]:
    """SOURCE=DESTINATION arguments of `shadowllm publish-run`."""
    return [f"{a}={b}" for a, b in final_outputs(cfg)]


def all_outputs(cfg: dict) -> list[str]:
    """What `snakemake` builds by default: the final outputs, the traces, the bench CSVs, then publish's manifest."""
    out = [a for a, _ in final_outputs(cfg)] + traces(cfg) + latency_csvs(cfg)
    return out + ([published(cfg)] if cfg["publish"] else [])


def publish_inputs(cfg: dict) -> list[str]:
    """Everything else the run builds, so that publishing (which changes tracked files) comes last."""
    return [a for a, _ in final_outputs(cfg)] + traces(cfg) + latency_csvs(cfg)


def published(cfg: dict) -> str:
    """The publish step's manifest (what it copied, what was unchanged)."""
    return f"{results(cfg)}/published.tsv"


def stage_outputs(cfg: dict, stage: str) -> list[str]:
    """What `snakemake <stage>` builds (each stage's final files; its inputs come along)."""
    models, final = list(cfg.get("models", {})), [a for a, _ in final_outputs(cfg)]
    has = {k: bool(cfg.get(k)) for k in ("predictors", "ablations", "latency")}
    traced = bool(cfg.get("importance") and cfg["importance"]["tasks"])
    by_stage = {
        "data": lambda: [task_dir(cfg)] + datasets_inputs(cfg) + [p for m in models for p in model_inputs(cfg, m)],
        "importance": lambda: traces(cfg) + ([dependence_csv(cfg, m) for m in models] if traced else []),
        "predictors": lambda: [table(cfg, m, "predictors") for m in models] if has["predictors"] else [],
        "ablations": lambda: [table(cfg, m, "ablations") for m in models] if has["ablations"] else [],
        "latency": lambda: latency_csvs(cfg) + ([latency_table(cfg), flops_table(cfg)] if has["latency"] else []),
        "figures": lambda: [p for p in final if "/figures/" in p],
        "report": lambda: [p for p in final if p.endswith(".md")],
    }
    if stage not in by_stage:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return by_stage[stage]()


def report_links(cfg: dict, model: str) -> dict[str, str]:
    """Where the published report's links point, relative to it: the model's figures and the run's own."""
    here = os.path.dirname(f"{reports_dir(cfg, model)}/report.md")
    return {"model-figures": os.path.relpath(figures_dir(cfg, model), here),
            "latency-figures": os.path.relpath(figures_dir(cfg), here)}
