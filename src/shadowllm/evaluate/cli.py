"""Subcommands: evaluate-model (lm-eval, optionally masked), collect-eval (tidy CSV), report-eval (Markdown)."""
from __future__ import annotations

from ..cli import add_model_args, args_config
from ..loading import set_threads
from ..defaults import schema_default


def cmd_evaluate_model(args):
    from .run import evaluate_model

    set_threads(args.threads)
    out = evaluate_model(args.model, [t for t in args.tasks.split(",") if t], args.out, model_name=args.model_name,
                         mask=args.mask, include=args.include, limit=args.limit, batch_size=args.batch_size,
                         max_length=args.max_length, seed=args.seed, dtype=args.dtype, device=args.device,
                         gguf_file=args.gguf_file, config=args_config(args))
    for t, m in out["results"].items():
        print(t, {k: round(v, 4) for k, v in m.items()})


def cmd_collect_eval(args):
    from .tables import pivot, write_table

    df = write_table(args.inputs, args.out)
    print(pivot(df, metrics=df.metric.unique()).to_string() if len(df) else "empty")


def cmd_report_eval(args):
    from .run import report_eval

    report_eval(args.table, args.out, args.model, args.train or None)


def register(sub) -> None:
    p = sub.add_parser("evaluate-model", help="perplexity and zero-shot accuracy through lm-eval, optionally masked")
    add_model_args(p)
    p.add_argument("--model-name", default=None, help="the model's name in the results table (default: --model)")
    p.add_argument("--mask", default=None, help="mask file from make-mask (default: unpruned)")
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    p.add_argument("--include", default=None, help="folder of task YAMLs (prepare-tasks)")
    p.add_argument("--limit", type=int, default=schema_default("evaluation.limit"))
    p.add_argument("--batch-size", type=int, default=schema_default("evaluation.batch_size"))
    p.add_argument("--max-length", type=int, default=schema_default("evaluation.max_length"),
                   help="tokens per window (default: the model's maximum)")
    p.add_argument("--seed", type=int, default=schema_default("seed"))
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate_model)

    p = sub.add_parser("collect-eval", help="collect evaluate-model outputs into one tidy CSV (one column per grid "
                                            "axis)")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_collect_eval)

    p = sub.add_parser("report-eval", help="Markdown report of an evaluation table (+ training metrics)")
    p.add_argument("--table", required=True)
    p.add_argument("--train", default="", help="train.json of a trained model (optional)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report_eval)
