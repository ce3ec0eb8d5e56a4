"""The predictor networks and their file: safetensors weights + JSON metadata naming model shape and design.

Heads and neurons get separate networks, as in the paper (hidden 2048 for heads, 1024 for neurons), each trained
with its own schedule. Scores come out as [B, L, H+F], heads first, then neurons.

shadowllm: ONE pair of Linear(d_in, p) - ReLU - Linear(p, L*U_kind) on the placement layer's predictor input,
           min-max normalised per example -> scores for every layer (rows of layers <= placement are unused).
dejavu:    one pair of Linear - ReLU - Linear(p, U_kind) per layer l > placement, on that layer's own input.
fullseq:   the paper's full-sequence design: the placement layer's predictor input at EVERY token [B, T, d_in],
           min-max normalised per token, one single-head self-attention layer (padding masked), mean over the
           real tokens, then the shadowllm MLPs.
Each kind's output is multiplied by its `target_scale` (1 unless trained on raw targets: then the constant the
targets were divided by, so the scores are in the criterion's units; stored in the file's config).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

NETWORKS = ("shadowllm", "dejavu", "fullseq")  # the designs that are networks (static is a table: designs.py)
KINDS = ("heads", "neurons")
FORMAT_VERSION = 2  # 2: separate head and neuron networks (1: one MLP to H+F)


def minmax(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-example min-max normalisation over the last dimension (the paper's input normalisation)."""
    lo = x.amin(-1, keepdim=True)
    hi = x.amax(-1, keepdim=True)
    return (x - lo) / (hi - lo + eps)


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


@dataclass
class Packed:
    """A batch of variable-length sequences: x [B, T, d] right-padded with zeros, n [B] real lengths."""
    x: torch.Tensor
    n: torch.Tensor

    def to(self, device) -> Packed:
        return Packed(self.x.to(device), self.n.to(device))

    def __len__(self) -> int:
        return self.x.shape[0]


class SeqPool(nn.Module):
    """One single-head self-attention layer over the real tokens, then their mean: [B, T, d] -> [B, d]."""

    def __init__(self, d: int):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.scale = d ** -0.5

    def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        _, T, d = x.shape
        real = torch.arange(T, device=x.device)[None] < n.to(x.device)[:, None]   # [B, T]
        q, k, v = self.qkv(x).split(d, -1)                                        # each [B, T, d]
        att = (q @ k.transpose(1, 2)) * self.scale                                # [B, T, T]
        att = att.masked_fill(~real[:, None, :], float("-inf")).softmax(-1)
        y = self.out(att @ v) * real[..., None]                                   # [B, T, d], pads zeroed
        return y.sum(1) / n.to(x.device).clamp_min(1)[:, None].to(y.dtype)         # [B, d]


