"""The ablation grid as data: mask sources, protocols, the axes of a grid point and the expansion of the config's
named sub-grids (and its `masks` section) into points, shared by the workflow, the CLI and the figures."""
from __future__ import annotations

import itertools
import json
import numbers
from dataclasses import asdict, dataclass
from functools import lru_cache
from types import MappingProxyType

from .axes import HEAD_ONLY_CRITERIA, NORMALIZE, PRUNE_STYLES, UNITS

# What a mask may see. sequence: the last input token of the scored sequence (context + candidate as lm-eval
# feeds it; for perplexity the whole window), the authors' accuracy setting. prompt: the last context token, one
# mask per question shared by its choices. token: position t decides position t's mask (causal decoding).
PROTOCOLS = ("sequence", "prompt", "token")


@dataclass(frozen=True)
class SourceSpec:
    """How a mask source behaves on the grid."""
    name: str
    design: str              # the predictor design whose file it reads ("none": reads no predictor file)
    protocols: tuple         # the protocols it runs under; input-independent sources have one pseudo-protocol
    styles: tuple = PRUNE_STYLES
    criterion: bool = True   # whether it ranks by a criterion (then also in a normalisation: the normalize axis)
    doc: str = ""
    seeded: bool = False     # whether the seed axis means something: the predictor's training seed or random's


SOURCES = {s.name: s for s in (
    SourceSpec("dense", "none", ("none",), ("none",), False, "no mask: the unpruned model"),
    SourceSpec("random", "none", ("none",), PRUNE_STYLES, False, "uniform random scores (seeded): the floor",
               seeded=True),
    SourceSpec("static", "static", ("none",), PRUNE_STYLES, True,
               "the criterion's calibration mean: one mask for every input"),
    SourceSpec("predicted", "shadowllm", PROTOCOLS, PRUNE_STYLES, True,
               "one predictor at the placement layer decides every later layer's mask in the same pass", seeded=True),
    SourceSpec("dejavu", "dejavu", PROTOCOLS, ("local",), True,
               "per-layer predictors, each reading its own layer's input (local top-k only)", seeded=True),
    SourceSpec("oracle", "none", ("gold",), PRUNE_STYLES, True,
               "the criterion computed on the evaluated input with its gold answer: a ceiling"),
)}

AXES = ["model", "source", "design", "criterion", "normalize", "shots", "seed", "placement", "style", "units",
        "protocol", "sparsity"]
COLUMNS = AXES + ["task", "metric", "value"]
# the wildcards of a point's path (design follows from the source)
PATH = ("source={source}/criterion={criterion}/normalize={normalize}/shots={shots}/seed={seed}/placement={placement}/"
        "style={style}/units={units}/protocol={protocol}/sparsity={sparsity}")


@dataclass(frozen=True)
class Point:
    """One grid point. normalize: the space the criterion's scores are ranked in (predictors.normalize: raw,
    layer, example): the static table's, the predictor's training targets', the oracle's scores before top-k;
    'none' for sources without a criterion (dense, random). seed: the predictor's training seed (predicted,
    dejavu), the random scores' seed (random); 0 for the others (a static table does not depend on it)."""
    source: str
    criterion: str = "none"
    normalize: str = "none"
    shots: str = "none"      # the traces' shots a static table or predictor was fitted on, e.g. "0+5"
    seed: int = 0
    placement: int = 0
    style: str = "none"
    units: str = "none"
    protocol: str = "none"
    sparsity: float = 0.0

    @property
    def design(self) -> str:
        return SOURCES[self.source].design

    def path(self) -> str:
        return PATH.format(**asdict(self))

    def axes(self, model: str) -> dict:
        return {"model": model, **asdict(self), "design": self.design}

    def check(self) -> Point:
        """Raise ValueError naming the first bad axis value."""
        if self.source not in SOURCES:
            raise ValueError(f"mask source {self.source!r} is not one of {sorted(SOURCES)}")
        spec = SOURCES[self.source]
        if self.protocol not in spec.protocols:
            raise ValueError(f"protocol {self.protocol!r} is not one of {list(spec.protocols)} for source "
                             f"{self.source!r}" + (f" (protocols: {list(PROTOCOLS)})" if spec.protocols == PROTOCOLS
                                                   else ""))
        if self.style not in spec.styles:
            raise ValueError(f"style {self.style!r} is not one of {list(spec.styles)} for source {self.source!r}")
        if self.source != "dense":
            if self.units not in UNITS:
                raise ValueError(f"units {self.units!r} is not one of {list(UNITS)}")
            if not 0.0 <= float(self.sparsity) < 1.0:
                raise ValueError(f"sparsity {self.sparsity!r} is outside [0, 1)")
        if spec.criterion == (self.criterion == "none"):
            raise ValueError(f"source {self.source!r} " + ("ranks by a criterion; got criterion 'none'"
                                                          if spec.criterion else
                                                          f"takes no criterion; got {self.criterion!r}"))
        if spec.criterion and self.normalize not in NORMALIZE:
            raise ValueError(f"normalize {self.normalize!r} is not one of {list(NORMALIZE)} for source {self.source!r}")
        if not spec.criterion and self.normalize != "none":
            raise ValueError(f"source {self.source!r} ranks no criterion: normalize must be 'none', got "
                             f"{self.normalize!r}")
        if not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed {self.seed!r} must be an integer >= 0")
        if not spec.seeded and self.seed != 0:
            raise ValueError(f"source {self.source!r} has no seed: seed must be 0, got {self.seed!r}")
        return self

    @classmethod
    def from_wildcards(cls, wc) -> Point:
        d = dict(wc)
        return cls(source=d["source"], criterion=d["criterion"], normalize=d["normalize"], shots=d["shots"],
                   seed=int(d["seed"]), placement=int(d["placement"]), style=d["style"], units=d["units"],
                   protocol=d["protocol"], sparsity=float(d["sparsity"]))


