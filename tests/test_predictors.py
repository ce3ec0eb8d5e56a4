"""Predictor designs, training and metrics: learned designs recover a known ranking function, the static baseline
does not; training is deterministic per seed; metrics match scipy and hand counts; bad input fails early."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from shadowllm.predictors import load_predictor
from shadowllm.predictors.designs import DESIGNS, Design, get_design, register
from shadowllm.predictors.metrics import evaluate_predictions, mean_metric, static_scores
from shadowllm.predictors.model import minmax
from shadowllm.predictors.train import _split, normalise_targets, train_predictor

N, D, L, H, F = 2200, 8, 4, 4, 12
N_TEST = 200
FAST = {"hidden": 256, "epochs": 40, "lr": 3e-3, "batch_size": 64, "patience": 5, "normalize_targets": "global"}


def _centred(x):
    x = minmax(x)
    return x - x.mean(-1, keepdim=True)


@pytest.fixture(scope="module")
def task():
    """Targets = softplus(2 * fixed linear map of the centred, min-max normalised input); dejavu's layer-l input
    is a fixed random rotation of x, and layer l's targets are the same function of that input."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    w = torch.randn(L, H + F, D, generator=g)                                   # [L, U, d]
    r = torch.randn(L, D, D, generator=g) / D ** 0.5
    x_layers = torch.einsum("nd,lde->nle", x, r)                                # [N, L, d]
    f = lambda z: torch.nn.functional.softplus(2 * z)                           # monotone
    return {"shadowllm": (x, f(torch.einsum("nd,lud->nlu", _centred(x), w))),
            "dejavu": (x_layers, f(torch.einsum("nld,lud->nlu", _centred(x_layers), w))),
            "static": (x, f(torch.einsum("nd,lud->nlu", _centred(x), w)))}


@pytest.fixture(scope="module")
def trained(task):
    out = {}
    for name, (x, y) in task.items():
        model, curve = train_predictor(name, x[:-N_TEST], y[:-N_TEST], n_heads=H, seed=0, **FAST)
        out[name] = (model, curve)
    return out


def _held_out_rows(task, trained, name):
    x, y = task[name]
    pred = DESIGNS[name].predict(trained[name][0], x[-N_TEST:])
    return evaluate_predictions(pred, y[-N_TEST:], H, sparsities=(0.5,), metrics=("spearman", "recall"))


def test_registry_has_the_three_designs_and_rejects_unknown_or_duplicate_names():
    assert set(DESIGNS) >= {"shadowllm", "dejavu", "static"}
    assert get_design("static") is DESIGNS["static"]
    with pytest.raises(ValueError, match="'fullseq' is not one of"):
        get_design("fullseq")
    with pytest.raises(ValueError, match="'dejavu' is already registered"):
        register("dejavu")(type("Again", (Design,), {}))


@pytest.mark.parametrize("name", ["shadowllm", "dejavu"])
def test_learned_design_recovers_a_known_ranking_function(task, trained, name):
    rows = _held_out_rows(task, trained, name)
    assert mean_metric(rows, "spearman", scope="model") > 0.95
    static = mean_metric(_held_out_rows(task, trained, "static"), "spearman", scope="model")
    assert static < 0.2, "the synthetic task must not be solvable by one fixed ranking"
    assert mean_metric(rows, "recall", scope="layer", sparsity=0.5) > \
        mean_metric(_held_out_rows(task, trained, "static"), "recall", scope="layer", sparsity=0.5) + 0.3


def test_static_design_is_the_mean_of_normalised_training_targets(task, trained):
    x, y = task["static"]
    model, curve = trained["static"]
    assert len(curve) == 1 and curve[0]["lr"] == 0.0
    pred = DESIGNS["static"].predict(model, x[:5])                              # [5, L, U]
    assert pred.shape == (5, L, H + F) and torch.equal(pred[0], pred[4])
    assert torch.all(pred[:, 0] == 0)                                           # placement layer 0: unscored
    # its table is the mean over the (seeded) training split: close to the mean over all training examples
    full = static_scores(normalise_targets(y[:-N_TEST], "global", 0))
    assert torch.allclose(pred[0, 1:], full[1:], atol=0.02)


def test_per_layer_targets_train_and_rank_within_layers(task):
    x, y = task["shadowllm"]
    model, curve = train_predictor("shadowllm", x[:-N_TEST], y[:-N_TEST], n_heads=H, seed=0,
                                   **{**FAST, "normalize_targets": "per_layer"})
    pred = DESIGNS["shadowllm"].predict(model, x[-N_TEST:])
    rows = evaluate_predictions(pred, y[-N_TEST:], H, metrics=("spearman",))
    assert mean_metric(rows, "spearman", scope="layer") > 0.93
    assert curve[-1]["val_loss"] < curve[0]["val_loss"] / 3


