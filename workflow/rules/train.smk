rule train_tiny:
    """The embedded tiny OPT: a byte-level BPE tokenizer and a stock OPTForCausalLM trained from scratch."""
    output:
        model=directory("results/models/{model}/model"),
        metrics="results/models/{model}/train.json",
    params:
        train=lambda wc: json.dumps(model_cfg(wc.model).get("train", {})),
    conda:
        CONDA_ENV
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/train/{model}.tsv"
    threads: THREADS
    resources:
        mem_mb=mem_mb_for(4000, 16000),
        runtime=runtime_for(30, 600),
        gpu=1,
    shell:
        "shadowllm train --out {output.model} --metrics {output.metrics} --params '{params.train}' "
        "--seed {SEED} --threads {threads} > {log} 2>&1"
