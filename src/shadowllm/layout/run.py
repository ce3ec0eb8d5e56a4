"""The roots of a run's files: results/{run}, logs/{run}, benchmarks/{run} (resources/ is a cache every run shares)."""
from __future__ import annotations

DATASETS = "resources/datasets"   # the hub datasets, fetched once (shared like the downloaded models)


def results(cfg: dict) -> str:
    """Every output of a configuration lives under results/{run} (its logs and benchmarks beside, same name)."""
    return f"results/{cfg['run']}"


def logs(cfg: dict) -> str:
    return f"logs/{cfg['run']}"


def benchmarks(cfg: dict) -> str:
    return f"benchmarks/{cfg['run']}"


def task_dir(cfg: dict) -> str:
    """The lm-eval task YAMLs of the shipped tasks, written per run (they hold absolute paths)."""
    return f"{results(cfg)}/data/tasks"
