"""`shadowllm download-model`: the real huggingface_hub path, offline from a hub cache laid out as the hub writes it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import torch


def _cli(args, cache, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "home"))
    return subprocess.run([sys.executable, "-m", "shadowllm.cli", "download-model", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_cached_hub_model_becomes_a_plain_folder_with_the_same_weights(saved_tiny, tmp_path):
    from shadowllm.loading import load_model

    cache = tmp_path / "hub"
    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = cache / "models--org--tiny" / "snapshots" / sha
    shutil.copytree(saved_tiny[0], snap)
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text(sha)
    out = tmp_path / "resources" / "org--tiny"
    r = _cli(["--id", "org/tiny", "--out", str(out)], cache, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors").is_symlink()
    src = json.loads((out / "SOURCE.json").read_text())
    assert src["repo_id"] == "org/tiny" and src["snapshot"] == sha
    a, _ = load_model(str(saved_tiny[0]))
    b, _ = load_model(str(out))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    assert not list(out.parent.glob(".tmp-*"))


def test_a_model_neither_online_nor_cached_is_named(tmp_path):
    r = _cli(["--id", "org/absent", "--out", str(tmp_path / "o")], tmp_path / "hub", tmp_path)
    assert r.returncode == 2 and "'org/absent'" in r.stderr and "cache" in r.stderr, r.stderr[-1000:]
    assert not (tmp_path / "o").exists()
