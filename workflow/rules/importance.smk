# Importance traces (all criteria from one pass per model x task x k) and the input-dependence figure.
# Config (schema keys owned by the lead):
#   importance: {tasks: [...], shots: [0, 3, 5], criteria: [...], max_examples: 500, batch_size: 8,
#                placement_layers: [0, ...], neuron_traces: all, dtype: float32, seed: 0,
#                dependence_criterion: plainact, dependence_k: 5}
#   models: {name: {...}}  -> trained model folder results/models/{name}/model
# Uses mem_mb_for / runtime_for from workflow/rules/common.smk (included by the Snakefile).

IMP = config.get("importance", {})  # defaults filled from the schema
IMP_TASKS = IMP.get("tasks", [])
IMP_SHOTS = IMP.get("shots", [0, 3, 5])
IMP_CRITERIA = IMP.get("criteria", ["plainact", "fisher", "grad_norm", "l2_norm", "snip", "grasp", "nwot",
                                    "jacov", "epenas"])
IMP_DIR = "results/importance"
IMP_DEP_CRIT = IMP.get("dependence_criterion", "plainact")
IMP_DEP_K = IMP.get("dependence_k", 5 if 5 in IMP_SHOTS else IMP_SHOTS[-1])


def importance_traces_all(wildcards=None):
    return expand(f"{IMP_DIR}/{{model}}/{{task}}/k{{k}}/{{crit}}.safetensors",
                  model=list(config.get("models", {})), task=IMP_TASKS, k=IMP_SHOTS, crit=IMP_CRITERIA)


def importance_figures_all(wildcards=None):
    return expand("figures/{model}/input_dependence.png", model=list(config.get("models", {})))


rule importance_traces:
    input:
        model_input,
    output:
        inputs=f"{IMP_DIR}/{{model}}/{{task}}/k{{k}}/inputs.safetensors",
        traces=expand(f"{IMP_DIR}/{{{{model}}}}/{{{{task}}}}/k{{{{k}}}}/{{crit}}.safetensors", crit=IMP_CRITERIA),
    conda:
        CONDA_ENV
    log:
        "logs/importance/{model}/{task}/k{k}.log",
    benchmark:
        "benchmarks/importance/{model}/{task}/k{k}.tsv"
    wildcard_constraints:
        k=r"\d+",
    params:
        model=lambda wc: model_path(wc.model),
        out=lambda wc: f"{IMP_DIR}/{wc.model}/{wc.task}/k{wc.k}",
        criteria=",".join(IMP_CRITERIA),
        max_examples=IMP.get("max_examples", 500),
        batch_size=IMP.get("batch_size", 8),
        placement=",".join(str(l) for l in IMP.get("placement_layers", [0])),
        neuron_traces=IMP.get("neuron_traces", "all") if isinstance(IMP.get("neuron_traces", "all"), str)
        else ",".join(IMP["neuron_traces"]),
        dtype=IMP.get("dtype", "float32"),
        seed=IMP.get("seed", config.get("seed", 0)),
    threads: THREADS
    resources:
        mem_mb=mem_mb_for(4000, 3000),
        runtime=runtime_for(20, 30),
        gpu=1,
    shell:
        "shadowllm importance --model {params.model} --model-name {wildcards.model} --task {wildcards.task} "
        "--k {wildcards.k} --criteria {params.criteria} --out {params.out} "
        "--max-examples {params.max_examples} --batch-size {params.batch_size} "
        "--placement-layers {params.placement} --neuron-traces {params.neuron_traces} "
        "--dtype {params.dtype} --seed {params.seed} --device {DEVICE} --threads {threads} > {log} 2>&1"


rule input_dependence:
    input:
        traces=lambda wc: expand(f"{IMP_DIR}/{wc.model}/{{task}}/k{IMP_DEP_K}/{IMP_DEP_CRIT}.safetensors",
                                 task=IMP_TASKS),
    output:
        png=report("figures/{model}/input_dependence.png", caption="../report/input_dependence.rst",
                   category="Importance"),
        csv=f"{IMP_DIR}/{{model}}/input_dependence.csv",
    conda:
        CONDA_ENV
    log:
        "logs/importance/{model}/input_dependence.log",
    benchmark:
        "benchmarks/importance/{model}/input_dependence.tsv"
    params:
        title=lambda wc: f"{wc.model}: input dependence of head importance ({IMP_DEP_CRIT}, {IMP_DEP_K}-shot)",
    resources:
        mem_mb=mem_mb_for(2000, 0),
        runtime=runtime_for(10, 0),
        gpu=0,
    shell:
        "shadowllm input-dependence --traces {input.traces} --out-csv {output.csv} --out-png {output.png} "
        "--title '{params.title}' > {log} 2>&1"
