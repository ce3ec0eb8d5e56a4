"""Backend choice for the fused gather + GEMV operations (see kernels_cpu for their definition).

    ops = GatherOps("auto", device)   # cuda -> triton (else torch); cpu -> C++ extension (else torch)
                                     # (tmv on CPU is embedding_bag in both cpu backends: it is the fastest)
    y = ops.mv(W, x, idx, bias, relu)         # [B, K]  act(W[idx] x + bias[idx])
    y = ops.tmv(WT, z, idx, bias, residual)   # [B, D]  residual + bias + z WT[idx]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import kernels_cpu, kernels_triton

BACKENDS = ("auto", "torch", "cpp", "triton")


class GatherOps:
    def __init__(self, backend: str = "auto", device: str | torch.device = "cpu"):
        if backend not in BACKENDS:
            raise ValueError(f"gather backend {backend!r} is not one of {BACKENDS}")
        dev = torch.device(device)
        if backend == "auto":
            if dev.type == "cuda":
                backend = "triton" if kernels_triton.available() else "torch"
            else:
                backend = "cpp" if kernels_cpu.cpp_ops() is not None else "torch"
        if backend == "cpp":
            if dev.type != "cpu":
                raise ValueError("the 'cpp' gather backend runs on CPU only")
            if kernels_cpu.cpp_ops() is None:
                raise RuntimeError("the C++ gather extension could not be built (see SHADOWLLM_NO_CPP)")
        if backend == "triton" and not kernels_triton.available():
            raise RuntimeError("triton is not installed")
        self.backend = backend
        self._buf = {}

    def mv(self, W: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, bias: torch.Tensor | None = None,
           relu: bool = False) -> torch.Tensor:
        """act(W[idx[b]] . x[b] + bias[idx[b]]) -> [B, K] (act = ReLU if relu)."""
        x = x.contiguous()
        idx = idx.contiguous()
        if self.backend == "triton":
            return kernels_triton.gather_mv(W, x, idx, bias=bias, relu=relu)
        if self.backend == "cpp" and W.dtype in (torch.float32, torch.float64):
            y = kernels_cpu.cpp_ops().gather_mv(W, x, idx)
        else:
            key = ("mv", W.data_ptr(), tuple(idx.shape))
            buf = self._buf.get(key)
            if buf is None or buf.dtype != W.dtype:
                buf = self._buf[key] = torch.empty(idx.numel(), W.shape[1], dtype=W.dtype, device=W.device)
            y = kernels_cpu.torch_gather_mv(W, x, idx, buf)
        if bias is not None:
            y = y + bias[idx]
        return F.relu(y) if relu else y

    def tmv(self, WT: torch.Tensor, z: torch.Tensor, idx: torch.Tensor, bias: torch.Tensor | None = None,
            residual: torch.Tensor | None = None) -> torch.Tensor:
        """residual[b] + bias + sum_j z[b, j] WT[idx[b, j]] -> [B, D]."""
        z = z.contiguous()
        idx = idx.contiguous()
        if self.backend == "triton":
            return kernels_triton.gather_tmv(WT, z, idx, bias=bias,
                                             residual=None if residual is None else residual.contiguous())
        y = kernels_cpu.torch_gather_tmv(WT, z, idx)
        if bias is not None:
            y = y + bias
        return y if residual is None else residual + y
