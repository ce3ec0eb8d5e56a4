"""Model loading without a hub, and atomic writes."""
import os
import time

import pytest

from shadowllm import io, provenance
from shadowllm.loading import ModelNotAvailable, load_model


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        load_model(str(tmp_path / "no-model"))


def test_hub_id_without_network_fails_fast_with_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ModelNotAvailable) as e:
        load_model("facebook/opt-13b")
    assert time.time() - t < 10
    assert "facebook/opt-13b" in str(e.value) and "download" in str(e.value)


def test_local_folder_loads_tokenizer_and_model(saved_tiny):
    path, _ = saved_tiny
    model, tok = load_model(str(path), dtype="float32", device="cpu")
    assert model.config.model_type == "opt" and tok.pad_token is not None
    with pytest.raises(ValueError, match="'float8'"):
        load_model(str(path), dtype="float8")


def test_train_is_deterministic_and_stores_perplexity(saved_tiny, tmp_path):
    from shadowllm import data
    from shadowllm.train import TrainConfig, train

    path, metrics = saved_tiny
    cfg = TrainConfig(**metrics["config"])
    again = train(cfg, data.corpus_docs("calib"), data.corpus_docs("test")[:5], tmp_path / "m", log=lambda *a: None)
    assert again["test_perplexity"] == metrics["test_perplexity"]
    assert 1 < metrics["test_perplexity"] < cfg.vocab_size
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    io.write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{") and oct(target.stat().st_mode & 0o777) != "0o600"
    provenance.write_meta(target, config={"x": 1}, seed=3)
    assert (tmp_path / "out.json.meta.json").is_file()


def test_atomic_dir_replaces_the_folder_only_on_success(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as tmp:
            (tmp / "w.bin").write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with io.atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with io.atomic_dir(target) as tmp:          # a rebuild replaces the old folder whole
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and [p.name for p in target.iterdir()] == ["b"]
    assert oct(target.stat().st_mode & 0o777) == "0o755"


def test_cli_reports_unavailable_model_in_one_line(monkeypatch, capsys, tmp_path):
    from shadowllm.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["make-mask", "--model", "facebook/opt-13b", "--sparsity", "0.5", "--out", str(tmp_path / "m.st")])
    err = capsys.readouterr().err
    assert rc == 2 and "facebook/opt-13b" in err and "Traceback" not in err
    assert not (tmp_path / "m.st").exists()


@pytest.mark.slow
def test_killed_training_leaves_no_output(tmp_path):
    """SIGKILL in the middle of `shadowllm train-model`: neither the model folder nor the metrics file exists."""
    import json
    import signal
    import subprocess
    import sys

    out, metrics = tmp_path / "model", tmp_path / "train.json"
    params = json.dumps({"vocab_size": 300, "d_model": 32, "n_layers": 2, "n_heads": 4, "ffn_dim": 64,
                         "seq_len": 64, "batch_size": 8, "steps": 100000, "warmup": 5})
    p = subprocess.Popen([sys.executable, "-m", "shadowllm.cli", "train-model", "--out", str(out), "--metrics",
                          str(metrics), "--params", params, "--threads", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout:  # wait until training is under way
        if line.startswith("step"):
            break
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert not out.exists() and not metrics.exists()
    left = list(tmp_path.iterdir())
    assert left and all(x.name.startswith(".tmp-") for x in left)
    # the rerun (what snakemake does next) removes the dead run's folder and finishes cleanly
    short = json.dumps({**json.loads(params), "steps": 2})
    r = subprocess.run([sys.executable, "-m", "shadowllm.cli", "train-model", "--out", str(out), "--metrics",
                        str(metrics), "--params", short, "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model", "train.json", "train.json.meta.json"]
    assert not (out / ".pid").exists()



def test_the_package_fixes_mkl_and_openmp_thread_counts():
    """Dynamic threading let MKL use fewer threads on a busy machine, which trained a different tiny OPT from the same
    seed (seen in an embedded run); importing shadowllm, as every job does first, turns it off."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MKL_DYNAMIC", "OMP_DYNAMIC")}
    code = "import os, shadowllm, torch; print(os.environ['MKL_DYNAMIC'], os.environ['OMP_DYNAMIC'])"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["FALSE", "FALSE"], r.stderr[-1000:]
    r = subprocess.run([sys.executable, "-c", code], env=dict(env, MKL_DYNAMIC="TRUE"), capture_output=True,
                       text=True, timeout=120)
    assert r.stdout.split() == ["TRUE", "FALSE"]          # a user's explicit choice stands
