"""Importance predictors as run inside the sparse decoder (plain tensors, no nn.Module overhead).

ShadowLLM: ONE predictor on the placement layer's attention output (the input of its out_proj, [B, d]),
    min-max normalised per example, Linear(d, p) - ReLU - Linear(p, L*(H+F)) -> scores for every layer.
DejaVu-style: one predictor per layer l >= 1 on that layer's input (the residual stream entering layer l),
    Linear(d, p) - ReLU - Linear(p, H+F). Layer 0 is never pruned, so it has none.
Weights are random by default (latency only); `from_trained` adopts a trained predictor's (its head and neuron
networks share one first-layer matmul here).
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


def _scales(pred) -> list[float]:
    """A trained predictor's output scale per kind it scores (1 unless trained on raw targets)."""
    return [getattr(pred, "target_scale", {}).get(k, 1.0) for k in pred.kinds]


class _TwoLayer:
    """relu(x w1^T + b1) then one second layer per part; a part reads hidden units [a, b) and gives U scores per
    layer. A trained predictor's head and neuron networks become one first layer (concatenated) and two parts."""

    def __init__(self, w1, b1, parts: list[tuple]):
        self.w1, self.b1, self.parts = w1, b1, parts                          # parts: [(a, b, w2, b2)]

    @classmethod
    def from_nets(cls, nets: list, scales: list | None = None) -> _TwoLayer:
        """From nn.Sequential(Linear, ReLU, Linear) networks (heads first, then neurons); `scales` (one per
        network: a trained predictor's target_scale) is folded into the second layers."""
        w1 = torch.cat([n[0].weight.detach() for n in nets])
        b1 = torch.cat([n[0].bias.detach() for n in nets])
        parts, a = [], 0
        for n, sc in zip(nets, scales or [1.0] * len(nets)):
            b = a + n[0].out_features
            w2, b2 = n[2].weight.detach(), n[2].bias.detach()
            parts.append((a, b, w2, b2) if sc == 1.0 else (a, b, w2 * sc, b2 * sc))
            a = b
        return cls(w1, b1, parts)

    def __call__(self, x: torch.Tensor, shape: tuple) -> torch.Tensor:
        """x [B, d] -> [B, *shape, sum U]: each part's output viewed as [B, *shape, U_part], concatenated."""
        h = linear_relu(x.to(self.w1.dtype), self.w1, self.b1)
        if len(self.parts) == 1:  # one part reads every hidden unit: no slice, no concatenation
            return F.linear(h, self.parts[0][2], self.parts[0][3]).view(x.shape[0], *shape, -1)
        outs = [F.linear(h[:, a:b], w2, b2).view(x.shape[0], *shape, -1) for a, b, w2, b2 in self.parts]
        return torch.cat(outs, -1)

    def n_params(self) -> int:
        return self.w1.numel() + self.b1.numel() + sum(w.numel() + b.numel() for _, _, w, b in self.parts)

    def to(self, device=None, dtype=None) -> _TwoLayer:
        return _TwoLayer(_mv(self.w1, device, dtype), _mv(self.b1, device, dtype),
                         [(a, b, _mv(w, device, dtype), _mv(c, device, dtype)) for a, b, w, c in self.parts])


def _random(d, hidden, out, dtype, device, g) -> _TwoLayer:
    w1, b1 = _init(hidden, d, dtype, device, g)
    w2, b2 = _init(out, hidden, dtype, device, g)
    return _TwoLayer(w1, b1, [(0, hidden, w2, b2)])


