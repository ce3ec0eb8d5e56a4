rule train_predictor:
    """One predictor grid point: train on the pooled traces of a model, score the held-out examples (split by the
    config's seed, the same for every training seed)."""
    input:
        pred_trace_files,
    output:
        predictor=f"{R}/predictors/{{model}}/{PRED_POINT}/predictor.safetensors",
        curve=f"{R}/predictors/{{model}}/{PRED_POINT}/curve.json",
        metrics=f"{R}/predictors/{{model}}/{PRED_POINT}/metrics.csv",
    params:
        traces=pred_traces,
        flags=pred_flags() if PR else "",
        out=lambda wc, output: os.path.dirname(output.metrics),
        seed=SEED,
    conda:
        CONDA_ENV
    log:
        f"{L}/predictors/{{model}}/{PRED_POINT}.log",
    benchmark:
        f"{B}/predictors/{{model}}/{PRED_POINT}.tsv"
    threads: pred_threads()
    resources:
        mem_mb=mem_mb_for(2000, 8000),
        runtime=runtime_for(10, 60),
        gpu=0,
    shell:
        "shadowllm train-predictor --traces {params.traces} --criterion {wildcards.criterion} "
        "--design {wildcards.design} --position {wildcards.position} --placement {wildcards.placement} "
        "--normalize {wildcards.normalize} {params.flags} --seed {wildcards.seed} --held-out-seed {params.seed} "
        "--threads {threads} "
        "--out-dir {params.out} > {log} 2>&1"


rule predictor_table:
    """Every predictor grid point's held-out metrics in one tidy CSV (one column per axis)."""
    input:
        pred_metrics,
    output:
        f"{R}/tables/{{model}}/predictors.csv",
    conda:
        CONDA_ENV
    log:
        f"{L}/tables/{{model}}/predictors.log",
    benchmark:
        f"{B}/tables/{{model}}/predictors.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm collect-predictors --out {output} {input} > {log} 2>&1"
