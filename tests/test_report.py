"""The claims report: verdicts follow the table's numbers (held, not held, not testable), and the CLI writes it."""
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
    assert v.verdict == NOT_HELD and "l2_norm is better for heads 50%" in v.why
    assert CLAIMS["plainact_beats_magnitude"].judge(Tables(table(rows[:1]))).verdict == UNTESTABLE


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
    assert "Dense reference: perplexity 30.0." in text and text.count("\n| ") == len(CLAIMS) + 1
    f = tmp_path / "ab.csv"
    table(rows).to_csv(f, index=False)
    out = tmp_path / "claims.md"
    assert main(["report", "--model-name", "m", "--ablations", str(f), "--out", str(out)]) == 0
    assert out.read_text() == text and (tmp_path / "claims.md.meta.json").is_file()


def test_input_dependence_reads_heads_not_the_reference_rows():
    dep = pd.DataFrame({"layer": ["0", "0", "1", "ref:random_rank_var"], "head": ["0", "1", "0", ""],
                        "rank_var": [2.0, 4.0, 0.0, 100.0], "hist_var": [1.0, 1.0, 1.0, None]})
    v = CLAIMS["importance_is_input_dependent"].judge(Tables(dependence=dep))
    assert v.verdict == HELD and "mean rank variance 2.0 over 3 heads (ranks drawn at random: 100.0); 67%" in v.ours
    v = CLAIMS["importance_is_input_dependent"].judge(Tables(dependence=dep.assign(rank_var=0.0)))
    assert v.verdict == NOT_HELD
