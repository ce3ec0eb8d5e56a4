"""The report: claims' verdicts follow the table's numbers (held, not held, not testable), every paper figure has
its row, and the CLI writes it."""
from __future__ import annotations

import pandas as pd
import pytest

from shadowllm.report.build import render
from shadowllm.report.claims import CLAIMS, HELD, NOT_HELD, UNTESTABLE, Tables

COLS = ["model", "source", "design", "criterion", "shots", "placement", "style", "units", "protocol", "sparsity",
        "task", "metric", "value"]


def row(source, criterion, style, units, protocol, sparsity, metric, value, shots="0+5", task="corpus_test"):
    return dict(model="m", source=source, design="none", criterion=criterion, shots=shots, placement=0,
                style=style, units=units, protocol=protocol, sparsity=sparsity, task=task, metric=metric,
                value=value)


def ppl(source, criterion, style, units, protocol, sparsity, value, shots="0+5"):
    return row(source, criterion, style, units, protocol, sparsity, "word_perplexity", value, shots)


def table(rows):
    return pd.DataFrame(rows, columns=COLS)


def test_plainact_vs_magnitude_follows_the_numbers():
    rows = [ppl("static", "plainact", "global", "heads", "none", 0.5, 40.0),
            ppl("static", "l2_norm", "global", "heads", "none", 0.5, 300.0),
            ppl("static", "plainact", "global", "heads", "none", 0.5, 900.0, shots="0")]   # a few-shot table: ignored
    v = CLAIMS["plainact_beats_magnitude"].judge(Tables(table(rows)))
    assert v.verdict == HELD and "40 vs 300" in v.ours
    rows[1]["value"] = 20.0
    v = CLAIMS["plainact_beats_magnitude"].judge(Tables(table(rows)))
    assert v.verdict == NOT_HELD and v.why == "l2_norm is better in 1 of 1 decided comparisons"
    assert CLAIMS["plainact_beats_magnitude"].judge(Tables(table(rows[:1]))).verdict == UNTESTABLE


def test_perplexities_within_two_percent_are_ties_that_decide_nothing():
    rows = [ppl("static", "plainact", "global", "both", "none", 0.5, 50.0),
            ppl("static", "plainact", "local", "both", "none", 0.5, 50.9),     # 1.8 % apart: a tie
            ppl("static", "plainact", "global", "both", "none", 0.7, 80.0),
            ppl("static", "plainact", "local", "both", "none", 0.7, 78.0)]     # 2.5 %: local wins
    v = CLAIMS["global_beats_local"].judge(Tables(table(rows)))
    assert v.verdict == NOT_HELD and v.why == "local wins 1 of 1 decided comparisons; 1 of 2 within 2% (ties)"
    v = CLAIMS["global_beats_local"].judge(Tables(table(rows[:2])))
    assert v.verdict == UNTESTABLE and "within 2%" in v.why and "50 vs 50.9" in v.ours


def test_global_vs_local_and_shadowllm_vs_dejavu():
    rows = [ppl("static", "plainact", "global", "both", "none", 0.5, 50.0),
            ppl("static", "plainact", "local", "both", "none", 0.5, 60.0),
            ppl("predicted", "plainact", "global", "both", "sequence", 0.5, 45.0),
            ppl("dejavu", "plainact", "local", "both", "sequence", 0.5, 70.0)]
    t = Tables(table(rows))
    assert CLAIMS["global_beats_local"].judge(t).verdict == HELD
    v = CLAIMS["shadowllm_beats_dejavu_ppl"].judge(t)
    assert v.verdict == HELD and "45 vs 70 (static 50)" in v.ours
    rows[3]["value"] = 44.0
    assert CLAIMS["shadowllm_beats_dejavu_ppl"].judge(Tables(table(rows))).verdict == NOT_HELD


@pytest.mark.parametrize("questions,gap,verdict", [(60, 0.05, UNTESTABLE), (2000, 0.05, HELD), (2000, -0.05, NOT_HELD)])
def test_accuracy_claims_need_differences_beyond_the_sample_error(questions, gap, verdict):
    rows = []
    for task in ("a", "b"):
        rows.append(row("predicted", "plainact", "global", "both", "prompt", 0.5, "acc", 0.6 + gap, task=task))
        rows.append(row("dejavu", "plainact", "local", "both", "prompt", 0.5, "acc", 0.6, task=task))
    v = CLAIMS["shadowllm_beats_dejavu_acc"].judge(Tables(table(rows), questions=questions))
    assert v.verdict == verdict, v


