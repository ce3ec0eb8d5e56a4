"""Ablation figures: every file written (with or without zero-shot rows), and the numbers each figure plots checked
against the values the synthetic table was made from."""
import pandas as pd
import pytest

from shadowllm.layout.grid import COLUMNS, Point
from shadowllm.figures import ablations as fa
from shadowllm.layout.figures import names

STEMS = names("ablations")   # the seven ablation figures, as the registry lists them
TASKS = ["bb_winowhy", "piqa"]
SPARSITIES = (0.3, 0.5, 0.7)
SOURCE_I = {"dense": 0, "static": 1, "predicted": 2, "dejavu": 3, "oracle": 4, "random": 5}
PROTO_I = {"none": 0, "gold": 0, "sequence": 1, "prompt": 2, "token": 3}
STYLE_I = {"none": 0, "global": 0, "local": 1, "hybrid": 2}


def acc_of(source, sparsity, task, protocol="none", style="global"):
    """The synthetic accuracy: a closed form of the axes, so the test recomputes it without the table."""
    return round(0.8 - 0.3 * sparsity - 0.01 * SOURCE_I[source] - 0.02 * TASKS.index(task)
                 - 0.004 * PROTO_I[protocol] - 0.002 * STYLE_I[style], 6)


def ppl_of(source, criterion, sparsity, units="both", shots="0+5", style="global"):
    return round(20 + 100 * sparsity ** 2 + SOURCE_I[source] + len(criterion) + (units == "heads")
                 + 0.5 * len(shots) + STYLE_I[style], 6)


def point_axes(source, criterion, shots, style, units, protocol, sparsity, normalize=None, seed=0):
    """A real grid point's axes (check() rejects an axis value the grid would not make)."""
    normalize = normalize or ("none" if criterion == "none" else "raw")
    return Point(source=source, criterion=criterion, normalize=normalize, shots=shots, seed=seed, placement=0,
                 style=style, units=units, protocol=protocol, sparsity=sparsity).check().axes("tiny")


def rows(source, criterion, shots, style, units, protocol, sparsity, ppl=True, zs=True, tasks=TASKS):
    axes = point_axes(source, criterion, shots, style, units, protocol, sparsity)
    out = []
    if ppl:
        p = ppl_of(source, criterion, sparsity, units, shots, style)
        out += [{**axes, "task": "corpus_test", "metric": m, "value": v}
                for m, v in (("word_perplexity", p), ("byte_perplexity", p / 4), ("bits_per_byte", 1.5))]
    if zs:
        for t in tasks:
            a = acc_of(source, sparsity, t, protocol, style)
            out += [{**axes, "task": t, "metric": "acc", "value": a}, {**axes, "task": t, "metric": "acc_norm",
                                                                        "value": a + 0.01}]
    return out


def synthetic_table():
    r = rows("dense", "none", "none", "none", "none", "none", 0.0)
    for sp in SPARSITIES:
        for crit in ("plainact", "fisher", "snip"):  # the criteria sweep: perplexity only
            r += rows("static", crit, "0+5", "global", "both", "none", sp, zs=crit == "plainact")
        for style in ("local", "hybrid"):
            r += rows("static", "plainact", "0+5", style, "both", "none", sp)
        for shots in ("0", "5"):
            r += rows("static", "plainact", shots, "global", "both", "none", sp, zs=False)
        for proto in ("sequence", "prompt", "token"):
            r += rows("predicted", "plainact", "0+5", "global", "both", proto, sp, ppl=proto != "prompt")
            r += rows("dejavu", "plainact", "0+5", "local", "both", proto, sp, ppl=proto != "prompt")
        r += rows("random", "none", "none", "global", "both", "none", sp)
        # the oracle at 30 % lacks a task: no mean accuracy for it
        r += rows("oracle", "plainact", "none", "global", "both", "gold", sp, tasks=TASKS[:1] if sp == 0.3 else TASKS)
    for crit in ("plainact", "fisher", "snip"):
        r += rows("static", crit, "0+5", "global", "heads", "none", 0.5, zs=False)
    return pd.DataFrame(r, columns=COLUMNS)


@pytest.fixture
def table(tmp_path):
    p = tmp_path / "ablations.csv"
    synthetic_table().to_csv(p, index=False)
    return p


