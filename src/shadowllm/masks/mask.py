"""A head / neuron mask and its file format: heads [B, L, H], neurons [B, L, F], 1 = keep, 0 = prune
(B = 1 broadcasts over the batch); saved as uint8 safetensors with string metadata."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..adapter import Adapter
from ..io import atomic_path


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

        for name, t in (("heads", self.heads), ("neurons", self.neurons)):
            bad = t[(t != 0) & (t != 1)]
            if bad.numel():
                raise ValueError(f"mask {name} holds {bad.numel()} value(s) other than 0 and 1 (e.g. "
                                 f"{bad.flatten()[0].item()!r}); a mask file stores keep (1) / prune (0) only")
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
