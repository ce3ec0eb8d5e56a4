# Helpers shared by every rules file (configuration, paths of every output, resources). Only functions and
# constants live here; the other files hold the workflow's steps only, as snakemake --lint asks.
import json
import os
from pathlib import Path
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

from shadowllm.ablations.grid import PATH as AB_PATH, Point, expand as _expand_ablations, pooled_shots, tasks_of
from shadowllm.config import ConfigError, latency_bench, validate as _validate_config

try:  # every stage's keys, with messages naming the bad value, before any job runs; fills schema defaults
    _full = _validate_config(config)
except ConfigError as e:
    raise WorkflowError(str(e))
config.clear()
config.update(_full)

# The conda env's post-deploy script installs the package from here (envs/shadowllm.post-deploy.sh).
os.environ.update({"SHADOWLLM_SRC": str(Path(workflow.basedir).resolve())})

RUN = config["run"]
R = f"results/{RUN}"  # every output of this configuration lives under R (logs/{RUN}, benchmarks/{RUN})
L = f"logs/{RUN}"
B = f"benchmarks/{RUN}"
SEED = config["seed"]
THREADS = config["threads"]
DEVICE = config["device"]
MODELS = config.get("models", {})
EVAL = config.get("evaluation")
MASKS = config.get("masks")
IMP = config.get("importance")
LAT = config.get("latency")
FIG_DPI = config["figures"]["dpi"]  # figure style: changing it reruns the figure jobs only
CONDA_ENV = "../../envs/shadowllm.yaml"  # for --software-deployment-method conda
TASK_DIR = f"{R}/data/tasks"

# The axes of a grid point, in path order: a path names every axis (see shadowllm.evaluate.tables.AXES).
POINT = ("source={source}/criterion={criterion}/placement={placement}/style={style}/units={units}/"
         "protocol={protocol}/sparsity={sparsity}")
DENSE = dict(source="dense", criterion="none", placement=0, style="none", units="none", protocol="none",
             sparsity=0.0)


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


# ---- models ------------------------------------------------------------------------------------------

def model_cfg(model):
    if model not in MODELS:
        raise WorkflowError(f"model {model!r} is not in config['models'] ({sorted(MODELS)})")
    return MODELS[model]


def model_path(model):
    """What `--model` gets: the trained folder, the converted folder, the downloaded hub folder or a local one."""
    m = model_cfg(model)
    if m["source"] == "train":
        return f"{R}/models/{model}/model"
    if m["source"] == "pypi_gguf":
        return converted_path(model)
    if m["source"] == "hub":
        return hub_path(model)
    return m["path"]


def hub_path(model):
    """A hub model, downloaded once (shared by every run of this checkout, like a converted one)."""
    from shadowllm.data.download import folder_name

    return f"resources/models/hub/{folder_name(model_cfg(model)['path'])}"


def hub_id(wildcards):
    for name, m in MODELS.items():
        if m["source"] == "hub" and hub_path(name) == f"resources/models/hub/{wildcards.repo}":
            return m["path"]
    raise WorkflowError(f"resources/models/hub/{wildcards.repo} is not the folder of any hub model in config['models']")


def converted_path(model):
    """A converted GGUF model: shared by every run of this checkout (resources/ is a cache, not a result)."""
    m = model_cfg(model)
    return f"resources/models/{m['package'].replace('==', '-')}/{m['gguf_file']}"


def gguf_package(wildcards):
    """The pinned package (NAME==VERSION) whose converted folder this is."""
    want = f"resources/models/{wildcards.package}/{wildcards.gguf}"
    for name, m in MODELS.items():
        if m["source"] == "pypi_gguf" and converted_path(name) == want:
            return m["package"]
    raise WorkflowError(f"{want} is not the converted folder of any pypi_gguf model in config['models']")


def model_input(wildcards):
    """Snakemake inputs for a model: the folder the workflow builds (trained or converted), nothing otherwise."""
    m = model_cfg(wildcards.model)
    if m["source"] == "train":
        return [f"{R}/models/{wildcards.model}/model"]
    if m["source"] == "hub":
        return [hub_path(wildcards.model)]
    return [converted_path(wildcards.model)] if m["source"] == "pypi_gguf" else []


def model_flags(wildcards):
    m = model_cfg(wildcards.model)
    flags = f"--model {model_path(wildcards.model)} --dtype {m['dtype']} --device {DEVICE}"
    if m.get("gguf_file") and m["source"] != "pypi_gguf":
        flags += f" --gguf-file {m['gguf_file']}"
    return flags


