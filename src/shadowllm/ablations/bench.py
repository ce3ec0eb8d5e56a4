"""ablation-bench: what one grid point costs, and masking's overhead over dense on the same requests, in one run."""
from __future__ import annotations

import time

from ..cli import add_model_args


def _timed(fn, repeats: int) -> tuple[float, dict]:
    best, res = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def cmd_ablation_bench(args):
    from dataclasses import replace

    import pandas as pd

    from ..adapter import get_adapter
    from ..evaluate import harness
    from .cli import _check_files, _point, _settings, _tasks, load
    from .grid import DENSE
    from .lm import make_masked_lm
    from .sources import build

    p0 = _point(args)
    tasks = _tasks(args)
    _check_files(args, p0)
    t0 = time.perf_counter()
    model, tok = load(args)
    load_s = time.perf_counter() - t0
    ad = get_adapter(model)
    parts = [("perplexity", [args.ppl_task], args.ppl_limit)] if args.ppl_task else []
    parts += [("zero-shot", tasks, args.limit)] if tasks else []
    protocols = [p0.protocol] if p0.protocol in ("none", "gold") else ["sequence", "prompt", "token"]
    runs = [("stock HFLM, dense", None), ("masked LM, dense", DENSE)]
    runs += [(f"{p0.source} {pr}", replace(p0, protocol=pr)) for pr in protocols]

    def once(pt, names, limit):
        if pt is None:
            lm = harness.make_lm(model, tok, batch_size=args.batch_size)
        else:
            lm = make_masked_lm(model, tok, build(ad, _settings(args, pt)), pt.protocol, batch_size=args.batch_size)
        return harness.run(lm, names, include_path=args.include, limit=limit, seed=args.seed)

    rows = []
    for part, names, limit in parts:
        for name, pt in runs:
            if pt is not None and pt.protocol == "prompt" and part == "perplexity":
                continue  # a perplexity window has no prompt
            sec, _ = _timed(lambda pt=pt, names=names, limit=limit: once(pt, names, limit), args.repeats)
            rows.append({"part": part, "run": name, "seconds": sec})
            print(f"{part} / {name}: {sec:.2f} s", flush=True)
    df = pd.DataFrame(rows)
    for ref, col in (("masked LM, dense", "vs_masked_dense"), ("stock HFLM, dense", "vs_stock_dense")):
        base = df[df.run == ref].set_index("part").seconds
        df[col] = df.seconds / df.part.map(base)
    print(f"model load {load_s:.1f} s; zero-shot {tasks} (limit {args.limit}), perplexity {args.ppl_task} "
          f"(limit {args.ppl_limit}), batch {args.batch_size}, best of {args.repeats}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        from .. import io
        with io.atomic_path(args.out, suffix=".csv") as tmp:
            df.assign(load_seconds=load_s).to_csv(tmp, index=False, float_format="%.4g")


def register(sub) -> None:
    from .cli import add_eval_args, add_point_args

    p = sub.add_parser("ablation-bench", help="wall time of a grid point and masking overhead over dense")
    add_model_args(p)
    add_point_args(p)
    add_eval_args(p)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None, help="CSV of the timings (optional)")
    p.set_defaults(func=cmd_ablation_bench)
