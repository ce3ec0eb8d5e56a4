"""`shadowllm download-model`: a hub model fetched once into a plain folder, so every later job reads it offline.

The real huggingface_hub `snapshot_download` does the work (hub or, offline, its local cache); the folder is
filled under a temporary name and renamed into place, so a killed download is never taken for a model.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# weights (safetensors preferred), config, tokenizer, generation settings
PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*"]
FALLBACK = ["*.bin"]   # only when the repository has no safetensors


def download(repo_id: str, out: str | Path, revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from ..io import atomic_dir, write_json
    from ..provenance import model_files

    out = Path(out)
    with atomic_dir(out) as tmp:
        try:
            src = Path(snapshot_download(repo_id, revision=revision, allow_patterns=PATTERNS))
        except LocalEntryNotFoundError as e:
            raise ValueError(f"model {repo_id!r} is neither reachable on the hub nor in its local cache "
                             f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}): run this rule where the "
                             f"network is, or put the model in the cache first") from e
        if not any(src.glob("*.safetensors")):
            src = Path(snapshot_download(repo_id, revision=revision, allow_patterns=PATTERNS + FALLBACK))
        if not (src / "config.json").is_file():
            raise ValueError(f"{repo_id!r} has no config.json: not a transformers model")
        for f in src.iterdir():
            if f.is_file():
                shutil.copyfile(f, tmp / f.name)         # resolves the cache's symlinks into real files
        write_json(tmp / "SOURCE.json", {"repo_id": repo_id, "revision": revision or "main",
                                         "snapshot": src.name, "files": sorted(p.name for p in tmp.iterdir())})
    print(json.dumps({"repo_id": repo_id, "out": str(out), "files": len(model_files(str(out)))}))
    return out


def cmd_download_model(args) -> int:
    download(args.id, args.out, args.revision)
    return 0


def register(sub) -> None:
    p = sub.add_parser("download-model", help="fetch a hub model once into a plain folder (jobs then run offline)")
    p.add_argument("--id", required=True, help="hub id, e.g. facebook/opt-1.3b")
    p.add_argument("--revision", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_download_model)


# ---- lm-eval hub tasks: their datasets fetched once into a shared cache, read offline by every job ----------

def cache_env(cache: str | Path) -> dict:
    """The variables that point `datasets` and `huggingface_hub` at one cache folder."""
    cache = Path(cache)
    return {"HF_DATASETS_CACHE": str(cache / "datasets"), "HF_HUB_CACHE": str(cache / "hub")}


def download_datasets(tasks: list[str], cache: str | Path, out: str | Path, include: str | None = None) -> dict:
    """Load each lm-eval task once (its datasets land in `cache`) and record its splits' sizes in `out`.

    Must run in a fresh process: `datasets` reads its cache and offline settings when first imported."""
    import sys

    from ..io import write_json

    if "datasets" in sys.modules:
        raise RuntimeError("download_datasets must run before `datasets` is imported (use the CLI)")
    os.environ.update(cache_env(cache))
    from lm_eval.tasks import TaskManager, get_task_dict

    tm = TaskManager(include_path=include)
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise ValueError(f"unknown lm-eval task(s) {unknown}; expected names lm-eval knows, e.g. piqa, wikitext")
    from ..loading import hub_offline

    offline = hub_offline()
    manifest = {}
    for name in tasks:
        try:
            task = get_task_dict([name], tm)[name]
        except Exception as e:   # noqa: BLE001 (datasets raises several kinds; all mean "not fetched")
            raise ValueError(f"task {name!r}: its dataset could not be loaded into {cache} "
                             f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}"
                             f"{': not in the cache' if offline else ''}): run this rule where the network is "
                             f"({type(e).__name__}: {e})") from e
        cfg = task.config
        manifest[name] = {"dataset_path": cfg.dataset_path, "dataset_name": cfg.dataset_name,
                          "splits": {s: len(task.dataset[s]) for s in task.dataset}}
    write_json(out, {"cache": str(cache), "tasks": manifest})
    print(json.dumps({"cache": str(cache), "tasks": {t: m["splits"] for t, m in manifest.items()}}))
    return manifest


def cmd_download_datasets(args) -> int:
    from ..provenance import write_meta

    download_datasets(args.tasks, args.cache, args.out, args.include)
    write_meta(args.out, config={"command": "download-datasets", "tasks": args.tasks, "cache": args.cache})
    return 0


def register_datasets(sub) -> None:
    p = sub.add_parser("download-datasets",
                       help="fetch lm-eval hub tasks' datasets once into a cache folder (jobs then run offline)")
    p.add_argument("--tasks", nargs="+", required=True, help="lm-eval task names, e.g. piqa copa wikitext")
    p.add_argument("--cache", required=True, help="the folder jobs later read with HF_DATASETS_CACHE")
    p.add_argument("--include", default=None, help="an extra lm-eval task folder (include_path)")
    p.add_argument("--out", required=True, help="the manifest: each task's dataset and split sizes (JSON)")
    p.set_defaults(func=cmd_download_datasets)