def train_params(wildcards):
    return json.dumps(model_cfg(wildcards.model).get("train", {}), sort_keys=True)  # key order is not a change


def train_metrics(wildcards):
    return [f"{R}/models/{wildcards.model}/train.json"] if model_cfg(wildcards.model)["source"] == "train" else []


# ---- resources: scale with model size (billions of parameters) and with the retry attempt --------

def params_b(wildcards):
    return float(model_cfg(wildcards.model)["params_b"]) if hasattr(wildcards, "model") else 0.01


def model_gpus(wildcards):
    """GPUs a model job asks for: none on cpu, else the model's `gpus` (a model beyond one GPU spreads over them)."""
    return 0 if DEVICE == "cpu" else int(model_cfg(wildcards.model)["gpus"])


def mem_mb_for(base_mb, per_b_mb=0):
    def f(wildcards, attempt):
        return int((base_mb + per_b_mb * params_b(wildcards)) * (1.5 ** (attempt - 1)))
    return f


ORACLE_MEM = 4   # the oracle's gradient pass over whole windows: SmolLM2 at 2048 tokens peaked at 12.1 GB


def ablate_mem_mb(wildcards, attempt):
    """An ablation point's memory; the oracle's criterion pass (gradients of full-window logits) needs more."""
    mb = mem_mb_for(3000, 4000)(wildcards, attempt)
    return mb * ORACLE_MEM if wildcards.source == "oracle" else mb


def runtime_for(base_min, per_b_min=0):
    def f(wildcards, attempt):
        return int((base_min + per_b_min * params_b(wildcards)) * (2 ** (attempt - 1)))
    return f


def selftest_mem(base_mb):
    """Memory that grows with the attempt number, like the workflow's real jobs."""
    return lambda wildcards, attempt: base_mb * attempt


# ---- evaluation grid -----------------------------------------------------------------------------

def point(**kw):
    return POINT.format(**kw)


def mask_points():
    if not MASKS:
        return []
    return [point(source=k, criterion="none", placement=MASKS["placement"], style=MASKS["style"],
                  units=MASKS["units"], protocol="none", sparsity=float(s))
            for k in MASKS["kinds"] for s in MASKS["sparsity"]]


def eval_points():
    return [point(**DENSE)] + mask_points()


def eval_jsons(wildcards):
    return [f"{R}/eval/{wildcards.model}/{p}.json" for p in eval_points()]


def eval_tasks():
    return ",".join([EVAL["ppl_task"]] + list(EVAL["tasks"])) if EVAL else ""


def eval_limit():
    """--limit and --max-length of the evaluation, where set."""
    flags = [f"--limit {EVAL['limit']}"] if EVAL and EVAL["limit"] else []
    flags += [f"--max-length {EVAL['max_length']}"] if EVAL and EVAL["max_length"] else []
    return " ".join(flags)


def mask_file(wildcards):
    """A grid point's mask file; the dense point has none."""
    if wildcards.source == "dense":
        return []
    return [f"{R}/masks/{wildcards.model}/{point(**dict(wildcards))}.safetensors"]


def mask_flag(wildcards, input):
    return f"--mask {input.mask}" if input.mask else ""


# ---- importance ----------------------------------------------------------------------------------

def imp_criteria():
    return IMP["criteria"] if IMP else []


def imp_traces_all():
    if not IMP or not IMP["tasks"]:
        return []
    return expand(f"{R}/importance/{{model}}/{{task}}/k{{k}}/{{crit}}.safetensors", model=list(MODELS),
                  task=IMP["tasks"], k=IMP["shots"], crit=IMP["criteria"])


def imp_neuron_traces():
    nt = IMP["neuron_traces"]
    return nt if isinstance(nt, str) else ",".join(nt)


def dependence_traces(wildcards):
    return expand(f"{R}/importance/{wildcards.model}/{{task}}/k{IMP['dependence_k']}/"
                  f"{IMP['dependence_criterion']}.safetensors", task=IMP["tasks"])


def dependence_title(wildcards):
    return (f"{wildcards.model}: input dependence of head importance ({IMP['dependence_criterion']}, "
            f"{IMP['dependence_k']}-shot)")


# ---- latency -------------------------------------------------------------------------------------

def lat_benches():
    return list(LAT["benches"]) if LAT else []


def lat_spec(wildcards):
    return json.dumps(latency_bench(config, wildcards.bench), sort_keys=True)


def lat_gpu(wildcards=None):
    return 1 if LAT and LAT["device"].startswith("cuda") else 0