def test_normalise_targets_per_layer_and_global():
    y = torch.rand(3, 4, 5) * torch.tensor([1.0, 10.0, 100.0, 1000.0])[:, None]
    per = normalise_targets(y, "per_layer", placement=1)
    glo = normalise_targets(y, "global", placement=1)
    assert torch.all(per[:, :2] == 0) and torch.all(glo[:, :2] == 0)
    torch.testing.assert_close(per[:, 2:].amin(-1), torch.zeros(3, 2))
    torch.testing.assert_close(per[:, 2:].amax(-1), torch.ones(3, 2))
    torch.testing.assert_close(glo[:, 2:].amax((-2, -1)), torch.ones(3))
    assert torch.all(glo[:, 2].amax(-1) < 0.2)                                  # layer 3 holds each maximum


@pytest.mark.parametrize("name", ["shadowllm", "dejavu"])
def test_saved_and_reloaded_predictor_gives_identical_scores(task, trained, tmp_path, name):
    x, _ = task[name]
    model = trained[name][0]
    model.save(tmp_path / "p.safetensors", meta={"design": name})
    again, meta = load_predictor(tmp_path / "p.safetensors", expect={"n_layers": L, "n_heads": H, "n_neurons": F})
    assert meta == {"design": name}
    assert torch.equal(DESIGNS[name].predict(again, x[-N_TEST:]), DESIGNS[name].predict(model, x[-N_TEST:]))


@pytest.mark.parametrize("name", ["shadowllm", "dejavu"])
def test_training_is_bit_identical_for_a_seed_and_differs_across_seeds(task, name):
    x, y = task[name]
    x, y = x[:300], y[:300]
    kw = {"n_heads": H, "hidden": 32, "epochs": 3, "lr": 3e-3, "batch_size": 32, "placement": 1}
    rng = torch.get_rng_state()
    a, ca = train_predictor(name, x, y, seed=7, **kw)
    assert torch.equal(torch.get_rng_state(), rng), "training must not touch the global RNG"
    b, cb = train_predictor(name, x, y, seed=7, **kw)
    c, _ = train_predictor(name, x, y, seed=8, **kw)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and ca == cb
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert [r["epoch"] for r in ca] == [0, 1, 2] and ca[0]["lr"] == 3e-3 and ca[2]["lr"] < ca[1]["lr"]
    # layers 0..placement are not in the loss: garbage there changes nothing
    y2 = y.clone()
    y2[:, :2] = 1e6
    d, cd = train_predictor(name, x, y2, seed=7, **kw)
    assert all(torch.equal(sa[k], d.state_dict()[k]) for k in sa) and cd == ca


def test_early_stopping_keeps_the_best_weights(task):
    x, y = task["shadowllm"]
    logged = []
    model, curve = train_predictor("shadowllm", x[:200], y[:200], n_heads=H, hidden=32, epochs=40, lr=0.3,
                                   batch_size=16, patience=2, seed=0, log=logged.append)
    assert logged == curve and len(curve) < 40
    best = min(r["val_loss"] for r in curve)
    assert all(r["val_loss"] > best for r in curve[-2:])
    _, va = _split(200, 0.1, seed=0)                                            # the split training used
    yv = normalise_targets(y[va], "per_layer", 0)[:, 1:]
    with torch.no_grad():
        got = torch.nn.functional.mse_loss(model(x[va])[:, 1:], yv).item()
    assert got == pytest.approx(best, rel=1e-5)


# ---------------------------------------------------------------------------------------------- metrics by hand
# 3 examples, L=3 (layer 0 = placement, unscored), H=2 heads then F=3 neurons per layer.
HEADS_T = [[[1, 2], [4, 3]], [[2, 1], [0, 3]], [[1, 3], [2, 4]]]                # [ex][layer 1..2][head]
HEADS_P = [[[.1, .2], [.3, .4]], [[.5, .6], [.1, .9]], [[.2, .1], [.3, .4]]]
NEUR_T = [[[3, 1, 2], [0, 5, 4]], [[1, 1, 3], [1, 2, 3]], [[5, 6, 7], [7, 6, 5]]]
NEUR_P = [[[.9, .1, .5], [.2, .3, .8]], [[.3, .2, .1], [.1, .2, .3]], [[1, 2, 3], [1, 2, 3]]]


def _hand_case():
    def full(heads, neurons, layer0):
        t = torch.cat([torch.tensor(heads, dtype=torch.float64), torch.tensor(neurons, dtype=torch.float64)], -1)
        return torch.cat([torch.full((3, 1, 5), layer0, dtype=torch.float64), t], 1)   # [3, 3, 5]
    return full(HEADS_P, NEUR_P, 99.0), full(HEADS_T, NEUR_T, -5.0)


def _value(rows, unit, scope, layer, metric, sparsity=None):
    hit = [r["value"] for r in rows if (r["unit"], r["scope"], r["layer"], r["metric"], r["sparsity"])
           == (unit, scope, layer, metric, sparsity)]
    assert len(hit) == 1, (unit, scope, layer, metric, sparsity)
    return hit[0]


