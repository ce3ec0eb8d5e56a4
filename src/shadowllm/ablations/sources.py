"""Mask sources of the grid, registered by name: each turns one batch of scored rows into what MaskHooks asks for.

A batch is right-padded token ids x [B, T] with, per row, its length, the position of its last context token and
(for the oracle) the gold sequence of its question. Input-independent sources (static, random) build one mask up
front; predicted and dejavu run their predictors inside the pass; the oracle scores each question with the
criterion first (a second pass with gradients: a ceiling, not a deployable method).

Every source that ranks by a criterion ranks in the point's normalisation (`Point.normalize`, see
`shadowllm.predictors.normalize`): the static table and the predictors were fitted in it (their file says so and
is refused otherwise), the oracle maps its scores into it before the top-k.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..adapter import Adapter
from ..masks import Mask, StaticMask, mask_from_scores, random_scores
from ..layout.grid import SOURCES, Point

_BUILDERS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        _BUILDERS[name] = fn
        return fn
    return deco


@dataclass
class Batch:
    x: torch.Tensor                 # [B, T] token ids, right-padded
    lengths: torch.Tensor           # [B] real tokens per row
    ctx_pos: torch.Tensor           # [B] index of the last context token in the row
    gold: list | None = None        # per row: (context ids, gold continuation ids), for the oracle

    def position(self, protocol: str):
        """What the mask reads under `protocol`: [B] positions, or "token" (every position)."""
        if protocol == "sequence":
            return self.lengths - 1
        if protocol == "prompt":
            return self.ctx_pos
        if protocol == "token":
            return "token"
        raise ValueError(f"protocol {protocol!r} reads no position")


@dataclass
class Settings:
    """Everything a source needs besides the batch."""
    point: Point
    model: str                      # the model's name in the grid
    predictor: str | None = None    # a predictor file or static table (sources that read one)
    seed: int = 0                   # random's score seed (the point's seed axis)
    min_heads: int = 1              # hybrid floors per layer
    min_neurons: int = 256
    oracle_batch: int = 8


def build(ad: Adapter, s: Settings):
    """-> f(Batch) -> MaskSource | None (None: dense). Checks the predictor file against the point first."""
    if s.point.source not in _BUILDERS:
        raise ValueError(f"mask source {s.point.source!r} is not one of {sorted(_BUILDERS)}")
    return _BUILDERS[s.point.source](ad, s)


def _select(s: Settings, hs, ns) -> Mask:
    p = s.point
    return mask_from_scores(hs, ns, p.sparsity, p.style, units=p.units, placement=p.placement,
                            min_heads=s.min_heads, min_neurons=s.min_neurons)


def check_meta(meta: dict, s: Settings, path) -> None:
    """A predictor or table must be the one the point names: same model, criterion, design, placement and
    normalisation, and for a network (predicted, dejavu) the same training seed."""
    p = s.point
    want = {"model": s.model, "criterion": p.criterion, "design": p.design, "placement": p.placement,
            "normalize": p.normalize}
    if SOURCES[p.source].seeded:
        want["seed"] = p.seed
    bad = {k: (meta.get(k), v) for k, v in want.items() if str(meta.get(k)) != str(v)}
    if bad:
        raise ValueError(f"{path}: made for another grid point: " +
                         ", ".join(f"{k} is {got!r}, expected {w!r}" for k, (got, w) in bad.items()))


@register("dense")
def _dense(ad, s):
    return lambda batch: None


@register("random")
def _random(ad, s):
    src = StaticMask(_select(s, *random_scores(ad, s.seed)).check(ad))
    return lambda batch: src


@register("static")
def _static(ad, s):
    from ..predictors.designs import load_static_table

    table, meta = load_static_table(s.predictor)
    check_meta(meta, s, s.predictor)
    t = table.table[None]                                                          # [1, L, H+F]
    if table.F == 0 and s.point.units == "heads":   # a head-only criterion: neuron scores unused, all kept
        t = torch.cat([t, torch.zeros(1, ad.n_layers, ad.n_neurons)], -1)
    if t.shape[1:] != (ad.n_layers, ad.n_heads + ad.n_neurons):
        raise ValueError(f"{s.predictor}: a table for {tuple(t.shape[1:])} does not fit the model "
                         f"({ad.n_layers} layers, {ad.n_heads} heads + {ad.n_neurons} neurons)")
    src = StaticMask(_select(s, t[..., :ad.n_heads], t[..., ad.n_heads:]).check(ad))
    return lambda batch: src


def _load_net(ad, s):
    from ..predictors.model import load_predictor

    pred, meta = load_predictor(s.predictor)
    check_meta(meta, s, s.predictor)
    return pred.to(next(ad.model.parameters()).device)


@register("predicted")
def _predicted(ad, s):
    from ..predictors.source import PredictedMasks

    pred, p = _load_net(ad, s), s.point
    return lambda b: PredictedMasks(pred, p.sparsity, p.style, p.units, b.position(p.protocol),
                                    min_heads=s.min_heads, min_neurons=s.min_neurons)


@register("dejavu")
def _dejavu(ad, s):
    from ..predictors.source import DejaVuMasks

    pred, p = _load_net(ad, s), s.point
    return lambda b: DejaVuMasks(pred, p.sparsity, p.units, b.position(p.protocol))


def oracle_scores(hs: torch.Tensor, ns: torch.Tensor, p: Point) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle's head and neuron scores [B, L, U] mapped into the point's normalisation, each kind on its own."""
    from ..predictors.normalize import normalize_scores

    return normalize_scores(hs, p.normalize, p.placement), normalize_scores(ns, p.normalize, p.placement)


@register("oracle")
def _oracle(ad, s):
    from ..importance.collect import Example, collect
    from ..importance.criteria import get_criteria, supports

    crit = get_criteria([s.point.criterion])[0]
    if s.point.units != "heads" and not supports(crit, "neurons"):
        raise ValueError(f"criterion {s.point.criterion!r} scores heads only; units {s.point.units!r} needs neurons")
    max_len = int(getattr(ad.model.config, "max_position_embeddings", 2048))
    pad = ad.model.config.pad_token_id or 0
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def example(ctx, gold) -> Example:
        over = len(ctx) + len(gold) - max_len
        ctx = ctx[max(over, 0):] if len(ctx) > over else ctx[-1:]
        gold = gold[:max_len - len(ctx)]                      # a window as long as the model: its last token dropped
        return Example("oracle", list(ctx), list(gold))

    def masks(b: Batch):
        if b.gold is None:
            raise ValueError("the oracle needs each row's gold sequence")
        keys = [(tuple(c), tuple(g)) for c, g in b.gold]
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if todo:
            col = collect(ad.model, [example(c, g) for c, g in todo], [crit.name], batch_size=s.oracle_batch,
                          pad_token_id=pad)
            hs = col.heads[crit.name].float()
            ns = col.neurons[crit.name].float() if crit.name in col.neurons else torch.zeros(len(todo), ad.n_layers,
                                                                                               ad.n_neurons)
            for i, k in enumerate(todo):
                cache[k] = (hs[i], ns[i])
        hs = torch.stack([cache[k][0] for k in keys])
        ns = torch.stack([cache[k][1] for k in keys])
        return StaticMask(_select(s, *oracle_scores(hs, ns, s.point)))

    return masks
