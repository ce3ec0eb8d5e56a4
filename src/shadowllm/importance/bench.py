"""Benchmark and oracle check for the importance collector (commands that print figures; not tests).

  shadowllm bench-importance  [--model DIR] [--task T] [--n 32] ...   time / peak memory, all nine vs plainact
                              [--grasp-hvp finite_difference,exact]    (and the eight without grasp); trace
                                                                       bytes for OPT-13B shapes
  shadowllm measure-oracle    --model DIR [--task T] [--n 64] ...     Spearman(criterion head score,
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
# mean tokens (context + gold, max_length 2048) of the 7 shipped tasks' calibration splits at k = 5 in GPT-2 BPE,
# OPT's tokenizer (1,747 examples; see FORMAT.md)
OPT_5SHOT_TOKENS = 348


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

    from ..loading import set_threads
    from .collect import collect

    set_threads(args.threads)
    model, tok = _load(args)
    exs = _examples(args, model, tok)
    kw = {"batch_size": args.batch_size, "grasp_hvp": args.grasp_hvp}
    collect(model, exs[:args.batch_size], args.criteria.split(","), **kw)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        collect(model, exs, args.criteria.split(","), **kw)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    out = {"criteria": args.criteria, "seconds": min(times), "all_seconds": times, "examples": len(exs),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss0 / 1024}
    if args.device.startswith("cuda"):
        out["peak_cuda_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    print(json.dumps(out))
    return 0


def _child(args, criteria: str, hvp: str) -> dict:
    """Run one measurement in a fresh process (so one run's allocations do not slow the next)."""
    cmd = [sys.executable, "-m", "shadowllm.cli", "bench-importance", "--one", "--criteria", criteria,
           "--grasp-hvp", hvp, "--repeat", str(args.repeat), "--n", str(args.n), "--batch-size", str(args.batch_size),
           "--task", args.task, "--k", str(args.k), "--device", args.device, "--dtype", args.dtype,
           "--threads", str(args.threads)] + (["--model", args.model] if args.model else [])
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode:
        raise RuntimeError(f"bench-importance child {' '.join(cmd)} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _size_lines() -> None:
    """Trace bytes per example at OPT-13B shapes, against the authors' 700 GB for 3,400 examples."""
    from .traces import bytes_per_example

    shape = (OPT13B["L"], OPT13B["H"], OPT13B["F"], OPT13B["d_model"])
    print("OPT-13B trace bytes per example (all nine criteria + predictor inputs at two positions):")
    small = {"neuron_traces": ["plainact"], "layer_inputs": True}
    rows = [("neuron traces for every criterion", {}), ("  + every layer's input (DejaVu)", {"layer_inputs": True}),
            ("neuron traces for plainact only", {"neuron_traces": ["plainact"]}),
            ("  + every layer's input (DejaVu)", small)]
    for tokens in (OPT_5SHOT_TOKENS, 2048):
        rows.append((f"  + sequence inputs, layer 0, {tokens} tokens",
                     {**small, "sequence_inputs": True, "mean_tokens": tokens}))
    for label, kw in rows:
        b = bytes_per_example(*shape, **kw)
        tot = b["total"] * 3400
        seq = f" (sequence file {b['sequence_inputs'] / 1e6:.2f})" if b["sequence_inputs"] else ""
        print(f"  {label}: {b['total'] / 1e6:.2f} MB/example{seq}; 3,400 examples {tot / 1e9:.2f} GB "
              f"= {100 * tot / AUTHORS_BYTES:.2f}% of 700 GB")
    print(f"  ({OPT_5SHOT_TOKENS} tokens: the mean 5-shot example of the shipped tasks in OPT's tokenizer)")


def cmd_bench(args) -> int:
    from .collect import GRASP_HVP, check_grasp_hvp
    from .criteria import CRITERIA

    if args.repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {args.repeat}")
    if args.one:
        return _one(args)
    _check_model(args)
    methods = [check_grasp_hvp(m.strip()) for m in args.grasp_hvp.split(",") if m.strip()] or [GRASP_HVP[0]]
    from ..loading import resolve_device

    args.device = resolve_device(args.device)
    eight = ",".join(c for c in CRITERIA if c != "grasp")
    runs = [("plainact", "plainact", methods[0]), ("all but grasp", eight, methods[0])]
    runs += [(f"all nine ({m})", ",".join(CRITERIA), m) for m in methods]
    try:
        res = {label: _child(args, crit, m) for label, crit, m in runs}
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    pa = res["plainact"]
    print(f"model: {args.model or RANDOM_DESC}; {pa['examples']} examples, batch {args.batch_size}, device "
          f"{args.device}, {args.threads} threads; fastest of {args.repeat} runs each")
    print(f"grasp HVP: {', '.join(methods)} (finite_difference: one more forward + backward; exact: double backward)")
    cuda = "peak_cuda_mb" in pa
    print(f"{'criteria':<32}{'seconds':>9}{'s/example':>11}{'x plainact':>12}{'peak RSS MB':>13}" +
          (f"{'peak CUDA MB':>14}" if cuda else ""))
    for label, r in res.items():
        print(f"{label:<32}{r['seconds']:>9.2f}{r['seconds'] / r['examples']:>11.4f}"
              f"{r['seconds'] / pa['seconds']:>12.2f}{r['peak_rss_mb']:>13.0f}" +
              (f"{r['peak_cuda_mb']:>14.0f}" if cuda else ""))
    for m in methods:
        print(f"time ratio all/plainact ({m}): {res[f'all nine ({m})']['seconds'] / pa['seconds']:.2f} (goal <= 2)")
    _size_lines()
    return 0


def cmd_oracle(args) -> int:
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from ..adapter import get_adapter
    from ..loading import set_threads
    from ..loading import load_model, resolve_device
    from ..masks import Mask, MaskHooks, StaticMask
    from .collect import _pad_batch, collect, example_losses
    from .criteria import CRITERIA

    _check_model(args)
    set_threads(args.threads)
    args.device = resolve_device(args.device)   # the loss passes below put their batches on it
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
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
