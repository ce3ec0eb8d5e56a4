"""Subcommands: ablate (one grid point through lm-eval), ablation-table (tidy CSV), report-ablations (Markdown),
ablation-bench (a grid point's wall time and the cost of masking over dense on the same requests)."""
from __future__ import annotations

import time

from .. import io, provenance
from ..cli import add_model_args, args_config
from ..predictors.normalize import NORMALIZE
from .grid import PROTOCOLS, SOURCES, Point


def _point(args) -> Point:
    spec = SOURCES.get(args.source)
    norm = args.normalize or ("raw" if spec and spec.criterion else "none")   # default: raw where a criterion ranks
    p = Point(args.source, args.criterion, normalize=norm, shots=args.shots, seed=args.point_seed,
              placement=args.placement, style=args.style, units=args.units, protocol=args.protocol,
              sparsity=args.sparsity)
    p.check()
    if SOURCES[p.source].design != "none" and not args.predictor:
        raise ValueError(f"source {p.source!r} reads a {p.design!r} predictor file: give --predictor")
    return p


def _settings(args, p: Point):
    from .sources import Settings

    return Settings(point=p, model=args.model_name, predictor=args.predictor, seed=p.seed,
                    min_heads=args.min_heads, min_neurons=args.min_neurons)


def _check_files(args, p: Point) -> None:
    """The predictor file's grid point, before the model loads."""
    if not args.predictor:
        return
    from pathlib import Path

    from ..predictors.model import read_meta
    from .sources import check_meta

    if not Path(args.predictor).is_file():
        raise FileNotFoundError(f"predictor file {args.predictor!r} does not exist")
    check_meta(read_meta(args.predictor), _settings(args, p), args.predictor)


def evaluate_point(model, tok, args, p: Point, tasks: list[str], ppl_task: str | None = None,
                   samples: dict | None = None) -> tuple[dict, float]:
    """{task: {metric: value}} of one point (perplexity with --ppl-limit, zero-shot with --limit), seconds;
    `samples`, when given, is filled with each task's per-document results (harness.per_sample)."""
    from ..adapter import get_adapter
    from ..evaluate import harness
    from .lm import make_masked_lm
    from .sources import build

    t0 = time.time()
    mask_for = build(get_adapter(model), _settings(args, p))
    lm = make_masked_lm(model, tok, mask_for, p.protocol, batch_size=args.batch_size)
    res = {}
    for names, limit in (([ppl_task] if ppl_task else [], args.ppl_limit), (tasks, args.limit)):
        if names:
            res.update(harness.run(lm, names, include_path=args.include, limit=limit, seed=args.seed,
                                   samples=samples))
    return res, time.time() - t0


def _tasks(args) -> list[str]:
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks and not args.ppl_task:
        raise ValueError(f"--tasks {args.tasks!r} and --ppl-task {args.ppl_task!r}: nothing to evaluate")
    if args.ppl_task and args.protocol == "prompt":
        raise ValueError(f"--ppl-task {args.ppl_task!r} under protocol 'prompt': a perplexity window has no prompt "
                         "(expected sequence or token)")
    return tasks


def load(args):
    """The model for evaluation: SDPA attention (no gradient of the attention is ever needed beyond first
    order here; the oracle's criteria take plain gradients), fixed threads."""
    from ..cli import set_threads
    from ..loading import load_model, resolve_device

    set_threads(args.threads)
    return load_model(args.model, dtype=args.dtype, device=resolve_device(args.device), gguf_file=args.gguf_file,
                      attn_implementation="sdpa")


def cmd_ablate(args):
    p = _point(args)
    tasks = _tasks(args)
    _check_files(args, p)
    model, tok = load(args)
    samples: dict = {}
    res, seconds = evaluate_point(model, tok, args, p, tasks, args.ppl_task, samples)
    out = {"point": p.axes(args.model_name), "results": res, "seconds": seconds, "predictor": args.predictor,
           "samples": samples}
    io.write_json(args.out, out)
    provenance.write_meta(args.out, config=args_config(args), seed=args.seed, device=str(model.device),
                          inputs=([args.predictor] if args.predictor else []) + provenance.model_files(
                              args.model, args.gguf_file), point=out["point"])
    for t, m in res.items():
        print(t, {k: round(v, 4) for k, v in m.items()})


def cmd_ablation_table(args):
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
    g.add_argument("--min-heads", type=int, default=1, help="hybrid: heads kept per layer at least")
    g.add_argument("--min-neurons", type=int, default=256, help="hybrid: neurons kept per layer at least")


def add_eval_args(p) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument("--model-name", required=True, help="the model's name in the grid (checked against predictors)")
    g.add_argument("--tasks", default="", help="comma-separated zero-shot lm-eval tasks")
    g.add_argument("--ppl-task", default=None, help="rolling-loglikelihood task (not under protocol prompt)")
    g.add_argument("--include", default=None, help="folder of task YAMLs (prepare-tasks)")
    g.add_argument("--limit", type=int, default=None, help="questions per zero-shot task")
    g.add_argument("--ppl-limit", type=int, default=None, help="documents of the perplexity task")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--seed", type=int, default=0)


def register(sub) -> None:
    p = sub.add_parser("ablate", help="evaluate one ablation grid point (perplexity, zero-shot) through lm-eval")
    add_model_args(p)
    add_point_args(p)
    add_eval_args(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("ablation-table", help="ablate outputs -> one tidy CSV (one column per grid axis)")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", default=None, help="also write the per-document results (for the intervals) here")
    p.add_argument("inputs", nargs="+")
    p.set_defaults(func=cmd_ablation_table)

    p = sub.add_parser("report-ablations", help="Markdown tables of an ablation table")
    p.add_argument("--table", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--ppl-metric", default="word_perplexity")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report_ablations)

    from .bench import register as register_bench
    register_bench(sub)
