"""MaskSources that run predictors inside the forward pass (no second pass): PredictedMasks reads the placement
layer's predictor input at one position, or at every position, and decides every later layer's mask before that
layer runs; DejaVuMasks lets each layer's own input decide that layer's mask."""
from __future__ import annotations

import torch

from ..adapter import Adapter
from ..masks import Mask, mask_from_scores
from .model import Predictor


class PredictedMasks:
    """Masks from `pred` at `sparsity`; layers 0..placement stay dense. position: the token whose predictor
    input is read ([B] indices, or an int such as -1 for the last position of every sequence), or "token":
    position t's input decides position t's mask in every later layer (causal; what per-token decoding does)."""

    def __init__(self, pred: Predictor, sparsity: float, style: str = "local", units: str = "both",
                 position: int | torch.Tensor | str = -1):
        if pred.design != "shadowllm":
            raise ValueError(f"PredictedMasks runs a 'shadowllm' predictor, got design {pred.design!r}")
        if isinstance(position, str) and position != "token":
            raise ValueError(f"position {position!r} is not a token index, [B] indices or 'token'")
        self.pred, self.sparsity, self.style, self.units, self.position = pred, sparsity, style, units, position
        self.per_token = isinstance(position, str)
        self.mask: Mask | None = None          # [B, L, U] masks; per token: [B*T, L, U], position-major per sequence
        self.shape: tuple | None = None        # (B, T) when the masks are per token
        self.seen: torch.Tensor | None = None  # the predictor input that decided the current mask [B(*T), d_in]

    def attach(self, ad: Adapter):
        if (ad.n_layers, ad.n_heads, ad.n_neurons) != (self.pred.L, self.pred.H, self.pred.F):
            raise ValueError(f"predictor for L={self.pred.L}, H={self.pred.H}, F={self.pred.F} does not fit the "
                             f"model (L={ad.n_layers}, H={ad.n_heads}, F={ad.n_neurons})")
        return [ad.on_predictor_input(self.pred.placement, self._decide)]

    def _decide(self, a: torch.Tensor) -> None:
        B = a.shape[0]                                                           # a [B, T, d_in]
        if self.per_token:
            self.shape = (B, a.shape[1])
            x = a.reshape(B * a.shape[1], a.shape[2])
        else:
            pos = self.position if torch.is_tensor(self.position) else torch.full((B,), self.position)
            x = a[torch.arange(B, device=a.device), pos.to(a.device)]
        self.seen = x.detach()
        with torch.no_grad():
            s = self.pred(x.to(next(self.pred.parameters()).dtype)).float().cpu()   # [B, L, H+F]
        H = self.pred.H
        self.mask = mask_from_scores(s[..., :H], s[..., H:], self.sparsity, self.style, units=self.units,
                                     placement=self.pred.placement)

    def _of(self, l: int, unit: str):
        if l <= self.pred.placement:
            return None
        if self.mask is None:
            raise RuntimeError(f"layer {l} ran before the placement layer {self.pred.placement} decided the mask")
        m = getattr(self.mask, unit)[:, l]                                      # [B(*T), U]
        return m.view(*self.shape, m.shape[-1]) if self.per_token else m

    def head_mask(self, l):
        return self._of(l, "heads")

    def neuron_mask(self, l):
        return self._of(l, "neurons")


class DejaVuMasks:
    """Masks from per-layer ('dejavu') predictors inside the forward pass: the residual stream entering layer l
    decides layer l's mask just before layer l runs. Local top-k only: a global budget would need every layer's
    scores before the first pruned layer runs. position: as PredictedMasks ("token" = one mask per position)."""

    def __init__(self, pred: Predictor, sparsity: float, units: str = "both", position: int | torch.Tensor | str = -1):
        if pred.design != "dejavu":
            raise ValueError(f"DejaVuMasks runs a 'dejavu' predictor, got design {pred.design!r}")
        if isinstance(position, str) and position != "token":
            raise ValueError(f"position {position!r} is not a token index, [B] indices or 'token'")
        self.pred, self.sparsity, self.units, self.position = pred, sparsity, units, position
        self.per_token = isinstance(position, str)
        self.masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # layer -> (heads, neurons) [B(, T), U]

    def attach(self, ad: Adapter):
        if (ad.n_layers, ad.n_heads, ad.n_neurons) != (self.pred.L, self.pred.H, self.pred.F):
            raise ValueError(f"predictor for L={self.pred.L}, H={self.pred.H}, F={self.pred.F} does not fit the "
                             f"model (L={ad.n_layers}, H={ad.n_heads}, F={ad.n_neurons})")
        self.masks = {}
        return [ad.on_layer_input(l, lambda h, l=l: self._decide(l, h))
                for l in range(self.pred.placement + 1, self.pred.L)]

    def _decide(self, l: int, h: torch.Tensor) -> None:
        B, T = h.shape[:2]                                                       # h [B, T, d]
        if self.per_token:
            x = h.reshape(B * T, h.shape[2])
        else:
            pos = self.position if torch.is_tensor(self.position) else torch.full((B,), self.position)
            x = h[torch.arange(B, device=h.device), pos.to(h.device)]
        with torch.no_grad():
            s = self.pred(x.to(next(self.pred.parameters()).dtype), layer=l).float().cpu()   # [N, H+F]
        s = torch.stack([torch.zeros_like(s), s], 1)    # [N, 2, H+F]: layer l as the one prunable layer after 0
        H = self.pred.H
        m = mask_from_scores(s[..., :H], s[..., H:], self.sparsity, "local", units=self.units, placement=0)
        shape = (B, T) if self.per_token else (B,)
        self.masks[l] = (m.heads[:, 1].view(*shape, -1), m.neurons[:, 1].view(*shape, -1))

    def _of(self, l: int, i: int):
        if l <= self.pred.placement:
            return None
        if l not in self.masks:
            raise RuntimeError(f"layer {l}'s mask was asked for before its input was seen")
        return self.masks[l][i]

    def head_mask(self, l):
        return self._of(l, 0)

    def neuron_mask(self, l):
        return self._of(l, 1)
