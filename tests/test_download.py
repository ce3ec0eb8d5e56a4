"""`shadowllm download-model`: the real huggingface_hub path, offline from a hub cache laid out as the hub writes it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
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


# ---- lm-eval hub tasks --------------------------------------------------------------------------------

TASK_YAML = """task: tiny_hub_mc
dataset_path: shadowllm-test/tiny_mc
validation_split: validation
output_type: multiple_choice
doc_to_text: '{{q}}'
doc_to_choice: '{{choices}}'
doc_to_target: '{{label}}'
metric_list:
- metric: acc
metadata:
  version: 1.0
"""


def _datasets_cli(args, cache, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "home"))
    for k in ("HF_DATASETS_CACHE", "HF_HUB_CACHE"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", "shadowllm.cli", "download-datasets", "--cache", str(cache),
                           *args], env=env, capture_output=True, text=True, timeout=300)


def _hub_dataset_cache(cache, rows):
    """The datasets cache an online load of hub dataset shadowllm-test/tiny_mc leaves behind (its Arrow files under
    namespace___name/config/version/hash), made offline: a json load whose folder is renamed the way a hub load
    names it."""
    cache.mkdir(parents=True)
    src = cache.parent / "src.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = ("import datasets, os, shutil, sys; d = datasets.load_dataset('json', data_files={'validation': sys.argv[1]});"
            "f = d['validation'].cache_files[0]['filename']; dst = os.path.join(sys.argv[2], "
            "'shadowllm-test___tiny_mc', 'default', '0.0.0', os.path.basename(os.path.dirname(f)));"
            "shutil.copytree(os.path.dirname(f), dst);"
            "os.rename(os.path.join(dst, os.path.basename(f)), os.path.join(dst, 'tiny_mc-validation.arrow'))")
    env = dict(os.environ, HF_DATASETS_CACHE=str(cache.parent / "scratch"), HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-c", code, str(src), str(cache / "datasets")], env=env, check=True,
                   capture_output=True, timeout=300)


@pytest.mark.slow
def test_a_cached_hub_task_loads_offline_and_its_splits_are_recorded(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_hub_mc.yaml").write_text(TASK_YAML)
    cache = tmp_path / "resources" / "datasets"
    rows = [{"q": f"question {i}", "choices": ["yes", "no"], "label": i % 2} for i in range(7)]
    _hub_dataset_cache(cache, rows)
    out = tmp_path / "resources" / "datasets" / "manifest.json"
    r = _datasets_cli(["--tasks", "tiny_hub_mc", "--include", str(tasks), "--out", str(out)], cache, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(out.read_text())
    assert m["tasks"]["tiny_hub_mc"] == {"dataset_path": "shadowllm-test/tiny_mc", "dataset_name": None,
                                          "splits": {"validation": 7}}
    assert (tmp_path / "resources" / "datasets" / "manifest.json.meta.json").is_file()


@pytest.mark.slow
def test_a_hub_task_not_in_the_cache_is_named_and_nothing_is_written(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_hub_mc.yaml").write_text(TASK_YAML)
    out = tmp_path / "manifest.json"
    r = _datasets_cli(["--tasks", "tiny_hub_mc", "--include", str(tasks), "--out", str(out)], tmp_path / "c", tmp_path)
    assert r.returncode != 0 and "'tiny_hub_mc'" in r.stderr and "network" in r.stderr, r.stderr[-2000:]
    assert not out.exists()
    r = _datasets_cli(["--tasks", "no_such_task", "--out", str(out)], tmp_path / "c", tmp_path)
    assert r.returncode != 0 and "'no_such_task'" in r.stderr, r.stderr[-2000:]


MI_UTILS = '''def doc_to_text(doc):
    return doc["label"]


def doc_to_choice(doc):
    return [doc["q"] + " " + c for c in doc["choices"]]


def doc_to_target(doc):
    return "the end"
'''


@pytest.mark.slow
def test_traces_of_a_hub_task_read_its_cached_docs_offline(saved_tiny, tmp_path):
    """The paper traces its own tasks: an lm-eval task from the (offline) hub cache becomes the same rows the JSONL
    holds; a multiple-input task (winogrande's shape) traces the shared ending after the right context."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_hub_mc.yaml").write_text(TASK_YAML.replace("validation_split: validation",
                                                              "training_split: validation\nvalidation_split: validation"))
    (tasks / "utils.py").write_text(MI_UTILS)
    mi = TASK_YAML.replace("task: tiny_hub_mc", "task: tiny_hub_mi")
    for f in ("doc_to_text", "doc_to_choice", "doc_to_target"):
        mi = "\n".join(f"{f}: !function utils.{f}" if line.startswith(f + ":") else line for line in mi.splitlines())
    (tasks / "tiny_hub_mi.yaml").write_text(mi + "\n")
    cache = tmp_path / "resources" / "datasets"
    rows = [{"q": f"question {i}", "choices": ["yes", "no"], "label": i % 2} for i in range(7)]
    _hub_dataset_cache(cache, rows)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "home"),
               HF_DATASETS_CACHE=str(cache / "datasets"), HF_HUB_CACHE=str(cache / "hub"))
    code = ("import json, sys; from shadowllm.importance.collect import lm_eval_rows;"
            "print(json.dumps([lm_eval_rows(t, sys.argv[1]) for t in ('tiny_hub_mc', 'tiny_hub_mi')]))")
    r = subprocess.run([sys.executable, "-c", code, str(tasks)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (mc, td, fd), (mi_rows, _, _) = json.loads(r.stdout.strip().splitlines()[-1])
    assert (td, fd) == (" ", "\n\n")
    assert [(x["query"], x["choices"], x["gold"]) for x in mc] == [(x["q"], x["choices"], x["label"]) for x in rows]
    assert [(x["query"], x["choices"], x["gold"]) for x in mi_rows] == \
        [(x["q"] + " " + x["choices"][x["label"]], ["the end"], 0) for x in rows]
    out = tmp_path / "traces"
    r = subprocess.run([sys.executable, "-m", "shadowllm.cli", "trace-importance", "--model", str(saved_tiny[0]),
                        "--task", "tiny_hub_mc", "--include", str(tasks), "--k", "1", "--criteria", "plainact",
                        "--max-examples", "5", "--batch-size", "5", "--device", "cpu", "--threads", "1",
                        "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    from safetensors import safe_open

    with safe_open(str(out / "plainact.safetensors"), "pt") as f:
        assert f.get_tensor(f.keys()[0]).shape[0] == 5
