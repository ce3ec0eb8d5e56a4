"""MaskSources that run predictors inside the forward pass (no second pass): PredictedMasks reads the placement
layer's predictor input at one position, or at every position, and decides every later layer's mask before that
layer runs; DejaVuMasks lets each layer's own input decide that layer's mask."""
from __future__ import annotations

import torch

from ..adapter import Adapter
from ..masks import Mask, mask_from_scores
from .model import Predictor


class _InPass:
    """What both sources share: the predictor, which position(s) it reads, and the fit to the model."""

    design = ""

    def __init__(self, pred: Predictor, sparsity: float, units: str, position: int | torch.Tensor | str):
        if pred.design != self.design:
            raise ValueError(f"{type(self).__name__} runs a {self.design!r} predictor, got design {pred.design!r}")
        if isinstance(position, str) and position != "token":
            raise ValueError(f"position {position!r} is not a token index, [B] indices or 'token'")
        self.pred, self.sparsity, self.units, self.position = pred, sparsity, units, position
        self.per_token = isinstance(position, str)

    def _check_fit(self, ad: Adapter) -> None:
        self.n_neurons = ad.n_neurons
        if self.pred.F == 0 and self.units == "heads" and (ad.n_layers, ad.n_heads) == (self.pred.L, self.pred.H):
            return                                         # a head-only criterion's predictor: every neuron kept
        if (ad.n_layers, ad.n_heads, ad.n_neurons) != (self.pred.L, self.pred.H, self.pred.F):
            raise ValueError(f"predictor for L={self.pred.L}, H={self.pred.H}, F={self.pred.F} does not fit the "
                             f"model (L={ad.n_layers}, H={ad.n_heads}, F={ad.n_neurons})")

    def _read(self, a: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """a [B, T, d] -> (the rows the predictor reads [N, d], the shape N unfolds to: (B, T) or (B,))."""
        B, T = a.shape[:2]
        if self.per_token:
            return a.reshape(B * T, a.shape[2]), (B, T)
        pos = self.position if torch.is_tensor(self.position) else torch.full((B,), self.position)
        return a[torch.arange(B, device=a.device), pos.to(a.device)], (B,)

    def _scores(self, x: torch.Tensor, **kw) -> torch.Tensor:
        """[..., H+F] scores; a head-only predictor's neuron columns are zeros (units 'heads' keeps them all)."""
        with torch.no_grad():
            s = self.pred(x.to(next(self.pred.parameters()).dtype), **kw).float().cpu()
        if self.pred.F == 0:
            s = torch.cat([s, torch.zeros(*s.shape[:-1], self.n_neurons)], -1)
        return s


class PredictedMasks(_InPass):
    """Masks from `pred` at `sparsity`; layers 0..placement stay dense. position: the token whose predictor
    input is read ([B] indices, or an int such as -1 for the last position of every sequence), or "token":
    position t's input decides position t's mask in every later layer (causal; what per-token decoding does)."""

    design = "shadowllm"

    def __init__(self, pred: Predictor, sparsity: float, style: str = "local", units: str = "both",
                 position: int | torch.Tensor | str = -1, min_heads: int = 1, min_neurons: int = 256):
        super().__init__(pred, sparsity, units, position)
        self.style, self.floors = style, {"min_heads": min_heads, "min_neurons": min_neurons}
        self.mask: Mask | None = None          # [B, L, U] masks; per token: [B*T, L, U], position-major per sequence
        self.shape: tuple | None = None        # (B,) or, per token, (B, T)
        self.seen: torch.Tensor | None = None  # the predictor input that decided the current mask [B(*T), d_in]

    def attach(self, ad: Adapter):
        self._check_fit(ad)
        return [ad.on_predictor_input(self.pred.placement, self._decide)]

    def _decide(self, a: torch.Tensor) -> None:
        x, self.shape = self._read(a)                                            # a [B, T, d_in]
        self.seen = x.detach()
        s = self._scores(x)                                                      # [N, L, H+F]
        H = self.pred.H
        self.mask = mask_from_scores(s[..., :H], s[..., H:], self.sparsity, self.style, units=self.units,
                                     placement=self.pred.placement, **self.floors)

    def _of(self, l: int, unit: str):
        if l <= self.pred.placement:
            return None
        if self.mask is None:
            raise RuntimeError(f"layer {l} ran before the placement layer {self.pred.placement} decided the mask")
        return getattr(self.mask, unit)[:, l].view(*self.shape, -1)              # [B(, T), U]

    def head_mask(self, l):
        return self._of(l, "heads")

    def neuron_mask(self, l):
        return self._of(l, "neurons")


class DejaVuMasks(_InPass):
    """Masks from per-layer ('dejavu') predictors inside the forward pass: the residual stream entering layer l
    decides layer l's mask just before layer l runs. Local top-k only: a global budget would need every layer's
    scores before the first pruned layer runs. position: as PredictedMasks ("token" = one mask per position)."""

    design = "dejavu"

    def __init__(self, pred: Predictor, sparsity: float, units: str = "both", position: int | torch.Tensor | str = -1):
        super().__init__(pred, sparsity, units, position)
        self.masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # layer -> (heads, neurons) [B(, T), U]

    def attach(self, ad: Adapter):
        self._check_fit(ad)
        self.masks = {}
        return [ad.on_layer_input(l, lambda h, l=l: self._decide(l, h))
                for l in range(self.pred.placement + 1, self.pred.L)]

    def _decide(self, l: int, h: torch.Tensor) -> None:
        x, shape = self._read(h)                                                 # h [B, T, d]
        s = self._scores(x, layer=l)                                             # [N, H+F]
        s = torch.stack([torch.zeros_like(s), s], 1)    # [N, 2, H+F]: layer l as the one prunable layer after 0
        H = self.pred.H
        m = mask_from_scores(s[..., :H], s[..., H:], self.sparsity, "local", units=self.units, placement=0)
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
