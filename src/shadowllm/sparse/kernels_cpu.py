"""Fused gather + matrix-vector kernels for CPU: each active row is read once, no gathered copy.

    gather_mv (W [N, D], x [B, D], idx [B, K])  -> y [B, K],  y[b, i] = W[idx[b, i]] . x[b]
    gather_tmv(WT [N, D], z [B, K], idx [B, K]) -> y [B, D],  y[b]    = sum_i z[b, i] * WT[idx[b, i]]

gather_mv (q/k/v, fc1) is a small C++ extension built on first use (`cpp_ops()`, None without a compiler:
then `torch_gather_mv`, index_select + bmm); gather_tmv (out_proj, fc2, stored transposed) is stock
`embedding_bag(mode="sum", per_sample_weights=z)`.
"""
from __future__ import annotations

import os
import threading

import torch
import torch.nn.functional as F

_CPP_SRC = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>

template <typename T>
static void gmv_impl(const T* W, const T* x, const int64_t* idx, T* y, int64_t B, int64_t K, int64_t D) {
  at::parallel_for(0, B * K, 8, [&](int64_t s, int64_t e) {
    for (int64_t p = s; p < e; ++p) {
      const T* w = W + idx[p] * D;
      const T* xb = x + (p / K) * D;
      T acc = 0;
      #pragma omp simd reduction(+:acc)
      for (int64_t j = 0; j < D; ++j) acc += w[j] * xb[j];
      y[p] = acc;
    }
  });
}

static void check(const torch::Tensor& W, const torch::Tensor& v, const torch::Tensor& idx) {
  TORCH_CHECK(W.dim() == 2 && v.dim() == 2 && idx.dim() == 2, "expected 2-D W, vector batch and idx");
  TORCH_CHECK(W.is_contiguous() && v.is_contiguous() && idx.is_contiguous(), "inputs must be contiguous");
  TORCH_CHECK(idx.scalar_type() == torch::kLong, "idx must be int64");
  TORCH_CHECK(W.scalar_type() == v.scalar_type(), "dtype mismatch");
  TORCH_CHECK(idx.size(0) == v.size(0), "batch mismatch");
}

torch::Tensor gather_mv(torch::Tensor W, torch::Tensor x, torch::Tensor idx) {
  check(W, x, idx);
  TORCH_CHECK(x.size(1) == W.size(1), "x width != W width");
  auto B = x.size(0), D = x.size(1), K = idx.size(1);
  auto y = torch::empty({B, K}, x.options());
  AT_DISPATCH_FLOATING_TYPES(W.scalar_type(), "gather_mv", [&] {
    gmv_impl<scalar_t>(W.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(),
                       y.data_ptr<scalar_t>(), B, K, D);
  });
  return y;
}

"""

_lock = threading.Lock()
_ops = None
_tried = False


def cpp_ops(verbose: bool = False):
    """The compiled extension module (gather_mv), or None if it cannot be built here."""
    global _ops, _tried
    with _lock:
        if _tried:
            return _ops
        _tried = True
        if os.environ.get("SHADOWLLM_NO_CPP", "0") not in ("0", ""):
            return None
        try:
            from torch.utils.cpp_extension import load_inline

            flags = ["-O3", "-fopenmp-simd"]
            if os.environ.get("SHADOWLLM_CPP_NATIVE", "1") not in ("0", ""):
                flags.append("-march=native")
            _ops = load_inline("shadowllm_sparse_cpu", cpp_sources=_CPP_SRC,
                               functions=["gather_mv"], extra_cflags=flags, verbose=verbose)
        except Exception as e:  # no compiler, no headers, ...
            if verbose:
                print(f"shadowllm.sparse: C++ gather kernels unavailable ({type(e).__name__}: {e}); "
                      f"using index_select fallback")
            _ops = None
        return _ops


# ---- pure-torch versions (reference, and fallback) ---------------------------------------------

def torch_gather_mv(W: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, buf: torch.Tensor | None = None):
    """index_select into a (preallocated) buffer, then a batched matvec."""
    B, K = idx.shape
    flat = idx.reshape(-1)
    if buf is None or buf.shape != (B * K, W.shape[1]) or buf.dtype != W.dtype:
        buf = torch.empty(B * K, W.shape[1], dtype=W.dtype, device=W.device)
    torch.index_select(W, 0, flat, out=buf)
    return torch.bmm(buf.view(B, K, -1), x.unsqueeze(-1)).squeeze(-1)


def torch_gather_tmv(WT: torch.Tensor, z: torch.Tensor, idx: torch.Tensor):
    """embedding_bag(sum) with per-sample weights: a fused gather + weighted row sum in stock torch."""
    return F.embedding_bag(idx, WT, per_sample_weights=z.to(WT.dtype), mode="sum")
