"""Score normalisation and the predictor seed as axes of the grid: each space on hand-made numbers, the same space
in training, static tables, the oracle and the metrics, files of another space or seed refused, the validation
split by example id, and the workflow planning the predictors a grid's normalisations and seeds need."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from shadowllm.layout.grid import AXES, Point
from shadowllm.predictors.metrics import evaluate_predictions
from shadowllm.predictors.normalize import normalize_scores
from shadowllm.predictors.train import _split, train_predictor

# [B=2, L=3, U=3]; layer 0 is the placement (never scored)
Y = torch.tensor([[[9., 9., 9.], [1., 3., 2.], [10., 30., 20.]],
                  [[9., 9., 9.], [5., 5., 1.], [0., 2., 4.]]])


def test_raw_is_the_scores_themselves():
    out = normalize_scores(Y, "raw", placement=0)
    assert torch.equal(out[:, 1:], Y[:, 1:]) and torch.all(out[:, 0] == 0)


def test_layer_is_min_max_per_example_and_layer():
    out = normalize_scores(Y, "layer", placement=0)
    want = torch.tensor([[[0, 0, 0], [0, 1, .5], [0, 1, .5]],
                         [[0, 0, 0], [1, 1, 0], [0, .5, 1]]])
    torch.testing.assert_close(out, want)
    flat = normalize_scores(torch.full((1, 2, 4), 7.0), "layer", placement=0)     # a constant layer: 0, no NaN
    assert torch.equal(flat, torch.zeros(1, 2, 4))


def test_example_is_the_rank_over_every_unit_after_the_placement_onto_0_1():
    out = normalize_scores(Y, "example", placement=0)
    # example 0: values 1 3 2 10 30 20 -> ranks 1 3 2 4 6 5; example 1: 5 5 1 0 2 4 -> ranks 5.5 5.5 2 1 3 4
    want = torch.tensor([[[0, 0, 0], [0, .4, .2], [.6, 1, .8]],
                         [[0, 0, 0], [.9, .9, .2], [0, .4, .6]]])
    torch.testing.assert_close(out, want)
    # placement 1: only layer 2 is ranked
    torch.testing.assert_close(normalize_scores(Y, "example", placement=1)[:, 2],
                               torch.tensor([[0, 1, .5], [0, .5, 1]]))


def test_an_unknown_space_is_named():
    with pytest.raises(ValueError, match="normalisation 'per_layer' is not one of"):
        normalize_scores(Y, "per_layer", placement=0)


def test_metrics_score_the_truth_in_the_predictors_space():
    g = torch.Generator().manual_seed(0)
    true = torch.rand(5, 4, 6, generator=g) * torch.tensor([1., 1., 50., 0.01])[:, None]   # layers of unlike scale
    pred = true + 0.3 * torch.rand(5, 4, 6, generator=g)
    H = 2
    hand = true.clone()                                                          # min-max per (example, layer, kind)
    for sl in (slice(0, H), slice(H, 6)):
        t = true[..., sl]
        hand[..., sl] = (t - t.amin(-1, keepdim=True)) / (t.amax(-1, keepdim=True) - t.amin(-1, keepdim=True))
    key = lambda r: (r["unit"], r["scope"], r["layer"], r["metric"], r["sparsity"])   # noqa: E731
    as_layer = {key(r): r["value"] for r in evaluate_predictions(pred, true, H, normalize="layer")}
    by_hand = {key(r): r["value"] for r in evaluate_predictions(pred, hand, H)}
    raw = {key(r): r["value"] for r in evaluate_predictions(pred, true, H, normalize="raw")}
    assert as_layer.keys() == by_hand.keys() == raw.keys()
    for k in as_layer:
        assert as_layer[k] == pytest.approx(by_hand[k], abs=1e-6), k
        if k[1] == "layer" or k[3] == "recall":                                 # a per-layer affine map changes
            assert as_layer[k] == pytest.approx(raw[k], abs=1e-6), k            # nothing within a layer
    assert as_layer[("neurons", "model", -1, "spearman", None)] != pytest.approx(
        raw[("neurons", "model", -1, "spearman", None)], abs=1e-3)
    ex = {key(r): r["value"] for r in evaluate_predictions(pred, true, H, normalize="example")}
    ranked = torch.cat([normalize_scores(true[..., :H], "example", 0), normalize_scores(true[..., H:], "example", 0)],
                       -1)
    ex_hand = {key(r): r["value"] for r in evaluate_predictions(pred, ranked, H)}
    for k in ex:                                                                 # ranks: the same order as raw
        assert ex[k] == pytest.approx(raw[k], abs=1e-9) and ex_hand[k] == pytest.approx(raw[k], abs=1e-9), k


# ---------------------------------------------------------------------------------------------- training
def test_validation_split_keeps_each_id_on_one_side_and_ignores_row_order():
    ids = [f"t/{i}" for i in range(30)] * 3                                     # one question at three shots
    tr, va = _split(len(ids), 0.2, seed=1, groups=ids)
    tr_ids, va_ids = {ids[i] for i in tr.tolist()}, {ids[i] for i in va.tolist()}
    assert tr_ids.isdisjoint(va_ids) and len(va_ids) == 6 and len(va) == 18
    assert sorted(tr.tolist() + va.tolist()) == list(range(90))
    perm = torch.randperm(90, generator=torch.Generator().manual_seed(5)).tolist()
    shuffled = [ids[i] for i in perm]
    _, va2 = _split(90, 0.2, seed=1, groups=shuffled)
    assert {shuffled[i] for i in va2.tolist()} == va_ids
    assert {ids[i] for i in _split(90, 0.2, seed=2, groups=ids)[1].tolist()} != va_ids
    # train_predictor splits by the groups it is given: two questions cannot give a 10 % validation split
    x, y = torch.randn(20, 8), torch.rand(20, 3, 5)
    with pytest.raises(ValueError, match="splits 2 groups into 2 train and 0 validation"):
        train_predictor("shadowllm", x, y, n_heads=2, hidden=4, epochs=1, groups=["a"] * 10 + ["b"] * 10)


def test_raw_targets_train_over_one_constant_and_predict_in_the_criterions_units(tmp_path):
    from shadowllm.predictors.model import load_predictor
    from shadowllm.sparse.predictors import DejaVuPredictor, ShadowPredictor

    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 8, generator=g)
    w = torch.randn(8, 3 * 6, generator=g)
    y = torch.nn.functional.softplus(x @ w).view(120, 3, 6) * 1e-8               # fisher-sized scores
    model, curve = train_predictor("shadowllm", x, y, n_heads=2, hidden=16, epochs=30, lr=1e-2, batch_size=16,
                                   seed=0, placement=0)
    tr, _ = _split(120, 0.1, seed=0)
    for kind, sl in (("heads", slice(0, 2)), ("neurons", slice(2, 6))):
        want = y[tr][:, 1:, sl].double().abs().mean().item()                     # by hand: the training split's
        assert model.target_scale[kind] == pytest.approx(want, rel=1e-6), kind
    with torch.no_grad():
        p = model(x)
    assert p[:, 1:].abs().mean() == pytest.approx(y[:, 1:].abs().mean().item(), rel=0.5)   # in the criterion's units
    assert all(math.isfinite(r["val_loss"]) and r["val_loss"] < 10 for r in curve)      # losses over the constant
    model.save(tmp_path / "p.safetensors", meta={"normalize": "raw"})
    again, _ = load_predictor(tmp_path / "p.safetensors")
    assert again.target_scale == model.target_scale
    with torch.no_grad():
        torch.testing.assert_close(again(x), p, rtol=0, atol=0)
        torch.testing.assert_close(ShadowPredictor.from_trained(again)(x), p, rtol=1e-5, atol=1e-14)
    # the decoder's per-layer view folds each kind's constant the same way
    xl = torch.randn(40, 3, 8, generator=g)
    dj, _ = train_predictor("dejavu", xl, y[:40], n_heads=2, hidden=8, epochs=2, batch_size=8, seed=0)
    view = DejaVuPredictor.from_trained(dj)
    with torch.no_grad():
        torch.testing.assert_close(view(2, xl[:, 2]), dj(xl[:, 2], layer=2), rtol=1e-5, atol=1e-14)
    # layer targets: no constant
    m2, _ = train_predictor("shadowllm", x, y, n_heads=2, hidden=8, epochs=1, seed=0, normalize_targets="layer")
    assert m2.target_scale == {"heads": 1.0, "neurons": 1.0}


def test_static_table_in_raw_equals_the_traces_static_means(tmp_path):
    from safetensors.torch import load_file
    from test_predictors_cli import H, fake_traces

    from shadowllm.predictors.data import load_trace_set

    folder = fake_traces(tmp_path / "a" / "k0", seed=1)
    ts = load_trace_set([folder], "plainact", "context", 0)
    model, _ = train_predictor("static", ts.X, ts.Y, placement=0, normalize_targets="raw", groups=ts.ids)
    f = load_file(str(folder / "plainact.safetensors"))
    for kind, sl in (("heads", slice(0, H)), ("neurons", slice(H, None))):
        want = f[f"{kind}_mean"]                                                 # mean of the raw scores, [L, U]
        tol = 1e-3 * float((f[f"{kind}_hi"] - f[f"{kind}_lo"]).max())           # the traces' float16 map
        torch.testing.assert_close(model.table[1:, sl], want[1:], rtol=0, atol=tol)
        assert torch.all(model.table[0, sl] == 0)
    # in `layer` the table is the mean of the min-maxed scores instead: every value in [0, 1]
    lay, _ = train_predictor("static", ts.X, ts.Y, placement=0, normalize_targets="layer", groups=ts.ids)
    assert lay.table.min() >= 0 and lay.table.max() <= 1 and not torch.allclose(lay.table, model.table)


def test_train_predictor_cli_seed_is_the_axis_and_the_held_out_split_stays(tmp_path):
    import json

    import pandas as pd
    from test_predictors_cli import fake_traces

    from shadowllm.cli import main
    from shadowllm.predictors.designs import load_static_table

    t = fake_traces(tmp_path / "a" / "k0", seed=1)
    outs = []
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        assert main(["train-predictor", "--traces", str(t), "--criterion", "plainact", "--design", "static",
                     "--normalize", "layer", "--seed", str(seed), "--held-out-seed", "7", "--threads", "1",
                     "--out-dir", str(out)]) == 0
        outs.append(out)
    tabs = [load_static_table(o / "predictor.safetensors") for o in outs]
    assert tabs[0][1] == {"model": "m", "criterion": "plainact", "design": "static", "position": "context",
                          "placement": 0, "normalize": "layer", "seed": 0}
    assert tabs[1][1]["seed"] == 1
    assert torch.equal(tabs[0][0].table, tabs[1][0].table)          # same held-out split; the table has no seed
    info = [json.loads((o / "curve.json").read_text()) for o in outs]
    assert info[0]["held_out_seed"] == info[1]["held_out_seed"] == 7 and info[0]["n_test"] == info[1]["n_test"]
    df = pd.read_csv(outs[1] / "metrics.csv")
    assert set(df.seed) == {1} and set(df.normalize) == {"layer"}


# ---------------------------------------------------------------------------------------------- mask sources
def _adapter():
    from conftest import tiny_opt

    from shadowllm.adapter import get_adapter

    return get_adapter(tiny_opt())


def test_a_static_table_or_predictor_of_another_normalisation_or_seed_is_refused(tmp_path):
    from shadowllm.ablations.sources import Settings, build
    from shadowllm.predictors.designs import StaticScores
    from shadowllm.predictors.model import Predictor

    ad = _adapter()
    path = tmp_path / "t.safetensors"
    meta = {"model": "m", "criterion": "plainact", "design": "static", "placement": 0}
    StaticScores(ad.n_layers, ad.n_heads, ad.n_neurons).save(path, meta={**meta, "normalize": "layer"})
    p = Point("static", "plainact", "raw", "0+5", 0, 0, "global", "both", "none", 0.5).check()
    with pytest.raises(ValueError, match="made for another grid point: normalize is 'layer', expected 'raw'"):
        build(ad, Settings(point=p, model="m", predictor=str(path)))
    build(ad, Settings(point=Point("static", "plainact", "layer", "0+5", 0, 0, "global", "both", "none", 0.5),
                       model="m", predictor=str(path)))                          # its own space: accepted
    net = tmp_path / "n.safetensors"
    Predictor("shadowllm", ad.n_heads * ad.head_dim, ad.n_layers, ad.n_heads, ad.n_neurons, hidden_heads=4,
              hidden_neurons=4).save(net, meta={**meta, "design": "shadowllm", "normalize": "raw", "seed": 1})
    q = Point("predicted", "plainact", "raw", "0+5", 2, 0, "global", "both", "prompt", 0.5).check()
    with pytest.raises(ValueError, match="seed is 1, expected 2"):
        build(ad, Settings(point=q, model="m", predictor=str(net)))


def test_random_scores_come_from_the_points_seed():
    from shadowllm.ablations.sources import Settings, build
    from shadowllm.masks import mask_from_scores, random_scores

    ad = _adapter()
    masks = {}
    for seed in (0, 3):
        p = Point("random", seed=seed, style="global", units="both", sparsity=0.5).check()
        masks[seed] = build(ad, Settings(point=p, model="m", seed=p.seed, min_neurons=8))(None).mask
        want = mask_from_scores(*random_scores(ad, seed), 0.5, "global", min_neurons=8)
        assert torch.equal(masks[seed].heads, want.heads) and torch.equal(masks[seed].neurons, want.neurons)
    assert not torch.equal(masks[0].neurons, masks[3].neurons)


@pytest.mark.parametrize("mode", ["layer", "raw"])
def test_oracle_ranks_its_scores_in_the_points_space(monkeypatch, mode):
    """The criterion's scores (here handed in for the collection pass) min-maxed by hand per (example, layer)
    under `layer`, as they are under `raw`, then the top-k: the oracle's mask."""
    import shadowllm.importance.collect as collect_mod
    from shadowllm.ablations.sources import Batch, Settings, build
    from shadowllm.masks import mask_from_scores

    ad = _adapter()
    L, H, F = ad.n_layers, ad.n_heads, ad.n_neurons
    g = torch.Generator().manual_seed(4)
    scale = torch.tensor([1.0, 1.0, 100.0])[:, None]                              # layer 2 dwarfs layer 1
    hs, ns = torch.rand(2, L, H, generator=g) * scale, torch.rand(2, L, F, generator=g) * scale
    seen = []

    def fake_collect(model, examples, names, batch_size=8, pad_token_id=0):
        seen.append(len(examples))
        return SimpleNamespace(heads={names[0]: hs[:len(examples)].double()},
                               neurons={names[0]: ns[:len(examples)].double()})
    monkeypatch.setattr(collect_mod, "collect", fake_collect)
    p = Point("oracle", "plainact", mode, "none", 0, 0, "global", "both", "gold", 0.5).check()
    masks = build(ad, Settings(point=p, model="m", min_neurons=8))
    batch = Batch(x=torch.zeros(2, 4, dtype=torch.long), lengths=torch.tensor([4, 4]), ctx_pos=torch.tensor([1, 1]),
                  gold=[([5, 6], [7, 8]), ([9, 10], [11, 12])])
    got = masks(batch).mask

    def by_hand(s):
        if mode == "raw":
            return s
        out = torch.zeros_like(s)
        for b in range(s.shape[0]):
            for l in range(1, L):
                lo, hi = min(s[b, l].tolist()), max(s[b, l].tolist())
                out[b, l] = torch.tensor([(v - lo) / (hi - lo) for v in s[b, l].tolist()])
        return out
    want = mask_from_scores(by_hand(hs), by_hand(ns), 0.5, "global", min_neurons=8)
    assert seen == [2]
    assert torch.equal(got.heads, want.heads) and torch.equal(got.neurons, want.neurons)
    kept_l1 = got.neurons[:, 1].sum(-1)                                          # of 64 per example
    assert bool((kept_l1 > 16).all()) == (mode == "layer")                       # raw: layer 2 takes nearly all