DENSE = Point("dense")


def shots_label(shots) -> str:
    """[0, 5] -> '0+5' (the value of the shots axis)."""
    return "+".join(str(int(k)) for k in sorted(shots))


def pooled_shots(cfg: dict) -> str:
    """The shots label of the traces the predictors pool (predictors.shots, else every traced k)."""
    pr, imp = cfg.get("predictors") or {}, cfg.get("importance") or {}
    return shots_label(pr.get("shots") or imp.get("shots") or [0])


def default_seed(cfg: dict) -> int:
    """The seed of a seeded point whose sub-grid names none: the first of predictors.seeds (0 without them)."""
    return int(((cfg.get("predictors") or {}).get("seeds") or [0])[0])


def masks_grid(cfg: dict) -> dict | None:
    """The `masks` section as one more sub-grid (its kinds at its style, units, placement and sparsities), or None."""
    m = cfg.get("masks")
    if not m:
        return None
    return {"source": list(m["kinds"]), "criterion": ["none"], "style": [m["style"]], "units": [m["units"]],
            "protocol": ["none"], "sparsity": list(m["sparsity"]), "shots": None, "zero_shot": True,
            "placement": m["placement"]}


def grid_points(cfg: dict, g: dict):
    """(point, zero-shot) of one sub-grid of a validated config (defaults filled)."""
    ab, pr = cfg["ablations"], cfg.get("predictors") or {}
    placement = g.get("placement", pr.get("placement", 0))
    all_crits = pr.get("criteria") or (cfg.get("importance") or {}).get("criteria", [])
    crits = all_crits if "all" in g["criterion"] else g["criterion"]
    norms, seeds = g.get("normalize") or ab.get("normalize") or ["raw"], g.get("seeds") or [default_seed(cfg)]
    for src, crit, norm, style, units, proto, sp, shots, seed in itertools.product(
            g["source"], crits, norms, g["style"], g["units"], g["protocol"], g["sparsity"] or ab["sparsity"],
            g["shots"] or [None], seeds):
        spec = SOURCES[src]
        if spec.criterion and units != "heads" and crit in HEAD_ONLY_CRITERIA:
            units = "heads"
        p = Point(src, crit if spec.criterion else "none", norm if spec.criterion else "none",
                  (shots_label(shots) if shots else pooled_shots(cfg)) if spec.design != "none" else "none",
                  int(seed) if spec.seeded else 0,
                  placement, style if style in spec.styles else spec.styles[0], units,
                  proto if proto in spec.protocols else spec.protocols[0], float(sp)).check()
        yield p, g["zero_shot"]


def expand(cfg: dict) -> dict[Point, bool]:
    """A validated config (defaults filled) -> {point: with zero-shot}, the dense point first (with zero-shot).

    Input-independent sources collapse their protocols into one point; dejavu runs local; a head-only criterion
    runs with units 'heads' only; a point named by two sub-grids gets zero-shot if either asks for it. A sub-grid's
    `normalize` (default ablations.normalize) applies to the sources that rank by a criterion ('none' for dense and
    random); its `seeds` (default: the first of predictors.seeds) to predicted, dejavu and random (0 elsewhere).
    The `masks` section's points (masks_grid) come last, with zero-shot."""
    out: dict[Point, bool] = {DENSE: True}
    grids = list(cfg["ablations"]["grids"].values()) + [g for g in [masks_grid(cfg)] if g]
    for g in grids:
        for p, zero_shot in grid_points(cfg, g):
            out[p] = out.get(p, False) or zero_shot
    return out


def points(cfg: dict) -> MappingProxyType:
    """expand(cfg), computed once per configuration (read-only): the workflow asks for it in every job."""
    return _points(json.dumps(cfg, default=str))   # key order kept: it is the grids' order


@lru_cache(maxsize=4)
def _points(key: str) -> MappingProxyType:
    return MappingProxyType(expand(json.loads(key)))


def point_of(cfg: dict, wildcards) -> Point:
    """The point a job's wildcards name; ValueError where the configuration's grid has no such point."""
    p = Point.from_wildcards(wildcards)
    if p not in points(cfg):
        raise ValueError(f"{p.path()} is not a point of config['ablations'] (nor of config['masks'])")
    return p


def mask_points(cfg: dict) -> list[Point]:
    """The dense point and the `masks` section's points: what the evaluation table (eval.csv) holds."""
    g = masks_grid(cfg)
    return [DENSE] + list(dict.fromkeys(p for p, _ in grid_points(cfg, g))) if g else []


def tasks_of(p: Point, ppl_task: str, tasks: list[str], zero_shot: bool) -> list[str]:
    """What a point evaluates: perplexity unless the protocol has no prompt to read (prompt), plus zero-shot."""
    out = [] if p.protocol == "prompt" else [ppl_task]
    return out + (list(tasks) if zero_shot or p.protocol == "prompt" else [])
