"""Kernel-level profile of ONE eager decode step of the sparse decoder (GPU), per mode: which kernels run,
how many per step, and their summed device time (compare with the CUDA-graph ms/token of the bench: the
difference is launch gaps). Random weights of a named OPT shape.

    PYTHONPATH=src python3 workflow/scripts/gpu/profile_step.py --model opt-13b --sparsity 0.5 > profile.txt
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from shadowllm.sparse import DecoderWeights, SparseDecoder, make_static_mask
from shadowllm.sparse.predictors import DejaVuPredictor, ShadowPredictor
from shadowllm.shapes import parse_size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="opt-13b")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--modes", nargs="+", default=["dense", "static", "shadowllm-token", "dejavu"])
    ap.add_argument("--top", type=int, default=14)
    args = ap.parse_args()
    dev = torch.device("cuda")
    w = DecoderWeights.random(parse_size(args.model), torch.float16, dev, seed=0)
    sp = ShadowPredictor(w.d, w.L, w.H, w.F, 1024, w.dtype, dev)
    dp = DejaVuPredictor(w.d, w.L, w.H, w.F, 1024, w.dtype, dev)
    ids = torch.randint(2, w.V, (1, 128), device=dev)
    for mode in args.modes:
        kw = {"static_mask": make_static_mask(w, args.sparsity)} if mode == "static" else {}
        dec = SparseDecoder(w, mode, args.sparsity, shadow=sp, dejavu=dp, lookahead=mode == "dejavu", **kw)
        dec.setup(1, 128 + 24)
        nxt = dec.prefill(ids)[:, -1].argmax(-1)
        dec.decode_n(nxt, 3)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            dec.decode_n(nxt, 1)
            torch.cuda.synchronize()
        tot, cnt = defaultdict(float), defaultdict(int)
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                name = e.name[:90]
                tot[name] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
                cnt[name] += 1
        n, us = sum(cnt.values()), sum(tot.values())
        print(f"== {mode}: {n} kernels per step, {us / 1e3:.2f} ms summed kernel time "
              f"({n / w.L:.1f} kernels per layer)")
        for name, t in sorted(tot.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"   {t:9.0f} us  x{cnt[name]:4d}  {name}")
        del dec
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
