rule make_mask:
    """A random static mask (baseline) at one sparsity, heads and neurons alike, layer 0 unpruned."""
    input:
        model_input,
    output:
        "results/masks/{model}/{kind}_s{sparsity}_{style}.safetensors",
    params:
        model=lambda wc: model_path(wc.model),
    conda:
        CONDA_ENV
    log:
        "logs/masks/{model}/{kind}_s{sparsity}_{style}.log",
    benchmark:
        "benchmarks/masks/{model}/{kind}_s{sparsity}_{style}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "shadowllm make-mask --model {params.model} --kind {wildcards.kind} --sparsity {wildcards.sparsity} "
        "--style {wildcards.style} --seed {SEED} --out {output} > {log} 2>&1"


def _mask_arg(wildcards):
    return "" if wildcards.mask == "dense" else f"--mask results/masks/{wildcards.model}/{wildcards.mask}.safetensors"


def _mask_input(wildcards):
    return [] if wildcards.mask == "dense" else [f"results/masks/{wildcards.model}/{wildcards.mask}.safetensors"]


rule evaluate:
    """Perplexity (rolling log-likelihood) and zero-shot accuracy through lm-eval, unpruned or masked."""
    input:
        model=model_input,
        tasks=TASK_DIR,
        mask=_mask_input,
    output:
        "results/eval/{model}/{mask}.json",
    params:
        flags=lambda wc: model_flags(wc.model),
        mask=_mask_arg,
        tasks=",".join(eval_tasks()),
        limit=f"--limit {EVAL['limit']}" if EVAL.get("limit") else "",
    conda:
        CONDA_ENV
    log:
        "logs/eval/{model}/{mask}.log",
    benchmark:
        "benchmarks/eval/{model}/{mask}.tsv"
    threads: THREADS
    resources:
        mem_mb=mem_mb_for(4000, 4000),
        runtime=runtime_for(20, 30),
        gpu=1,
    shell:
        "shadowllm evaluate {params.flags} {params.mask} --tasks {params.tasks} --include {input.tasks} "
        "{params.limit} --batch-size {EVAL[batch_size]} --seed {SEED} --out {output} > {log} 2>&1"


rule table:
    """All evaluations of a model in one long CSV (task, metric, sparsity, value)."""
    input:
        lambda wc: [f"results/eval/{wc.model}/{m}.json" for m in ["dense"] + mask_names()],
    output:
        "results/tables/{model}/eval.csv",
    conda:
        CONDA_ENV
    log:
        "logs/tables/{model}.log",
    benchmark:
        "benchmarks/tables/{model}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "shadowllm table --out {output} {input} > {log} 2>&1"


rule figure_eval:
    """First figure: accuracy and perplexity of the model, unpruned and under random masks."""
    input:
        "results/tables/{model}/eval.csv",
    output:
        report("figures/{model}/eval_vs_sparsity.png", caption="../report/eval_vs_sparsity.rst",
               category="Evaluation"),
    conda:
        CONDA_ENV
    log:
        "logs/figures/{model}_eval.log",
    benchmark:
        "benchmarks/figures/{model}_eval.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "shadowllm plot-dense --table {input} --title {wildcards.model} --out {output} > {log} 2>&1"


rule report_eval:
    """A committed, reviewable copy of the table plus the training metrics."""
    input:
        table="results/tables/{model}/eval.csv",
        train=lambda wc: [f"results/models/{wc.model}/train.json"] if model_cfg(wc.model)["source"] == "train" else [],
    output:
        "reports/{model}/eval.md",
    conda:
        CONDA_ENV
    log:
        "logs/reports/{model}_eval.log",
    benchmark:
        "benchmarks/reports/{model}_eval.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "shadowllm report-eval --table {input.table} --train '{input.train}' --model {wildcards.model} "
        "--out {output} > {log} 2>&1"