def assert_all_written(paths, out):
    assert len(paths) == 14
    assert {(p.stem, p.suffix) for p in paths} == {(s, e) for s in STEMS for e in (".png", ".pdf")}
    for s in STEMS:
        for e in (".png", ".pdf"):
            f = out / f"{s}{e}"
            assert f.is_file() and f.stat().st_size > 0, f


def test_cli_writes_every_figure(table, tmp_path, capsys):
    from shadowllm.cli import main

    out = tmp_path / "figs"
    main(["plot-ablations", "--table", str(table), "--outdir", str(out), "--title", "tiny"])
    printed = [line.split("wrote ", 1)[1] for line in capsys.readouterr().out.splitlines() if "wrote " in line]
    assert_all_written([out / p.rsplit("/", 1)[1] for p in printed], out)


def test_shots_labels_stay_strings(table):
    df = fa.read_table(table)
    assert {"0", "5", "0+5", "none"} <= set(df.shots)
    assert all(isinstance(s, str) for s in df.shots)
    assert set(fa.fewshot_data(df).line) == {"0", "5", "0+5"}
    assert fa.pooled_shots(df) == "0+5" and fa.reference_criterion(df) == "plainact"
    # a table whose shots are all digits: still labels, not numbers
    only = df[df.shots.isin(["0", "5"])]
    only.to_csv(table, index=False)
    assert sorted(set(fa.read_table(table).shots)) == ["0", "5"]


def test_reference_criterion_without_plainact():
    df = synthetic_table()
    df = df[df.criterion != "plainact"]
    extra = df[(df.criterion == "snip")].assign(sparsity=0.9)
    assert fa.reference_criterion(pd.concat([df, extra])) == "snip"


def test_mean_accuracy_of_a_point(table):
    df = fa.read_table(table)
    got = fa.mean_acc_points(df)
    raw = synthetic_table()
    acc = raw[raw.metric == "acc"]
    keys = ["source", "criterion", "shots", "style", "units", "protocol", "sparsity"]
    want = {k: g.value.mean() for k, g in acc.groupby(keys) if set(g.task) == set(TASKS)}
    assert len(got) == len(want) > 0
    for _, r in got.iterrows():
        k = tuple(r[c] for c in keys)
        assert r.value == pytest.approx(want[k])
    # the oracle at 30 % has one task only: excluded
    assert not ((got.source == "oracle") & (got.sparsity == 0.3)).any()
    assert ((got.source == "oracle") & (got.sparsity == 0.5)).any()
    # a point's mean: the closed form's mean over tasks
    r = got[(got.source == "dejavu") & (got.protocol == "token") & (got.sparsity == 0.7)]
    assert r.value.item() == pytest.approx(sum(acc_of("dejavu", 0.7, t, "token", "local") for t in TASKS) / 2)


def test_per_task_change_vs_dense(table):
    d = fa.per_task_data(fa.read_table(table))
    assert set(d.source) == {"predicted", "dejavu", "static", "oracle", "random"}
    assert set(d[d.source.isin(["predicted", "dejavu"])].protocol) == {"prompt"}
    assert set(d.sparsity) == {0.7} and set(d.task) == set(TASKS)
    assert len(d) == 5 * len(TASKS)
    for _, r in d.iterrows():
        want = acc_of(r.source, 0.7, r.task, r.protocol, r["style"]) - acc_of("dense", 0.0, r.task)
        assert r.value == pytest.approx(want)


def test_sources_and_protocols_data(table):
    df = fa.read_table(table)
    s = fa.sources_data(df)
    assert set(s[s.source.isin(["predicted", "dejavu"])].protocol) == {"sequence"}
    assert set(s.line) == {"predicted (global)", "dejavu (local)", "static (global)", "oracle (global)",
                           "random (global)"}
    ppl = s[(s.quantity == fa.PPL) & (s.line == "static (global)")].sort_values("sparsity")
    assert list(ppl.value) == pytest.approx([ppl_of("static", "plainact", sp) for sp in SPARSITIES])
    p = fa.protocols_data(df)
    assert set(p[p.source == "predicted"].panel) == {"sequence", "prompt", "token"}
    assert set(p[p.source.isin(["static", "oracle", "random"])].panel) == {"all"}
    # the prompt protocol has no perplexity
    assert p[(p.panel == "prompt") & (p.quantity == fa.PPL)].empty