# ---------------------------------------------------------------------------------------------- grid, workflow
def test_a_point_names_normalize_and_seed_in_its_path_and_reads_them_back():
    p = Point("predicted", "plainact", "layer", "0+5", 2, 0, "global", "both", "prompt", 0.5).check()
    assert p.path() == ("source=predicted/criterion=plainact/normalize=layer/shots=0+5/seed=2/placement=0/"
                        "style=global/units=both/protocol=prompt/sparsity=0.5")
    wc = dict(part.split("=", 1) for part in p.path().split("/"))
    assert Point.from_wildcards(wc) == p
    assert set(p.axes("m")) == set(AXES) and p.axes("m")["normalize"] == "layer" and p.axes("m")["seed"] == 2
    assert AXES.index("normalize") == AXES.index("criterion") + 1 and AXES.index("seed") == AXES.index("shots") + 1


def _small_cfg(**grid):
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/test-small.yaml").read_text())
    cfg.pop("masks", None)   # its random points are not this grid's
    cfg["ablations"]["grids"] = {"g": {"source": ["static", "predicted", "dejavu", "oracle", "random"],
                                       "criterion": ["plainact"], "protocol": ["prompt"], **grid}}
    return cfg


def test_sub_grids_name_their_normalisations_and_seeds():
    from shadowllm.layout.grid import expand
    from shadowllm.config import ConfigError, validate

    pts = expand(validate(_small_cfg(normalize=["raw", "layer"], seeds=[1, 2])))
    by = {}
    for p in pts:
        by.setdefault(p.source, set()).add((p.normalize, p.seed))
    assert by["dense"] == {("none", 0)}
    assert by["random"] == {("none", 1), ("none", 2)}
    assert by["static"] == by["oracle"] == {("raw", 0), ("layer", 0)}
    assert by["predicted"] == by["dejavu"] == {(n, s) for n in ("raw", "layer") for s in (1, 2)}
    plain = expand(validate(_small_cfg()))                                         # defaults: raw, the first seed
    assert {(p.normalize, p.seed) for p in plain if p.source == "predicted"} == {("raw", 0)}
    cfg = _small_cfg()
    cfg["predictors"]["seeds"] = [4, 5]
    cfg["ablations"]["normalize"] = ["example"]
    assert {(p.normalize, p.seed) for p in expand(validate(cfg)) if p.source == "dejavu"} == {("example", 4)}
    bad = _small_cfg(seeds=[1])
    bad["ablations"]["grids"]["g"]["source"] = ["static", "oracle"]
    with pytest.raises(ConfigError, match="seeds \\[1\\] apply to predicted, dejavu and random only"):
        validate(bad)


