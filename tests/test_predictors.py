"""Predictor designs, training and metrics: learned designs recover a known ranking function, the static baseline
does not; training is deterministic per seed; metrics match scipy and hand counts; bad input fails early."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import kendalltau, spearmanr

from shadowllm.predictors import load_predictor
from shadowllm.predictors.designs import DESIGNS, Design, get_design, register
from shadowllm.predictors.metrics import (
    evaluate_predictions,
    mean_metric,
    static_scores,
)
from shadowllm.predictors.model import Predictor, minmax, n_parameters
from shadowllm.predictors.rows import SeqRows
from shadowllm.predictors.normalize import normalize_scores
from shadowllm.predictors.train import _split, train_predictor

N, D, L, H, F = 2200, 8, 4, 4, 12
N_TEST = 200
FAST = {"hidden": 256, "epochs": 40, "lr": 3e-3, "batch_size": 64, "patience": 5, "normalize_targets": "raw"}


def _centred(x):
    x = minmax(x)
    return x - x.mean(-1, keepdim=True)


@pytest.fixture(scope="module")
def task():
    """Targets = softplus(2 * fixed linear map of the centred, min-max normalised input); dejavu's layer-l input
    is a fixed random rotation of x, and layer l's targets are the same function of that input; fullseq's input
    is a sequence of 2..9 tokens whose per-token min-max normalised mean plays the role of x."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    w = torch.randn(L, H + F, D, generator=g)                                   # [L, U, d]
    r = torch.randn(L, D, D, generator=g) / D ** 0.5
    x_layers = torch.einsum("nd,lde->nle", x, r)                                # [N, L, d]
    f = lambda z: torch.nn.functional.softplus(2 * z)                           # monotone
    n = torch.randint(2, 10, (N,), generator=g)
    flat = torch.randn(int(n.sum()), D, generator=g)                            # [sum T, d]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), n.cumsum(0)])
    pooled = torch.stack([minmax(flat[a:b]).mean(0) for a, b in zip(offsets[:-1], offsets[1:])])
    pooled = pooled - pooled.mean(-1, keepdim=True)
    return {"shadowllm": (x, f(torch.einsum("nd,lud->nlu", _centred(x), w))),
            "dejavu": (x_layers, f(torch.einsum("nld,lud->nlu", _centred(x_layers), w))),
            "fullseq": (SeqRows([(flat, offsets, n)]), f(torch.einsum("nd,lud->nlu", pooled, w))),
            "static": (x, f(torch.einsum("nd,lud->nlu", _centred(x), w)))}


def _part(x, sl):
    return x.take(range(len(x))[sl]) if isinstance(x, SeqRows) else x[sl]


@pytest.fixture(scope="module")
def trained(task):
    out = {}
    for name, (x, y) in task.items():
        model, curve = train_predictor(name, _part(x, slice(None, -N_TEST)), y[:-N_TEST], n_heads=H, seed=0,
                                       **FAST)
        out[name] = (model, curve)
    return out


def _held_out_rows(task, trained, name):
    x, y = task[name]
    pred = DESIGNS[name].predict(trained[name][0], _part(x, slice(-N_TEST, None)))
    return evaluate_predictions(pred, y[-N_TEST:], H, sparsities=(0.5,), metrics=("spearman", "recall"))


def test_registry_has_the_four_designs_and_rejects_unknown_or_duplicate_names():
    assert set(DESIGNS) >= {"shadowllm", "dejavu", "fullseq", "static"}
    assert get_design("static") is DESIGNS["static"]
    with pytest.raises(ValueError, match="'seq2seq' is not one of"):
        get_design("seq2seq")
    with pytest.raises(ValueError, match="'dejavu' is already registered"):
        register("dejavu")(type("Again", (Design,), {}))


@pytest.mark.parametrize("name", ["shadowllm", "dejavu", "fullseq"])
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
    assert [(r["kind"], r["lr"]) for r in curve] == [("heads", 0.0), ("neurons", 0.0)]
    pred = DESIGNS["static"].predict(model, x[:5])                              # [5, L, U]
    assert pred.shape == (5, L, H + F) and torch.equal(pred[0], pred[4])
    assert torch.all(pred[:, 0] == 0)                                           # placement layer 0: unscored
    # its table is the mean of each kind's (raw) targets over every training example (no early stopping: the
    # validation split is only reported)
    for sl in (slice(0, H), slice(H, H + F)):
        full = static_scores(normalize_scores(y[:-N_TEST, :, sl], "raw", 0))
        torch.testing.assert_close(pred[0, 1:, sl], full[1:], rtol=1e-5, atol=1e-6)


