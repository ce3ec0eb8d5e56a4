"""Render one model's report into Markdown (`shadowllm report-claims`), from its results tables only: the paper's claims
held / not held / not testable here, then each figure and table of the paper beside ours."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import paper
from ..layout.figures import FIGURES as SPECS
from .claims import CLAIMS, VERDICTS, Tables
from .figures import FIGURES, link


def load_tables(ablations=None, predictors=None, latency=None, dependence=None, flops=None, samples=None,
                questions: int = 0, extra_latency=(), normalize: str = "raw", units: str | None = None) -> Tables:
    """The tables of one model; `extra_latency`: latency tables measured elsewhere (e.g. a GPU run's committed
    table), judged beside this run's."""
    from ..ablations.tables import read_samples

    def read(p):
        return pd.read_csv(p) if p and Path(p).is_file() else None

    lat = [x for x in [read(latency)] + [read(p) for p in extra_latency] if x is not None]
    t = Tables(ablations=read(ablations), predictors=read(predictors),
               latency=pd.concat(lat, ignore_index=True) if lat else None, dependence=read(dependence),
               flops=read(flops), samples=read_samples(samples) if samples and Path(samples).is_file() else None,
               questions=questions, normalize=normalize, units=units)
    check_request(t)
    return t


def check_request(t: Tables) -> None:
    """A report asking for a normalisation or units its grid did not run is an error naming them."""
    d = t.ablations
    if d is None:
        return
    if "normalize" in d and t.normalize not in set(d.normalize.astype(str)):
        raise ValueError(f"report normalisation {t.normalize!r} was not run by this grid; it ran "
                         f"{sorted(set(d.normalize.astype(str)) - {'none'})}")
    if t.units is not None and t.units not in set(d.units.astype(str)):
        raise ValueError(f"report units {t.units!r} were not run by this grid; it ran "
                         f"{sorted(set(d.units.astype(str)) - {'none'})}")


METHOD = """## How a verdict is reached

Each claim is decided by one comparison: the paper's own pairing (e.g. ShadowLLM with plainact and global top-k
against DejaVu trained on l2_norm, which runs local top-k) at the paper's setting, or the nearest this grid ran
(sparsity nearest 50 %, the units named first). Scores are ranked in the **{norm}** normalisation unless a row
names another (raw: the criterion's own scores, as the paper ranks them; layer: min-max per example and layer;
example: per-example rank). Perplexity is compared as a ratio and accuracy as a difference, each with a 95 %
interval from a paired bootstrap over the documents or questions both points scored ({reps} replicates; a
predictor trained at several seeds is one arm whose seeds are resampled too). **held**: the interval excludes no
difference in the claim's favour; **not held**: it excludes it against the claim; **not resolved**: it holds no
difference. Our other pairings follow, each marked the same way; they decide nothing. Latency: a gap within the
interquartile ranges of the repeated calls is a tie. Earlier reports counted perplexities within 2 % as ties (two
trainings of the tiny OPT on one machine had swapped orderings that close, and accuracy used two standard errors
of one mean): an interval on each difference replaces both rules.
"""


def _cell(s: str) -> str:
    return s.replace("|", "/").replace("\n", " ")


def figures_section(model: str, t: Tables, verdicts: dict, shared: str = "../../figures",
                    own: str | None = None) -> list[str]:
    """Each figure and table of the paper: its numbers, our counterpart (linked), and the claims it backs or, where
    no claim reads it, our numbers; then the figures themselves."""
    lines = ["", "## The paper's figures and tables, beside ours", "",
             "| paper | shows | the paper's numbers | ours | verdicts / our numbers |", "|---|---|---|---|---|"]
    gallery = []
    for f in FIGURES:
        have = f.made(t)
        files = ", ".join(f"[{name.split('/')[-1]}]({link(name, model, shared, own)})"
                          for name in have) or "not made by this configuration"
        said = [f"{CLAIMS[k].text}: **{verdicts[k].verdict}**" for k in f.claims]
        if f.ours is not None:
            said.append(f.ours(t))
        lines.append(f"| {f.key} | {_cell(f.title)} | {_cell(f.paper)} | {files} | {_cell('; '.join(said))} |")
        pngs = [name for name in have if name in SPECS]
        if pngs:
            gallery += ["", f"### {f.key}: {f.title}", ""] + [
                f"![{name}]({link(name, model, shared, own)})" for name in pngs]
    return lines + ["", "Each figure is also a PDF beside its PNG."] + gallery