def test_metrics_match_scipy_and_hand_counts():
    pred, true = _hand_case()
    rows = evaluate_predictions(pred, true, H=2, sparsities=(0.3, 0.7))
    assert len(rows) == 2 * 3 * 4                                               # 2 units x (model + 2 layers) x 4
    # hand: layer-1 neurons, rho per example = 1, -sqrt(3)/2 (true ties 1,1), 1; tau-b = 1, -2/sqrt(6), 1
    assert _value(rows, "neurons", "layer", 1, "spearman") == pytest.approx((2 - math.sqrt(3) / 2) / 3, abs=1e-12)
    assert _value(rows, "neurons", "layer", 1, "kendall") == pytest.approx((2 - 2 / math.sqrt(6)) / 3, abs=1e-12)
    # scipy as the independent oracle, every scope
    for unit, p, t in (("heads", HEADS_P, HEADS_T), ("neurons", NEUR_P, NEUR_T)):
        for layer, sel in ((-1, lambda a: a[0] + a[1]), (1, lambda a: a[0]), (2, lambda a: a[1])):
            for metric, fn in (("spearman", spearmanr), ("kendall", kendalltau)):
                want = sum(fn(sel(p[i]), sel(t[i])).statistic for i in range(3)) / 3
                scope = "model" if layer == -1 else "layer"
                assert _value(rows, unit, scope, layer, metric) == pytest.approx(want, abs=1e-12), (unit, layer)
    # top-k recall by hand: heads keep k=1 at both sparsities; neurons keep k=2 (s=0.3) and k=1 (s=0.7).
    # at k=2, example 1 layer 1 truth [1, 1, 3] ties at the 2nd place: the predicted {0, 1} earn one hit.
    recall = {("heads", -1): (1 / 2, 1 / 2), ("heads", 1): (1 / 3, 1 / 3), ("heads", 2): (2 / 3, 2 / 3),
              ("neurons", -1): (2.5 / 3, 1 / 2), ("neurons", 1): (2.5 / 3, 2 / 3), ("neurons", 2): (2.5 / 3, 1 / 3)}
    for (unit, layer), (at3, at7) in recall.items():
        scope = "model" if layer == -1 else "layer"
        assert _value(rows, unit, scope, layer, "recall", 0.3) == pytest.approx(at3, abs=1e-12), (unit, layer)
        assert _value(rows, unit, scope, layer, "recall", 0.7) == pytest.approx(at7, abs=1e-12), (unit, layer)


def test_metrics_reject_bad_shapes_and_sparsities():
    pred, true = _hand_case()
    with pytest.raises(ValueError, match=r"pred_scores \(3, 2, 5\) and true_scores \(3, 3, 5\)"):
        evaluate_predictions(pred[:, 1:], true, H=2)
    with pytest.raises(ValueError, match="sparsity 0.9 keeps no unit of 2"):
        evaluate_predictions(pred, true, H=2, sparsities=(0.9,))
    with pytest.raises(ValueError, match="placement layer 2 leaves no layer"):
        evaluate_predictions(pred, true, H=2, placement=2)
    pred[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="pred_scores contains NaN or inf .first at example 1"):
        evaluate_predictions(pred, true, H=2)


# ---------------------------------------------------------------------------------------------- bad input
def _bad(case):
    x, y = torch.randn(20, D), torch.rand(20, L, H + F)
    kw = {}
    if case == "nan target":
        y[13, 2, 5] = float("nan")
        return x, y, kw, r"targets Y contains NaN or inf \(first at example 13\)"
    if case == "inf input":
        x[4, 0] = float("inf")
        return x, y, kw, r"inputs X contains NaN or inf \(first at example 4\)"
    if case == "one example":
        return x[:1], y[:1], kw, "at least 2 examples .*got 1"
    if case == "empty validation":
        return x, y, {"val_fraction": 0.01}, "splits 20 examples into 20 train and 0 validation"
    if case == "placement":
        return x, y, {"placement": L - 1}, f"placement layer {L - 1} is outside 0..{L - 2}"
    if case == "shape":
        return x[:19], y, kw, r"inputs X \(19, 8\) and targets Y \(20, 4, 16\)"
    if case == "dejavu wants per-layer input":
        return x, y, {"design": "dejavu"}, r"design 'dejavu' takes inputs \[N, L=4, d\], got shape \(20, 8\)"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["nan target", "inf input", "one example", "empty validation", "placement",
                                  "shape", "dejavu wants per-layer input"])
def test_bad_input_is_refused_before_any_work(case, tmp_path, monkeypatch):
    x, y, kw, msg = _bad(case)
    design = kw.pop("design", "shadowllm")
    monkeypatch.chdir(tmp_path)
    logged = []
    with pytest.raises(ValueError, match=msg):
        train_predictor(design, x, y, n_heads=H, hidden=8, epochs=1, log=logged.append, **kw)
    assert logged == [] and list(tmp_path.iterdir()) == []
