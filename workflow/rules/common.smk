# Glue between the rules and shadowllm.layout, which owns every grid and every path (torch-free, so that
# `snakemake -n` plans without torch): validate the configuration, name the run's roots, wrap layout functions of
# the config into Snakemake input, params and resource functions. The other files hold the workflow's steps only.
import json
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from shadowllm.config import ConfigError, latency_bench, validate as _validate_config
from shadowllm.layout.figures import FORMATS as FIG_FORMATS, caption as figure_caption, names as figure_names
from shadowllm.layout import models, outputs, params, paths, predictors as pred, resources as res, run
from shadowllm.layout.grid import PATH as AB_PATH, point_of

try:  # every stage's keys, with messages naming the bad value, before any job runs; fills schema defaults
    _full = _validate_config(config)
except ConfigError as e:
    raise WorkflowError(str(e))
config.clear()
config.update(_full)

# The conda env's post-deploy script installs the package from here (envs/shadowllm.post-deploy.sh).
os.environ.update({"SHADOWLLM_SRC": str(Path(workflow.basedir).resolve())})

R, L, B = run.results(config), run.logs(config), run.benchmarks(config)  # results/, logs/, benchmarks/{run}
SEED, THREADS = config["seed"], config["threads"]
IMP, PR, AB, LAT = (config.get(k) for k in ("importance", "predictors", "ablations", "latency"))
FIG_DPI = config["figures"]["dpi"]  # figure style: changing it reruns the figure jobs only
CONDA_ENV = "../../envs/shadowllm.yaml"  # for --software-deployment-method conda
TASK_DIR, DATASETS = run.task_dir(config), run.DATASETS
PRED_POINT, FEWSHOT = pred.POINT, pred.FEWSHOT
OFFLINE_ENV = models.offline_env(config)


wildcard_constraints:
    model="[A-Za-z0-9_.-]+",
    package="[A-Za-z0-9_.+-]+",
    gguf="[A-Za-z0-9_.-]+\\.gguf",
    repo="[A-Za-z0-9_.-]+--[A-Za-z0-9_.-]+",
    source="[a-z_]+",
    criterion="[a-z_0-9]+",
    placement=r"\d+",
    style="[a-z]+",
    units="[a-z]+",
    protocol="[a-z]+",
    sparsity=r"[0-9]+\.[0-9]+",
    task="[A-Za-z0-9_]+",
    k=r"\d+",
    bench="[A-Za-z0-9_.-]+",
    design="[a-z]+",
    position="[a-z]+",
    normalize="[a-z_]+",
    shots=r"[0-9+]+|none",
    seed=r"\d+",


def layout(f, *keys):
    """A layout function of (config, each key's wildcard) as a Snakemake input or params function; the key "point"
    is the ablation point the wildcards name. A ValueError (a model or point the configuration lacks) becomes a
    WorkflowError naming it."""
    def call(wildcards):
        try:
            return f(config, *(point_of(config, wildcards) if k == "point" else wildcards[k] for k in keys))
        except ValueError as e:
            raise WorkflowError(str(e))
    return call


def per_attempt(f, *keys, **kw):
    """A layout resource function of (config, each key's wildcard or None, attempt) as a Snakemake resource."""
    return lambda wildcards, attempt: f(config, *(wildcards.get(k) for k in keys), attempt, **kw)


def of_config(f, *args):
    """A layout function of the configuration alone, called at parse time."""
    return lambda *_: f(config, *args)


# ---- models, data, importance -------------------------------------------------------------------------------
model_input = layout(models.model_inputs, "model")
hub_id = layout(models.hub_id, "repo")
gguf_package = layout(models.gguf_package, "package", "gguf")
train_metrics = layout(models.train_metrics, "model")
train_params = layout(params.train_params, "model")
model_flags = layout(params.model_flags, "model")
model_gpus = layout(res.model_gpus, "model")
hub_tasks = of_config(models.hub_tasks)
datasets_input = of_config(models.datasets_inputs)
imp_criteria = lambda: IMP["criteria"] if IMP else []
imp_neuron_traces = of_config(params.neuron_traces)
dependence_traces = layout(paths.dependence_traces, "model")
dependence_title = layout(params.dependence_title, "model")

# ---- predictors and the ablation grid -----------------------------------------------------------------------
pred_metrics = layout(pred.metrics_files, "model")
pred_traces = layout(pred.trace_dirs, "model")
pred_trace_files = layout(pred.trace_files, "model", "criterion", "design")
fewshot_traces = layout(pred.fewshot_traces, "model", "shots", "criterion")
pred_flags = of_config(params.pred_flags)
pred_threads = of_config(params.threads, "predictors")
ab_jsons = layout(paths.ablation_jsons, "model")
eval_jsons = layout(paths.eval_jsons, "model")
ab_predictor = layout(pred.point_predictor, "model", "point")
ab_tasks = layout(params.ablation_tasks, "point")
ab_limits = of_config(params.ablation_limits)
ab_threads = of_config(params.threads, "ablations")

# ---- the report, latency, what the run publishes --------------------------------------------------------------
claims_inputs = layout(paths.claims_inputs, "model")
claims_flags = of_config(params.claims_flags)
claims_questions = of_config(params.claims_questions)
report_links = layout(lambda cfg, m: " ".join(f"--{k} {v}" for k, v in outputs.report_links(cfg, m).items()), "model")
lat_csvs = of_config(paths.latency_csvs)
lat_spec = layout(lambda cfg, bench: json.dumps(latency_bench(cfg, bench), sort_keys=True), "bench")
publish_pairs = of_config(lambda cfg: " ".join(outputs.publish_pairs(cfg)))
publish_inputs = of_config(outputs.publish_inputs)
stage_outputs = lambda stage: outputs.stage_outputs(config, stage)
all_outputs = of_config(outputs.all_outputs)

# ---- resources: scale with model size and with the retry attempt ----------------------------------------------
mem_mb_for = lambda base, per_b=0: per_attempt(res.mem_mb, "model", base_mb=base, per_b_mb=per_b)
runtime_for = lambda base, per_b=0: per_attempt(res.runtime, "model", base_min=base, per_b_min=per_b)
ablate_mem_mb = per_attempt(res.ablate_mem_mb, "model", "source")
lat_gpu = of_config(res.lat_gpu)
lat_threads = of_config(res.lat_threads)
lat_mem_mb = per_attempt(res.lat_mem_mb, "bench")
lat_runtime = per_attempt(res.lat_runtime, "bench")
selftest_mem = lambda base_mb: (lambda wildcards, attempt: base_mb * attempt)  # grows with the attempt, like a job's