def test_per_layer_targets_train_and_rank_within_layers(task):
    x, y = task["shadowllm"]
    model, curve = train_predictor("shadowllm", x[:-N_TEST], y[:-N_TEST], n_heads=H, seed=0,
                                   **{**FAST, "normalize_targets": "layer"})
    pred = DESIGNS["shadowllm"].predict(model, x[-N_TEST:])
    rows = evaluate_predictions(pred, y[-N_TEST:], H, metrics=("spearman",))
    assert mean_metric(rows, "spearman", scope="layer") > 0.93
    assert curve[-1]["val_loss"] < curve[0]["val_loss"] / 3


@pytest.mark.parametrize("name", ["shadowllm", "dejavu", "fullseq"])
def test_saved_and_reloaded_predictor_gives_identical_scores(task, trained, tmp_path, name):
    x, _ = task[name]
    x = _part(x, slice(-N_TEST, None))
    model = trained[name][0]
    model.save(tmp_path / "p.safetensors", meta={"design": name})
    again, meta = load_predictor(tmp_path / "p.safetensors", expect={"n_layers": L, "n_heads": H, "n_neurons": F})
    assert meta == {"design": name} and again.config() == model.config()
    assert torch.equal(DESIGNS[name].predict(again, x), DESIGNS[name].predict(model, x))


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
    assert [(r["kind"], r["epoch"]) for r in ca] == [(k, e) for k in ("heads", "neurons") for e in range(3)]
    assert ca[0]["lr"] == 3e-3 and ca[2]["lr"] < ca[1]["lr"] and ca[3]["lr"] == 3e-3
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
    assert logged == curve
    _, va = _split(200, 0.1, seed=0)                                            # the split training used
    for kind, sl in (("heads", slice(0, H)), ("neurons", slice(H, H + F))):
        rows = [r for r in curve if r["kind"] == kind]
        assert len(rows) < 40, f"{kind} did not stop early"
        best = min(r["val_loss"] for r in rows)
        assert all(r["val_loss"] > best for r in rows[-2:])
        # raw targets (the default), each kind over its own constant, which the model multiplies back
        scale = model.target_scale[kind]
        yv = normalize_scores(y[va][..., sl], "raw", 0)[:, 1:] / scale
        with torch.no_grad():
            got = torch.nn.functional.mse_loss(model(x[va], kind=kind)[:, 1:] / scale, yv).item()
        assert got == pytest.approx(best, rel=1e-5), kind


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
        return x, y, kw, r"targets Y \(neurons\) contains NaN or inf \(first at example 13\)"
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
        return x[:19], y, kw, r"inputs X \(19, 8\) and targets Y .* have different example counts"
    if case == "dejavu wants per-layer input":
        return x, y, {"design": "dejavu"}, r"design 'dejavu' takes inputs \[N, L=4, d\], got flat rows of shape \(20, 8\)"
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


# ---------------------------------------------------------------------------------------------- kinds, rows, sizes
def test_heads_and_neurons_train_separately_with_their_own_settings(task):
    x, y = task["shadowllm"]
    per_kind = {"heads": {"hidden": 24, "epochs": 3, "batch_size": 50}, "neurons": {"hidden": 8, "epochs": 2}}
    model, curve = train_predictor("shadowllm", x[:300], y[:300], n_heads=H, hidden=16, epochs=9, batch_size=30,
                                   per_kind=per_kind, seed=0)
    assert model.hidden == {"heads": 24, "neurons": 8}
    assert [(r["kind"], r["epoch"]) for r in curve] == [("heads", 0), ("heads", 1), ("heads", 2),
                                                        ("neurons", 0), ("neurons", 1)]
    # each kind's network sees only its own targets: scrambling the neuron targets leaves the heads' weights alone
    y2 = y[:300].clone()
    y2[..., H:] = torch.rand_like(y2[..., H:])
    again, _ = train_predictor("shadowllm", x[:300], y2, n_heads=H, hidden=16, epochs=9, batch_size=30,
                               per_kind=per_kind, seed=0)
    a, b = model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("nets.heads."))
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("nets.neurons."))
    with pytest.raises(ValueError, match="neurons epochs 0 must be an integer >= 1"):
        train_predictor("shadowllm", x[:30], y[:30], n_heads=H, per_kind={"neurons": {"epochs": 0}})
    with pytest.raises(ValueError, match=r"per-kind settings for \['attention'\]"):
        train_predictor("shadowllm", x[:30], y[:30], n_heads=H, per_kind={"attention": {"epochs": 1}})


