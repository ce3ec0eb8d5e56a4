"""Choosing the units to keep from scores: local, global and hybrid top-k; layers up to the placement dense."""
from __future__ import annotations

import torch

from ..adapter import Adapter
from ..layout.axes import PRUNE_STYLES, UNITS  # noqa: F401 (defined torch-free, for the grid)
from .mask import Mask


def topk_mask(scores: torch.Tensor, sparsity: float, style: str = "global", min_keep: int = 1,
              placement: int = 0) -> torch.Tensor:
    """Keep the highest-scoring units. scores [B, L, U] -> 0/1 mask [B, L, U].

    local:  each layer keeps round((1 - sparsity) * U) units.
    global: exactly round((1 - sparsity) * N) units over all prunable layers, N = their unit count.
    hybrid: global, but each prunable layer keeps at least `min_keep` units (its best ones); the
            extra units are taken from the lowest-ranked global picks so the total stays exact.
    Ties are broken by position (the lower layer, then the lower unit index, is kept), so the same scores
    always give the same mask. Layers 0..placement are never pruned (placement 0: layer 0 kept, the paper's
    setting) and do not count in N. A model with no layer after the placement has nothing to prune: only sparsity 0 is accepted.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity!r} is outside [0, 1)")
    if style not in PRUNE_STYLES:
        raise ValueError(f"prune style {style!r} is not one of {PRUNE_STYLES}")
    if scores.dim() == 2:
        scores = scores[None]
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    B, L, U = scores.shape
    if not 0 <= placement < L:
        raise ValueError(f"placement layer {placement!r} is outside the model's layers 0..{L - 1}")
    first = placement + 1
    if first == L:
        if sparsity > 0:
            raise ValueError(f"a {L}-layer model has no layer after the placement layer {placement} to prune; "
                             f"sparsity {sparsity} cannot be reached (expected sparsity 0)")
        return torch.ones(B, L, U)
    s = scores[:, first:].float()
    Lp = L - first
    if style == "local":
        mask = _keep_top(s, int(round((1 - sparsity) * U)))
    else:
        k = int(round((1 - sparsity) * Lp * U))
        mask = _keep_top(s.reshape(B, -1), k).view(B, Lp, U)
        if style == "hybrid":
            order = _ranked(s.reshape(B, -1))                               # [B, Lp*U], best first
            mk = min(min_keep, U)
            if k < mk * Lp:
                raise ValueError(f"sparsity {sparsity} keeps {k} units, fewer than the hybrid floor of {mk} per "
                                 f"layer x {Lp} layers")
            forced = _keep_top(s, mk).view(B, -1)
            picked = mask.reshape(B, -1)
            need = ((forced == 1) & (picked == 0)).sum(-1)                     # [B] floor units not picked
            # the global picks that are not forced, worst first: the first `need` of them make room
            rank = torch.empty_like(order).scatter_(-1, order, torch.arange(Lp * U).expand(B, -1))
            drop_key = torch.where((picked == 1) & (forced == 0), rank, -1)
            worst = _ranked(drop_key.float())                                   # droppable units, worst first
            drop = torch.arange(Lp * U)[None] < need[:, None]
            picked = picked.scatter(-1, worst, torch.where(drop, 0.0, picked.gather(-1, worst)))
            mask = torch.maximum(picked, forced).view(B, Lp, U)
    return torch.cat([torch.ones(B, first, U), mask], dim=1)


def _keep_top(s: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 over the last dim: its k highest scores, equal scores taken lowest index first (what a stable
    descending sort keeps), in linear time: the k-th largest value, then the ties at it from the left."""
    n = s.shape[-1]
    if k <= 0 or k >= n:
        return torch.full(s.shape, float(k >= n))
    thr = s.kthvalue(n - k + 1, dim=-1, keepdim=True).values                 # the k-th largest
    above, tie = s > thr, s == thr
    need = k - above.sum(-1, keepdim=True)
    return (above | (tie & (tie.cumsum(-1) <= need))).float()


def _ranked(s: torch.Tensor) -> torch.Tensor:
    """Indices along the last dim, highest score first; equal scores keep their index order (stable)."""
    return torch.sort(s, dim=-1, descending=True, stable=True).indices


def random_scores(ad: Adapter, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, ad.n_layers, ad.n_heads, generator=g), torch.rand(1, ad.n_layers, ad.n_neurons, generator=g)


def mask_from_scores(head_scores, neuron_scores, sparsity: float, style: str = "global",
                     min_neurons: int = 256, units: str = "both", placement: int = 0, min_heads: int = 1) -> Mask:
    """Same sparsity for heads and neurons (the paper's setting); hybrid keeps >= min_heads heads and
    >= min_neurons neurons per layer (the paper: 1 and 256; capped at the layer's width).

    units "heads" / "neurons" prunes only that kind and keeps every unit of the other."""
    if units not in UNITS:
        raise ValueError(f"units {units!r} is not one of {UNITS}")
    hs = head_scores if head_scores.dim() == 3 else head_scores[None]
    ns = neuron_scores if neuron_scores.dim() == 3 else neuron_scores[None]
    heads = topk_mask(hs, sparsity, style, min_keep=min(min_heads, hs.shape[-1]), placement=placement) if units != "neurons" \
        else torch.ones(hs.shape)
    neurons = topk_mask(ns, sparsity, style, min_keep=min(min_neurons, ns.shape[-1]), placement=placement) \
        if units != "heads" else torch.ones(ns.shape)
    return Mask(heads, neurons)