class ShadowPredictor:
    def __init__(self, d: int, n_layers: int, n_heads: int, n_neurons: int, hidden: int = 1024,
                 dtype=torch.float32, device="cpu", seed: int = 0, normalize: bool = True):
        g = _gen(device, seed)
        self.L, self.H, self.F, self.p, self.d = n_layers, n_heads, n_neurons, hidden, d
        self.net = _random(d, hidden, n_layers * (n_heads + n_neurons), dtype, device, g)
        self.normalize = normalize

    @classmethod
    def from_trained(cls, pred) -> ShadowPredictor:
        """The decoder's view of a trained `shadowllm.predictors.Predictor` (design 'shadowllm')."""
        if pred.design != "shadowllm":
            raise ValueError(f"the decoder's ShadowLLM mode needs a 'shadowllm' predictor, got {pred.design!r}")
        self = cls.__new__(cls)
        self.L, self.H, self.F, self.d = pred.L, pred.H, pred.F, pred.d_in
        self.net = _TwoLayer.from_nets([pred.nets[k] for k in pred.kinds], _scales(pred))
        self.p, self.normalize = self.net.w1.shape[0], pred.normalize
        return self

    def __call__(self, a0: torch.Tensor) -> torch.Tensor:
        """a0 [B, d] -> scores [B, L, H+F] (heads first, then neurons)."""
        return self.net(minmax(a0) if self.normalize else a0, (self.L,))

    def n_params(self) -> int:
        return self.net.n_params()

    def to(self, device=None, dtype=None) -> ShadowPredictor:
        """A copy on another device / dtype."""
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        new.net = self.net.to(device, dtype)
        return new


class DejaVuPredictor:
    def __init__(self, d: int, n_layers: int, n_heads: int, n_neurons: int, hidden: int = 1024,
                 dtype=torch.float32, device="cpu", seed: int = 0):
        g = _gen(device, seed + 1)
        self.L, self.H, self.F, self.p, self.d = n_layers, n_heads, n_neurons, hidden, d
        self.nets = [None] + [_random(d, hidden, n_heads + n_neurons, dtype, device, g)   # layer 0: none
                              for _ in range(1, n_layers)]
        self.normalize = False

    @classmethod
    def from_trained(cls, pred) -> DejaVuPredictor:
        """The decoder's view of a trained `shadowllm.predictors.Predictor` (design 'dejavu')."""
        if pred.design != "dejavu":
            raise ValueError(f"the decoder's DejaVu mode needs a 'dejavu' predictor, got {pred.design!r}")
        self = cls.__new__(cls)
        self.L, self.H, self.F, self.d = pred.L, pred.H, pred.F, pred.d_in
        self.nets = [None] * pred.L
        for key, nets in pred.nets.items():
            self.nets[int(key)] = _TwoLayer.from_nets([nets[k] for k in pred.kinds], _scales(pred))
        self.p = sum(pred.hidden[k] for k in pred.kinds)
        self.normalize = pred.normalize
        return self

    def __call__(self, l: int, x: torch.Tensor) -> torch.Tensor:
        """x [B, d] (layer l's input) -> scores [B, H+F] for layer l >= 1."""
        return self.nets[l](minmax(x) if self.normalize else x, ())

    def n_params(self, first: int = 1) -> int:
        """Parameters of the predictors of layers first..L-1 (the ones a decoder with placement first-1 runs)."""
        return sum(n.n_params() for n in self.nets[first:] if n is not None)

    def to(self, device=None, dtype=None) -> DejaVuPredictor:
        """A copy on another device / dtype."""
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        new.nets = [None if n is None else n.to(device, dtype) for n in self.nets]
        return new


def random_predictor(design: str, w, hidden: int = 1024, seed: int = 0):
    """A random predictor of `design` for DecoderWeights w (latency only): ShadowLLM reads the attention output
    [H*dh], DejaVu each layer's input [d]."""
    if design == "shadowllm":
        return ShadowPredictor(w.H * w.dh, w.L, w.H, w.F, hidden, w.dtype, w.device, seed)
    if design == "dejavu":
        return DejaVuPredictor(w.d, w.L, w.H, w.F, hidden, w.dtype, w.device, seed)
    raise ValueError(f"predictor design {design!r} is not one of ('shadowllm', 'dejavu')")


def from_trained(pred):
    """The decoder's view of a trained `shadowllm.predictors.Predictor` of design 'shadowllm' or 'dejavu'."""
    if pred.design not in ("shadowllm", "dejavu"):
        raise ValueError(f"a {pred.design!r} predictor; the decoder runs 'shadowllm' or 'dejavu' ones "
                         "(fullseq reads the whole sequence, so it cannot decide a mask before decoding)")
    return (ShadowPredictor if pred.design == "shadowllm" else DejaVuPredictor).from_trained(pred)
