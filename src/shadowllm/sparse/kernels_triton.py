"""Triton kernels: fused gather + GEMV for the per-token sparse decoder on GPU (DejaVu's best case).

Same two operations as kernels_cpu (see there):
    gather_mv (W [N, D], x [B, D], idx [B, K])  -> [B, K]
    gather_tmv(WT [N, D], z [B, K], idx [B, K]) -> [B, D]
Each active row is read once, straight from the full weight matrix (no gathered copy), accumulated in
fp32. D (the row width) and the rows per split (a power of two) are compile-time constants: one
compile per model width and a few split sizes; static loops (this also keeps TRITON_INTERPRET=1 working). gather_tmv splits K over programs and reduces the partial sums with one small torch sum, so the
result is deterministic (no atomics). Both are CUDA-graph capturable (no host synchronisation).

Importing this module without triton is fine: `available()` is False and the wrappers raise.
The kernels also run under TRITON_INTERPRET=1 on CPU tensors (used by the tests when triton is present).
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl

    _HAVE_TRITON = True
except Exception:  # pragma: no cover - triton absent
    triton = None
    tl = None
    _HAVE_TRITON = False


def available() -> bool:
    return _HAVE_TRITON


if _HAVE_TRITON:

    @triton.jit
    def _gather_mv_kernel(W, X, IDX, Y, K, stride_w, stride_x, stride_i, stride_y,
                          D: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
        b = tl.program_id(0)
        kb = tl.program_id(1)
        offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        rows = tl.load(IDX + b * stride_i + offs_k, mask=mask_k, other=0)
        acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            mask_d = offs_d < D
            x = tl.load(X + b * stride_x + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            w = tl.load(W + rows[:, None] * stride_w + offs_d[None, :],
                        mask=mask_k[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
            acc += tl.sum(w * x[None, :], axis=1)
        tl.store(Y + b * stride_y + offs_k, acc.to(Y.dtype.element_ty), mask=mask_k)

    @triton.jit
    def _gather_tmv_kernel(WT, Z, IDX, P, K, stride_w, stride_z, stride_i, stride_ps, stride_pb,
                           D: tl.constexpr, ROWS_PER_SPLIT: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_D: tl.constexpr):
        b = tl.program_id(0)
        db = tl.program_id(1)
        s = tl.program_id(2)
        offs_d = db * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        k_lo = s * ROWS_PER_SPLIT
        for k0 in range(0, ROWS_PER_SPLIT, BLOCK_K):
            offs_k = k_lo + k0 + tl.arange(0, BLOCK_K)
            mask_k = (offs_k < K) & (offs_k < k_lo + ROWS_PER_SPLIT)
            rows = tl.load(IDX + b * stride_i + offs_k, mask=mask_k, other=0)
            z = tl.load(Z + b * stride_z + offs_k, mask=mask_k, other=0.0).to(tl.float32)
            w = tl.load(WT + rows[:, None] * stride_w + offs_d[None, :],
                        mask=mask_k[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
            acc += tl.sum(w * z[:, None], axis=0)
        tl.store(P + s * stride_ps + b * stride_pb + offs_d, acc, mask=mask_d)


def _need():
    if not _HAVE_TRITON:
        raise RuntimeError("triton is not installed: use the 'torch' gather backend")


def gather_mv(W: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, block_k: int = 16, block_d: int = 256,
              num_warps: int = 4) -> torch.Tensor:
    _need()
    assert W.stride(1) == 1 and x.stride(1) == 1 and idx.stride(1) == 1
    B, K = idx.shape
    D = W.shape[1]
    y = torch.empty(B, K, dtype=x.dtype, device=x.device)
    grid = (B, triton.cdiv(K, block_k))
    _gather_mv_kernel[grid](W, x, idx, y, K, W.stride(0), x.stride(0), idx.stride(0), y.stride(0),
                            D=D, BLOCK_K=block_k, BLOCK_D=min(block_d, triton.next_power_of_2(D)),
                            num_warps=num_warps)
    return y


def gather_tmv(WT: torch.Tensor, z: torch.Tensor, idx: torch.Tensor, block_k: int = 32, block_d: int = 256,
               splits: int | None = None, num_warps: int = 4) -> torch.Tensor:
    _need()
    assert WT.stride(1) == 1 and z.stride(1) == 1 and idx.stride(1) == 1
    B, K = idx.shape
    D = WT.shape[1]
    block_d = min(block_d, triton.next_power_of_2(D))
    n_db = triton.cdiv(D, block_d)
    if splits is None:  # aim at ~4 programs per SM-sized unit of work; K rows per split >= block_k
        target = 512
        splits = max(1, min(triton.cdiv(K, block_k), target // max(1, B * n_db)))
    # a power of two (>= block_k): a compile-time constant with few distinct values across sparsities
    rows_per_split = max(block_k, triton.next_power_of_2(triton.cdiv(K, splits)))
    splits = triton.cdiv(K, rows_per_split)
    part = torch.empty(splits, B, D, dtype=torch.float32, device=z.device)
    _gather_tmv_kernel[(B, n_db, splits)](WT, z, idx, part, K, WT.stride(0), z.stride(0),
                                          idx.stride(0), part.stride(0), part.stride(1),
                                          D=D, ROWS_PER_SPLIT=rows_per_split, BLOCK_K=block_k, BLOCK_D=block_d, num_warps=num_warps)
    return part.sum(0).to(z.dtype)
