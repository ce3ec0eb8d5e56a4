"""What one grid point costs, and masking's overhead over dense on the same requests, in one run (bench-ablation)."""
from __future__ import annotations

import time
from dataclasses import replace

from ..layout.grid import DENSE
from .run import Evaluation, check_predictor, load, masked_lm


def _timed(fn, repeats: int) -> tuple[float, dict]:
    best, res = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def bench_point(settings, ev: Evaluation, model: str, dtype: str, device: str, gguf_file: str | None = None,
                repeats: int = 2, out=None):
    """Best-of-`repeats` seconds of stock dense, masked dense and the point under each protocol it can run, per
    part (perplexity, zero-shot), with their ratios to both dense runs; a DataFrame, also written to `out`."""
    import pandas as pd

    from ..evaluate import harness

    p0 = settings.point
    check_predictor(settings)
    t0 = time.perf_counter()
    lm_model, tok = load(model, dtype, device, gguf_file)
    load_s = time.perf_counter() - t0
    parts = [("perplexity", [ev.ppl_task], ev.ppl_limit)] if ev.ppl_task else []
    parts += [("zero-shot", list(ev.tasks), ev.limit)] if ev.tasks else []
    protocols = [p0.protocol] if p0.protocol in ("none", "gold") else ["sequence", "prompt", "token"]
    runs = [("stock HFLM, dense", None), ("masked LM, dense", DENSE)]
    runs += [(f"{p0.source} {pr}", replace(p0, protocol=pr)) for pr in protocols]

    def once(pt, names, limit):
        if pt is None:
            lm = harness.make_lm(lm_model, tok, batch_size=ev.batch_size)
        else:
            lm = masked_lm(lm_model, tok, replace(settings, point=pt, seed=pt.seed), ev.batch_size)
        return harness.run(lm, names, include_path=ev.include, limit=limit, seed=ev.seed)

    rows = []
    for part, names, limit in parts:
        for name, pt in runs:
            if pt is not None and pt.protocol == "prompt" and part == "perplexity":
                continue  # a perplexity window has no prompt
            sec, _ = _timed(lambda pt=pt, names=names, limit=limit: once(pt, names, limit), repeats)
            rows.append({"part": part, "run": name, "seconds": sec})
            print(f"{part} / {name}: {sec:.2f} s", flush=True)
    df = pd.DataFrame(rows)
    for ref, col in (("masked LM, dense", "vs_masked_dense"), ("stock HFLM, dense", "vs_stock_dense")):
        base = df[df.run == ref].set_index("part").seconds
        df[col] = df.seconds / df.part.map(base)
    print(f"model load {load_s:.1f} s; zero-shot {list(ev.tasks)} (limit {ev.limit}), perplexity {ev.ppl_task} "
          f"(limit {ev.ppl_limit}), batch {ev.batch_size}, best of {repeats}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if out:
        from .. import io

        with io.atomic_path(out, suffix=".csv") as tmp:
            df.assign(load_seconds=load_s).to_csv(tmp, index=False, float_format="%.4g")
    return df
