"""The predictor network and its file: safetensors weights + JSON metadata naming model shape and design.

shadowllm: ONE Linear(d_in, p) - ReLU - Linear(p, L*(H+F)) on the placement layer's predictor input, min-max
           normalised per example -> scores for every layer (rows of layers <= placement are unused).
dejavu:    one Linear - ReLU - Linear(p, H+F) per layer l > placement, on that layer's own input.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

NETWORKS = ("shadowllm", "dejavu")  # the designs that are networks (static is a table: designs.py)
FORMAT_VERSION = 1


def minmax(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-example min-max normalisation over the last dimension (the paper's input normalisation)."""
    lo = x.amin(-1, keepdim=True)
    hi = x.amax(-1, keepdim=True)
    return (x - lo) / (hi - lo + eps)


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class Predictor(nn.Module):
    """Scores [B, L, H+F] (heads first, then neurons) for a model of L layers, H heads and F neurons."""

    def __init__(self, design: str, d_in: int, n_layers: int, n_heads: int, n_neurons: int, hidden: int = 1024,
                 placement: int = 0, normalize: bool = True):
        super().__init__()
        if design not in NETWORKS:
            raise ValueError(f"predictor network {design!r} is not one of {NETWORKS}")
        if not 0 <= placement < n_layers:
            raise ValueError(f"placement layer {placement!r} is outside the model's layers 0..{n_layers - 1}")
        self.design, self.d_in, self.L, self.H, self.F = design, d_in, n_layers, n_heads, n_neurons
        self.hidden, self.placement, self.normalize = hidden, placement, normalize
        if design == "shadowllm":
            self.net = _mlp(d_in, hidden, n_layers * (n_heads + n_neurons))
        else:
            self.nets = nn.ModuleDict({str(l): _mlp(d_in, hidden, n_heads + n_neurons)
                                       for l in range(placement + 1, n_layers)})

    def forward(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """shadowllm: x [B, d_in] -> [B, L, H+F]; dejavu: x [B, d_in] (layer l's input) -> [B, H+F]."""
        if self.normalize:
            x = minmax(x)
        if self.design == "shadowllm":
            return self.net(x).view(x.shape[0], self.L, self.H + self.F)
        if str(layer) not in self.nets:
            raise ValueError(f"dejavu predictor has no layer {layer!r} (layers {self.placement + 1}..{self.L - 1})")
        return self.nets[str(layer)](x)

    def config(self) -> dict:
        return {"design": self.design, "d_in": self.d_in, "n_layers": self.L, "n_heads": self.H,
                "n_neurons": self.F, "hidden": self.hidden, "placement": self.placement, "normalize": self.normalize}

    def save(self, path, meta: dict | None = None) -> None:
        """Weights (safetensors) with the network's config and `meta` (model, criterion, ...) as metadata."""
        from safetensors.torch import save_file

        from ..io import atomic_path

        md = {"format_version": str(FORMAT_VERSION), "config": json.dumps(self.config()),
              "meta": json.dumps(meta or {})}
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp),
                      metadata=md)


def load_predictor(path, expect: dict | None = None) -> tuple[Predictor, dict]:
    """(predictor, meta) from a file; `expect` (e.g. {"n_layers": 6, "n_heads": 8}) must match its config."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"predictor file {str(path)!r} does not exist")
    with safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    if md.get("format_version") != str(FORMAT_VERSION):
        raise ValueError(f"{path}: predictor format version {md.get('format_version')!r}, expected {FORMAT_VERSION}")
    cfg = json.loads(md["config"])
    bad = {k: (cfg.get(k), v) for k, v in (expect or {}).items() if cfg.get(k) != v}
    if bad:
        raise ValueError(f"{path}: predictor does not fit: " +
                         ", ".join(f"{k} is {got!r}, expected {want!r}" for k, (got, want) in bad.items()))
    pred = Predictor(**cfg)
    pred.load_state_dict(load_file(str(path)))
    return pred.eval(), json.loads(md.get("meta", "{}"))
