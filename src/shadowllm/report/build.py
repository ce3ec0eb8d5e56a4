"""Render one model's report into Markdown (`shadowllm report`), from its results tables only: the paper's claims
held / not held / not testable here, then each figure and table of the paper beside ours."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .claims import CLAIMS, HELD, NOT_HELD, UNTESTABLE, Tables
from .figures import FIGURES, link, made


def load_tables(ablations=None, predictors=None, latency=None, dependence=None, flops=None,
                questions: int = 0) -> Tables:
    def read(p):
        return pd.read_csv(p) if p and Path(p).is_file() else None

    return Tables(ablations=read(ablations), predictors=read(predictors), latency=read(latency),
                  dependence=read(dependence), flops=read(flops), questions=questions)


def _cell(s: str) -> str:
    return s.replace("|", "/").replace("\n", " ")


def figures_section(model: str, t: Tables, verdicts: dict, shared: str = "../../figures") -> list[str]:
    """Each figure and table of the paper: its numbers, our counterpart (linked), and the claims it backs or, where
    no claim reads it, our numbers; then the figures themselves."""
    lines = ["", "## The paper's figures and tables, beside ours", "",
             "| paper | shows | the paper's numbers | ours | verdicts / our numbers |", "|---|---|---|---|---|"]
    gallery = []
    for f in FIGURES:
        have = [spec for spec in f.files if made(spec, t)]
        files = ", ".join(f"[{(spec.partition(':')[2] or spec).split('/')[-1]}]({link(spec, model, shared)})"
                          for spec in have) or "not made by this configuration"
        said = [f"{CLAIMS[k].text}: **{verdicts[k].verdict}**" for k in f.claims]
        if f.ours is not None:
            said.append(f.ours(t))
        lines.append(f"| {f.key} | {_cell(f.title)} | {_cell(f.paper)} | {files} | {_cell('; '.join(said))} |")
        pngs = [spec for spec in have if ":" in spec]
        if pngs:
            gallery += ["", f"### {f.key}: {f.title}", ""] + [f"![{spec.partition(':')[2]}]({link(spec, model, shared)})"
                                                                 for spec in pngs]
    return lines + ["", "Each figure is also a PDF beside its PNG."] + gallery


def render(model: str, t: Tables, title: str | None = None, shared: str = "../../figures") -> str:
    verdicts = [(c, c.judge(t)) for c in CLAIMS.values()]
    n = {v: sum(1 for _, x in verdicts if x.verdict == v) for v in (HELD, NOT_HELD, UNTESTABLE)}
    lines = [f"# {title or model}: the study, checked against the paper", "", "## The paper's claims", "",
             f"{n[HELD]} held, {n[NOT_HELD]} not held, {n[UNTESTABLE]} not testable here. Every number below comes "
             "from this run's tables (perplexity: word perplexity; accuracy: mean zero-shot acc); the protocol "
             "(what a mask may see) and the units pruned are named beside each. The paper's numbers are OPT models "
             "on WikiText2 and its 7 tasks, with masks that reached heads only. Perplexities within 2 % of each other "
             "are ties and decide nothing (orderings that close swapped between two trainings of the tiny OPT); "
             "accuracy differences must exceed two standard errors of the questions asked.", "",
             "| claim | paper | ours | verdict | why |", "|---|---|---|---|---|"]
    for c, v in verdicts:
        lines.append(f"| {_cell(c.text)} | {_cell(c.paper)} | {_cell(v.ours)} | **{v.verdict}** | {_cell(v.why)} |")
    dense_ppl, dense_acc = t.ppl(source="dense"), t.acc(source="dense")
    dense = ([f"perplexity {dense_ppl:,.1f}"] if dense_ppl is not None else []) + \
        ([f"mean accuracy {dense_acc:.3f} over {t.questions} questions"] if dense_acc is not None else [])
    if dense:
        lines += ["", "Dense reference: " + ", ".join(dense) + "."]
    lines += figures_section(model, t, {c.key: v for c, v in verdicts}, shared)
    return "\n".join(lines) + "\n"


def cmd_report(args) -> int:
    from .. import io
    from ..provenance import write_meta

    t = load_tables(args.ablations, args.predictors, args.latency, args.dependence, args.flops, args.questions)
    text = render(args.model_name, t, args.title, args.latency_figures)
    io.write_text(args.out, text)
    inputs = [p for p in (args.ablations, args.predictors, args.latency, args.dependence, args.flops) if p]
    write_meta(args.out, config={"command": "report", "model": args.model_name, "questions": args.questions},
               inputs=inputs)
    print(text)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="one model's report: the paper's claims held / not held / not testable, and each "
                       "figure and table of the paper beside ours, from its tables")
    p.add_argument("--model-name", required=True)
    p.add_argument("--ablations", default=None, help="tables/{model}/ablations.csv")
    p.add_argument("--predictors", default=None, help="tables/{model}/predictors.csv")
    p.add_argument("--latency", default=None, help="latency/latency.csv")
    p.add_argument("--dependence", default=None, help="importance/{model}/input_dependence.csv")
    p.add_argument("--flops", default=None, help="latency/predictor_flops.csv")
    p.add_argument("--latency-figures", default="../../figures",
                   help="where the latency figures sit, relative to the report (for its links)")
    p.add_argument("--questions", type=int, default=0, help="zero-shot questions behind one mean accuracy")
    p.add_argument("--title", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)
