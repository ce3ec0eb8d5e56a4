"""Convert BIG-bench multiple-choice tasks (PyPI ``bigbench`` 1.0.0 sdist) into shipped lm-eval tasks.

    python -m shadowllm.data.build_tasks                       # pip-downloads the sdist into a temp dir
    python -m shadowllm.data.build_tasks --source /tmp/bigbench-1.0.0.tar.gz
    python -m shadowllm.data.build_tasks --source DIR          # an extracted sdist or benchmark_tasks folder

Writes ``assets/tasks/<task>/{<task>.yaml,calib.jsonl,eval.jsonl}`` deterministically (seeded shuffle).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

from shadowllm.data import ASSETS, atomic_write, fetch_sdist

SEED = 1234
SDIST = "bigbench==1.0.0"
REL = "src/shadowllm/assets"  # shipped YAMLs name data files relative to the repository root
# task name -> BIG-bench task.json files (relative to benchmark_tasks/), combined in this order
TASKS = {
    "bb_social_iqa": ["social_iqa"],
    "bb_winowhy": ["winowhy"],
    "bb_strategyqa": ["strategyqa"],
    "bb_logical_deduction3": ["logical_deduction/three_objects"],
    "bb_causal_judgment": ["causal_judgment"],
    "bb_physical_intuition": ["physical_intuition"],
    # one_sentence_no_prompt repeats one_sentence's examples, so it is left out
    "bb_cause_and_effect": ["cause_and_effect/one_sentence", "cause_and_effect/two_sentences"],
}
# the two cause_and_effect subtasks pose the same event pair at the same index: split by index
GROUP_BY_INDEX = {"bb_cause_and_effect"}


def n_eval(n: int) -> int:
    """Eval size for a source of n groups: 300 if n >= 800, 200 if n >= 250, else 60%."""
    return 300 if n >= 800 else 200 if n >= 250 else round(0.6 * n)


def format_query(task: dict, ex: dict, choices: list[str]) -> str:
    """Prompt text; each choice is appended as `" " + choice`.

    The task_prefix opens the query; the input follows (with BIG-bench's "Q:"-style prefixes replaced
    by a plain "Question:" unless the task defines its own); choices are listed as in BIG-bench
    ("  choice: ...") when the task sets append_choices_to_input (default true); the query ends with
    the task's example_output_prefix if it is a phrase (winowhy: "The above reasoning is"),
    otherwise with "Answer:".
    """
    prefix = task.get("task_prefix", "").strip()
    lines = []
    text = ex.get("input", "").strip()
    if text:
        lines.append(text if task.get("example_input_prefix") is not None else f"Question: {text}")
    if task.get("append_choices_to_input", True):
        lines += [f"  choice: {c}" for c in choices]
    out = (task.get("example_output_prefix") or "").strip()
    if len(out.split()) < 2:  # "answer:", "" or a single symbol -> plain answer prefix
        out = "Answer:"
    return "\n\n".join(x for x in (prefix, "\n".join(lines)) if x) + "\n" + out


def convert(task_json: dict) -> list[dict]:
    """(query, choices, gold) for each example, or None for a dropped one: a tie in the max score,
    duplicate choices, or a stray "<|endoftext|>" in the text (two winowhy inputs carry one)."""
    rows = []
    for ex in task_json["examples"]:
        scores = ex["target_scores"]
        choices = [c.strip() for c in scores]
        vals = [float(v) for v in scores.values()]
        best = max(vals)
        if (vals.count(best) != 1 or len(set(choices)) != len(choices)
                or "<|endoftext|>" in ex.get("input", "") + "".join(choices)):
            rows.append(None)
            continue
        rows.append({"query": format_query(task_json, ex, choices),
                     "choices": [" " + c for c in choices], "gold": vals.index(best)})
    return rows


def task_yaml(name: str) -> str:
    cfg = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": f"{REL}/tasks/{name}/calib.jsonl",
                                          "validation": f"{REL}/tasks/{name}/eval.jsonl"}},
        "training_split": "train",
        "validation_split": "validation",
        "output_type": "multiple_choice",
        "doc_to_text": "{{query}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": "",  # choices already begin with a space
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                        for m in ("acc", "acc_norm")],
        "metadata": {"version": 1.0},
    }
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def corpus_yaml() -> str:
    cfg = {
        "task": "corpus_test",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": f"{REL}/corpus/test.jsonl"}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
        "metadata": {"version": 1.0},
    }
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def dumps_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def build_task(name: str, sources: dict[str, dict], out: Path) -> dict:
    """Split one task into calib/eval and write it; returns counts."""
    per_group: list[list[dict]] = []
    seen, dropped = set(), 0
    for sub in TASKS[name]:
        tag = sub.split("/")[-1] if len(TASKS[name]) > 1 else ""
        for i, row in enumerate(convert(sources[sub])):
            key = row and (row["query"], tuple(row["choices"]))
            if row is None or key in seen:  # repeated examples would leak between calib and eval
                dropped += 1
                continue
            seen.add(key)
            row = {"id": f"{tag}/{i}" if tag else str(i), **row}
            gid = i if name in GROUP_BY_INDEX else len(per_group)
            while len(per_group) <= gid:
                per_group.append([])
            per_group[gid].append(row)
    groups = [g for g in per_group if g]
    order = list(range(len(groups)))
    random.Random(f"{SEED}:{name}").shuffle(order)
    k = n_eval(len(groups))
    ev = sorted((r for gi in order[:k] for r in groups[gi]), key=_id_key)
    cal = sorted((r for gi in order[k:k + 500] for r in groups[gi]), key=_id_key)
    d = out / "tasks" / name
    atomic_write(d / "eval.jsonl", dumps_jsonl(ev))
    atomic_write(d / "calib.jsonl", dumps_jsonl(cal))
    atomic_write(d / f"{name}.yaml", task_yaml(name))
    return {"task": name, "kept": sum(len(g) for g in groups), "dropped": dropped, "eval": len(ev), "calib": len(cal)}


def _id_key(row: dict):
    tag, _, num = row["id"].rpartition("/")
    return tag, int(num)


class Source:
    """Reads benchmark_tasks/<rel>/task.json from an sdist tarball or a folder."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_file():
            self.tar = tarfile.open(path)
            self.members = {m.name.split("benchmark_tasks/", 1)[1]: m for m in self.tar.getmembers()
                            if "/benchmark_tasks/" in m.name and m.name.endswith("/task.json")}
        else:
            self.tar = None
            roots = sorted(path.glob("**/benchmark_tasks"))
            self.root = roots[0] if roots else path

    def read(self, rel: str) -> dict:
        key = f"{rel}/task.json"
        if self.tar is not None:
            if key not in self.members:
                raise FileNotFoundError(f"{key} not in {self.path}")
            return json.load(self.tar.extractfile(self.members[key]))
        if not (self.root / key).is_file():
            raise FileNotFoundError(f"{key} not under {self.root}")
        return json.loads((self.root / key).read_text(encoding="utf-8"))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, help="bigbench sdist .tar.gz or a folder holding benchmark_tasks/")
    ap.add_argument("--out", type=Path, default=ASSETS, help="assets folder to write into (default: shipped)")
    ap.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bigbench-") as tmp:
        path = fetch_sdist(args.source, SDIST, Path(tmp), "--source")
        src = Source(path)
        stats = []
        for name in args.tasks:
            try:
                sources = {rel: src.read(rel) for rel in TASKS[name]}
            except FileNotFoundError as e:
                sys.exit(f"{e}: --source must be the {SDIST} sdist or a folder holding its "
                         "bigbench/benchmark_tasks/ (pip download --no-deps --no-binary :all: "
                         f"{SDIST} -d /tmp)")
            stats.append(build_task(name, sources, args.out))
            print(json.dumps(stats[-1]))
    atomic_write(args.out / "tasks" / "corpus_test" / "corpus_test.yaml", corpus_yaml())
    return stats


if __name__ == "__main__":
    main()
