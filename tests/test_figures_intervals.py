"""Ablation figures drawn with the per-document table: the bands, error bars and baseline lines each checked against
a value computed by hand (or by report/stats.py called directly with explicit axes) from a small synthetic table;
seeds pooled, one normalisation drawn, no empty panel, a legend of every line; and Fig. 1 as curves over sparsity."""
import matplotlib
import numpy as np
import pandas as pd
import pytest

from shadowllm.layout.grid import Point
from shadowllm.figures import ablations as fa
from shadowllm.report import stats

matplotlib.use("Agg")

TASKS = ["boolq", "piqa"]
PPL_TASK = "corpus_test"
SPARSITIES = (0.3, 0.5)
N_PPL, N_ACC = 5, 8
REFS = {"dense", "majority class", "no difference"}


def axes_of(source, criterion="plainact", normalize="raw", seed=0, style="global", protocol="none", sparsity=0.0,
            shots="0+5", units="both"):
    if source in ("dense", "random"):
        criterion, normalize = "none", "none"
    if source == "dense":
        shots, style, units, protocol, sparsity = "none", "none", "none", "none", 0.0
    return Point(source=source, criterion=criterion, normalize=normalize, shots=shots, seed=seed, placement=0,
                 style=style, units=units, protocol=protocol, sparsity=sparsity).check().axes("tiny")


def grid():
    out = [axes_of("dense")]
    for sp in SPARSITIES:
        for norm in ("raw", "layer"):
            for style in ("global", "local", "hybrid"):
                out.append(axes_of("static", normalize=norm, style=style, sparsity=sp))
                for proto in ("sequence", "prompt"):
                    out += [axes_of("predicted", normalize=norm, seed=s, style=style, protocol=proto, sparsity=sp)
                            for s in (0, 1)]
            for proto in ("sequence", "prompt"):
                out += [axes_of("dejavu", normalize=norm, seed=s, style="local", protocol=proto, sparsity=sp)
                        for s in (0, 1)]
        out += [axes_of("random", seed=s, style="global", sparsity=sp) for s in (0, 1)]
    return out


def synthetic_samples():
    """Per-document rows of every point: a perplexity task (not under 'prompt') and two multiple-choice tasks."""
    rng = np.random.default_rng(7)
    w = rng.integers(20, 60, N_PPL).astype(float)   # the same documents at every point
    frames = []
    for i, ax in enumerate(grid()):
        if ax["protocol"] != "prompt":
            ll = -w * (np.log(15 + 40 * ax["sparsity"] + 3 * i % 5) + rng.normal(0, 0.3, N_PPL))
            frames.append(pd.DataFrame({**ax, "task": PPL_TASK, "doc_id": range(N_PPL), "ll": ll, "words": w,
                                        "bytes": 5 * w}))
        for t in TASKS:
            gold = np.array([1, 1, 0, 1, 0, 1, 1, 1]) if t == "boolq" else np.array([0, 1, 0, 0, 1, 0, 1, 0])
            acc = (rng.random(N_ACC) < 0.8 - 0.5 * ax["sparsity"] - 0.05 * (ax["source"] == "dejavu")).astype(float)
            frames.append(pd.DataFrame({**ax, "task": t, "doc_id": range(N_ACC), "acc": acc, "acc_norm": acc,
                                        "gold": gold, "label": np.where(gold == 1, "yes", "no")
                                        if t == "boolq" else [f"sol{g}" for g in gold]}))
    return pd.concat(frames, ignore_index=True)


def table_of(samples):
    """The aggregate table the per-document one sums to: word perplexity and acc per point, seed and task."""
    k = fa.keys(samples)
    rows = []
    for key, g in samples.groupby(k + ["task"], sort=True):
        ax = dict(zip(k + ["task"], key))
        if key[-1] == PPL_TASK:
            rows.append({**ax, "metric": "word_perplexity", "value": float(np.exp(-g.ll.sum() / g.words.sum()))})
        else:
            rows.append({**ax, "metric": "acc", "value": float(g.acc.mean())})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def data():
    s = synthetic_samples()
    return s, table_of(s)


@pytest.fixture(scope="module")
def figs(data):
    s, t = data
    f = fa.build_figures(t, s, title="tiny")
    yield f
    import matplotlib.pyplot as plt

    for fig in f.values():
        plt.close(fig)


