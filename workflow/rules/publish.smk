rule publish:
    """Copy the final figures and reports into the committed figures/{run}/ and reports/{run}/ where their bytes
    changed (config publish: true); runs after every other job of the run."""
    input:
        publish_inputs(),
    output:
        f"{R}/published.tsv",
    params:
        pairs=publish_pairs(),
    conda:
        CONDA_ENV
    log:
        f"{L}/publish.log",
    benchmark:
        f"{B}/publish.tsv"
    resources:
        mem_mb=500,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm publish-run --manifest {output} {params.pairs} > {log} 2>&1"
