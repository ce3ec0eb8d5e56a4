"""Per-sequence head / neuron masks applied to stock modules through removable forward hooks.

A Mask holds  heads [B, L, H]  and  neurons [B, L, F]  (float, 1 = keep, 0 = prune; B = 1 broadcasts
over the batch). MaskHooks multiplies the INPUT of each layer's attn_out (per head) and ffn_out (per
neuron) by the mask, so pruned units really vanish from the output (the authors' code masked a copy
of fc1's output that never reached fc2).

Masks can also be decided inside the forward pass: MaskHooks asks a MaskSource for layer l's mask
only when layer l runs, and a source may attach hooks of its own (e.g. to read layer 0's attention
output and run a predictor there) through `attach(adapter)`.

    with MaskHooks(adapter, StaticMask(mask)):
        logits = model(input_ids).logits
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from .adapter import Adapter
from .io import atomic_path

PRUNE_STYLES = ("local", "global", "hybrid")


@dataclass
class Mask:
    heads: torch.Tensor    # [B, L, H]
    neurons: torch.Tensor  # [B, L, F]
    meta: dict = field(default_factory=dict)  # e.g. the nominal sparsity and how the mask was made

    def __post_init__(self):
        if self.heads.dim() == 2:
            self.heads = self.heads[None]
        if self.neurons.dim() == 2:
            self.neurons = self.neurons[None]
        if self.heads.dim() != 3 or self.neurons.dim() != 3:
            raise ValueError(f"mask shapes must be [B, L, H] and [B, L, F], got {tuple(self.heads.shape)} "
                             f"and {tuple(self.neurons.shape)}")

    @classmethod
    def ones(cls, ad: Adapter, batch: int = 1) -> "Mask":
        return cls(torch.ones(batch, ad.n_layers, ad.n_heads), torch.ones(batch, ad.n_layers, ad.n_neurons))

    def check(self, ad: Adapter) -> "Mask":
        want_h, want_f = (ad.n_layers, ad.n_heads), (ad.n_layers, ad.n_neurons)
        if tuple(self.heads.shape[1:]) != want_h or tuple(self.neurons.shape[1:]) != want_f:
            raise ValueError(f"mask of shape heads {tuple(self.heads.shape)}, neurons {tuple(self.neurons.shape)} "
                             f"does not fit the model: expected [B, {want_h[0]}, {want_h[1]}] and "
                             f"[B, {want_f[0]}, {want_f[1]}]")
        return self

    def sparsity(self) -> dict[str, float]:
        return {"heads": 1 - self.heads.float().mean().item(), "neurons": 1 - self.neurons.float().mean().item()}

    def save(self, path, metadata: dict | None = None) -> None:
        from safetensors.torch import save_file

        md = {k: str(v) for k, v in (metadata or {}).items()}
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file({"heads": self.heads.to(torch.uint8).contiguous(),
                       "neurons": self.neurons.to(torch.uint8).contiguous()}, str(tmp), metadata=md)

    @classmethod
    def load(cls, path) -> "Mask":
        from safetensors.torch import load_file

        if not Path(path).is_file():
            raise FileNotFoundError(f"mask file {str(path)!r} does not exist")
        from safetensors import safe_open

        t = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return cls(t["heads"].float(), t["neurons"].float(), meta)


class MaskSource(Protocol):
    """What MaskHooks asks for. Returns [B, H] / [B, F] (or None = keep all) for layer l."""

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
    """x [B, T, U*unit] or [B*T, U*unit] (batch-major); m [B, U] or [1, U] -> unit u of sequence b times m[b, u]."""
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


# ---- choosing units to keep from scores ---------------------------------------------------------

def topk_mask(scores: torch.Tensor, sparsity: float, style: str = "global", min_keep: int = 1,
              protect_first: bool = True) -> torch.Tensor:
    """Keep the highest-scoring units. scores [B, L, U] -> 0/1 mask [B, L, U].

    local:  each layer keeps round((1 - sparsity) * U) units.
    global: exactly round((1 - sparsity) * N) units over all prunable layers, N = their unit count.
    hybrid: global, but each prunable layer keeps at least `min_keep` units (its best ones); the
            extra units are taken from the lowest-ranked global picks so the total stays exact.
    Layer 0 is never pruned when protect_first (the paper's setting); it does not count in N.
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
    first = 1 if protect_first and L > 1 else 0
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
                     min_neurons: int = 256) -> Mask:
    """Same sparsity for heads and neurons (the paper's setting); hybrid keeps >= 1 head, >= 256 neurons."""
    return Mask(topk_mask(head_scores, sparsity, style, min_keep=1),
                topk_mask(neuron_scores, sparsity, style, min_keep=min(min_neurons, neuron_scores.shape[-1])))

