"""Masks applied to stock modules through removable forward pre-hooks, possibly decided inside the pass.

MaskHooks multiplies the INPUT of each layer's attn_out (per head) and ffn_out (per neuron) by the mask,
so pruned units really vanish from the output (the authors' code masked a copy of fc1's output that never
reached fc2). It asks a MaskSource for layer l's mask only when layer l runs; a source may attach hooks of
its own first (`attach(adapter)`), e.g. to read the predictor input at the placement layer, so that a
predictor decides every later layer's mask inside the same forward pass.

    with MaskHooks(adapter, StaticMask(mask)):
        logits = model(input_ids).logits
"""
from __future__ import annotations

from typing import Protocol

import torch

from ..adapter import Adapter
from .mask import Mask


class MaskSource(Protocol):
    """What MaskHooks asks for. Returns [B, H] / [B, F] (one mask per sequence), [B, T, H] / [B, T, F] (one per
    position: the `token` protocol), or None (keep all) for layer l."""

    def head_mask(self, l: int) -> torch.Tensor | None: ...
    def neuron_mask(self, l: int) -> torch.Tensor | None: ...


class StaticMask:
    """A fixed Mask (one per sequence, or one broadcast to every sequence)."""

    def __init__(self, mask: Mask):
        self.mask = mask

    def head_mask(self, l):
        return self.mask.heads[:, l]

    def neuron_mask(self, l):
        return self.mask.neurons[:, l]


def _scale(x: torch.Tensor, m: torch.Tensor, unit: int) -> torch.Tensor:
    """x [B, T, U*unit] or [B*T, U*unit] (batch-major); m [B, U] or [1, U] -> unit u of sequence b times m[b, u];
    m [B, T, U] -> unit u at position t of sequence b times m[b, t, u]."""
    if m.dim() == 3:
        if m.shape[0] * m.shape[1] * m.shape[2] * unit != x.numel():
            raise ValueError(f"per-position mask {tuple(m.shape)} does not match activations {tuple(x.shape)}")
        xb = x.reshape(*m.shape, unit)
        return (xb * m.to(x.dtype)[..., None]).reshape(x.shape)
    b, u = m.shape
    ok = b == 1 or (x.dim() == 3 and x.shape[0] == b) or (x.dim() == 2 and x.shape[0] % b == 0)
    if not ok:
        raise ValueError(f"mask batch {b} does not match activations of shape {tuple(x.shape)}")
    xb = x.reshape(b, -1, u, unit)
    return (xb * m.to(x.dtype)[:, None, :, None]).reshape(x.shape)


class MaskHooks:
    """Context manager that installs mask hooks on every layer and removes them on exit."""

    def __init__(self, ad: Adapter, source: MaskSource):
        self.ad, self.source, self.handles = ad, source, []

    def attach(self) -> "MaskHooks":
        ad = self.ad
        if hasattr(self.source, "attach"):
            self.handles += list(self.source.attach(ad) or [])
        for l in range(ad.n_layers):
            self.handles.append(ad.attn_out(l).register_forward_pre_hook(
                self._hook(self.source.head_mask, l, ad.head_dim)))
            self.handles.append(ad.ffn_out(l).register_forward_pre_hook(self._hook(self.source.neuron_mask, l, 1)))
        return self

    @staticmethod
    def _hook(mask_of, l: int, width: int):
        """Pre-hook scaling the module's input by layer l's mask (each unit `width` features wide)."""
        def hook(module, args):
            m = mask_of(l)
            if m is None:
                return None
            return (_scale(args[0], m.to(args[0].device), width),) + tuple(args[1:])
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.remove()