def test_render_counts_verdicts_and_names_the_dense_reference(tmp_path, capsys):
    from shadowllm.cli import main

    rows = [ppl("dense", "none", "none", "none", "none", 0.0, 30.0),
            ppl("static", "plainact", "global", "heads", "none", 0.5, 40.0),
            ppl("static", "l2_norm", "global", "heads", "none", 0.5, 300.0)]
    text = render("m", Tables(table(rows)))
    n_untestable = sum(1 for c in CLAIMS.values() if c.judge(Tables(table(rows))).verdict == UNTESTABLE)
    assert f"1 held, 0 not held, {n_untestable} not testable here" in text
    claims = text.split("## The paper's figures")[0]
    assert "Dense reference: perplexity 30.0." in claims and claims.count("\n| ") == len(CLAIMS) + 1
    f = tmp_path / "ab.csv"
    table(rows).to_csv(f, index=False)
    out = tmp_path / "report.md"
    assert main(["report", "--model-name", "m", "--ablations", str(f), "--out", str(out)]) == 0
    assert out.read_text() == text and (tmp_path / "report.md.meta.json").is_file()


def test_every_paper_figure_has_a_row_with_our_file_or_why_not():
    """Figs. 1-11 and the FLOPs table each get one row; a figure of a stage this run lacks says so; Fig. 5's numbers
    are the ShadowLLM predictors' mean held-out rho per criterion, read here straight off the synthetic table."""
    rows = [ppl("dense", "none", "none", "none", "none", 0.0, 30.0),
            ppl("static", "plainact", "global", "heads", "none", 0.5, 40.0)]
    pred = pd.DataFrame([dict(criterion=c, design=d, position="context", placement=0, unit=u, scope="model",
                              metric="spearman", value=v)
                         for c, d, u, v in [("snip", "shadowllm", "heads", 0.9), ("snip", "shadowllm", "heads", 0.7),
                                            ("fisher", "shadowllm", "heads", 0.6), ("snip", "dejavu", "heads", 0.1),
                                            ("fisher", "shadowllm", "neurons", 0.5)]])
    t = Tables(table(rows), predictors=pred)
    text = render("m", t).split("## The paper's figures and tables, beside ours")[1]
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| paper")]
    keys = [line.split(" | ")[0][2:] for line in lines]
    assert keys == [f"Fig. {i}" for i in range(1, 12)] + ["Table", "ours", "ours"]
    by = dict(zip(keys, lines))
    assert "[ablation_criteria_ppl](../../figures/m/ablation_criteria_ppl.png)" in by["Fig. 6"]
    assert "PlainAct (gradient x activation) ranks heads better than magnitude (l2_norm): **not testable here**" \
        not in by["Fig. 6"] or CLAIMS["plainact_beats_magnitude"].judge(t).verdict == UNTESTABLE
    assert f"**{CLAIMS['plainact_beats_magnitude'].judge(t).verdict}**" in by["Fig. 6"]
    assert "not made by this configuration" in by["Fig. 2"] and "not made by this configuration" in by["Fig. 11"]
    assert "heads: snip 0.800, fisher 0.600; neurons: fisher 0.500" in by["Fig. 5"]          # (0.9 + 0.7) / 2
    assert "![ablation_sources](../../figures/m/ablation_sources.png)" in text
    assert "input_dependence.png" not in text
    shared = render("m", Tables(table(rows), latency=pd.DataFrame(
        [dict(model="x", device="cpu", mode="dense", sparsity=0.0, ms_per_token=10.0)])), shared="../../figures/cpu")
    assert "![latency_vs_size](../../figures/cpu/latency_vs_size.png)" in shared


def test_input_dependence_reads_heads_not_the_reference_rows():
    dep = pd.DataFrame({"layer": ["0", "0", "1", "ref:random_rank_var"], "head": ["0", "1", "0", ""],
                        "rank_var": [2.0, 4.0, 0.0, 100.0], "hist_var": [1.0, 1.0, 1.0, None]})
    v = CLAIMS["importance_is_input_dependent"].judge(Tables(dependence=dep))
    assert v.verdict == HELD and "mean rank variance 2.0 over 3 heads (ranks drawn at random: 100.0); 67%" in v.ours
    v = CLAIMS["importance_is_input_dependent"].judge(Tables(dependence=dep.assign(rank_var=0.0)))
    assert v.verdict == NOT_HELD
