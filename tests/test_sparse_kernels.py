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


@pytest.mark.slow
def test_triton_decoder_equals_torch_gathers_interpreted():
    """The per-token decoder through the Triton kernels (interpreted on CPU) equals the torch-gather path,
    fp32 and fp16, both KV policies, batch 1 and 2 (the GPU run uses these same kernels)."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from shadowllm.shapes import ModelShape
        from shadowllm.sparse import DecoderWeights, SparseDecoder
        shape = ModelShape("t", 64, 3, 4, 256, vocab=300, max_pos=64)
        ids = torch.randint(2, 300, (2, 7), generator=torch.Generator().manual_seed(2))
        for dt, tol in ((torch.float32, 1e-4), (torch.float16, 2e-2)):
            w = DecoderWeights.random(shape, dt, "cpu", seed=1)
            for mode in ("shadowllm-token", "dejavu"):
                for kv in ("full", "active"):
                    for B in (1, 2):
                        a = SparseDecoder(w, mode, 0.5, predictor_hidden=32, gather="torch", kv_policy=kv)
                        b = SparseDecoder(w, mode, 0.5, predictor_hidden=32, gather="triton", kv_policy=kv)
                        assert b.ops.backend == "triton"
                        ta, (a0, xs) = a.generate(ids[:B], 4, return_logits=True)
                        tb, (b0, ys) = b.generate(ids[:B], 4, return_logits=True)
                        err = max((x.float() - y.float()).abs().max().item() for x, y in zip([a0] + xs, [b0] + ys))
                        assert err < tol and torch.equal(ta, tb), (dt, mode, kv, B, err)
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_triton_add_layer_norm_interpreted():
    """The fused residual-add + layer-norm kernel equals torch (add, then F.layer_norm), and every decoder
    mode gives the same logits with it (fused_ln=True, as on CUDA) as without it."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch, torch.nn.functional as F
        from shadowllm.shapes import ModelShape
        from shadowllm.sparse import MODES, DecoderWeights, SparseDecoder, make_static_mask
        from shadowllm.sparse import kernels_triton as kt
        g = torch.Generator().manual_seed(0)
        for dt, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
            h, y = torch.randn(3, 70, generator=g).to(dt), torch.randn(3, 70, generator=g).to(dt)
            w, b = (1 + 0.1 * torch.randn(70, generator=g)).to(dt), (0.1 * torch.randn(70, generator=g)).to(dt)
            ho, x = kt.add_layer_norm(h, y, w, b, 1e-5)
            assert torch.equal(ho, h + y)
            ref = F.layer_norm((h + y).float(), (70,), w.float(), b.float(), 1e-5)
            assert (x.float() - ref).abs().max().item() < tol
            assert kt.add_layer_norm(h, None, w, b, 1e-5)[0] is h
        w = DecoderWeights.random(ModelShape("t", 64, 3, 4, 256, vocab=300, max_pos=64), torch.float32, "cpu", seed=1)
        ids = torch.randint(2, 300, (2, 7), generator=torch.Generator().manual_seed(2))
        for mode in MODES:
            kw = {"static_mask": make_static_mask(w, 0.5, batch=2)} if mode == "static" else {}
            a = SparseDecoder(w, mode, 0.5, predictor_hidden=32, fused_ln=False, **kw)
            c = SparseDecoder(w, mode, 0.5, predictor_hidden=32, fused_ln=True, **kw)
            ta, (a0, xs) = a.generate(ids, 4, return_logits=True)
            tc, (c0, ys) = c.generate(ids, 4, return_logits=True)
            err = max((p - q).abs().max().item() for p, q in zip([a0] + xs, [c0] + ys))
            assert err < 1e-4 and torch.equal(ta, tc), (mode, err)
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
