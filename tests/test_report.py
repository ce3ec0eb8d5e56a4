"""The report: claims' verdicts follow the table's numbers (held, not held, not testable), every paper figure has
its row, and the CLI writes it."""
from __future__ import annotations

import pandas as pd
import pytest

from shadowllm.report.build import render
from shadowllm.report.claims import CLAIMS, HELD, NOT_HELD, UNRESOLVED, UNTESTABLE, Tables

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


def with_samples(points, n=40, seed=0):
    """(ablation table, samples) of synthetic points: each (source, criterion, style, units, protocol, sparsity,
    nats a word above a shared base, noise sd per document); perplexity rows are computed from the documents."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = rng.integers(50, 150, n)
    base = -words * rng.uniform(3, 5, n)
    rows, samples = [], []
    for source, crit, style, units, proto, sp, shift, sd in points:
        ll = base - shift * words + rng.normal(0, sd, n) * words
        value = float(np.exp(-ll.sum() / words.sum()))
        rows.append(ppl(source, crit, style, units, proto, sp, value))
        samples.append(pd.DataFrame({**{k: v for k, v in rows[-1].items() if k not in ("task", "metric", "value")},
                                     "task": "corpus_test", "doc_id": range(n), "ll": ll, "words": words,
                                     "bytes": words * 5}))
    return table(rows), pd.concat(samples, ignore_index=True)


@pytest.mark.parametrize("shift,sd,verdict", [(1.0, 0.01, HELD), (-1.0, 0.01, NOT_HELD), (0.0, 0.5, UNRESOLVED)])
def test_plainact_vs_magnitude_is_decided_by_the_interval(shift, sd, verdict):
    ab, s = with_samples([("static", "plainact", "global", "heads", "none", 0.5, 0.0, 0.0),
                          ("static", "l2_norm", "global", "heads", "none", 0.5, shift, sd)])
    v = CLAIMS["plainact_beats_magnitude"].judge(Tables(ab, samples=s))
    assert v.verdict == verdict, v
    assert "static heads 50%" in v.ours and "ratio" in v.ours and v.ours.count("[") == 1
    assert CLAIMS["plainact_beats_magnitude"].judge(Tables(ab)).verdict == UNRESOLVED    # no documents: no interval
    assert CLAIMS["plainact_beats_magnitude"].judge(Tables(ab[:1], samples=s)).verdict == UNTESTABLE


def test_the_papers_pairing_decides_and_our_other_pairings_stand_beside_it():
    """ShadowLLM plainact global vs DejaVu l2_norm decides, even where DejaVu trained on plainact would win."""
    ab, s = with_samples([("predicted", "plainact", "global", "both", "sequence", 0.5, 0.0, 0.01),
                          ("dejavu", "l2_norm", "local", "both", "sequence", 0.5, 0.5, 0.01),
                          ("dejavu", "plainact", "local", "both", "sequence", 0.5, -0.5, 0.01),
                          ("static", "plainact", "global", "both", "none", 0.5, -0.2, 0.01)])
    t = Tables(ab, samples=s)
    v = CLAIMS["shadowllm_beats_dejavu_ppl"].judge(t)
    assert v.verdict == HELD and v.ours.startswith("paper's pair: ShadowLLM plainact global vs DejaVu l2_norm")
    assert "same criterion" in v.ours and "1 disagree" in v.why
    p = CLAIMS["predicted_beats_static"].judge(t)        # static is 0.2 nats a word better: the premise fails
    assert p.verdict == NOT_HELD and "ShadowLLM vs static, perplexity, sequence, both 50%" in p.ours


def test_accuracy_claims_need_the_interval_of_the_difference():
    import numpy as np

    def run(n, gap):
        rng = np.random.default_rng(0)
        rows, samples = [], []
        arms = (("predicted", "plainact", "global", 0.6 + gap), ("dejavu", "l2_norm", "local", 0.6))
        for src, crit, style, p in arms:
            for task in ("a", "b"):
                acc = (rng.random(n) < p).astype(float)
                rows.append(row(src, crit, style, "both", "sequence", 0.5, "acc", acc.mean(), task=task))
                samples.append(pd.DataFrame({**{k: v for k, v in rows[-1].items() if k not in ("task", "metric",
                                                                                                 "value")},
                                             "task": task, "doc_id": range(n), "acc": acc}))
        return CLAIMS["shadowllm_beats_dejavu_acc"].judge(Tables(table(rows), samples=pd.concat(samples)))
    assert run(30, 0.05).verdict == UNRESOLVED
    assert run(3000, 0.1).verdict == HELD
    assert run(3000, -0.1).verdict == NOT_HELD


def test_a_report_asking_for_a_normalisation_its_grid_did_not_run_names_it(tmp_path):
    from shadowllm.report.build import load_tables

    ab, _ = with_samples([("static", "plainact", "global", "heads", "none", 0.5, 0.0, 0.0)])
    f = tmp_path / "ab.csv"
    ab.assign(normalize="layer").to_csv(f, index=False)
    with pytest.raises(ValueError, match=r"normalisation 'raw' was not run by this grid; it ran \['layer'\]"):
        load_tables(ablations=f)
    with pytest.raises(ValueError, match=r"units 'neurons' were not run by this grid; it ran \['heads'\]"):
        load_tables(ablations=f, normalize="layer", units="neurons")


def test_render_counts_verdicts_and_names_the_dense_reference(tmp_path, capsys):
    from shadowllm.cli import main

    ab, s = with_samples([("dense", "none", "none", "none", "none", 0.0, 0.0, 0.0),
                          ("static", "plainact", "global", "heads", "none", 0.5, 0.3, 0.01),
                          ("static", "l2_norm", "global", "heads", "none", 0.5, 2.0, 0.01)])
    text = render("m", Tables(ab, samples=s))
    n_untestable = sum(1 for c in CLAIMS.values() if c.judge(Tables(ab, samples=s)).verdict == UNTESTABLE)
    assert f"1 held, 0 not held, 0 not resolved, {n_untestable} not testable here" in text
    dense = float(ab.value.iloc[0])
    rows = ab.to_dict("records")
    claims = text.split("## The paper's figures")[0]
    assert f"Dense reference: perplexity {dense:,.1f}." in claims and claims.count("\n| ") == len(CLAIMS) + 1
    f, fs = tmp_path / "ab.csv", tmp_path / "samples.csv"
    table(rows).to_csv(f, index=False)
    s.to_csv(fs, index=False)
    out = tmp_path / "report.md"
    assert main(["report-claims", "--model-name", "m", "--ablations", str(f), "--samples", str(fs),
                 "--out", str(out)]) == 0
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


def test_latency_claims_pair_matching_settings_and_count_ties():
    base = dict(model="x", params_b=1.0, device="cuda", dtype="float16", batch=1, prompt_len=128, sparsity=0.5)
    lat = pd.DataFrame([dict(base, gen_tokens=64, mode="shadowllm-token", ms_per_token=8.0, ms_per_token_iqr=0.1),
                        dict(base, gen_tokens=64, mode="dejavu", ms_per_token=9.0, ms_per_token_iqr=0.1),
                        dict(base, gen_tokens=16, mode="dejavu", ms_per_token=5.0, ms_per_token_iqr=0.1)])
    v = CLAIMS["per_token_shadowllm_faster_than_dejavu"].judge(Tables(latency=lat))
    assert v.verdict == HELD and "8.00 vs 9.00" in v.ours and "5.00" not in v.ours   # 16 tokens has no pair
    v = CLAIMS["per_token_shadowllm_faster_than_dejavu"].judge(Tables(latency=lat.assign(ms_per_token_iqr=0.6)))
    assert v.verdict == UNRESOLVED                                                  # 1 ms within 1.2 ms of IQRs


def test_a_report_row_reads_its_text_from_paper_yaml_and_its_files_from_the_registry():
    from shadowllm.report.figures import OURS, Figure

    f = Figure("Fig. 11")
    assert f.stems == ("latency_vs_size", "latency_vs_sparsity", "latency_vs_genlen")
    assert f.title.startswith("Latency vs model size") and "1154/1315/1017" in f.paper
    assert Figure(OURS, stems=("predictors_by_placement",)).paper == "not in the paper"
    with pytest.raises(KeyError, match="'Fig. 99'"):
        Figure("Fig. 99", tables={"reports/x.csv": ("flops",)})
    with pytest.raises(ValueError, match="'Fig. 99' has no figure in the registry"):
        Figure("Fig. 99")
    with pytest.raises(ValueError, match="'eval_vs_sparsity'.*'eval'"):
        Figure(OURS, stems=("eval_vs_sparsity",))
