"""Triton kernels for the GPU decoder: the fused gathers of kernels_cpu plus a fused residual add + layer norm.

    gather_mv (W [N, D], x [B, D], idx [B, K], bias, relu) -> act(W[idx] x + bias[idx])        [B, K]
    gather_tmv(WT [N, D], z [B, K], idx [B, K], bias, residual) -> residual + bias + z WT[idx]  [B, D]
    add_layer_norm(h, y, w, b, eps) -> (h + y, layer_norm(h + y))                               [M, D] x 2
Rows are read straight from the full matrices and accumulated in fp32; gather_tmv sums its split-K partials
in a fixed order (deterministic, no atomics). All are CUDA-graph capturable and run under TRITON_INTERPRET=1
on CPU tensors; without triton `available()` is False and the wrappers raise.
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
    def _gather_mv_kernel(W, X, IDX, BIAS, Y, K, stride_w, stride_x, stride_i, stride_y,
                          D: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
                          BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
        # y[b, j] = act(W[idx[b, j]] . x[b] + bias[idx[b, j]]), j in this program's BLOCK_K rows
        b = tl.program_id(0)
        kb = tl.program_id(1)
        offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        rows = tl.load(IDX + b * stride_i + offs_k, mask=mask_k, other=0)
        acc = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)   # one reduction at the end, not per tile
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            mask_d = offs_d < D
            x = tl.load(X + b * stride_x + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            w = tl.load(W + rows[:, None] * stride_w + offs_d[None, :],
                        mask=mask_k[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
            acc += w * x[None, :]
        y = tl.sum(acc, axis=1)
        if HAS_BIAS:
            y += tl.load(BIAS + rows, mask=mask_k, other=0.0).to(tl.float32)
        if RELU:
            y = tl.maximum(y, 0.0)
        tl.store(Y + b * stride_y + offs_k, y.to(Y.dtype.element_ty), mask=mask_k)

    @triton.jit
    def _gather_tmv_kernel(WT, Z, IDX, P, K, stride_w, stride_z, stride_i, stride_ps, stride_pb,
                           D: tl.constexpr, ROWS_PER_SPLIT: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_D: tl.constexpr):
        # partial[s, b, d] = sum over this split's rows j of z[b, j] * WT[idx[b, j], d]
        b = tl.program_id(0)
        db = tl.program_id(1)
        s = tl.program_id(2)
        offs_d = db * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        acc = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)   # one reduction at the end, not per tile
        k_lo = s * ROWS_PER_SPLIT
        for k0 in range(0, ROWS_PER_SPLIT, BLOCK_K):
            offs_k = k_lo + k0 + tl.arange(0, BLOCK_K)
            mask_k = (offs_k < K) & (offs_k < k_lo + ROWS_PER_SPLIT)
            rows = tl.load(IDX + b * stride_i + offs_k, mask=mask_k, other=0)
            z = tl.load(Z + b * stride_z + offs_k, mask=mask_k, other=0.0).to(tl.float32)
            w = tl.load(WT + rows[:, None] * stride_w + offs_d[None, :],
                        mask=mask_k[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
            acc += w * z[:, None]
        tl.store(P + s * stride_ps + b * stride_pb + offs_d, tl.sum(acc, axis=0), mask=mask_d)

    @triton.jit
    def _splitk_reduce_kernel(P, BIAS, RES, Y, stride_ps, stride_pb, stride_r, stride_y, S: tl.constexpr,
                              D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
                              BLOCK_D: tl.constexpr):
        # y[b, d] = res[b, d] + bias[d] + sum_s partial[s, b, d]   (fixed order: deterministic)
        b = tl.program_id(0)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        for s in range(0, S):
            acc += tl.load(P + s * stride_ps + b * stride_pb + offs_d, mask=mask_d, other=0.0)
        if HAS_BIAS:
            acc += tl.load(BIAS + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_RES:
            acc += tl.load(RES + b * stride_r + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        tl.store(Y + b * stride_y + offs_d, acc.to(Y.dtype.element_ty), mask=mask_d)


if _HAVE_TRITON:

    @triton.jit
    def _add_ln_kernel(H, Y, W, BIAS, HOUT, XOUT, stride_h, stride_y, stride_ho, stride_xo, eps,
                       D: tl.constexpr, HAS_Y: tl.constexpr, BLOCK: tl.constexpr):
        # one row: h' = h + y (rounded to the storage dtype, as a separate torch add would be); x = LN(h')
        r = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        m = offs < D
        h = tl.load(H + r * stride_h + offs, mask=m, other=0.0)
        if HAS_Y:
            h = (h.to(tl.float32) + tl.load(Y + r * stride_y + offs, mask=m, other=0.0).to(tl.float32))
            h = h.to(HOUT.dtype.element_ty)
            tl.store(HOUT + r * stride_ho + offs, h, mask=m)
        hf = h.to(tl.float32)
        mean = tl.sum(hf, axis=0) / D
        c = tl.where(m, hf - mean, 0.0)
        var = tl.sum(c * c, axis=0) / D
        x = c * (1.0 / tl.sqrt(var + eps))
        x = x * tl.load(W + offs, mask=m, other=1.0).to(tl.float32) + tl.load(BIAS + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(XOUT + r * stride_xo + offs, x.to(XOUT.dtype.element_ty), mask=m)


def add_layer_norm(h: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, b: torch.Tensor, eps: float):
    """(h + y, layer_norm(h + y)) for h, y [M, D] in one kernel, a launch fewer per layer (y None: LN only)."""
    _need()
    M, D = h.shape
    assert h.stride(1) == 1 and (y is None or y.stride(1) == 1)
    hout = torch.empty_like(h) if y is not None else h
    x = torch.empty_like(h)
    block = triton.next_power_of_2(D)
    _add_ln_kernel[(M,)](h, y if y is not None else h, w, b, hout, x, h.stride(0),
                         y.stride(0) if y is not None else 0, hout.stride(0), x.stride(0), eps,
                         D=D, HAS_Y=y is not None, BLOCK=block, num_warps=8 if block >= 4096 else 4)
    return hout, x


def _need():
    if not _HAVE_TRITON:
        raise RuntimeError("triton is not installed: use the 'torch' gather backend")


# ---- launch-config choice --------------------------------------------------------------------------
# (block_k, block_d, num_warps) for gather_mv; (block_k, block_d, target_programs, num_warps) for gather_tmv.
# The first is the default (CPU interpreter, or tuning off). On CUDA, the first eager call of a shape times
# every candidate (CUDA events, best of a few runs) and keeps the fastest for that shape: small K (the active
# q rows of a few heads) wants more, smaller programs than large K (half of 20k neurons) to fill the SMs.
MV_CONFIGS = [(16, 256, 4), (8, 256, 4), (8, 512, 8), (16, 512, 8), (4, 512, 4), (32, 128, 4)]
TMV_CONFIGS = [(32, 128, 1024, 4), (16, 256, 1024, 4), (32, 256, 512, 8), (64, 128, 512, 8), (16, 128, 2048, 4),
               (32, 64, 2048, 4)]
TUNED: dict = {}  # (kernel, B, K, N, D, dtype) -> config


def _tune_on(x: torch.Tensor) -> bool:
    import os

    return (x.is_cuda and os.environ.get("SHADOWLLM_TRITON_TUNE", "1") != "0"
            and not torch.cuda.is_current_stream_capturing())


def cuda_time_ms(fn, reps: int = 5, rounds: int = 5) -> float:
    """Best over `rounds` of the mean CUDA-event time (ms) of `reps` back-to-back calls; fn runs once first."""
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(rounds):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(reps):
            fn()
        e1.record()
        torch.cuda.synchronize()
        best = min(best, e0.elapsed_time(e1) / reps)
    return best


def _pick(key, configs, launch, x: torch.Tensor):
    cfg = TUNED.get(key)
    if cfg is not None:
        return cfg
    if not _tune_on(x):
        return configs[0]
    best, best_t = configs[0], float("inf")
    for c in configs:
        try:
            t = cuda_time_ms(lambda: launch(c))  # the first call compiles
        except Exception:  # a config this device cannot run (resources): skip it
            continue
        if t < best_t:
            best, best_t = c, t
    TUNED[key] = best
    return best


def gather_mv(W: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, bias: torch.Tensor | None = None,
              relu: bool = False, block_k: int | None = None, block_d: int = 256,
              num_warps: int = 4) -> torch.Tensor:
    """y[b, j] = act(W[idx[b, j]] . x[b] + bias[idx[b, j]]); block_k None = the tuned (CUDA) or default config."""
    _need()
    assert W.stride(1) == 1 and x.stride(1) == 1 and idx.stride(1) == 1
    B, K = idx.shape
    D = W.shape[1]
    y = torch.empty(B, K, dtype=x.dtype, device=x.device)
    bias_arg = bias if bias is not None else W

    def launch(c):
        bk, bd, nw = c
        _gather_mv_kernel[(B, triton.cdiv(K, bk))](W, x, idx, bias_arg, y, K, W.stride(0), x.stride(0),
                                                   idx.stride(0), y.stride(0), D=D, HAS_BIAS=bias is not None,
                                                   RELU=relu, BLOCK_K=bk,
                                                   BLOCK_D=min(bd, triton.next_power_of_2(D)), num_warps=nw)

    if block_k is None:
        cfg = _pick(("mv", B, K, W.shape[0], D, W.dtype), MV_CONFIGS, launch, x)
    else:
        cfg = (block_k, block_d, num_warps)
    launch(cfg)
    return y


def gather_tmv(WT: torch.Tensor, z: torch.Tensor, idx: torch.Tensor, bias: torch.Tensor | None = None,
               residual: torch.Tensor | None = None, block_k: int | None = None, block_d: int = 256,
               splits: int | None = None, num_warps: int = 4, target: int = 512) -> torch.Tensor:
    """y[b] = residual[b] + bias + sum_j z[b, j] * WT[idx[b, j]] (split-K; block_k None = tuned/default)."""
    _need()
    assert WT.stride(1) == 1 and z.stride(1) == 1 and idx.stride(1) == 1
    B, K = idx.shape
    D = WT.shape[1]
    if residual is not None:
        assert residual.shape == (B, D) and residual.stride(1) == 1

    def plan(c):
        bk, bd, tgt, nw = c
        bd = min(bd, triton.next_power_of_2(D))
        n_db = triton.cdiv(D, bd)
        sp = splits
        if sp is None:  # ~tgt programs in all; K rows per split >= block_k
            sp = max(1, min(triton.cdiv(K, bk), tgt // max(1, B * n_db)))
        # a power of two (>= block_k): a compile-time constant with few distinct values across sparsities
        rps = max(bk, triton.next_power_of_2(triton.cdiv(K, sp)))
        return bk, bd, n_db, rps, triton.cdiv(K, rps), nw

    def launch(c):
        bk, bd, n_db, rps, sp, nw = plan(c)
        part = torch.empty(sp, B, D, dtype=torch.float32, device=z.device)
        _gather_tmv_kernel[(B, n_db, sp)](WT, z, idx, part, K, WT.stride(0), z.stride(0), idx.stride(0),
                                          part.stride(0), part.stride(1), D=D, ROWS_PER_SPLIT=rps, BLOCK_K=bk,
                                          BLOCK_D=bd, num_warps=nw)
        y = torch.empty(B, D, dtype=z.dtype, device=z.device)
        rb = min(1024, triton.next_power_of_2(D))
        _splitk_reduce_kernel[(B, triton.cdiv(D, rb))](
            part, bias if bias is not None else part, residual if residual is not None else part, y,
            part.stride(0), part.stride(1), residual.stride(0) if residual is not None else 0, y.stride(0),
            S=sp, D=D, HAS_BIAS=bias is not None, HAS_RES=residual is not None, BLOCK_D=rb, num_warps=4)
        return y

    if block_k is None:
        cfg = _pick(("tmv", B, K, WT.shape[0], D, WT.dtype), TMV_CONFIGS, launch, z)
    else:
        cfg = (block_k, block_d, target, num_warps)
    return launch(cfg)
