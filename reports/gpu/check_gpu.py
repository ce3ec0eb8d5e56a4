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
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from shadowllm.sparse import MODES, OPTShape, OPTWeights, SparseOPT, make_static_mask
    from shadowllm.sparse import kernels_triton as kt

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
    shape = OPTShape("check", 256, 4, 8, 1024, vocab=1000, max_pos=128)
    wc = OPTWeights.random(shape, torch.float32, "cpu", seed=1)
    wg = wc.to(dev)
    ids = torch.randint(2, 1000, (2, 12), generator=torch.Generator().manual_seed(2))
    for mode in MODES:
        for B in (1, 2):
            try:
                kw = {"static_mask": make_static_mask(wc, 0.5, seed=3, batch=B)} if mode == "static" else {}
                cpu = SparseOPT(wc, mode, 0.5, predictor_hidden=64, gather="torch", **kw)
                gpu = SparseOPT(wg, mode, 0.5, predictor_hidden=64, gather="auto", lookahead=False, **kw)
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
                ge = SparseOPT(wg, mode, 0.5, predictor_hidden=64, lookahead=la, **kw)
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
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0 if ok_all else 1


if __name__ == "__main__":
    t0 = time.time()
    rc = main()
    print(f"check_gpu done in {time.time() - t0:.1f}s, rc={rc}")
    sys.exit(rc)
