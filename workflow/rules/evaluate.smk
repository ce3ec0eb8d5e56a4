rule eval_table:
    """The unpruned model beside the `masks` section's random masks in one tidy CSV (one column per grid axis, then
    task, metric, value): the dense and masks points of the ablation grid, evaluated by its `ablate` jobs."""
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
        "shadowllm collect-ablations --out {output} {input} > {log} 2>&1"


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
