"""Subcommands: plot-eval, plot-dependence, plot-predictors, plot-ablations, plot-latency, plot-tradeoff (each reads
results tables only)."""
from __future__ import annotations

from ..defaults import schema_default

DPI_HELP = "resolution of raster figures (0: each figure's own)"


def _wrote(paths) -> None:
    for p in paths if isinstance(paths, (list, tuple)) else [paths]:
        print(f"[figures] wrote {p}")


def cmd_plot_eval(args):
    from .eval import eval_vs_sparsity

    _wrote(eval_vs_sparsity(args.table, args.out, title=args.title))


def cmd_plot_dependence(args):
    from .dependence import input_dependence_figure

    _wrote(input_dependence_figure(args.csv, args.out, title=args.title))


def cmd_plot_predictors(args):
    from .predictors import predictor_figures

    _wrote(predictor_figures(args.table, args.outdir, title=args.title))


def cmd_plot_ablations(args):
    from .ablations import ablation_figures

    _wrote(ablation_figures(args.table, args.outdir, title=args.title, samples=args.samples,
                            normalize=args.normalize))


def cmd_plot_latency(args) -> int:
    from .latency import latency_figures, latency_table

    outs = latency_figures(args.csv, args.outdir, sparsity=args.sparsity)
    if args.table:
        outs.append(latency_table(args.csv, args.table))
    _wrote(outs)
    return 0


def cmd_plot_tradeoff(args) -> int:
    from .tradeoff import accuracy_vs_latency

    _wrote(accuracy_vs_latency(args.ablations, args.latency, args.out, args.title, args.latency_model,
                               args.normalize))
    return 0


# (command, help, input flag, output flag, function): figures drawn from one table with a title
ONE_TABLE = [
    ("plot-eval", "accuracy and perplexity vs sparsity, from an evaluation table", "--table", "--out", cmd_plot_eval),
    ("plot-dependence", "input dependence of head importance (Figure 2), from its CSV", "--csv", "--out",
     cmd_plot_dependence),
    ("plot-predictors", "predictor quality per criterion, design and placement", "--table", "--outdir",
     cmd_plot_predictors),
    ("plot-ablations", "ablation figures (paper Figs. 3, 6-10 and the protocols) from the ablation table", "--table",
     "--outdir", cmd_plot_ablations),
]


def _styled(fn):
    """The command with the figure style of its arguments applied first (one place for every figure)."""
    def run(args):
        from . import STYLE

        STYLE["dpi"] = args.dpi
        return fn(args)
    return run


def register(sub) -> None:
    for name, help_, src, dst, fn in ONE_TABLE:
        p = sub.add_parser(name, help=help_)
        p.add_argument(src, required=True)
        p.add_argument("--title", default="")
        p.add_argument(dst, required=True)
        p.add_argument("--dpi", type=int, default=schema_default("figures.dpi"), help=DPI_HELP)
        p.set_defaults(func=_styled(fn))
    p = sub.choices["plot-ablations"]
    p.add_argument("--samples", default=None,
                   help="the per-document table (collect-ablations --samples): 95 %% intervals on every line, the "
                        "majority-class baseline, Fig. 10's paired intervals (absent file: drawn without them)")
    p.add_argument("--normalize", default="raw",
                   help="the score normalisation drawn where the table has several (default raw)")

    p = sub.add_parser("plot-latency", help="latency vs model size / sparsity / generation length")
    p.add_argument("--csv", nargs="+", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--sparsity", type=float, default=schema_default("latency.figure_sparsity"),
                   help="sparsity shown in the size / length plots")
    p.add_argument("--table", default=None, help="also write the combined latency table (CSV) here")
    p.add_argument("--dpi", type=int, default=schema_default("figures.dpi"), help=DPI_HELP)
    p.set_defaults(func=_styled(cmd_plot_latency))

    p = sub.add_parser("plot-tradeoff", help="accuracy vs decode latency, one curve per method over sparsity (Fig. 1)")
    p.add_argument("--ablations", required=True, help="a model's ablation table")
    p.add_argument("--latency", nargs="+", required=True, help="latency CSVs")
    p.add_argument("--latency-model", default=None, help="the benchmarked shape to read (default: the largest)")
    p.add_argument("--normalize", default="raw",
                   help="the score normalisation drawn where the table has several (default raw)")
    p.add_argument("--title", default="")
    p.add_argument("--dpi", type=int, default=schema_default("figures.dpi"), help=DPI_HELP)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_styled(cmd_plot_tradeoff))