def test_training_from_memory_mapped_traces_equals_training_in_memory(task, tmp_path):
    """Streaming reads the same numbers: the traces' float16 [0, 1] map undone per (example, layer) row."""
    from safetensors.torch import save_file

    from shadowllm.importance.traces import dequantize, quantize
    from shadowllm.io import mmap_safetensors
    from shadowllm.predictors.rows import ArrayRows

    x, y = task["shadowllm"]
    x, y = x[:240], y[:240]
    tensors = {"x": x.half()}
    for kind, sl in (("heads", slice(0, H)), ("neurons", slice(H, H + F))):
        q, lo, hi = quantize(y[..., sl])
        tensors.update({kind: q, f"{kind}_lo": lo, f"{kind}_hi": hi})
    save_file(tensors, str(tmp_path / "t.safetensors"))
    m = mmap_safetensors(tmp_path / "t.safetensors")
    X = ArrayRows([m["x"]])
    Y = {k: ArrayRows([m[k]], scale=[(m[f"{k}_lo"], m[f"{k}_hi"])], kind="scores") for k in ("heads", "neurons")}
    idx = torch.tensor([7, 3, 200, 3])
    for k in Y:  # independent reference: the traces' own dequantisation of whole tensors
        want = dequantize(tensors[k], tensors[f"{k}_lo"], tensors[f"{k}_hi"])[idx]
        torch.testing.assert_close(Y[k][idx], want, rtol=0, atol=1e-6)
    kw = {"n_heads": H, "hidden": 16, "epochs": 2, "batch_size": 32, "seed": 3}
    streamed, c1 = train_predictor("shadowllm", X, Y, **kw)
    yq = torch.cat([Y["heads"][:], Y["neurons"][:]], -1)
    held, c2 = train_predictor("shadowllm", x.half().float(), yq, **kw)
    assert c1 == c2
    assert all(torch.equal(v, held.state_dict()[k]) for k, v in streamed.state_dict().items())
    sub = X.take(torch.tensor([5, 1])).take([1])                                # views compose
    assert torch.equal(sub[0], x.half().float()[1:2])


def test_fullseq_attention_ignores_whatever_lies_beyond_each_length():
    torch.manual_seed(0)
    pred = Predictor("fullseq", D, L, H, F, hidden_heads=8, hidden_neurons=8).eval()
    from shadowllm.predictors.model import Packed
    x = torch.randn(2, 6, D)
    short = Packed(x.clone(), torch.tensor([4, 6]))
    garbage = x.clone()
    garbage[0, 4:] = 1e3                                                          # beyond example 0's length
    with torch.no_grad():
        a = pred(short)
        b = pred(Packed(garbage, torch.tensor([4, 6])))
        alone = pred(Packed(x[:1, :4], torch.tensor([4])))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a[:1], alone, rtol=1e-6, atol=1e-6)
    assert a.shape == (2, L, H + F)


@pytest.mark.parametrize("design", ["shadowllm", "dejavu", "fullseq"])
def test_parameter_count_from_shapes_equals_the_built_network(design):
    kw = {"hidden_heads": 12, "hidden_neurons": 5, "placement": 1}
    built = Predictor(design, D, L, H, F, **kw)
    counted = n_parameters(design, D, L, H, F, **kw)
    for kind in ("heads", "neurons"):
        assert counted[kind] == sum(p.numel() for p in built.part(kind)), kind
    assert sum(counted.values()) == sum(p.numel() for p in built.parameters())


def test_metrics_added_chunk_by_chunk_equal_metrics_at_once():
    from shadowllm.predictors.metrics import MetricAccumulator
    g = torch.Generator().manual_seed(1)
    p, t = torch.rand(23, L, H + F, generator=g), torch.rand(23, L, H + F, generator=g)
    t[4, 2, :H] = 0.5                                                           # a constant row: rho undefined
    acc = MetricAccumulator(H, sparsities=(0.5,), placement=1)
    for a in range(0, 23, 10):
        acc.add(p[a:a + 10], t[a:a + 10])
    whole = evaluate_predictions(p, t, H, sparsities=(0.5,), placement=1)
    got = {(r["unit"], r["scope"], r["layer"], r["metric"], r["sparsity"]): r["value"] for r in acc.rows()}
    assert len(got) == len(whole)
    for r in whole:
        assert got[(r["unit"], r["scope"], r["layer"], r["metric"], r["sparsity"])] == pytest.approx(r["value"],
                                                                                                    rel=1e-12)