def lat_gb(wildcards):
    """Resident GB of the largest random-weight model of a bench (weights + sliced copies + workspace)."""
    from shadowllm.sparse.shapes import parse_size

    b = latency_bench(config, wildcards.bench)
    es = 2 if b["dtype"] in ("float16", "bfloat16") else 4
    return max(parse_size(s).params_b for s in b["sizes"]) * es * 2.2


def lat_mem_mb(wildcards, attempt):
    base = 8000 if lat_gpu() else 1500 + 1000 * lat_gb(wildcards)
    return int(base * (1.5 ** (attempt - 1)))


def lat_runtime(wildcards, attempt):
    b = latency_bench(config, wildcards.bench)
    n = len(b["modes"]) * len(b["sizes"]) * len(b["sparsities"]) * len(b["gen_tokens"])
    return int((10 + 2 * n * max(1.0, lat_gb(wildcards))) * (2 ** (attempt - 1)))


def lat_threads():
    return 1 if lat_gpu() else THREADS


def lat_csvs():
    return [f"{R}/latency/{b}.csv" for b in lat_benches()]


# ---- figures, reports and what the run publishes ---------------------------------------------------

LAT_FIGURES = ["latency_vs_size", "latency_vs_sparsity", "latency_vs_genlen"]
AB_FIGURES = ["ablation_criteria_ppl", "ablation_criteria_acc", "ablation_styles", "ablation_fewshot",
              "ablation_sources", "ablation_protocols", "ablation_per_task"]
PRED_FIGURES = ["predictors_by_criterion", "predictors_by_design", "predictors_by_placement"]
FIG_FORMATS = ["png", "pdf"]   # every figure in both (shadowllm.figures.FORMATS)


def _figs(src_dir, dst_dir, stems):
    """(result, committed) pairs of each figure stem in every format."""
    return [(f"{src_dir}/{f}.{e}", f"{dst_dir}/{f}.{e}") for f in stems for e in FIG_FORMATS]


def final_outputs():
    """(result path, committed path) of every final figure and report of this configuration."""
    out = []
    for m in (MODELS if EVAL and (MASKS or not AB) else []):
        out += _figs(f"{R}/figures/{m}", f"figures/{m}", ["eval_vs_sparsity"])
        out.append((f"{R}/reports/{m}/eval.md", f"reports/{m}/eval.md"))
    for m in (MODELS if IMP and IMP["tasks"] else []):
        out += _figs(f"{R}/figures/{m}", f"figures/{m}", ["input_dependence"])
    for m in (MODELS if config.get("predictors") else []):
        out += _figs(f"{R}/figures/{m}", f"figures/{m}", PRED_FIGURES)
        out.append((f"{R}/tables/{m}/predictors.csv", f"reports/{m}/predictors.csv"))
    for m in (MODELS if AB else []):
        out.append((f"{R}/reports/{m}/report.md", f"reports/{m}/report.md"))
        if LAT:
            out += _figs(f"{R}/figures/{m}", f"figures/{m}", ["accuracy_vs_latency"])
        out += _figs(f"{R}/figures/{m}", f"figures/{m}", AB_FIGURES)
        out += [(f"{R}/tables/{m}/ablations.csv", f"reports/{m}/ablations.csv"),
                (f"{R}/tables/{m}/samples.csv", f"reports/{m}/samples.csv"),
                (f"{R}/reports/{m}/ablations.md", f"reports/{m}/ablations.md")]
    if LAT:
        out += _figs(f"{R}/figures", "figures", LAT_FIGURES)
        out += [(f"{R}/latency/latency.csv", f"reports/latency_{LAT['device'].split(':')[0]}.csv"),
                (f"{R}/latency/predictor_flops.csv", "reports/predictor_flops.csv")]
    return out


def publish_pairs():
    return " ".join(f"{a}={b}" for a, b in final_outputs())


def publish_inputs():
    """Everything else the run builds, so that publishing (which changes tracked files) comes last."""
    return [a for a, _ in final_outputs()] + imp_traces_all() + lat_csvs()


STAGES = ("data", "importance", "predictors", "ablations", "latency", "figures", "report")


