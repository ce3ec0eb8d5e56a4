rule prepare_tasks:
    """lm-eval task YAMLs of the shipped tasks, with absolute paths to their JSONL files."""
    output:
        directory(TASK_DIR),
    conda:
        CONDA_ENV
    log:
        f"{L}/data/prepare_tasks.log",
    benchmark:
        f"{B}/data/prepare_tasks.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm prepare-tasks --out {output} > {log} 2>&1"
