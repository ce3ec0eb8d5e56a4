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


rule download_datasets:
    """The lm-eval hub tasks' datasets fetched once into resources/datasets/ by a local job (where the network
    is); every evaluation job then reads that cache with the hub offline."""
    output:
        f"{DATASETS}/manifest.json",
    params:
        tasks=" ".join(hub_tasks()),
        cache=lambda wc, output: os.path.dirname(output[0]),
    conda:
        CONDA_ENV
    log:
        f"logs/{DATASETS}/manifest.log",
    benchmark:
        f"benchmarks/{DATASETS}/manifest.tsv"
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    shell:
        "shadowllm download-datasets --tasks {params.tasks} --cache {params.cache} --out {output} > {log} 2>&1"