def stage_outputs(stage):
    """What `snakemake <stage>` builds (each stage's final files; its inputs come along)."""
    final = [a for a, _ in final_outputs()]
    if stage == "data":
        return [TASK_DIR] + datasets_input() + [p for m in MODELS for p in model_input(SimpleNamespace(model=m))]
    if stage == "importance":
        return imp_traces_all() + ([f"{R}/importance/{m}/input_dependence.csv" for m in MODELS]
                                   if IMP and IMP["tasks"] else [])
    if stage == "predictors":
        return [f"{R}/tables/{m}/predictors.csv" for m in MODELS] if config.get("predictors") else []
    if stage == "ablations":
        return [f"{R}/tables/{m}/ablations.csv" for m in MODELS] if AB else []
    if stage == "latency":
        return lat_csvs() + ([f"{R}/latency/latency.csv", f"{R}/latency/predictor_flops.csv"] if LAT else [])
    if stage == "figures":
        return [p for p in final if "/figures/" in p]
    if stage == "report":
        return [p for p in final if p.endswith(".md")]
    raise WorkflowError(f"unknown stage {stage!r}; expected one of {STAGES}")


def all_outputs():
    out = [a for a, _ in final_outputs()] + imp_traces_all() + lat_csvs()
    if config["publish"]:
        out.append(f"{R}/published.tsv")
    return out


# ---- predictors ----------------------------------------------------------------------------------

PR = config.get("predictors")
PRED_POINT = ("criterion={criterion}/design={design}/position={position}/placement={placement}/normalize={normalize}/"
              "seed={seed}")


def pred_points():
    """Every predictor grid point: criteria x designs x positions at the placement, the first criterion's extra
    positions and designs, plus the placement sweep; each in predictors.normalize, at every seed of
    predictors.seeds. (The ablation grid asks for the predictors of its own normalisations and seeds as well.)"""
    if not PR:
        return []
    return [dict(p, seed=s) for p in _pred_points_one_seed() for s in PR["seeds"]]


def _pred_points_one_seed():
    if not PR:
        return []
    pts = [dict(criterion=c, design=d, position=p, placement=PR["placement"], normalize=PR["normalize"])
           for c in PR["criteria"] for d in PR["designs"] for p in PR["positions"]]
    c0, extra = PR["criteria"][0], [p for p in PR["first_criterion_positions"] if p not in PR["positions"]]
    pts += [dict(criterion=c0, design=d, position=p, placement=PR["placement"], normalize=PR["normalize"])
            for d in PR["designs"] for p in extra]
    pts += [dict(criterion=c0, design=d, position=p, placement=PR["placement"], normalize=PR["normalize"])
            for d in PR["first_criterion_designs"] if d not in PR["designs"] for p in PR["positions"] + extra]
    pts += [dict(criterion=PR["criteria"][0], design=d, position="context", placement=pl, normalize=PR["normalize"])
            for pl in PR["placement_sweep"] for d in ("shadowllm", "static") if d in PR["designs"]]
    return pts


def pred_metrics(wildcards):
    return [f"{R}/predictors/{wildcards.model}/{PRED_POINT.format(**p)}/metrics.csv" for p in pred_points()]


def pred_traces(wildcards):
    """The trace folders a predictor pools: every traced task at the configured shots."""
    shots = PR["shots"] if PR["shots"] is not None else IMP["shots"]
    return [f"{R}/importance/{wildcards.model}/{t}/k{k}" for t in IMP["tasks"] for k in shots]


def pred_trace_files(wildcards):
    names = ["inputs.safetensors", f"{wildcards.criterion}.safetensors"]
    if wildcards.design == "fullseq":
        names.append("sequence_inputs.safetensors")
    return [f"{d}/{n}" for d in pred_traces(wildcards) for n in names]


def pred_threads():
    return (PR["threads"] or THREADS) if PR else THREADS


def pred_flags():
    keys = ("lr", "weight_decay", "val_fraction", "patience", "held_out")
    flags = [f"--{k.replace('_', '-')} {PR[k]}" for k in keys]
    flags += [f"--{s.replace('_', '-')}-{kind} {PR[kind][s]}" for kind in ("heads", "neurons")
              for s in ("hidden", "epochs", "batch_size")]
    return " ".join(flags) + " --sparsities " + " ".join(str(s) for s in PR["sparsities"])


# ---- ablations -----------------------------------------------------------------------------------

AB = config.get("ablations")
AB_POINTS = _expand_ablations(config) if AB else {}  # point -> with zero-shot
AB_DESIGN_POSITION = "context"  # predictors and static tables read at the last context token when trained


def ab_jsons(wildcards):
    return [f"{R}/ablations/{wildcards.model}/{p.path()}.json" for p in AB_POINTS]


def ab_point(wildcards):
    p = Point.from_wildcards(wildcards)
    if p not in AB_POINTS:
        raise WorkflowError(f"{p.path()} is not a point of config['ablations']")
    return p


