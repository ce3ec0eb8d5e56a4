"""The command-line flags a job passes, from the configuration: the model's, each stage's settings, the claims'."""
from __future__ import annotations

import json

from ..config import report_normalize
from .grid import points, tasks_of
from .models import model_cfg, model_path


def model_flags(cfg: dict, model: str) -> str:
    """--model, --dtype and --device of a job that loads the model (and --gguf-file of a local GGUF)."""
    m = model_cfg(cfg, model)
    flags = f"--model {model_path(cfg, model)} --dtype {m['dtype']} --device {cfg['device']}"
    if m.get("gguf_file") and m["source"] != "pypi_gguf":
        flags += f" --gguf-file {m['gguf_file']}"
    return flags


def train_params(cfg: dict, model: str) -> str:
    return json.dumps(model_cfg(cfg, model).get("train", {}), sort_keys=True)  # key order is not a change


def neuron_traces(cfg: dict) -> str:
    nt = cfg["importance"]["neuron_traces"]
    return nt if isinstance(nt, str) else ",".join(nt)


def pred_flags(cfg: dict) -> str:
    """The predictors' training settings (shared by every predictor and few-shot table)."""
    pr = cfg.get("predictors")
    if not pr:
        return ""
    keys = ("lr", "weight_decay", "val_fraction", "patience", "held_out")
    flags = [f"--{k.replace('_', '-')} {pr[k]}" for k in keys]
    flags += [f"--{s.replace('_', '-')}-{kind} {pr[kind][s]}" for kind in ("heads", "neurons")
              for s in ("hidden", "epochs", "batch_size")]
    return " ".join(flags) + " --sparsities " + " ".join(str(s) for s in pr["sparsities"])


def threads(cfg: dict, section: str) -> int:
    """A stage's own threads per job (predictors, ablations), else the run's."""
    sec = cfg.get(section)
    return (sec.get("threads") or cfg["threads"]) if sec else cfg["threads"]


def ablation_tasks(cfg: dict, point) -> str:
    """--ppl-task / --tasks of a point: perplexity unless under prompt, zero-shot where the grid asks."""
    ev, ab = cfg["evaluation"], cfg["ablations"]
    tasks = tasks_of(point, ev["ppl_task"], ab["zero_shot_tasks"] or ev["tasks"], points(cfg)[point])
    ppl = [t for t in tasks if t == ev["ppl_task"]]
    rest = [t for t in tasks if t != ev["ppl_task"]]
    return (f"--ppl-task {ppl[0]}" if ppl else "") + (f" --tasks {','.join(rest)}" if rest else "")


def ablation_limits(cfg: dict) -> str:
    ab = cfg.get("ablations")
    return " ".join(f"--{k.replace('_', '-')} {ab[k]}" for k in ("ppl_limit", "limit") if ab and ab[k])


def claims_flags(cfg: dict) -> str:
    """How the claims read the tables: the normalisation and units first, from config['report']."""
    units = cfg["report"]["units"]
    return f"--normalize {report_normalize(cfg)}" + (f" --units {units}" if units else "")


def claims_questions(cfg: dict) -> int:
    """Zero-shot questions behind one mean accuracy of the grid (0: whole tasks, count unknown here)."""
    ab = cfg.get("ablations")
    if not ab or not ab["limit"]:
        return 0
    return ab["limit"] * len(ab["zero_shot_tasks"] or cfg["evaluation"]["tasks"])


def dependence_title(cfg: dict, model: str) -> str:
    imp = cfg["importance"]
    return f"{model}: input dependence of head importance ({imp['dependence_criterion']}, {imp['dependence_k']}-shot)"
