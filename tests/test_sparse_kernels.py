"""Fused gather + GEMV kernels (C++ on CPU; Triton under TRITON_INTERPRET when triton is installed)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from shadowllm.sparse import kernels_cpu
from shadowllm.sparse.gather import GatherOps


def _case(dtype=torch.float64, B=2, N=300, D=70, K=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, D, generator=g, dtype=dtype)
    x = torch.randn(B, D, generator=g, dtype=dtype)
    z = torch.randn(B, K, generator=g, dtype=dtype)
    idx = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(B)])
    return W, x, z, idx


def _ref(W, x, z, idx):
    G = W[idx]                                     # [B, K, D]
    return torch.einsum("bkd,bd->bk", G, x), torch.einsum("bkd,bk->bd", G, z)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gather_ops_match_reference(backend, dtype):
    if backend == "cpp" and kernels_cpu.cpp_ops() is None:
        pytest.skip("C++ extension not buildable here")
    W, x, z, idx = _case(dtype)
    ops = GatherOps(backend, "cpu")
    mv, tmv = _ref(W, x, z, idx)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(ops.mv(W, x, idx), mv, rtol=tol, atol=tol)
    torch.testing.assert_close(ops.tmv(W, z, idx), tmv, rtol=tol, atol=tol)


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match="gather backend"):
        GatherOps("cuda-magic", "cpu")
    with pytest.raises(ValueError, match="CPU only"):
        GatherOps("cpp", "cuda")


def test_triton_kernels_interpreted():
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from shadowllm.sparse import kernels_triton as kt
        g = torch.Generator().manual_seed(0)
        W = torch.randn(300, 70, generator=g); x = torch.randn(2, 70, generator=g); z = torch.randn(2, 37, generator=g)
        idx = torch.stack([torch.randperm(300, generator=g)[:37] for _ in range(2)])
        G = W[idx]
        assert torch.allclose(kt.gather_mv(W, x, idx, block_k=8, block_d=32), torch.einsum("bkd,bd->bk", G, x), atol=1e-4)
        for s in (None, 1, 3):
            assert torch.allclose(kt.gather_tmv(W, z, idx, block_k=8, block_d=32, splits=s),
                                  torch.einsum("bkd,bk->bd", G, z), atol=1e-4)
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