def ab_predictor(wildcards):
    """The predictor file or static table a point reads ([] for dense, random, oracle)."""
    p = ab_point(wildcards)
    if p.design == "none":
        return []
    if p.design == "static" and p.shots != pooled_shots(config):
        return [f"{R}/predictors/{wildcards.model}/fewshot/shots={p.shots}/criterion={p.criterion}/"
                f"placement={p.placement}/normalize={p.normalize}/predictor.safetensors"]
    # a static table is the mean of the training targets: it does not depend on the seed (the first one's is read)
    seed = p.seed if p.design != "static" else PR["seeds"][0]
    pt = PRED_POINT.format(criterion=p.criterion, design=p.design, position=AB_DESIGN_POSITION,
                           placement=p.placement, normalize=p.normalize, seed=seed)
    return [f"{R}/predictors/{wildcards.model}/{pt}/predictor.safetensors"]


def ab_tasks(wildcards):
    """--ppl-task / --tasks of a point: perplexity unless under prompt, zero-shot where the grid asks."""
    p = ab_point(wildcards)
    zs = AB["zero_shot_tasks"] or EVAL["tasks"]
    tasks = tasks_of(p, EVAL["ppl_task"], zs, AB_POINTS[p])
    ppl = [t for t in tasks if t == EVAL["ppl_task"]]
    flags = f"--ppl-task {ppl[0]}" if ppl else ""
    rest = [t for t in tasks if t != EVAL["ppl_task"]]
    return flags + (f" --tasks {','.join(rest)}" if rest else "")


def ab_limits():
    return " ".join(f"--{k.replace('_', '-')} {AB[k]}" for k in ("ppl_limit", "limit") if AB and AB[k])


def ab_threads():
    return (AB["threads"] or THREADS) if AB else THREADS


def fewshot_traces(wildcards):
    """The trace files a few-shot static table is fitted on: every traced task at the named shots."""
    ks = [int(k) for k in wildcards.shots.split("+")]
    return [f"{R}/importance/{wildcards.model}/{t}/k{k}/{n}" for t in IMP["tasks"] for k in ks
            for n in ("inputs.safetensors", f"{wildcards.criterion}.safetensors")]


# ---- the report: claims and figures ---------------------------------------------------------------------------

def claims_inputs(wildcards):
    """The tables a model's claims are judged on: whichever stages this configuration runs."""
    m = wildcards.model
    ins = {"ablations": f"{R}/tables/{m}/ablations.csv", "samples": f"{R}/tables/{m}/samples.csv"}
    if config.get("predictors"):
        ins["predictors"] = f"{R}/tables/{m}/predictors.csv"
    if LAT:
        ins["latency"] = f"{R}/latency/latency.csv"
        ins["flops"] = f"{R}/latency/predictor_flops.csv"
    if IMP and IMP["tasks"]:
        ins["dependence"] = f"{R}/importance/{m}/input_dependence.csv"
    if config["report"]["latency_tables"]:
        ins["extra-latency"] = config["report"]["latency_tables"]
    return ins


def claims_flags():
    """How the claims read the tables: the normalisation and units first, from config['report']."""
    from shadowllm.config import report_normalize

    units = config["report"]["units"]
    return f"--normalize {report_normalize(config)}" + (f" --units {units}" if units else "")


def claims_questions():
    """Zero-shot questions behind one mean accuracy of the grid (0: whole tasks, count unknown here)."""
    if not AB or not AB["limit"]:
        return 0
    return AB["limit"] * len(AB["zero_shot_tasks"] or EVAL["tasks"])


# ---- the hub: every model job runs offline; lm-eval hub tasks are fetched once by a local job ------------

DATASETS = "resources/datasets"   # shared by every run of this checkout, like the downloaded models


def hub_tasks():
    """The configuration's lm-eval tasks that live on the hub (the shipped ones are local files)."""
    from shadowllm.config import HUB_TASKS

    names = ([EVAL["ppl_task"]] + list(EVAL["tasks"] or []) if EVAL else []) + \
        (list(AB["zero_shot_tasks"] or []) if AB else []) + (list(IMP["tasks"] or []) if IMP else [])
    return sorted(set(names) & HUB_TASKS)


def datasets_input(wildcards=None):
    return [f"{DATASETS}/manifest.json"] if hub_tasks() else []


# the environment of every job that loads a model or a task: the hub is never reached from it
OFFLINE_ENV = "env HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" + (
    f" HF_DATASETS_CACHE={DATASETS}/datasets HF_HUB_CACHE={DATASETS}/hub" if hub_tasks() else "")
