"""Subcommands: evaluate (lm-eval, optionally masked), table (tidy CSV), report-eval (Markdown)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .. import io, provenance
from ..cli import add_model_args, args_config


def _load(args):
    from ..cli import set_threads
    from ..loading import load_model, resolve_device

    set_threads(args.threads)
    return load_model(args.model, dtype=args.dtype, device=resolve_device(args.device), gguf_file=args.gguf_file)


def cmd_evaluate(args):
    from ..adapter import get_adapter
    from ..masks import Mask, MaskHooks, StaticMask
    from . import harness
    from .tables import AXES, DENSE_POINT

    tasks = [t for t in args.tasks.split(",") if t]
    mask = Mask.load(args.mask) if args.mask else None  # a missing file fails before the model loads
    model, tok = _load(args)
    hooks = None
    point = dict(DENSE_POINT)
    achieved = {"heads": 0.0, "neurons": 0.0}
    if mask is not None:
        ad = get_adapter(model)
        mask.check(ad)
        achieved = mask.sparsity()
        missing = [a for a in AXES if a != "model" and a not in mask.meta]
        if missing:
            raise ValueError(f"mask file {args.mask!r} does not record its grid point (missing {missing}); "
                             f"remake it with `shadowllm make-mask`")
        point = {a: mask.meta[a] for a in AXES if a != "model"}
        point["placement"], point["sparsity"] = int(point["placement"]), float(point["sparsity"])
        hooks = MaskHooks(ad, StaticMask(mask)).attach()
    point = {"model": args.model_name or args.model, **point}
    t0 = time.time()
    try:
        lm = harness.make_lm(model, tok, batch_size=args.batch_size, max_len=args.max_length)
        res = harness.run(lm, tasks, include_path=args.include, limit=args.limit, seed=args.seed)
    finally:
        if hooks:
            hooks.remove()
    out = {"model": args.model, "mask": args.mask, "point": point, "sparsity": point["sparsity"],
           "achieved_sparsity": achieved, "results": res, "seconds": time.time() - t0}
    io.write_json(args.out, out)
    provenance.write_meta(args.out, config=args_config(args), seed=args.seed, device=str(model.device),
                          inputs=([args.mask] if args.mask else []) + provenance.model_files(args.model, args.gguf_file))
    for t, m in res.items():
        print(t, {k: round(v, 4) for k, v in m.items()})


def cmd_table(args):
    from .tables import pivot, write_table

    df = write_table(args.inputs, args.out)
    print(pivot(df, metrics=df.metric.unique()).to_string() if len(df) else "empty")


def cmd_report_eval(args):
    import pandas as pd

    from .tables import report_markdown

    df = pd.read_csv(args.table)
    train = json.loads(Path(args.train).read_text()) if args.train else None
    io.write_text(args.out, report_markdown(df, args.model, train))
    provenance.write_meta(args.out, config={"command": "report-eval", "model": args.model},
                          inputs=[args.table] + ([args.train] if args.train else []))


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="perplexity and zero-shot accuracy through lm-eval, optionally masked")
    add_model_args(p)
    p.add_argument("--model-name", default=None, help="the model's name in the results table (default: --model)")
    p.add_argument("--mask", default=None, help="mask file from make-mask (default: unpruned)")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument("--include", default=None, help="folder of task YAMLs (prepare-tasks)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=None, help="tokens per window (default: the model's maximum)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("table", help="collect evaluate outputs into one tidy CSV (one column per grid axis)")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("report-eval", help="Markdown report of an evaluation table (+ training metrics)")
    p.add_argument("--table", required=True)
    p.add_argument("--train", default="", help="train.json of a trained model (optional)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report_eval)
