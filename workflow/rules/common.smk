# Helpers shared by every rule file: config validation, model paths, resources.
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate as _sm_validate

from shadowllm.config import ConfigError, validate as _validate_config

try:
    _validate_config(config)  # clear messages naming the bad value, before any job runs
except ConfigError as e:
    raise WorkflowError(str(e))
_sm_validate(config, "../schemas/config.schema.yaml")  # fills schema defaults

SEED = config["seed"]
THREADS = config["threads"]
DEVICE = config["device"]
MODELS = config["models"]
EVAL = config["evaluation"]
MASKS = config.get("masks", {"kinds": ["random"], "style": "global", "sparsity": [0.2, 0.4, 0.6]})
TASK_DIR = "results/data/tasks"
CONDA_ENV = "../../envs/shadowllm.yaml"  # for --software-deployment-method conda


wildcard_constraints:
    model="[A-Za-z0-9_.-]+",
    sparsity="[0-9.]+",
    style="local|global|hybrid",
    kind="[a-z_]+",


def model_cfg(model):
    if model not in MODELS:
        raise WorkflowError(f"model {model!r} is not in config['models'] ({sorted(MODELS)})")
    return MODELS[model]


def model_path(model):
    """What `--model` gets: the trained folder, a hub id or a local folder."""
    m = model_cfg(model)
    return f"results/models/{model}/model" if m["source"] == "train" else m["path"]


def model_input(wildcards):
    """Snakemake inputs for a model: the trained folder for source 'train', nothing otherwise."""
    m = model_cfg(wildcards.model)
    return [f"results/models/{wildcards.model}/model"] if m["source"] == "train" else []


def model_flags(model):
    m = model_cfg(model)
    flags = f"--model {model_path(model)} --dtype {m.get('dtype', 'float32')} --device {DEVICE} --threads {THREADS}"
    if m.get("gguf_file"):
        flags += f" --gguf-file {m['gguf_file']}"
    return flags


def params_b(wildcards):
    return float(model_cfg(wildcards.model).get("params_b", 0.01)) if hasattr(wildcards, "model") else 0.01


# ---- resources: scale with model size (billions of parameters) and with the retry attempt --------

def mem_mb_for(base_mb, per_b_mb=0):
    def f(wildcards, attempt):
        return int((base_mb + per_b_mb * params_b(wildcards)) * (1.5 ** (attempt - 1)))
    return f


def runtime_for(base_min, per_b_min=0):
    def f(wildcards, attempt):
        return int((base_min + per_b_min * params_b(wildcards)) * (2 ** (attempt - 1)))
    return f


def mask_names():
    return [f"{k}_s{s}_{MASKS['style']}" for k in MASKS["kinds"] for s in MASKS["sparsity"]]


def eval_tasks():
    return [EVAL["ppl_task"]] + list(EVAL["tasks"])