def render(model: str, t: Tables, title: str | None = None, shared: str = "../../figures",
           own: str | None = None) -> str:
    from .stats import REPS

    verdicts = [(c, c.judge(t)) for c in CLAIMS.values()]
    n = {v: sum(1 for _, x in verdicts if x.verdict == v) for v in VERDICTS}
    lines = [f"# {title or model}: the study, checked against the paper", "", "## The paper's claims", "",
             ", ".join(f"{n[v]} {v}" for v in VERDICTS) + ". Every number below comes from this run's tables "
             "(perplexity: word perplexity; accuracy: mean zero-shot acc); the protocol (what a mask may see), the "
             "units pruned and the normalisation are named beside each. " + paper.load()["about"], "",
             "| claim | paper | ours | verdict | why |", "|---|---|---|---|---|"]
    for c, v in verdicts:
        lines.append(f"| {_cell(c.text)} | {_cell(c.paper)} | {_cell(v.ours)} | **{v.verdict}** | {_cell(v.why)} |")
    dense_ppl, dense_acc = t.ppl(source="dense"), t.acc(source="dense")
    dense = ([f"perplexity {dense_ppl:,.1f}"] if dense_ppl is not None else []) + \
        ([f"mean accuracy {dense_acc:.3f} over {t.questions} questions"] if dense_acc is not None else [])
    if dense:
        lines += ["", "Dense reference: " + ", ".join(dense) + "."]
    lines += majority_lines(t)
    lines += ["", METHOD.format(norm=t.normalize, reps=REPS).rstrip()]
    lines += figures_section(model, t, {c.key: v for c, v in verdicts}, shared, own)
    return "\n".join(lines) + "\n"


def majority_lines(t: Tables) -> list[str]:
    """Per zero-shot task: dense accuracy against always giving the most frequent answer."""
    from .stats import above_majority

    if t.samples is None or "acc" not in t.samples:
        return []
    tasks = sorted(set(t.samples[t.samples.acc.notna() & (t.samples.source == "dense")].task))
    out = []
    for task in tasks:
        r = above_majority(t.samples, task)
        if r is not None:
            ok, acc, base, se2 = r
            out.append(f"{task} {acc:.3f} vs {base:.3f} ({'above' if ok else 'NOT above'} by 2 SE = {se2:.3f})")
    return ["", "Dense accuracy against the majority-class baseline (always the most frequent gold answer): "
            + "; ".join(out) + ". Accuracy comparisons on a task the dense model does not clear decide little."] \
        if out else []


def cmd_report(args) -> int:
    from .. import io
    from ..provenance import write_meta

    t = load_tables(args.ablations, args.predictors, args.latency, args.dependence, args.flops, args.samples,
                    args.questions, args.extra_latency, args.normalize, args.units)
    text = render(args.model_name, t, args.title, args.latency_figures, args.model_figures)
    io.write_text(args.out, text)
    inputs = [p for p in (args.ablations, args.predictors, args.latency, args.dependence, args.flops, args.samples,
                          *args.extra_latency) if p]
    write_meta(args.out, config={"command": "report-claims", "model": args.model_name, "questions": args.questions,
                                 "normalize": args.normalize, "units": args.units},
               inputs=inputs)
    print(text)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report-claims", help="one model's report: the paper's claims held / not held / not "
                       "testable, and each figure and table of the paper beside ours, from its tables")
    p.add_argument("--model-name", required=True)
    p.add_argument("--ablations", default=None, help="tables/{model}/ablations.csv")
    p.add_argument("--predictors", default=None, help="tables/{model}/predictors.csv")
    p.add_argument("--latency", default=None, help="latency/latency.csv")
    p.add_argument("--dependence", default=None, help="importance/{model}/input_dependence.csv")
    p.add_argument("--flops", default=None, help="latency/predictor_flops.csv")
    p.add_argument("--samples", default=None, help="tables/{model}/samples.csv (per-document results: intervals)")
    p.add_argument("--extra-latency", nargs="*", default=[],
                   help="latency tables measured elsewhere (e.g. reports/gpu-h200/latency_cuda.csv), judged beside")
    p.add_argument("--normalize", default="raw", help="the normalisation the claims read first (raw: the paper's)")
    p.add_argument("--units", default=None, help="the units the claims read first (default: each claim's own)")
    p.add_argument("--latency-figures", default="../../figures",
                   help="where the latency figures sit, relative to the report (for its links)")
    p.add_argument("--model-figures", default=None,
                   help="where the model's figures sit, relative to the report (default ../../figures/MODEL)")
    p.add_argument("--questions", type=int, default=0, help="zero-shot questions behind one mean accuracy")
    p.add_argument("--title", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)
