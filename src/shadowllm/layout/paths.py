"""The files each stage of a run writes and reads, under results/{run}: traces, latency benches, ablation points,
the tables the report judges."""
from __future__ import annotations

import itertools

from .grid import mask_points, points
from .run import results


def traces(cfg: dict) -> list[str]:
    """Every importance trace file: models x traced tasks x shots x criteria."""
    imp = cfg.get("importance")
    if not imp or not imp["tasks"]:
        return []
    return [f"{results(cfg)}/importance/{m}/{t}/k{k}/{c}.safetensors"
            for m, t, k, c in itertools.product(cfg["models"], imp["tasks"], imp["shots"], imp["criteria"])]


def dependence_traces(cfg: dict, model: str) -> list[str]:
    """The traces behind the input-dependence statistics: every task at dependence_k under dependence_criterion."""
    imp = cfg["importance"]
    return [f"{results(cfg)}/importance/{model}/{t}/k{imp['dependence_k']}/{imp['dependence_criterion']}.safetensors"
            for t in imp["tasks"]]


def dependence_csv(cfg: dict, model: str) -> str:
    return f"{results(cfg)}/importance/{model}/input_dependence.csv"


def latency_csvs(cfg: dict) -> list[str]:
    """One CSV per named latency bench."""
    lat = cfg.get("latency")
    return [f"{results(cfg)}/latency/{b}.csv" for b in lat["benches"]] if lat else []


def latency_table(cfg: dict) -> str:
    return f"{results(cfg)}/latency/latency.csv"


def flops_table(cfg: dict) -> str:
    return f"{results(cfg)}/latency/predictor_flops.csv"


def table(cfg: dict, model: str, name: str) -> str:
    """A model's tidy table: ablations, samples, predictors or eval."""
    return f"{results(cfg)}/tables/{model}/{name}.csv"


def ablation_jsons(cfg: dict, model: str) -> list[str]:
    """Every ablation grid point's result of a model (the ablation table's inputs)."""
    return [f"{results(cfg)}/ablations/{model}/{p.path()}.json" for p in points(cfg)]


def eval_jsons(cfg: dict, model: str) -> list[str]:
    """The dense point's and the `masks` section's results (the evaluation table's inputs)."""
    return [f"{results(cfg)}/ablations/{model}/{p.path()}.json" for p in mask_points(cfg)]


def claims_inputs(cfg: dict, model: str) -> dict[str, str]:
    """The tables a model's claims are judged on, keyed by the report's flag: whichever stages the run has."""
    ins = {"ablations": table(cfg, model, "ablations"), "samples": table(cfg, model, "samples")}
    if cfg.get("predictors"):
        ins["predictors"] = table(cfg, model, "predictors")
    if cfg.get("latency"):
        ins["latency"] = latency_table(cfg)
        ins["flops"] = flops_table(cfg)
    if cfg.get("importance") and cfg["importance"]["tasks"]:
        ins["dependence"] = dependence_csv(cfg, model)
    if cfg["report"]["latency_tables"]:
        ins["extra-latency"] = cfg["report"]["latency_tables"]
    return ins
