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
    col = Collected(ids=[f"e{seed}-{i}" for i in range(n)], heads={"plainact": y[..., :H]},
                    neurons={"plainact": y[..., H:]}, inputs={0: x, 1: x + 1}, inputs_context={0: x, 1: x - 1},
                    layer_inputs=lay, layer_inputs_context=lay, n_tokens=torch.full((n,), 9),
                    n_context=torch.full((n,), 7), loss=torch.ones(n, dtype=torch.float64),
                    info={"placement_layers": [0, 1]})
    write_traces(folder, col, model=model, task=folder.parent.name, k=0, seed=0)
    return folder


def run(tmp_path, traces, *extra):
    out = tmp_path / "out"
    rc = main(["train-predictor", "--traces", *map(str, traces), "--criterion", "plainact", "--hidden", "32",
               "--epochs", "200", "--lr", "0.01", "--batch-size", "16", "--patience", "20", "--threads", "1",
               "--out-dir", str(out), *extra])
    return rc, out


@pytest.mark.parametrize("design", ["shadowllm", "dejavu", "static"])
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
    rho = df[(df.metric == "spearman") & (df.scope == "layer")].value.mean()
    if design == "shadowllm":  # its input determines the targets: it must rank within layers well
        assert rho > 0.7, rho
    tab = tmp_path / "t.csv"
    assert main(["predictor-table", "--out", str(tab), str(out / "metrics.csv")]) == 0
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
    Predictor("shadowllm", cfg.hidden_size, L_, H, F, hidden=8).save(tmp_path / "s.safetensors")
    Predictor("dejavu", cfg.hidden_size, L_, H, F, hidden=8).save(tmp_path / "d.safetensors")
    out = tmp_path / "lat.csv"
    args = ["bench-latency", "--model", str(tmp_path / "m"), "--sparsity", "0.5", "--gen-tokens", "2",
            "--prompt-len", "4", "--repeats", "1", "--warmup", "0", "--gather", "torch", "--device", "cpu",
            "--out", str(out)]
    assert main(args + ["--modes", "dense", "shadowllm-prompt", "dejavu", "--predictor", str(tmp_path / "s.safetensors"),
                        "--predictor", str(tmp_path / "d.safetensors")]) == 0
    rows = {r["mode"]: r for r in pd.read_csv(out, keep_default_na=False).to_dict("records")}
    assert rows["shadowllm-prompt"]["predictor"] == str(tmp_path / "s.safetensors")
    assert rows["dejavu"]["predictor"] == str(tmp_path / "d.safetensors")
    Predictor("shadowllm", cfg.hidden_size, L_ + 1, H, F, hidden=8).save(tmp_path / "x.safetensors")
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