class Predictor(nn.Module):
    """Scores [B, L, H+F] (heads first, then neurons) for a model of L layers, H heads and F neurons."""

    def __init__(self, design: str, d_in: int, n_layers: int, n_heads: int, n_neurons: int,
                 hidden_heads: int = 2048, hidden_neurons: int = 1024, placement: int = 0, normalize: bool = True,
                 target_scale: dict | None = None):
        super().__init__()
        if design not in NETWORKS:
            raise ValueError(f"predictor network {design!r} is not one of {NETWORKS}")
        if not 0 <= placement < n_layers:
            raise ValueError(f"placement layer {placement!r} is outside the model's layers 0..{n_layers - 1}")
        for name, v in (("hidden_heads", hidden_heads), ("hidden_neurons", hidden_neurons), ("d_in", d_in)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} {v!r} must be an integer >= 1")
        self.design, self.d_in, self.L, self.H, self.F = design, d_in, n_layers, n_heads, n_neurons
        self.hidden = {"heads": hidden_heads, "neurons": hidden_neurons}
        self.units = {"heads": n_heads, "neurons": n_neurons}
        self.placement, self.normalize = placement, normalize
        self.target_scale = {k: float((target_scale or {}).get(k, 1.0)) for k in KINDS}
        bad = {k: v for k, v in self.target_scale.items() if not (v > 0 and v != float("inf"))}
        if bad or set(target_scale or {}) - set(KINDS):
            raise ValueError(f"target_scale {target_scale!r}: expected a positive finite number per kind {KINDS}")
        kinds = self.kinds
        if design == "dejavu":
            self.nets = nn.ModuleDict({str(l): nn.ModuleDict({k: _mlp(d_in, self.hidden[k], self.units[k])
                                                              for k in kinds})
                                       for l in range(placement + 1, n_layers)})
        else:
            if design == "fullseq":
                self.pools = nn.ModuleDict({k: SeqPool(d_in) for k in kinds})
            self.nets = nn.ModuleDict({k: _mlp(d_in, self.hidden[k], n_layers * self.units[k]) for k in kinds})

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if self.units[k] > 0]

    def part(self, kind: str) -> list[nn.Parameter]:
        """The parameters that only `kind`'s scores depend on (each kind is trained on its own)."""
        if self.design == "dejavu":
            return [p for l in self.nets for p in self.nets[l][kind].parameters()]
        pool = list(self.pools[kind].parameters()) if self.design == "fullseq" else []
        return pool + list(self.nets[kind].parameters())

    def forward(self, x, layer: int | None = None, kind: str | None = None) -> torch.Tensor:
        """shadowllm: x [B, d_in] -> [B, L, U]; fullseq: Packed x [B, T, d_in] -> [B, L, U];
        dejavu: x [B, d_in] (layer l's input) -> [B, U]. U = H+F, or one kind's units when `kind` is given."""
        kinds = self.kinds if kind is None else [kind]
        if self.design == "dejavu":
            if str(layer) not in self.nets:
                raise ValueError(f"dejavu predictor has no layer {layer!r} "
                                 f"(layers {self.placement + 1}..{self.L - 1})")
            h = minmax(x) if self.normalize else x
            return torch.cat([self._scaled(k, self.nets[str(layer)][k](h)) for k in kinds], -1)
        if self.design == "fullseq":
            t = minmax(x.x) if self.normalize else x.x                            # [B, T, d_in]
            hs = {k: self.pools[k](t, x.n) for k in kinds}                        # each [B, d_in]
        else:
            h = minmax(x) if self.normalize else x
            hs = {k: h for k in kinds}
        B = len(x)
        return torch.cat([self._scaled(k, self.nets[k](hs[k]).view(B, self.L, self.units[k])) for k in kinds], -1)

    def _scaled(self, kind: str, out: torch.Tensor) -> torch.Tensor:
        s = self.target_scale[kind]
        return out if s == 1.0 else out * s

    def config(self) -> dict:
        return {"design": self.design, "d_in": self.d_in, "n_layers": self.L, "n_heads": self.H,
                "n_neurons": self.F, "hidden_heads": self.hidden["heads"], "hidden_neurons": self.hidden["neurons"],
                "placement": self.placement, "normalize": self.normalize, "target_scale": dict(self.target_scale)}

    def save(self, path, meta: dict | None = None) -> None:
        """Weights (safetensors) with the network's config and `meta` (model, criterion, ...) as metadata."""
        save_tensors(path, self.state_dict(), self.config(), meta)


def save_tensors(path, tensors: dict, config: dict, meta: dict | None = None) -> None:
    """Atomically write a predictor file: tensors + format_version, config and meta (JSON) as metadata."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    md = {"format_version": str(FORMAT_VERSION), "config": json.dumps(config), "meta": json.dumps(meta or {})}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=md)


def n_parameters(design: str, d_in: int, n_layers: int, n_heads: int, n_neurons: int, hidden_heads: int = 2048,
                 hidden_neurons: int = 1024, placement: int = 0) -> dict[str, int]:
    """Parameters per kind of a predictor, counted from the shapes (no weights built): for sizing big models."""
    out = {}
    for kind, U, p in (("heads", n_heads, hidden_heads), ("neurons", n_neurons, hidden_neurons)):
        if U == 0:
            continue
        if design == "dejavu":
            out[kind] = (n_layers - placement - 1) * (d_in * p + p + p * U + U)
        else:
            out[kind] = d_in * p + p + p * n_layers * U + n_layers * U
        if design == "fullseq":
            out[kind] += 4 * d_in * d_in + 4 * d_in                                # its attention layer
    return out


def load_predictor(path, expect: dict | None = None) -> tuple[Predictor, dict]:
    """(predictor, meta) from a file; `expect` (e.g. {"n_layers": 6, "n_heads": 8}) must match its config."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"predictor file {str(path)!r} does not exist")
    with safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    cfg = json.loads(md.get("config", "{}"))
    if cfg.get("design") == "static":
        raise ValueError(f"{path}: a 'static' score table, not a predictor network (read it with load_static_table)")
    if md.get("format_version") != str(FORMAT_VERSION):
        raise ValueError(f"{path}: predictor format version {md.get('format_version')!r}, expected {FORMAT_VERSION}; "
                         "retrain it with `shadowllm train-predictor`")
    bad = {k: (cfg.get(k), v) for k, v in (expect or {}).items() if cfg.get(k) != v}
    if bad:
        raise ValueError(f"{path}: predictor does not fit: " +
                         ", ".join(f"{k} is {got!r}, expected {want!r}" for k, (got, want) in bad.items()))
    pred = Predictor(**cfg)
    pred.load_state_dict(load_file(str(path)))
    return pred.eval(), json.loads(md.get("meta", "{}"))


def read_meta(path) -> dict:
    """The grid point a predictor file or static table was trained for (its `meta`), without loading weights."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    return json.loads(md.get("meta", "{}"))
