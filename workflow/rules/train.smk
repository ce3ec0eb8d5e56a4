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
        "shadowllm train --out {output.model} --metrics {output.metrics} --params '{params.train}' "
        "--seed {params.seed} --threads {threads} > {log} 2>&1"
