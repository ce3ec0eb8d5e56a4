rule make_mask:
    """A static mask (random baseline) at one grid point; layers up to the placement kept."""
    input:
        model_input,
    output:
        f"{R}/masks/{{model}}/{POINT}.safetensors",
    params:
        offline=OFFLINE_ENV,
        model=lambda wc: model_path(wc.model),
        seed=SEED,
    conda:
        CONDA_ENV
    log:
        f"{L}/masks/{{model}}/{POINT}.log",
    benchmark:
        f"{B}/masks/{{model}}/{POINT}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "{params.offline} shadowllm make-mask --model {params.model} --kind {wildcards.source} --sparsity {wildcards.sparsity} "
        "--style {wildcards.style} --units {wildcards.units} --placement {wildcards.placement} "
        "--seed {params.seed} --out {output} > {log} 2>&1"
