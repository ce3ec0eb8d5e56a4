"""Subcommands: ablate-point (one grid point through lm-eval), collect-ablations (tidy CSV), report-ablations
(Markdown), bench-ablation (a grid point's wall time and the cost of masking over dense on the same requests)."""
from __future__ import annotations

from .. import io, provenance
from ..cli import add_model_args, args_config
from ..loading import set_threads
from ..defaults import schema_default
from ..predictors.normalize import NORMALIZE
from ..layout.grid import PROTOCOLS, SOURCES


def _job(args):
    """The checked point, its sources' settings and the evaluation, from the arguments (before any model loads)."""
    from .run import Evaluation, make_point
    from .sources import Settings

    p = make_point(args.source, args.criterion, args.normalize, args.predictor, shots=args.shots,
                   seed=args.point_seed, placement=args.placement, style=args.style, units=args.units,
                   protocol=args.protocol, sparsity=args.sparsity)
    ev = Evaluation(tuple(t for t in args.tasks.split(",") if t), args.ppl_task, args.include, args.limit,
                    args.ppl_limit, args.batch_size, args.seed).check(p.protocol)
    s = Settings(point=p, model=args.model_name, predictor=args.predictor, seed=p.seed, min_heads=args.min_heads,
                 min_neurons=args.min_neurons)
    return s, ev


def cmd_ablate_point(args):
    from .run import ablate

    s, ev = _job(args)
    set_threads(args.threads)
    out = ablate(s, ev, args.out, args.model, args.dtype, args.device, args.gguf_file, config=args_config(args))
    for t, m in out["results"].items():
        print(t, {k: round(v, 4) for k, v in m.items()})


def cmd_bench_ablation(args):
    from .bench import bench_point

    s, ev = _job(args)
    set_threads(args.threads)
    bench_point(s, ev, args.model, args.dtype, args.device, args.gguf_file, repeats=args.repeats, out=args.out)


def cmd_collect_ablations(args):
    from .tables import write_table

    df = write_table(args.inputs, args.out)
    print(f"{len(df)} rows from {len(args.inputs)} grid points -> {args.out}")
    if args.samples:
        from .tables import write_samples

        s = write_samples(args.inputs, args.samples)
        print(f"{len(s)} per-document rows -> {args.samples}")


def cmd_report_ablations(args):
    from .report import report_markdown
    from .tables import read_table

    df = read_table(args.table)
    io.write_text(args.out, report_markdown(df, args.model, args.ppl_metric))
    provenance.write_meta(args.out, config=args_config(args), inputs=[args.table])


def add_point_args(p) -> None:
    g = p.add_argument_group("grid point")
    g.add_argument("--source", required=True, help=f"mask source: {', '.join(SOURCES)}")
    g.add_argument("--criterion", default="none")
    g.add_argument("--normalize", default=None, choices=[*NORMALIZE, "none"],
                   help="the space the criterion's scores are ranked in: raw, layer or example (the predictor or "
                        "static table must have been fitted in it; the oracle maps its scores into it); default raw "
                        "for sources with a criterion, none for dense and random")
    g.add_argument("--shots", default="none", help="the shots of the traces the predictor or table was fitted on")
    g.add_argument("--point-seed", type=int, default=0,
                   help="the point's seed axis: the predictor's training seed (predicted, dejavu; checked against "
                        "its file) or the random scores' seed (random); 0 for the other sources. Not --seed, which "
                        "seeds lm-eval")
    g.add_argument("--placement", type=int, default=0)
    g.add_argument("--style", default="none", help="local, global or hybrid")
    g.add_argument("--units", default="none", help="heads, neurons or both")
    g.add_argument("--protocol", default="none", help=f"{', '.join(PROTOCOLS)}; 'none' for input-independent "
                                                      f"sources, 'gold' for the oracle")
    g.add_argument("--sparsity", type=float, default=0.0)
    g.add_argument("--predictor", default=None, help="predictor file or static table (predicted, dejavu, static)")
    g.add_argument("--min-heads", type=int, default=schema_default("ablations.hybrid.min_heads"),
                   help="hybrid: heads kept per layer at least")
    g.add_argument("--min-neurons", type=int, default=schema_default("ablations.hybrid.min_neurons"),
                   help="hybrid: neurons kept per layer at least")


def add_eval_args(p) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument("--model-name", required=True, help="the model's name in the grid (checked against predictors)")
    g.add_argument("--tasks", default="", help="comma-separated zero-shot lm-eval tasks")
    g.add_argument("--ppl-task", default=None, help="rolling-loglikelihood task (not under protocol prompt)")
    g.add_argument("--include", default=None, help="folder of task YAMLs (prepare-tasks)")
    g.add_argument("--limit", type=int, default=schema_default("ablations.limit"),
                   help="questions per zero-shot task")
    g.add_argument("--ppl-limit", type=int, default=schema_default("ablations.ppl_limit"),
                   help="documents of the perplexity task")
    g.add_argument("--batch-size", type=int, default=schema_default("ablations.batch_size"))
    g.add_argument("--seed", type=int, default=schema_default("seed"))


def register(sub) -> None:
    p = sub.add_parser("ablate-point", help="evaluate one ablation grid point (perplexity, zero-shot) through lm-eval")
    add_model_args(p)
    add_point_args(p)
    add_eval_args(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_ablate_point)

    p = sub.add_parser("collect-ablations", help="ablate-point outputs -> one tidy CSV (one column per grid axis)")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", default=None, help="also write the per-document results (for the intervals) here")
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_collect_ablations)

    p = sub.add_parser("report-ablations", help="Markdown tables of an ablation table")
    p.add_argument("--table", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--ppl-metric", default="word_perplexity")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report_ablations)

    p = sub.add_parser("bench-ablation", help="wall time of a grid point and masking overhead over dense")
    add_model_args(p)
    add_point_args(p)
    add_eval_args(p)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None, help="CSV of the timings (optional)")
    p.set_defaults(func=cmd_bench_ablation)
