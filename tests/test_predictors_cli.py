"""train-predictor on trace folders: a whole grid point end to end, and bad input stopped before any write."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from shadowllm.cli import main
from shadowllm.importance.collect import Collected
from shadowllm.importance.traces import read_meta, write_traces

N, L, H, F, D = 40, 3, 4, 8, 16


def fake_traces(folder, model="m", n=N, seed=0):
    """Traces whose plainact scores are a fixed function of the predictor input (so a predictor can learn them)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    w = torch.randn(D, L * (H + F), generator=torch.Generator().manual_seed(99))
    y = torch.nn.functional.softplus(x @ w).view(n, L, H + F).double()
    lay = {l: torch.randn(n, D, generator=g) for l in range(L)}
    # per-token inputs: 9 tokens, 7 of context; the context tokens average to x
    seq = torch.randn(n, 9, D, generator=g)
    seq[:, :7] += x[:, None] - seq[:, :7].mean(1, keepdim=True)
    col = Collected(ids=[f"e{seed}-{i}" for i in range(n)], heads={"plainact": y[..., :H]},
                    neurons={"plainact": y[..., H:]}, inputs={0: x, 1: x + 1}, inputs_context={0: x, 1: x - 1},
                    layer_inputs=lay, layer_inputs_context=lay, n_tokens=torch.full((n,), 9),
                    n_context=torch.full((n,), 7), loss=torch.ones(n, dtype=torch.float64),
                    info={"placement_layers": [0, 1]}, seq_inputs={0: seq.reshape(n * 9, D)},
                    seq_offsets=torch.arange(0, 9 * n + 1, 9))
    write_traces(folder, col, model=model, task=folder.parent.name, k=0, seed=0)
    return folder


def run(tmp_path, traces, *extra):
    out = tmp_path / "out"
    kinds = [f for k in ("heads", "neurons") for f in (f"--hidden-{k}", "32", f"--epochs-{k}", "200",
                                                       f"--batch-size-{k}", "16")]
    rc = main(["train-predictor", "--traces", *map(str, traces), "--criterion", "plainact", *kinds,
               "--lr", "0.01", "--patience", "20", "--threads", "1", "--out-dir", str(out), *extra])
    return rc, out


@pytest.mark.parametrize("design", ["shadowllm", "dejavu", "fullseq", "static"])
def test_grid_point_end_to_end(tmp_path, design):
    traces = [fake_traces(tmp_path / "a" / "k0", seed=1), fake_traces(tmp_path / "b" / "k0", seed=2)]
    rc, out = run(tmp_path, traces, "--design", design)
    assert rc == 0
    df = pd.read_csv(out / "metrics.csv")
    assert set(df.design) == {design} and set(df.unit) == {"heads", "neurons"}
    assert {"spearman", "kendall", "recall"} <= set(df.metric)
    info = json.loads((out / "curve.json").read_text())
    assert info["n_train"] + info["n_test"] == 2 * N and info["n_test"] >= 2
    for name in ("predictor.safetensors", "curve.json", "metrics.csv"):
        assert (out / f"{name}.meta.json").is_file()
    read = json.loads((out / "metrics.csv.meta.json").read_text())["inputs"]
    assert any("sequence_inputs.safetensors" in p for p in read) == (design == "fullseq")
    rho = df[(df.metric == "spearman") & (df.scope == "layer")].value.mean()
    if design == "shadowllm":  # its input determines the targets: it must rank within layers well
        assert rho > 0.7, rho
    tab = tmp_path / "t.csv"
    assert main(["collect-predictors", "--out", str(tab), str(out / "metrics.csv")]) == 0
    assert len(pd.read_csv(tab)) == len(df)


def _refused(tmp_path, traces, needle, *extra, capsys):
    rc, out = run(tmp_path, traces, "--design", "shadowllm", *extra)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err, err
    assert not out.exists()


def test_traces_of_two_models_are_refused(tmp_path, capsys):
    traces = [fake_traces(tmp_path / "a" / "k0"), fake_traces(tmp_path / "b" / "k0", model="other")]
    _refused(tmp_path, traces, "traces of model 'other', expected 'm'", capsys=capsys)


