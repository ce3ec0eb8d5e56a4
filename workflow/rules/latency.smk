rule latency_bench:
    """One named latency bench of the sliced decoder (sizes x sparsities x generation lengths x modes)."""
    output:
        f"{R}/latency/{{bench}}.csv",
    params:
        spec=lat_spec,
        seed=SEED,
    conda:
        CONDA_ENV
    log:
        f"{L}/latency/{{bench}}.log",
    benchmark:
        f"{B}/latency/{{bench}}.tsv"
    threads: lat_threads()
    resources:
        mem_mb=lat_mem_mb,
        runtime=lat_runtime,
        gpu=lat_gpu(),
    shell:
        "shadowllm bench-latency --spec '{params.spec}' --threads {threads} --seed {params.seed} "
        "--out {output} > {log} 2>&1"


rule predictor_flops:
    """The paper's predictor-cost table: DejaVu N(E*p + p(H+F)) vs ShadowLLM E*p + p*N(H+F)."""
    output:
        f"{R}/latency/predictor_flops.csv",
    params:
        p=LAT["flops_hidden"] if LAT else 1024,
    conda:
        CONDA_ENV
    log:
        f"{L}/latency/predictor_flops.log",
    benchmark:
        f"{B}/latency/predictor_flops.tsv"
    resources:
        mem_mb=500,
        runtime=2,
        gpu=0,
    shell:
        "shadowllm measure-predictor-flops --p {params.p} --out {output} > {log} 2>&1"