def hand_ppl(s, **axes):
    d = s[(s.task == PPL_TASK)]
    for k, v in axes.items():
        d = d[d[k] == v]
    return d.groupby("seed").apply(lambda g: np.exp(-g.ll.sum() / g.words.sum()))


def panel(fig, title):
    (ax,) = [a for a in fig.axes if a.get_title() == title]
    return ax


def line(ax, label):
    (ln,) = [x for x in ax.lines if x.get_label() == label]
    return ln


def banded(s, a: dict):
    """The band the figures draw for point a: the dense perplexity times a's paired ratio to dense, by hand."""
    dense = hand_ppl(s, source="dense").iloc[0]
    rel = stats.paired(s, "word_perplexity", a, {"source": "dense"})
    return stats.Interval(dense * rel.value, dense * rel.lo, dense * rel.hi, rel.n, rel.seeds)


def test_band_equals_the_paired_change_from_dense_and_value_the_hand_perplexity(data, figs):
    s, t = data
    common = dict(criterion="plainact", normalize="raw", style="global", units="both", shots="0+5", sparsity=0.5)
    # static: one seed; the line's value by hand, its band the paired interval against dense on the same documents
    want = hand_ppl(s, source="static", **common)
    assert len(want) == 1
    iv = banded(s, dict(model="tiny", source="static", design="static", placement=0, protocol="none", **common))
    sty = fa.with_intervals(fa.styles_data(fa.only_normalize(t, "raw")), fa.Intervals(fa.only_normalize(s, "raw")))
    r = sty[(sty.source == "static") & (sty["style"] == "global") & (sty.sparsity == 0.5) & (sty.quantity == fa.PPL)]
    assert r.value.item() == pytest.approx(want.iloc[0]) == pytest.approx(iv.value)
    assert (r.lo.item(), r.hi.item()) == pytest.approx((iv.lo, iv.hi))
    assert iv.lo < iv.value < iv.hi
    # ...and that band is what the figure draws at 50 %
    ax = panel(figs["ablation_styles"], "static: perplexity")
    assert line(ax, "global").get_ydata()[1] == pytest.approx(want.iloc[0])
    verts = np.concatenate([p.vertices for c in ax.collections for p in c.get_paths()])
    at50 = verts[np.isclose(verts[:, 0], 50)][:, 1]
    assert np.isclose(at50, iv.lo).any() and np.isclose(at50, iv.hi).any()
    # predicted: two seeds pooled (geometric mean of the seeds' perplexities; the interval resamples the seeds)
    want = hand_ppl(s, source="predicted", protocol="sequence", **common)
    assert len(want) == 2
    iv = banded(s, dict(model="tiny", source="predicted", design="shadowllm", placement=0, protocol="sequence",
                        **common))
    r = sty[(sty.source == "predicted") & (sty["style"] == "global") & (sty.sparsity == 0.5) & (sty.quantity == fa.PPL)]
    assert r.value.item() == pytest.approx(np.exp(np.log(want).mean())) == pytest.approx(iv.value)
    assert (r.lo.item(), r.hi.item()) == pytest.approx((iv.lo, iv.hi)) and iv.seeds == (2, 1)


def test_fig3_global_vs_local_for_shadowllm_and_static(figs):
    f = figs["ablation_styles"]
    titles = {a.get_title() for a in f.axes}
    assert titles == {f"{n}: {q}" for n in ("ShadowLLM (predicted)", "static") for q in (fa.PPL, fa.ACC)}
    for a in f.axes:
        assert {"global", "local", "hybrid"} <= {ln.get_label() for ln in a.lines}