def test_traces_of_an_older_format_are_refused(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    t = fake_traces(tmp_path / "a" / "k0")
    p = t / "plainact.safetensors"
    md = {k: v if isinstance(v, str) else json.dumps(v) for k, v in read_meta(p).items()}
    save_file(load_file(str(p)), str(p), metadata={**md, "format_version": "1"})
    _refused(tmp_path, [t], "format version 1, expected 2", capsys=capsys)


def test_placement_outside_the_traces_is_refused(tmp_path, capsys):
    t = fake_traces(tmp_path / "a" / "k0")
    _refused(tmp_path, [t], "no predictor input at placement layer 2", "--placement", "2", capsys=capsys)


def test_too_few_examples_to_hold_out_is_refused(tmp_path, capsys):
    t = fake_traces(tmp_path / "a" / "k0", n=2)
    _refused(tmp_path, [t], "need at least 2 of each", capsys=capsys)


def test_bench_latency_runs_trained_predictors(tmp_path, capsys, monkeypatch):
    """--predictor replaces the random predictor weights of its modes; one of another model is refused."""
    from conftest import tiny_opt

    from shadowllm.predictors import Predictor
    from shadowllm.sparse import bench

    monkeypatch.setattr(bench, "measure_bandwidth", lambda dev, **kw: 10.0)
    model = tiny_opt()
    model.save_pretrained(tmp_path / "m")
    cfg = model.config
    H, F, L_ = cfg.num_attention_heads, cfg.ffn_dim, cfg.num_hidden_layers
    small = {"hidden_heads": 8, "hidden_neurons": 8}
    Predictor("shadowllm", cfg.hidden_size, L_, H, F, **small).save(tmp_path / "s.safetensors")
    Predictor("dejavu", cfg.hidden_size, L_, H, F, **small).save(tmp_path / "d.safetensors")
    out = tmp_path / "lat.csv"
    args = ["bench-latency", "--model", str(tmp_path / "m"), "--sparsity", "0.5", "--gen-tokens", "2",
            "--prompt-len", "4", "--repeats", "1", "--warmup", "0", "--gather", "torch", "--device", "cpu",
            "--out", str(out)]
    assert main(args + ["--modes", "dense", "shadowllm-prompt", "dejavu", "--predictor", str(tmp_path / "s.safetensors"),
                        "--predictor", str(tmp_path / "d.safetensors")]) == 0
    rows = {r["mode"]: r for r in pd.read_csv(out, keep_default_na=False).to_dict("records")}
    assert rows["shadowllm-prompt"]["predictor"] == str(tmp_path / "s.safetensors")
    assert rows["dejavu"]["predictor"] == str(tmp_path / "d.safetensors")
    Predictor("shadowllm", cfg.hidden_size, L_ + 1, H, F, **small).save(tmp_path / "x.safetensors")
    capsys.readouterr()
    assert main(args + ["--modes", "shadowllm-prompt", "--predictor", str(tmp_path / "x.safetensors")]) == 2
    assert f"n_layers is {L_ + 1}, expected {L_}" in capsys.readouterr().err


def test_held_out_split_is_exact_order_free_and_keeps_an_example_on_one_side():
    from shadowllm.predictors.data import held_out

    ids = [f"t/{i}" for i in range(50)] * 2          # the same examples at two k
    tr, te = held_out(ids, 0.2, seed=3)
    assert len(te) == 20 and len(tr) == 80              # round(0.2 x 50) distinct examples, at both k
    test_ids = {ids[i] for i in te.tolist()}
    assert test_ids.isdisjoint(ids[i] for i in tr.tolist())
    rev = ids[::-1]
    assert {rev[i] for i in held_out(rev, 0.2, seed=3)[1].tolist()} == test_ids
    assert {ids[i] for i in held_out(ids, 0.2, seed=4)[1].tolist()} != test_ids


def test_predictor_size_prints_every_design_and_refuses_an_unknown_size(capsys):
    from shadowllm.predictors.size import size_rows
    from shadowllm.predictors.model import n_parameters
    from shadowllm.shapes import OPT_SHAPES

    assert main(["measure-predictor-size", "--sizes", "opt-13b"]) == 0
    out = capsys.readouterr().out
    assert all(d in out for d in ("shadowllm", "dejavu", "fullseq"))
    s = OPT_SHAPES["opt-13b"]
    row = next(r for r in size_rows(["opt-13b"], 2048, 1024, 16) if r["design"] == "shadowllm")
    # the neuron network alone: Linear(5120, 1024) + Linear(1024, 40 x 20480), counted from the shapes
    assert row["neurons_M"] * 1e6 == 5120 * 1024 + 1024 + 1024 * 40 * 20480 + 40 * 20480
    n = n_parameters("shadowllm", s.hidden, s.layers, s.heads, s.ffn)
    assert row["train_peak_GiB"] == pytest.approx((4 * sum(n.values()) + 12 * n["neurons"]) / 2 ** 30)
    assert main(["measure-predictor-size", "--sizes", "opt-7b"]) == 2
    assert "unknown OPT size 'opt-7b'" in capsys.readouterr().err


def test_predictor_size_projects_training_time_from_a_measured_curve(tmp_path, capsys):
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps({"design": "shadowllm", "seconds_per_param_example_epoch": {"heads": 2e-9,
                                                                                          "neurons": 1e-9}}))
    assert main(["measure-predictor-size", "--sizes", "opt-1.3b", "--from-curve", str(curve), "--examples", "1000",
                 "--epochs-heads", "10", "--epochs-neurons", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    hours = float(out[-1].split()[-1])
    n = {"heads": 2048 * 2048 + 2048 + 2048 * 24 * 32 + 24 * 32,
         "neurons": 2048 * 1024 + 1024 + 1024 * 24 * 8192 + 24 * 8192}
    want = (n["heads"] * 2e-9 * 1000 * 10 + n["neurons"] * 1e-9 * 1000 * 5) / 3600
    assert hours == pytest.approx(want, abs=0.05)