def test_criteria_data_and_dense(table):
    df = fa.read_table(table)
    c = fa.criteria_data(df)
    ppl = c[c.quantity == fa.PPL]
    assert set(ppl.line) == {"plainact", "fisher", "snip"} and set(ppl.panel) == {"both", "heads"}
    assert set(ppl[ppl.panel == "heads"].sparsity) == {0.5}
    r = ppl[(ppl.line == "fisher") & (ppl.panel == "both") & (ppl.sparsity == 0.7)]
    assert r.value.item() == pytest.approx(ppl_of("static", "fisher", 0.7))
    dense = fa.dense_values(df)
    assert dense[fa.PPL] == pytest.approx(ppl_of("dense", "none", 0.0, "none", "none", "none"))
    assert dense[fa.ACC] == pytest.approx(sum(acc_of("dense", 0.0, t) for t in TASKS) / 2)


@pytest.mark.parametrize("keep", ["no_zero_shot", "header_only"])
def test_empty_data_still_writes_every_file(tmp_path, keep):
    df = synthetic_table()
    df = df[~df.metric.isin(["acc", "acc_norm"])] if keep == "no_zero_shot" else df.iloc[:0]
    p = tmp_path / "t.csv"
    df.to_csv(p, index=False)
    assert fa.mean_acc_points(fa.read_table(p)).empty
    out = tmp_path / "figs"
    assert_all_written(fa.ablation_figures(p, out, title="empty"), out)


def test_tradeoff_pairs_each_decoder_mode_with_the_mask_source_it_runs(tmp_path):
    import pandas as pd

    from shadowllm.figures.tradeoff import accuracy_vs_latency, tradeoff_points

    def r(source, protocol, sparsity, value, criterion="plainact", style="global", units="both", shots="0+5"):
        return {"model": "m", "source": source, "design": "none", "criterion": criterion, "shots": shots,
                "placement": 0, "style": style, "units": units, "protocol": protocol, "sparsity": sparsity,
                "task": "t", "metric": "acc", "value": value}
    ab = pd.DataFrame([r("dense", "none", 0.0, 0.60, criterion="none", style="none", units="none", shots="none"),
                       r("static", "none", 0.5, 0.50), r("static", "none", 0.5, 0.10, units="heads"),
                       r("predicted", "prompt", 0.5, 0.55), r("predicted", "sequence", 0.5, 0.20),
                       r("predicted", "token", 0.5, 0.57), r("dejavu", "token", 0.5, 0.52, style="local"),
                       r("dejavu", "token", 0.3, 0.58, style="local")])
    lat = pd.DataFrame([{"model": m, "mode": mode, "sparsity": s, "ms_per_token": ms} for m, mode, s, ms in [
        ("big", "dense", 0.0, 10.0), ("big", "static", 0.5, 6.0), ("big", "shadowllm-prompt", 0.5, 6.5),
        ("big", "shadowllm-token", 0.5, 9.0), ("big", "dejavu", 0.5, 11.0), ("small", "dense", 0.0, 1.0)]])
    d, model = tradeoff_points(ab, lat)
    assert model == "big"
    got = {(x.mode, x.sparsity): (x.acc, x.ms_per_token, x.protocol) for x in d.itertuples()}
    assert got == {("dense", 0.0): (0.60, 10.0, "none"), ("static", 0.5): (0.50, 6.0, "none"),
                   ("shadowllm-prompt", 0.5): (0.55, 6.5, "prompt"), ("shadowllm-token", 0.5): (0.57, 9.0, "token"),
                   ("dejavu", 0.5): (0.52, 11.0, "token")}       # dejavu at 30 % has no latency row: no point
    a, b = tmp_path / "ab.csv", tmp_path / "lat.csv"
    ab.to_csv(a, index=False)
    lat.assign(batch=1, prompt_len=16, gen_tokens=8, device="cpu", dtype="float32", kv_policy="").to_csv(b, index=False)
    out = accuracy_vs_latency(a, [b], tmp_path / "f.png", "m")
    assert out == [tmp_path / "f.png", tmp_path / "f.pdf"]
    for p in out:
        assert p.stat().st_size > 0 and p.with_name(p.name + ".meta.json").is_file()
