"""GPU self-check of the sparse decoder (run by run_latency_grid.sh before timing anything).

1. Triton gather kernels vs a torch reference (fp32 and fp16, OPT-1.3B-like widths).
2. Each mode on a small random OPT shape: CUDA (Triton gathers, fp32, TF32 off) vs CPU (tested against the
   stock transformers model by tests/test_sparse_decoder.py): logits of prefill + 8 decode steps.
3. CUDA graph replay vs eager on CUDA (fp32): the same greedy tokens; also with a batch of 2.
Writes a PASS/FAIL line per check to --out and exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script (no triton, no graphs)")
    args = ap.parse_args()
    import os

    os.environ["SHADOWLLM_TRITON_TUNE"] = "0"  # default launch configs here; kernel_bench tunes (13B shapes)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from shadowllm.shapes import ModelShape
    from shadowllm.sparse import MODES, DecoderWeights, SparseDecoder, make_static_mask
    from shadowllm.sparse import kernels_triton as kt
    from shadowllm.sparse.predictors import DejaVuPredictor, ShadowPredictor

    lines, ok_all = [], True

    def report(name, ok, detail=""):
        nonlocal ok_all
        ok_all &= bool(ok)
        line = f"{'PASS' if ok else 'FAIL'} {name} {detail}"
        print(line, flush=True)
        lines.append(line)

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    lines.append(f"device {name}, torch {torch.__version__}, triton available {kt.available()}")
    # 1. kernels
    for dtype, tol in ((torch.float32, 1e-3), (torch.float16, 3e-2)) if cuda else ():
        for B in (1, 2):
            try:
                g = torch.Generator(device=dev).manual_seed(0)
                W = torch.randn(8192, 2048, device=dev, dtype=dtype, generator=g) * 0.02
                x = torch.randn(B, 2048, device=dev, dtype=dtype, generator=g)
                z = torch.randn(B, 4096, device=dev, dtype=dtype, generator=g)
                idx = torch.stack([torch.randperm(8192, device=dev)[:4096].sort().values for _ in range(B)])
                G = W[idx].float()
                r1, r2 = torch.einsum("bkd,bd->bk", G, x.float()), torch.einsum("bkd,bk->bd", G, z.float())
                e1 = (kt.gather_mv(W, x, idx).float() - r1).abs().max().item()
                e2 = (kt.gather_tmv(W, z, idx).float() - r2).abs().max().item()
                report(f"triton kernels {dtype} B={B}", e1 < tol and e2 < tol, f"max err {e1:.2e} {e2:.2e}")
            except Exception as e:
                report(f"triton kernels {dtype} B={B}", False, repr(e))
                traceback.print_exc()
    # 2./3. decoder
    shape = ModelShape("check", 256, 4, 8, 1024, vocab=1000, max_pos=128)
    wc = DecoderWeights.random(shape, torch.float32, "cpu", seed=1)
    wg = wc.to(dev)
    # predictors drawn once on the CPU and copied, so both devices hold the same numbers
    sp = ShadowPredictor(wc.d, wc.L, wc.H, wc.F, 64, torch.float32, "cpu", seed=0)
    dp = DejaVuPredictor(wc.d, wc.L, wc.H, wc.F, 64, torch.float32, "cpu", seed=0)
    pc, pg = dict(shadow=sp, dejavu=dp), dict(shadow=sp.to(dev), dejavu=dp.to(dev))
    ids = torch.randint(2, 1000, (2, 12), generator=torch.Generator().manual_seed(2))
    for mode in MODES:
        for B in (1, 2):
            try:
                kw = {"static_mask": make_static_mask(wc, 0.5, seed=3, batch=B)} if mode == "static" else {}
                cpu = SparseDecoder(wc, mode, 0.5, gather="torch", **pc, **kw)
                gpu = SparseDecoder(wg, mode, 0.5, gather="auto", lookahead=False, **pg, **kw)
                tc, (lc0, lcs) = cpu.generate(ids[:B], 8, return_logits=True)
                tg, (lg0, lgs) = gpu.generate(ids[:B].to(dev), 8, return_logits=True)
                err = max((a.cpu() - b).abs().max().item() for a, b in zip([lg0] + lgs, [lc0] + lcs))
                same = torch.equal(tc, tg.cpu())
                report(f"cuda vs cpu {mode} B={B} (gather {gpu.ops.backend if gpu.ops else '-'})",
                       err < 2e-3 and same, f"max logit err {err:.2e}, tokens equal {same}")
                if not cuda:
                    continue
                # graph vs eager on the GPU
                la = mode == "dejavu"
                ge = SparseDecoder(wg, mode, 0.5, lookahead=la, **pg, **kw)
                t_eager = ge.generate(ids[:B].to(dev), 16)
                ge.capture_graph()
                t_graph = ge.generate(ids[:B].to(dev), 16, use_graph=True)
                t_graph2 = ge.generate(ids[:B].to(dev), 16, use_graph=True)  # graph reused across calls
                ok = torch.equal(t_eager, t_graph) and torch.equal(t_graph, t_graph2)
                report(f"graph vs eager {mode} B={B} lookahead={la}", ok,
                       f"mismatching tokens {(t_eager != t_graph).sum().item()}")
            except Exception as e:
                report(f"decoder {mode} B={B}", False, repr(e))
                traceback.print_exc()
    if cuda and kt.available():
        try:
            os.environ["SHADOWLLM_TRITON_TUNE"] = "1"
            kernel_bench(dev, lines)
        except Exception as e:
            report("kernel bench", False, repr(e))
            traceback.print_exc()
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0 if ok_all else 1


def kernel_bench(dev, lines):
    """GB/s of each way to read half of an OPT-13B FFN matrix (fp16, batch 1): the dense GEMV of the whole
    matrix, the GEMV of a pre-sliced half, torch index_select + GEMV, and the tuned Triton gathers."""
    import torch.nn.functional as F

    from shadowllm.sparse import kernels_triton as kt

    d, Fn = 5120, 20480
    g = torch.Generator(device=dev).manual_seed(0)
    W = torch.randn(Fn, d, device=dev, dtype=torch.float16, generator=g) * 0.02
    x = torch.randn(1, d, device=dev, dtype=torch.float16, generator=g)
    for frac in (0.5, 0.1):
        k = int(Fn * frac)
        idx = torch.randperm(Fn, device=dev)[:k].sort().values[None]
        z = torch.randn(1, k, device=dev, dtype=torch.float16, generator=g)
        Ws = W[idx[0]].contiguous()
        nb_full, nb_k = W.numel() * 2, k * d * 2
        cases = [
            ("dense GEMV (all rows)", lambda: F.linear(x, W), nb_full),
            ("pre-sliced GEMV", lambda: F.linear(x, Ws), nb_k),
            ("pre-sliced GEMV^T", lambda: z @ Ws, nb_k),
            ("index_select + GEMV", lambda: F.linear(x, W.index_select(0, idx[0])), nb_k),
            ("triton gather_mv", lambda: kt.gather_mv(W, x, idx), nb_k),
            ("triton gather_tmv", lambda: kt.gather_tmv(W, z, idx), nb_k),
        ]
        for name, fn, nb in cases:
            us = kt.cuda_time_ms(fn, reps=20) * 1e3
            line = f"BENCH {frac:.0%} of {Fn}x{d} fp16: {name:24s} {us:8.1f} us  {nb / us / 1e3:7.0f} GB/s (weights read)"
            print(line, flush=True)
            lines.append(line)
    for key, cfg in kt.TUNED.items():
        line = f"TUNED {key[0]} B={key[1]} K={key[2]} N={key[3]} D={key[4]}: {cfg}"
        print(line)
        lines.append(line)


if __name__ == "__main__":
    t0 = time.time()
    rc = main()
    print(f"check_gpu done in {time.time() - t0:.1f}s, rc={rc}")
    sys.exit(rc)
