"""Importance predictors as run inside the sparse decoder (plain tensors, no nn.Module overhead).

ShadowLLM: ONE predictor on the placement layer's attention output (the input of its out_proj, [B, d]),
    min-max normalised per example, Linear(d, p) - ReLU - Linear(p, L*(H+F)) -> scores for every layer.
DejaVu-style: one predictor per layer l >= 1 on that layer's input (the residual stream entering layer l),
    Linear(d, p) - ReLU - Linear(p, H+F). Layer 0 is never pruned, so it has none.
Weights are random by default (latency only); `ShadowPredictor.from_linear_pair` adopts trained ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..predictors.model import minmax


def _gen(device, seed: int) -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def _init(out_f, in_f, dtype, device, gen):
    """Random weights drawn on `device` (fast for big shapes); compare devices with `.to()` copies, not seeds."""
    w = torch.randn(out_f, in_f, generator=gen, dtype=torch.float32, device=gen.device) / in_f ** 0.5
    b = torch.randn(out_f, generator=gen, dtype=torch.float32, device=gen.device) * 0.01
    return w.to(dtype=dtype), b.to(dtype=dtype)


def linear_relu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """relu(x w^T + b) for x [M, d]; on CUDA one cuBLASLt call with a bias+ReLU epilogue (a kernel fewer)."""
    if x.is_cuda and b is not None and hasattr(torch, "_addmm_activation"):
        return torch._addmm_activation(b, x, w.t())
    return F.relu(F.linear(x, w, b))


def _mv(t, device, dtype):
    return None if t is None else t.to(device=device or t.device, dtype=dtype or t.dtype)


class ShadowPredictor:
    def __init__(self, d: int, n_layers: int, n_heads: int, n_neurons: int, hidden: int = 1024,
                 dtype=torch.float32, device="cpu", seed: int = 0, normalize: bool = True):
        g = _gen(device, seed)
        self.L, self.H, self.F, self.p, self.d = n_layers, n_heads, n_neurons, hidden, d
        self.w1, self.b1 = _init(hidden, d, dtype, device, g)
        self.w2, self.b2 = _init(n_layers * (n_heads + n_neurons), hidden, dtype, device, g)
        self.normalize = normalize

    @classmethod
    def from_linear_pair(cls, fc1: torch.nn.Linear, fc2: torch.nn.Linear, n_layers, n_heads, n_neurons,
                         normalize: bool = True) -> "ShadowPredictor":
        self = cls.__new__(cls)
        self.L, self.H, self.F = n_layers, n_heads, n_neurons
        self.p, self.d = fc1.out_features, fc1.in_features
        if fc2.out_features != n_layers * (n_heads + n_neurons):
            raise ValueError(f"predictor output {fc2.out_features} != L*(H+F) = {n_layers * (n_heads + n_neurons)}")
        self.w1, self.b1 = fc1.weight.detach(), fc1.bias.detach()
        self.w2, self.b2 = fc2.weight.detach(), fc2.bias.detach()
        self.normalize = normalize
        return self

    @classmethod
    def from_trained(cls, pred) -> "ShadowPredictor":
        """The decoder's view of a trained `shadowllm.predictors.Predictor` (design 'shadowllm')."""
        if pred.design != "shadowllm":
            raise ValueError(f"the decoder's ShadowLLM mode needs a 'shadowllm' predictor, got {pred.design!r}")
        return cls.from_linear_pair(pred.net[0], pred.net[2], pred.L, pred.H, pred.F, normalize=pred.normalize)

    def __call__(self, a0: torch.Tensor) -> torch.Tensor:
        """a0 [B, d] -> scores [B, L, H+F] (heads first, then neurons)."""
        x = minmax(a0) if self.normalize else a0
        h = linear_relu(x.to(self.w1.dtype), self.w1, self.b1)
        return F.linear(h, self.w2, self.b2).view(a0.shape[0], self.L, self.H + self.F)

    def n_params(self) -> int:
        return self.w1.numel() + self.b1.numel() + self.w2.numel() + self.b2.numel()

    def to(self, device=None, dtype=None) -> "ShadowPredictor":
        """A copy on another device / dtype."""
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        for k in ("w1", "b1", "w2", "b2"):
            setattr(new, k, _mv(getattr(self, k), device, dtype))
        return new


class DejaVuPredictor:
    def __init__(self, d: int, n_layers: int, n_heads: int, n_neurons: int, hidden: int = 1024,
                 dtype=torch.float32, device="cpu", seed: int = 0):
        g = _gen(device, seed + 1)
        self.L, self.H, self.F, self.p, self.d = n_layers, n_heads, n_neurons, hidden, d
        self.w1, self.b1, self.w2, self.b2 = [None], [None], [None], [None]  # layer 0: none
        for _ in range(1, n_layers):
            w1, b1 = _init(hidden, d, dtype, device, g)
            w2, b2 = _init(n_heads + n_neurons, hidden, dtype, device, g)
            self.w1.append(w1), self.b1.append(b1), self.w2.append(w2), self.b2.append(b2)

    @classmethod
    def from_trained(cls, pred) -> "DejaVuPredictor":
        """The decoder's view of a trained `shadowllm.predictors.Predictor` (design 'dejavu')."""
        if pred.design != "dejavu":
            raise ValueError(f"the decoder's DejaVu mode needs a 'dejavu' predictor, got {pred.design!r}")
        self = cls.__new__(cls)
        self.L, self.H, self.F, self.p, self.d = pred.L, pred.H, pred.F, pred.hidden, pred.d_in
        self.w1, self.b1, self.w2, self.b2 = [None] * pred.L, [None] * pred.L, [None] * pred.L, [None] * pred.L
        for key, net in pred.nets.items():
            l = int(key)
            self.w1[l], self.b1[l] = net[0].weight.detach(), net[0].bias.detach()
            self.w2[l], self.b2[l] = net[2].weight.detach(), net[2].bias.detach()
        self.normalize = pred.normalize
        return self

    def __call__(self, l: int, x: torch.Tensor) -> torch.Tensor:
        """x [B, d] (layer l's input) -> scores [B, H+F] for layer l >= 1."""
        if getattr(self, "normalize", False):
            x = minmax(x)
        h = linear_relu(x.to(self.w1[l].dtype), self.w1[l], self.b1[l])
        return F.linear(h, self.w2[l], self.b2[l])

    def n_params(self, first: int = 1) -> int:
        """Parameters of the predictors of layers first..L-1 (the ones a decoder with placement first-1 runs)."""
        return sum(t.numel() for ts in (self.w1, self.b1, self.w2, self.b2) for t in ts[first:] if t is not None)

    def to(self, device=None, dtype=None) -> "DejaVuPredictor":
        """A copy on another device / dtype."""
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        for k in ("w1", "b1", "w2", "b2"):
            setattr(new, k, [_mv(t, device, dtype) for t in getattr(self, k)])
        return new
