"""Choosing the units to keep from scores: local, global and hybrid top-k; layers up to the placement dense."""
from __future__ import annotations

import torch

from ..adapter import Adapter
from .mask import Mask

PRUNE_STYLES = ("local", "global", "hybrid")
UNITS = ("both", "heads", "neurons")


def topk_mask(scores: torch.Tensor, sparsity: float, style: str = "global", min_keep: int = 1,
              placement: int = 0) -> torch.Tensor:
    """Keep the highest-scoring units. scores [B, L, U] -> 0/1 mask [B, L, U].

    local:  each layer keeps round((1 - sparsity) * U) units.
    global: exactly round((1 - sparsity) * N) units over all prunable layers, N = their unit count.
    hybrid: global, but each prunable layer keeps at least `min_keep` units (its best ones); the
            extra units are taken from the lowest-ranked global picks so the total stays exact.
    Layers 0..placement are never pruned (placement 0: layer 0 kept, the paper's setting) and do not count
    in N. A model with no layer after the placement has nothing to prune: only sparsity 0 is accepted.
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
    mask = torch.zeros(B, Lp, U)
    if style == "local":
        k = int(round((1 - sparsity) * U))
        idx = s.topk(k, dim=-1).indices
        mask.scatter_(-1, idx, 1.0)
    else:
        k = int(round((1 - sparsity) * Lp * U))
        flat = s.reshape(B, -1)
        order = flat.argsort(dim=-1, descending=True)
        mflat = torch.zeros(B, Lp * U)
        mflat.scatter_(-1, order[:, :k], 1.0)
        mask = mflat.view(B, Lp, U)
        if style == "hybrid":
            mk = min(min_keep, U)
            if k < mk * Lp:
                raise ValueError(f"sparsity {sparsity} keeps {k} units, fewer than min_keep={mk} x {Lp} layers")
            best = s.topk(mk, dim=-1).indices
            forced = torch.zeros_like(mask).scatter_(-1, best, 1.0)
            for b in range(B):
                need = int(((forced[b] == 1) & (mask[b] == 0)).sum())
                mask[b] = torch.maximum(mask[b], forced[b])
                if need:  # drop the `need` lowest-ranked picks that were not forced
                    droppable = [i for i in order[b, :k].flip(0).tolist() if forced[b].view(-1)[i] == 0]
                    mask[b].view(-1)[droppable[:need]] = 0.0
    return torch.cat([torch.ones(B, first, U), mask], dim=1)


def random_scores(ad: Adapter, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, ad.n_layers, ad.n_heads, generator=g), torch.rand(1, ad.n_layers, ad.n_neurons, generator=g)


def mask_from_scores(head_scores, neuron_scores, sparsity: float, style: str = "global",
                     min_neurons: int = 256, units: str = "both", placement: int = 0) -> Mask:
    """Same sparsity for heads and neurons (the paper's setting); hybrid keeps >= 1 head, >= 256 neurons.

    units "heads" / "neurons" prunes only that kind and keeps every unit of the other."""
    if units not in UNITS:
        raise ValueError(f"units {units!r} is not one of {UNITS}")
    hs = head_scores if head_scores.dim() == 3 else head_scores[None]
    ns = neuron_scores if neuron_scores.dim() == 3 else neuron_scores[None]
    heads = topk_mask(hs, sparsity, style, min_keep=1, placement=placement) if units != "neurons" \
        else torch.ones(hs.shape)
    neurons = topk_mask(ns, sparsity, style, min_keep=min(min_neurons, ns.shape[-1]), placement=placement) \
        if units != "heads" else torch.ones(ns.shape)
    return Mask(heads, neurons)
