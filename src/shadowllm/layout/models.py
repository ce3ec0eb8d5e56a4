"""Where a run's models and hub data come from: trained under results/, converted or downloaded once under
resources/ (a cache shared by every run of this checkout), or a local folder."""
from __future__ import annotations

from ..config import HUB_TASKS
from .run import DATASETS, results


def model_cfg(cfg: dict, model: str) -> dict:
    models = cfg.get("models", {})
    if model not in models:
        raise ValueError(f"model {model!r} is not in config['models'] ({sorted(models)})")
    return models[model]


def hub_folder(repo_id: str) -> str:
    """'facebook/opt-1.3b' -> 'facebook--opt-1.3b' (one path component, as the hub cache names it)."""
    return repo_id.replace("/", "--")


def hub_path(cfg: dict, model: str) -> str:
    """A hub model's folder, downloaded once: resources/models/hub/{hub_folder(id)}."""
    return f"resources/models/hub/{hub_folder(model_cfg(cfg, model)['path'])}"


def converted_path(cfg: dict, model: str) -> str:
    """A GGUF from a pinned wheel, converted once: resources/models/{NAME-VERSION}/{gguf_file}."""
    m = model_cfg(cfg, model)
    return f"resources/models/{m['package'].replace('==', '-')}/{m['gguf_file']}"


def model_path(cfg: dict, model: str) -> str:
    """What `--model` gets: the trained folder, the converted folder, the downloaded hub folder or a local one."""
    source = model_cfg(cfg, model)["source"]
    if source == "train":
        return f"{results(cfg)}/models/{model}/model"
    if source == "pypi_gguf":
        return converted_path(cfg, model)
    if source == "hub":
        return hub_path(cfg, model)
    return model_cfg(cfg, model)["path"]


def model_inputs(cfg: dict, model: str) -> list[str]:
    """The model folder a job waits for: the one the workflow builds (trained, converted, downloaded), else none."""
    return [model_path(cfg, model)] if model_cfg(cfg, model)["source"] != "local" else []


def train_metrics(cfg: dict, model: str) -> list[str]:
    return [f"{results(cfg)}/models/{model}/train.json"] if model_cfg(cfg, model)["source"] == "train" else []


def hub_id(cfg: dict, repo: str) -> str:
    """The hub id whose download folder is resources/models/hub/{repo}."""
    for name, m in cfg.get("models", {}).items():
        if m["source"] == "hub" and hub_path(cfg, name) == f"resources/models/hub/{repo}":
            return m["path"]
    raise ValueError(f"resources/models/hub/{repo} is not the folder of any hub model in config['models']")


def gguf_package(cfg: dict, package: str, gguf: str) -> str:
    """The pinned package (NAME==VERSION) whose converted folder is resources/models/{package}/{gguf}."""
    want = f"resources/models/{package}/{gguf}"
    for name, m in cfg.get("models", {}).items():
        if m["source"] == "pypi_gguf" and converted_path(cfg, name) == want:
            return m["package"]
    raise ValueError(f"{want} is not the converted folder of any pypi_gguf model in config['models']")


def hub_tasks(cfg: dict) -> list[str]:
    """The configuration's lm-eval tasks that live on the hub (the shipped ones are local files)."""
    ev, ab, imp = cfg.get("evaluation"), cfg.get("ablations"), cfg.get("importance")
    names = (([ev["ppl_task"]] + list(ev["tasks"] or [])) if ev else []) + \
        (list(ab["zero_shot_tasks"] or []) if ab else []) + (list(imp["tasks"] or []) if imp else [])
    return sorted(set(names) & HUB_TASKS)


def datasets_inputs(cfg: dict) -> list[str]:
    """The hub datasets' manifest, where the configuration names hub tasks."""
    return [f"{DATASETS}/manifest.json"] if hub_tasks(cfg) else []


def offline_env(cfg: dict) -> str:
    """The environment of every job that loads a model or a task: the hub is never reached from it."""
    cache = f" HF_DATASETS_CACHE={DATASETS}/datasets HF_HUB_CACHE={DATASETS}/hub" if hub_tasks(cfg) else ""
    return "env HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" + cache
