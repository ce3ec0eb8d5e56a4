"""bench-latency / measure-predictor-flops / plot-latency commands on tiny inputs (CPU, seconds)."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from shadowllm.sparse import bench
from shadowllm.sparse.cli import main


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_predictor_flops_formulas(tmp_path):
    out = tmp_path / "pf.csv"
    assert main(["measure-predictor-flops", "--out", str(out)]) == 0
    rows = {r["model"]: r for r in _rows(out)}
    r = rows["opt-13b"]
    N, E, H, F, p = 40, 5120, 40, 20480, 1024
    assert int(r["dejavu_macs"]) == N * (E * p + p * (H + F))
    assert int(r["shadowllm_macs"]) == E * p + p * N * (H + F)
    assert json.loads((tmp_path / "pf.csv.meta.json").read_text())["config"]["p"] == 1024
    assert all(v != "" for r in rows.values() for v in r.values()), "a column no row fills"


def test_bench_latency_cli_and_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "measure_bandwidth", lambda dev, **kw: 10.0)
    from shadowllm import shapes

    monkeypatch.setitem(shapes.OPT_SHAPES, "opt-toy", shapes.ModelShape("opt-toy", 64, 3, 4, 256, vocab=100,
                                                                     max_pos=64))
    out = tmp_path / "lat.csv"
    rc = main(["bench-latency", "--model", "opt-toy", "opt-toy_L2", "--sparsity", "0", "0.5", "--gen-tokens", "2", "3",
               "--prompt-len", "5", "--repeats", "2", "--warmup", "0", "--predictor-hidden", "16",
               "--gather", "torch", "--out", str(out)])
    assert rc == 0
    rows = _rows(out)
    # per model and gen length: dense once + 4 modes x 2 sparsities
    assert len(rows) == 2 * 2 * (1 + 4 * 2)
    assert {r["mode"] for r in rows} == {"dense", "static", "shadowllm-prompt", "shadowllm-token", "dejavu"}
    for r in rows:
        assert float(r["ms_per_token"]) > 0 and float(r["roofline_ms_per_token"]) > 0
        assert float(r["bandwidth_gbs"]) == 10.0
    dense = [r for r in rows if r["mode"] == "dense"]
    assert all(float(r["ratio_to_dense"]) == 1.0 for r in dense)
    meta = json.loads((tmp_path / "lat.csv.meta.json").read_text())
    assert meta["config"]["modes"] and meta["device"] == "cpu"
    figs = tmp_path / "figs"
    from shadowllm.cli import main as shadowllm_main

    assert shadowllm_main(["plot-latency", "--csv", str(out), "--outdir", str(figs)]) == 0
    names = {f"latency_vs_{k}.{ext}" for k in ("size", "sparsity", "genlen") for ext in ("png", "pdf")}
    assert {p.name for p in figs.iterdir()} == names | {f"{n}.meta.json" for n in names}
    side = json.loads((figs / "latency_vs_size.png.meta.json").read_text())
    assert side["config"]["sources"] == [str(out)] and list(side["inputs"]) == [str(out)]
    # the combined table alone redraws them (what the committed reports/{run}/latency_*.csv are for)
    table = tmp_path / "latency.csv"
    assert shadowllm_main(["plot-latency", "--csv", str(out), "--outdir", str(figs), "--table", str(table)]) == 0
    again = tmp_path / "again"
    assert shadowllm_main(["plot-latency", "--csv", str(table), "--outdir", str(again)]) == 0
    assert {p.name for p in again.iterdir()} == {p.name for p in figs.iterdir()}


def test_bench_latency_placement(tmp_path, monkeypatch):
    """--placement reaches the predictor modes and their rows (dense / static rows leave it empty)."""
    monkeypatch.setattr(bench, "measure_bandwidth", lambda dev, **kw: 10.0)
    from shadowllm import shapes

    monkeypatch.setitem(shapes.OPT_SHAPES, "opt-toy", shapes.ModelShape("opt-toy", 64, 3, 4, 256, vocab=100,
                                                                     max_pos=64))
    out = tmp_path / "lat.csv"
    args = ["bench-latency", "--model", "opt-toy", "--sparsity", "0.5", "--gen-tokens", "2", "--prompt-len", "5",
            "--repeats", "1", "--warmup", "0", "--predictor-hidden", "16", "--gather", "torch", "--out", str(out)]
    assert main(args + ["--placement", "1"]) == 0
    rows = {r["mode"]: r for r in _rows(out)}
    assert len(rows) == 5 and list(_rows(out)[0])[-2:] == ["placement", "predictor"]
    assert {m: r["placement"] for m, r in rows.items()} == {"dense": "", "static": "", "shadowllm-prompt": "1",
                                                            "shadowllm-token": "1", "dejavu": "1"}
    assert main(args + ["--placement", "3"]) == 2  # the toy has layers 0..2


def test_bench_local_model_folder(tmp_path, monkeypatch):
    from transformers import OPTConfig, OPTForCausalLM

    monkeypatch.setattr(bench, "measure_bandwidth", lambda dev, **kw: 10.0)
    cfg = OPTConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
                    max_position_embeddings=32)
    folder = tmp_path / "m"
    OPTForCausalLM(cfg).save_pretrained(folder)
    # the folder has no tokenizer: the benchmark only needs the weights
    w, info = bench.build_weights(str(folder), torch.float32, "cpu")
    assert (w.L, w.d, w.H, w.F) == (2, 32, 2, 64)
    rows, _ = bench.run_grid([str(folder)], ["dense", "shadowllm-prompt"], [0.5], [2], prompt_len=4, repeats=1,
                             warmup=0, predictor_hidden=8, log=lambda *a: None)
    assert [r["mode"] for r in rows] == ["dense", "shadowllm-prompt"]


def test_bench_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="post-LN"):
        bench.run_grid(["opt-350m"], ["dense"], [0.5], [2], bandwidth=1.0, log=lambda *a: None)
    assert main(["bench-latency", "--model", "opt-125m", "--sparsity", "1.0", "--out", str(tmp_path / "x.csv")]) == 2


@pytest.mark.slow
def test_gpu_scripts_dry_run_on_cpu(tmp_path):
    """The GPU self-check's CPU dry run passes (every mode against the torch-gather path) and the grid
    script parses: both run unattended on a lent GPU, where a typo costs device time."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    out = tmp_path / "check.txt"
    scripts = root / "workflow/scripts/gpu"
    r = subprocess.run([sys.executable, str(scripts / "check_gpu.py"), "--device", "cpu", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert sum(line.startswith("PASS") for line in lines) == 10 and not any(line.startswith("FAIL") for line in lines)
    r = subprocess.run(["bash", "-n", str(scripts / "run_latency_grid.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_bench_latency_runs_a_configured_bench(tmp_path, monkeypatch):
    """--config FILE --bench NAME runs exactly that bench's settings (the GPU script's path to the workflow's
    latency configuration); section values fill what the bench leaves unset."""
    import yaml

    monkeypatch.setattr(bench, "measure_bandwidth", lambda dev, **kw: 10.0)
    from shadowllm import shapes

    monkeypatch.setitem(shapes.OPT_SHAPES, "opt-toy", shapes.ModelShape("opt-toy", 64, 3, 4, 256, vocab=100,
                                                                     max_pos=64))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"run": "t", "latency": {
        "device": "cpu", "prompt_len": 5, "repeats": 2, "warmup": 0, "modes": ["dense", "static", "dejavu"],
        "benches": {"b": {"sizes": ["opt-toy"], "sparsities": [0.25], "gen_tokens": [2], "modes": ["dense", "static"]}}}}))
    out = tmp_path / "b.csv"
    assert main(["bench-latency", "--config", str(cfg), "--bench", "b", "--gather", "torch", "--out", str(out)]) == 0
    rows = _rows(out)
    assert {r["mode"] for r in rows} == {"dense", "static"} and {r["gen_tokens"] for r in rows} == {"2"}
    assert {float(r["sparsity"]) for r in rows if r["mode"] == "static"} == {0.25}
    assert {r["prompt_len"] for r in rows} == {"5"} and {r["dtype"] for r in rows} == {"float32"}
    assert main(["bench-latency", "--config", str(cfg), "--bench", "nope", "--out", str(out)]) == 2


def test_gpu_script_benches_are_the_configured_ones():
    """Every bench the GPU script runs is defined in config/gpu-h200.yaml, and vice versa."""
    import re
    from pathlib import Path

    from shadowllm.config import latency_bench, load

    root = Path(__file__).resolve().parents[1]
    cfg = load([root / "config/gpu-h200.yaml"])
    script = (root / "workflow/scripts/gpu/run_latency_grid.sh").read_text()
    used = set(re.findall(r"\$\(bench ([A-Za-z0-9_.-]+)\)", script))
    assert used == set(cfg["latency"]["benches"]), used ^ set(cfg["latency"]["benches"])
    for name in used:
        spec = latency_bench(cfg, name)
        assert spec["device"] == "cuda" and spec["dtype"] == "float16" and spec["prompt_len"] == 128


def test_latency_defaults_and_modes_come_from_the_schema_and_the_registry():
    """bench-latency's flags and run_grid's keywords default to the schema's latency section, and the schema's
    mode names are the decoder's registry (one definition of each)."""
    import argparse
    import inspect

    from shadowllm.defaults import schema_default
    from shadowllm.sparse import MODES
    from shadowllm.sparse.cli import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(["bench-latency", "--out", "x.csv"])
    keys = ("modes", "batch", "prompt_len", "repeats", "warmup", "kv_policy", "lookahead", "placement")
    assert {k: getattr(args, k) for k in keys} == {k: schema_default(f"latency.{k}") for k in keys}
    grid = inspect.signature(bench.run_grid).parameters
    assert {k: grid[k].default for k in keys[1:]} == {k: schema_default(f"latency.{k}") for k in keys[1:]}
    assert p.parse_args(["measure-predictor-flops", "--out", "x.csv"]).p == schema_default("latency.flops_hidden")
    assert tuple(schema_default("latency.modes")) == MODES
