"""The predictor grid: which predictors a run trains, the traces each one pools, and the predictor file or static
table an ablation point reads."""
from __future__ import annotations

from .grid import Point, pooled_shots
from .run import results

POINT = ("criterion={criterion}/design={design}/position={position}/placement={placement}/normalize={normalize}/"
         "seed={seed}")
# a static table fitted on the traces of some shots only (the few-shot ablation, paper Fig. 8)
FEWSHOT = "fewshot/shots={shots}/criterion={criterion}/placement={placement}/normalize={normalize}"
DESIGN_POSITION = "context"   # predictors and static tables are read at the last context token when trained


def points_one_seed(cfg: dict) -> list[dict]:
    """criteria x designs x positions at the placement, the first criterion's extra positions and designs, and the
    placement sweep, each in predictors.normalize."""
    pr = cfg.get("predictors")
    if not pr:
        return []
    at = dict(placement=pr["placement"], normalize=pr["normalize"])
    pts = [dict(criterion=c, design=d, position=p, **at)
           for c in pr["criteria"] for d in pr["designs"] for p in pr["positions"]]
    c0, extra = pr["criteria"][0], [p for p in pr["first_criterion_positions"] if p not in pr["positions"]]
    pts += [dict(criterion=c0, design=d, position=p, **at) for d in pr["designs"] for p in extra]
    pts += [dict(criterion=c0, design=d, position=p, **at)
            for d in pr["first_criterion_designs"] if d not in pr["designs"] for p in pr["positions"] + extra]
    pts += [dict(criterion=c0, design=d, position="context", placement=pl, normalize=pr["normalize"])
            for pl in pr["placement_sweep"] for d in ("shadowllm", "static") if d in pr["designs"]]
    return pts


def pred_points(cfg: dict) -> list[dict]:
    """Every predictor grid point at every seed of predictors.seeds. (The ablation grid asks for the predictors of
    its own normalisations and seeds as well: point_predictor.)"""
    pr = cfg.get("predictors")
    return [dict(p, seed=s) for p in points_one_seed(cfg) for s in pr["seeds"]] if pr else []


def metrics_files(cfg: dict, model: str) -> list[str]:
    """The held-out metrics of every predictor grid point of a model (the predictor table's inputs)."""
    return [f"{results(cfg)}/predictors/{model}/{POINT.format(**p)}/metrics.csv" for p in pred_points(cfg)]


def trace_dirs(cfg: dict, model: str) -> list[str]:
    """The trace folders a predictor pools: every traced task at the configured shots."""
    pr, imp = cfg["predictors"], cfg["importance"]
    shots = pr["shots"] if pr["shots"] is not None else imp["shots"]
    return [f"{results(cfg)}/importance/{model}/{t}/k{k}" for t in imp["tasks"] for k in shots]


def trace_files(cfg: dict, model: str, criterion: str, design: str) -> list[str]:
    """The trace files one predictor reads: the inputs and its criterion's scores (and per-token inputs: fullseq)."""
    names = ["inputs.safetensors", f"{criterion}.safetensors"]
    if design == "fullseq":
        names.append("sequence_inputs.safetensors")
    return [f"{d}/{n}" for d in trace_dirs(cfg, model) for n in names]


def fewshot_traces(cfg: dict, model: str, shots: str, criterion: str) -> list[str]:
    """The trace files a few-shot static table is fitted on: every traced task at the named shots ('0+5')."""
    ks = [int(k) for k in shots.split("+")]
    return [f"{results(cfg)}/importance/{model}/{t}/k{k}/{n}" for t in cfg["importance"]["tasks"] for k in ks
            for n in ("inputs.safetensors", f"{criterion}.safetensors")]


def point_predictor(cfg: dict, model: str, p: Point) -> list[str]:
    """The predictor file or static table an ablation point reads ([] for dense, random, oracle)."""
    if p.design == "none":
        return []
    root = f"{results(cfg)}/predictors/{model}"
    if p.design == "static" and p.shots != pooled_shots(cfg):
        fewshot = FEWSHOT.format(shots=p.shots, criterion=p.criterion, placement=p.placement, normalize=p.normalize)
        return [f"{root}/{fewshot}/predictor.safetensors"]
    # a static table is the mean of the training targets: it does not depend on the seed (the first one's is read)
    seed = p.seed if p.design != "static" else cfg["predictors"]["seeds"][0]
    pt = POINT.format(criterion=p.criterion, design=p.design, position=DESIGN_POSITION, placement=p.placement,
                      normalize=p.normalize, seed=seed)
    return [f"{root}/{pt}/predictor.safetensors"]

