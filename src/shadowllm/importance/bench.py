"""Benchmark and oracle check for the importance collector (commands that print figures; not tests).

  shadowllm importance-bench  [--model DIR] [--task T] [--n 32] ...   time / peak memory, all nine vs plainact;
                                                                       trace bytes for OPT-13B shapes
  shadowllm importance-oracle --model DIR [--task T] [--n 64] ...     Spearman(criterion head score,
                                                                       loss increase when the head is removed)
Without --model the benchmark uses a random OPT of the embedded model's shape; a --model that is not a folder
is an error.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

OPT13B = dict(L=40, H=40, F=20480, d_model=5120)
AUTHORS_BYTES = 700e9


def _random_opt(layers=6, heads=8, hidden=256, ffn=1024, vocab=50272, seed=0):
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    ffn_dim=ffn, max_position_embeddings=2048, word_embed_proj_dim=hidden)
    cfg._attn_implementation = "eager"
    return OPTForCausalLM(cfg).eval()


def _examples(args, model=None, tok=None):
    import torch

    from .collect import Example, task_examples
    if tok is not None:
        try:
            ml = min(2048, getattr(model.config, "max_position_embeddings", 2048))
            return task_examples(args.task, args.k, tok, seed=0, max_examples=args.n, max_length=ml)
        except Exception as e:  # data not present: fall back to random tokens
            print(f"[bench] task data unavailable ({e}); using random tokens", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    V = model.config.vocab_size
    return [Example(str(i), torch.randint(3, V, (int(torch.randint(150, 350, (1,), generator=g)),), generator=g).tolist(),
                    torch.randint(3, V, (3,), generator=g).tolist()) for i in range(args.n)]


RANDOM_DESC = "random OPT (6 layers, 8 heads, d 256, ffn 1024)"


def _check_model(args) -> None:
    if args.model and not os.path.isdir(args.model):
        raise ValueError(f"--model {args.model!r} is not a model folder (omit --model for a {RANDOM_DESC})")


def _load(args):
    from ..loading import resolve_device, resolve_dtype

    args.device = resolve_device(args.device)
    if args.model:
        from ..loading import load_model
        m, tok = load_model(args.model, dtype=args.dtype, device=args.device)
        return m, tok
    return _random_opt().to(device=args.device, dtype=resolve_dtype(args.dtype)), None


def _one(args) -> int:
    """Child process: run one collection and print a JSON line with seconds and peak memory."""
    import resource

    import torch

    from ..cli import set_threads
    from .collect import collect

    set_threads(args.threads)
    model, tok = _load(args)
    exs = _examples(args, model, tok)
    collect(model, exs[:args.batch_size], args.criteria.split(","), batch_size=args.batch_size)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    collect(model, exs, args.criteria.split(","), batch_size=args.batch_size)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    out = {"criteria": args.criteria, "seconds": dt, "examples": len(exs),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss0 / 1024}
    if args.device.startswith("cuda"):
        out["peak_cuda_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    print(json.dumps(out))
    return 0


def cmd_bench(args) -> int:
    from .criteria import CRITERIA
    from .traces import bytes_per_example

    if args.one:
        return _one(args)
    _check_model(args)
    from ..loading import resolve_device

    args.device = resolve_device(args.device)
    res = {}
    for crit in ("plainact", ",".join(CRITERIA)):
        cmd = [sys.executable, "-m", "shadowllm.cli", "importance-bench", "--one", "--criteria", crit,
               "--n", str(args.n), "--batch-size", str(args.batch_size), "--task", args.task, "--k", str(args.k),
               "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            return r.returncode
        res[crit] = json.loads(r.stdout.strip().splitlines()[-1])
    desc = args.model or RANDOM_DESC
    pa, al = res["plainact"], res[",".join(CRITERIA)]
    print(f"model: {desc}; {pa['examples']} examples, batch {args.batch_size}, device {args.device}, "
          f"{args.threads} threads")
    print(f"{'criteria':<12}{'seconds':>10}{'s/example':>11}{'peak RSS MB':>13}" +
          (f"{'peak CUDA MB':>14}" if "peak_cuda_mb" in pa else ""))
    for name, r in (("plainact", pa), ("all nine", al)):
        print(f"{name:<12}{r['seconds']:>10.2f}{r['seconds'] / r['examples']:>11.4f}{r['peak_rss_mb']:>13.0f}" +
              (f"{r['peak_cuda_mb']:>14.0f}" if "peak_cuda_mb" in r else ""))
    print(f"time ratio all/plainact: {al['seconds'] / pa['seconds']:.2f} (goal <= 2)")
    shape = (OPT13B["L"], OPT13B["H"], OPT13B["F"], OPT13B["d_model"])
    print("OPT-13B trace bytes per example (all nine criteria + predictor inputs at two positions):")
    for label, b in (("neuron traces for every criterion", bytes_per_example(*shape)),
                     ("  + every layer's input (DejaVu)", bytes_per_example(*shape, layer_inputs=True)),
                     ("neuron traces for plainact only", bytes_per_example(*shape, neuron_traces=["plainact"])),
                     ("  + every layer's input (DejaVu)", bytes_per_example(*shape, neuron_traces=["plainact"],
                                                                         layer_inputs=True))):
        tot = b["total"] * 3400
        print(f"  {label}: {b['total'] / 1e6:.2f} MB/example; 3,400 examples {tot / 1e9:.2f} GB "
              f"= {100 * tot / AUTHORS_BYTES:.2f}% of 700 GB")
    return 0


def cmd_oracle(args) -> int:
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from ..adapter import get_adapter
    from ..cli import set_threads
    from ..loading import load_model, resolve_device
    from ..masks import Mask, MaskHooks, StaticMask
    from .collect import _pad_batch, collect, example_losses
    from .criteria import CRITERIA

    _check_model(args)
    set_threads(args.threads)
    model, tok = load_model(args.model, dtype=args.dtype, device=resolve_device(args.device))
    ad = get_adapter(model)
    exs = _examples(args, model, tok)
    col = collect(model, exs, list(CRITERIA), batch_size=args.batch_size)

    def losses(mask=None):
        out = []
        for s in range(0, len(exs), args.batch_size):
            batch = exs[s:s + args.batch_size]
            ids, am = _pad_batch(batch, tok.pad_token_id or 0, args.device)
            with torch.no_grad():
                if mask is None:
                    out.append(example_losses(model, ids, am, batch))
                else:
                    with MaskHooks(ad, StaticMask(mask)):
                        out.append(example_losses(model, ids, am, batch))
        return torch.cat(out).double().cpu()

    base = losses()
    inc = torch.zeros(len(exs), ad.n_layers, ad.n_heads, dtype=torch.float64)
    for l in range(ad.n_layers):
        for h in range(ad.n_heads):
            mk = Mask.ones(ad)
            mk.heads[0, l, h] = 0
            inc[:, l, h] = losses(mk) - base
    static_inc = inc.mean(0).flatten().numpy()
    print(f"oracle: {args.model}, task {args.task}, k={args.k}, {len(exs)} examples, "
          f"{ad.n_layers * ad.n_heads} heads; base loss {base.mean():.4f}")
    print(f"{'criterion':<11}{'static rho':>11}{'per-example rho':>17}")
    for name, sc in col.heads.items():
        st = spearmanr(sc.mean(0).flatten().numpy(), static_inc).correlation
        per = [spearmanr(sc[i].flatten().numpy(), inc[i].flatten().numpy()).correlation for i in range(len(exs))]
        per = float(np.nanmean(per))
        print(f"{name:<11}{st:>11.3f}{per:>17.3f}")
    return 0


def _workload_args(p, n: int) -> None:
    """The arguments both commands share: which examples, how many, on what."""
    from ..cli import add_model_args

    p.add_argument("--task", default="bb_cause_and_effect")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--n", type=int, default=n)
    p.add_argument("--batch-size", type=int, default=8)
    add_model_args(p, model=False, gguf=False)


def register(sub) -> None:
    p = sub.add_parser("importance-bench", help="time / memory of collecting all criteria vs plainact")
    p.add_argument("--model", default=None, help="model folder (default: a random OPT of the embedded shape)")
    _workload_args(p, n=32)
    p.add_argument("--criteria", default="plainact", help=argparse_suppress())
    p.add_argument("--one", action="store_true", help=argparse_suppress())
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("importance-oracle", help="Spearman of head scores vs single-head removal loss increase")
    p.add_argument("--model", required=True, help="model folder")
    _workload_args(p, n=64)
    p.set_defaults(func=cmd_oracle)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    from ..cli import main
    sys.exit(main())
