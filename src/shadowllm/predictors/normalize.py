"""Score normalisation: the one map from a criterion's scores [B, L, U] (one unit kind: heads OR neurons) into a
named space, shared by predictor training, the static design's calibration, the oracle mask source and the
ranking metrics, so that every mask source and every metric of a grid point ranks in the same space.

  raw     the criterion's own scores, unchanged (the paper's choice; the default everywhere). Networks trained on
          raw targets regress them divided by one positive constant per kind (`raw_scale`, computed on the
          training split) and multiply it back at inference (`Predictor.target_scale`), so their outputs are in
          the criterion's units; a positive constant keeps the order across layers and examples.
  layer   min-max per (example, layer) over the layer's units of that kind, onto [0, 1] (the paper's "b1eL"):
          every layer's best unit scores 1, so a global top-k compares units by their rank within their layer.
  example per-example rank over all of that kind's units in the layers after the placement (average ranks for
          ties), scaled onto [0, 1]: (rank - 1) / (M - 1), M = units ranked; order-preserving within the example.

Layers 0..placement are never pruned: they come out 0 in every space.
"""
from __future__ import annotations

import torch

from ..layout.axes import NORMALIZE  # noqa: F401 (defined torch-free, for the grid)

RANK_ELEMS = 1 << 22  # scores ranked at once by `example` (a big model's neurons: a few examples at a time)


def avg_ranks(a: torch.Tensor) -> torch.Tensor:
    """Ranks 1..M along the last dim of [N, M], ties sharing their average rank (scipy's 'average'); float64."""
    a = a.double()
    N, M = a.shape
    sv, order = a.sort(dim=-1, stable=True)                                        # [N, M]
    new = torch.ones(N, M, dtype=torch.bool)
    new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    gid = new.view(-1).cumsum(0) - 1                                             # [N*M] tie-group id
    count = torch.bincount(gid).double()                                         # [groups]
    pos = torch.arange(M, dtype=torch.float64).repeat(N)                         # [N*M] sorted position
    first = torch.zeros_like(count).scatter_reduce_(0, gid, pos, "amin", include_self=False)
    r_sorted = (first + (count - 1) / 2 + 1)[gid].view(N, M)
    return torch.empty_like(r_sorted).scatter_(-1, order, r_sorted)


def check_mode(mode: str) -> str:
    if mode not in NORMALIZE:
        raise ValueError(f"normalisation {mode!r} is not one of {NORMALIZE}")
    return mode


def normalize_scores(y: torch.Tensor, mode: str, placement: int, eps: float = 1e-12) -> torch.Tensor:
    """Scores [B, L, U] of ONE unit kind -> [B, L, U] in the normalisation `mode` (see the module docstring),
    float32 (float64 for float64 scores); layers 0..placement are set to 0."""
    check_mode(mode)
    y = torch.as_tensor(y)
    if y.dim() != 3:
        raise ValueError(f"scores must be [B, L, U], got shape {tuple(y.shape)}")
    first = placement + 1
    dt = torch.float64 if y.dtype == torch.float64 else torch.float32
    out = torch.zeros(y.shape, dtype=dt)
    s = y[:, first:].to(dt)                                                       # [B, L', U]
    if s.numel() == 0:
        return out
    if mode == "raw":
        out[:, first:] = s
    elif mode == "layer":
        lo, hi = s.amin(-1, keepdim=True), s.amax(-1, keepdim=True)
        out[:, first:] = (s - lo) / (hi - lo).clamp_min(eps)
    else:
        B, M = s.shape[0], s[0].numel()
        flat = y[:, first:].reshape(B, M)                                          # the unrounded scores
        step = max(1, RANK_ELEMS // M)                                             # examples ranked at a time
        for i in range(0, B, step):
            r = avg_ranks(flat[i:i + step])
            out[i:i + step, first:] = ((r - 1) / max(M - 1, 1)).view(-1, *s.shape[1:]).to(dt)
    return out


def raw_scale(y: torch.Tensor, placement: int) -> tuple[float, int]:
    """(sum of |score|, count) over layers > placement of scores [B, L, U]: summed chunk by chunk into the one
    positive constant (their mean) that raw targets are divided by."""
    s = torch.as_tensor(y)[:, placement + 1:].double().abs()
    return float(s.sum()), s.numel()