def test_the_workflow_trains_the_predictors_of_the_grids_normalisations_and_seeds(tmp_path):
    import yaml
    from test_workflow import snakemake

    cfg = _small_cfg(normalize=["layer"], seeds=[2])
    cfg["run"] = "norm-seed-plan"
    cfg["predictors"]["seeds"] = [0, 1]
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(cfg))
    r = snakemake("-n", "-p", "--configfile", str(f))
    assert r.returncode == 0, r.stderr[-3000:]
    cmds = [line.split("Shell command: ", 1)[1] for line in r.stdout.splitlines() if "Shell command: " in line]
    trained = {c.split("--out-dir ")[1].split()[0].split("/predictors/")[1] for c in cmds
               if "shadowllm train-predictor" in c}
    # the predictor grid: 2 criteria x 3 designs at raw, seeds 0 and 1; the ablation grid: layer, seed 2 (static:
    # the first predictor seed's table)
    grid = {f"tiny-opt/criterion={c}/design={d}/position=context/placement=0/normalize=raw/seed={s}"
            for c in ("plainact", "l2_norm") for d in ("shadowllm", "dejavu", "static") for s in (0, 1)}
    asked = {f"tiny-opt/criterion=plainact/design={d}/position=context/placement=0/normalize=layer/seed={s}"
             for d, s in (("shadowllm", 2), ("dejavu", 2), ("static", 0))}
    assert trained == grid | asked
    ablate = [c for c in cmds if "shadowllm ablate-point" in c]
    assert any("--source predicted" in c and "--normalize layer" in c and "--point-seed 2" in c
               and "/normalize=layer/seed=2/predictor.safetensors" in c for c in ablate)
    assert any("--source random" in c and "--normalize none" in c and "--point-seed 2" in c for c in ablate)
