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


def folder_name(repo_id: str) -> str:
    """'facebook/opt-1.3b' -> 'facebook--opt-1.3b' (one path component, as the hub cache names it)."""
    return repo_id.replace("/", "--")


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