def test_fig10_is_shadowllm_minus_dejavu_with_the_paired_interval(data, figs):
    s, t = data
    g = fa.with_intervals(fa.dejavu_gap_data(fa.only_normalize(t, "raw")), fa.Intervals(fa.only_normalize(s, "raw")))
    assert set(g.panel) == {"sequence", "prompt"} and set(g.line) == set(TASKS) | {fa.MEAN}
    raw = s[s.normalize.isin(["raw"]) & s.acc.notna()]

    def acc(source, style, proto, sp, task):   # mean over seeds of each seed's mean acc, by hand
        d = raw[(raw.source == source) & (raw["style"] == style) & (raw.protocol == proto) & (raw.sparsity == sp)
                & (raw.task == task)]
        return d.groupby("seed").acc.mean().mean()

    ax = panel(figs["ablation_per_task"], "sequence protocol")
    for proto in ("sequence", "prompt"):
        for task in TASKS:
            want = [acc("predicted", "global", proto, sp, task) - acc("dejavu", "local", proto, sp, task)
                    for sp in SPARSITIES]
            got = g[(g.panel == proto) & (g.line == task)].sort_values("sparsity")
            assert list(got.value) == pytest.approx(want)
            if proto == "sequence":
                assert list(line(ax, task).get_ydata()) == pytest.approx(want)
        mean = g[(g.panel == proto) & (g.line == fa.MEAN)].sort_values("sparsity")
        assert list(mean.value) == pytest.approx(
            [np.mean([acc("predicted", "global", proto, sp, k) - acc("dejavu", "local", proto, sp, k)
                      for k in TASKS]) for sp in SPARSITIES])
    common = dict(model="tiny", criterion="plainact", normalize="raw", shots="0+5", placement=0, units="both",
                  protocol="sequence", sparsity=0.5)
    a = {**common, "source": "predicted", "design": "shadowllm", "style": "global"}
    b = {**common, "source": "dejavu", "design": "dejavu", "style": "local"}
    iv = stats.paired(s, "acc", {**a, "task": "piqa"}, {**b, "task": "piqa"})
    r = g[(g.panel == "sequence") & (g.line == "piqa") & (g.sparsity == 0.5)]
    assert (r.value.item(), r.lo.item(), r.hi.item()) == pytest.approx((iv.value, iv.lo, iv.hi))
    iv = stats.paired(s, "acc", a, b)   # the mean line: the paired interval of the mean over tasks
    r = g[(g.panel == "sequence") & (g.line == fa.MEAN) & (g.sparsity == 0.5)]
    assert (r.value.item(), r.lo.item(), r.hi.item()) == pytest.approx((iv.value, iv.lo, iv.hi))
    # drawn as error bars (one per task line), a zero line, no band
    assert not any(type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection") for c in ax.collections)
    assert len(ax.containers) == len(TASKS) + 1
    assert line(ax, "no difference").get_ydata()[0] == 0


def test_majority_line_is_the_hand_count(data, figs):
    s, _ = data
    # boolq golds 1,1,0,1,0,1,1,1: 'yes' 6/8; piqa golds 0,1,0,0,1,0,1,0: position 0 5/8
    want = (6 / 8 + 5 / 8) / 2
    assert fa.majority_value(s, TASKS) == pytest.approx(want)
    for stem in ("ablation_sources", "ablation_styles", "ablation_protocols"):
        for ax in figs[stem].axes:
            labels = {ln.get_label() for ln in ax.lines}
            assert ("majority class" in labels) == ("accuracy" in ax.get_title()), (stem, ax.get_title())
            if "majority class" in labels:
                assert line(ax, "majority class").get_ydata()[0] == pytest.approx(want)
                assert "dense" in labels


def test_no_empty_panel_and_a_legend_of_every_line(figs):
    assert set(figs) == {"ablation_criteria_ppl", "ablation_criteria_acc", "ablation_styles", "ablation_fewshot",
                         "ablation_sources", "ablation_protocols", "ablation_per_task"}
    for stem, f in figs.items():
        assert f.axes, stem
        drawn = set()
        for ax in f.axes:
            data = [ln for ln in ax.lines if ln.get_label() not in REFS and len(ln.get_xdata())]
            assert data, (stem, ax.get_title())   # every panel draws at least one data line
            drawn |= {ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")}
        (leg,) = f.legends
        assert {t.get_text() for t in leg.get_texts()} == drawn, stem
    # the protocols: no perplexity panel under 'prompt' (a window has no prompt), nothing empty drawn instead
    assert "prompt: perplexity" not in {a.get_title() for a in figs["ablation_protocols"].axes}
    assert "prompt: mean accuracy" in {a.get_title() for a in figs["ablation_protocols"].axes}


def test_every_line_has_intervals(data, figs):
    s, t = data
    for d in (fa.sources_data(fa.only_normalize(t, "raw")), fa.styles_data(fa.only_normalize(t, "raw"))):
        d = fa.with_intervals(d, fa.Intervals(fa.only_normalize(s, "raw")))
        assert d.lo.notna().all() and d.hi.notna().all()
        assert ((d.lo <= d.value + 1e-9) & (d.value <= d.hi + 1e-9)).all()


def test_one_normalisation_drawn(data):
    s, t = data
    assert fa.pick_normalize(t) == "raw" and fa.pick_normalize(t, "layer") == "layer"
    assert fa.pick_normalize(t[t.normalize != "raw"]) == "layer"     # no raw: the table's own
    assert fa.pick_normalize(t.drop(columns="normalize")) is None
    for norm in ("raw", "layer"):
        d = fa.styles_data(fa.only_normalize(t, norm))
        assert set(d.normalize) == {norm}
        r = d[(d.source == "predicted") & (d["style"] == "local") & (d.sparsity == 0.3) & (d.quantity == fa.PPL)]
        want = hand_ppl(s, source="predicted", normalize=norm, style="local", protocol="sequence", sparsity=0.3)
        assert r.value.item() == pytest.approx(np.exp(np.log(want).mean()))
    f = fa.build_figures(t, None, "tiny", normalize="layer")
    assert "normalize layer" in f["ablation_styles"]._suptitle.get_text()
    import matplotlib.pyplot as plt

    for fig in f.values():
        plt.close(fig)


def test_without_samples_no_intervals_and_cli(data, tmp_path, capsys):
    from shadowllm.cli import main

    s, t = data
    t.to_csv(tmp_path / "ablations.csv", index=False)
    s.to_csv(tmp_path / "samples.csv", index=False)
    assert fa.with_intervals(fa.sources_data(t), None).lo.isna().all()
    for name, samples in (("a", "samples.csv"), ("b", "missing.csv")):   # a missing table: drawn without bands
        main(["plot-ablations", "--table", str(tmp_path / "ablations.csv"), "--samples", str(tmp_path / samples),
              "--outdir", str(tmp_path / name), "--title", "tiny", "--normalize", "raw"])
        assert len(list((tmp_path / name).glob("*.png"))) == len(list((tmp_path / name).glob("*.pdf"))) == 7
    assert "no per-document table" in capsys.readouterr().err
    # deterministic: the same bytes again
    main(["plot-ablations", "--table", str(tmp_path / "ablations.csv"), "--samples", str(tmp_path / "samples.csv"),
          "--outdir", str(tmp_path / "c"), "--title", "tiny"])
    for p in [*(tmp_path / "a").glob("*.png"), *(tmp_path / "a").glob("*.pdf")]:
        assert p.read_bytes() == (tmp_path / "c" / p.name).read_bytes(), p.name


def test_tradeoff_draws_one_curve_per_method_over_sparsity():
    from shadowllm.figures.tradeoff import tradeoff_figure

    d = pd.DataFrame([("dense", 0.0, 0.60, 10.0, "none"), ("dejavu", 0.3, 0.58, 11.5, "token"),
                      ("dejavu", 0.5, 0.52, 11.0, "token"), ("shadowllm-prompt", 0.5, 0.55, 6.5, "prompt"),
                      ("shadowllm-prompt", 0.3, 0.57, 8.0, "prompt"), ("shadowllm-prompt", 0.7, 0.45, 5.0, "prompt")],
                     columns=["mode", "sparsity", "acc", "ms_per_token", "protocol"])
    fig = tradeoff_figure(d, "big", "m")
    ax = fig.axes[0]
    curves = {ln.get_label(): ln for ln in ax.lines}
    assert set(curves) == {"dense (none)", "dejavu (token)", "shadowllm-prompt (prompt)"}
    # one line per method through its sparsities in order of sparsity
    assert list(curves["shadowllm-prompt (prompt)"].get_xdata()) == [8.0, 6.5, 5.0]
    assert list(curves["shadowllm-prompt (prompt)"].get_ydata()) == [0.57, 0.55, 0.45]
    assert list(curves["dejavu (token)"].get_xdata()) == [11.5, 11.0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["0%", "30%", "50%", "50%", "30%", "70%"])
    assert {t.get_text() for t in ax.get_legend().get_texts()} == set(curves)
    import matplotlib.pyplot as plt

    plt.close(fig)
