rule evaluate:
    """Perplexity (rolling log-likelihood) and zero-shot accuracy through lm-eval at one grid point."""
    input:
        model=model_input,
        tasks=TASK_DIR,
        mask=mask_file,
        datasets=datasets_input,
    output:
        f"{R}/eval/{{model}}/{POINT}.json",
    params:
        offline=OFFLINE_ENV,
        flags=model_flags,
        mask=mask_flag,
        tasks=eval_tasks(),
        limit=eval_limit(),
        batch_size=EVAL["batch_size"] if EVAL else 0,
        seed=SEED,
    conda:
        CONDA_ENV
    log:
        f"{L}/eval/{{model}}/{POINT}.log",
    benchmark:
        f"{B}/eval/{{model}}/{POINT}.tsv"
    threads: THREADS
    resources:
        mem_mb=mem_mb_for(4000, 4000),
        runtime=runtime_for(20, 30),
        gpu=model_gpus,
    shell:
        "{params.offline} shadowllm evaluate {params.flags} --threads {threads} --model-name {wildcards.model} {params.mask} "
        "--tasks {params.tasks} --include {input.tasks} {params.limit} --batch-size {params.batch_size} "
        "--seed {params.seed} --out {output} > {log} 2>&1"


rule eval_table:
    """Every evaluation of a model in one tidy CSV: one column per grid axis, then task, metric, value."""
    input:
        eval_jsons,
    output:
        f"{R}/tables/{{model}}/eval.csv",
    conda:
        CONDA_ENV
    log:
        f"{L}/tables/{{model}}/eval.log",
    benchmark:
        f"{B}/tables/{{model}}/eval.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm table --out {output} {input} > {log} 2>&1"


rule report_eval:
    """A reviewable Markdown view of the table plus the training metrics."""
    input:
        table=f"{R}/tables/{{model}}/eval.csv",
        train=train_metrics,
    output:
        f"{R}/reports/{{model}}/eval.md",
    params:
        train=lambda wc, input: f"--train {input.train}" if input.train else "",
    conda:
        CONDA_ENV
    log:
        f"{L}/reports/{{model}}/eval.log",
    benchmark:
        f"{B}/reports/{{model}}/eval.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm report-eval --table {input.table} {params.train} --model {wildcards.model} "
        "--out {output} > {log} 2>&1"
