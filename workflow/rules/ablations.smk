rule fewshot_static:
    """A static table fitted on the traces of some shots only (the few-shot ablation, paper Fig. 8)."""
    input:
        fewshot_traces,
    output:
        f"{R}/predictors/{{model}}/{FEWSHOT}/predictor.safetensors",
    params:
        traces=lambda wc, input: sorted({os.path.dirname(f) for f in input}),
        out=lambda wc, output: os.path.dirname(output[0]),
        flags=pred_flags() if PR else "",
        seed=SEED,
    conda:
        CONDA_ENV
    log:
        f"{L}/predictors/{{model}}/{FEWSHOT}.log",
    benchmark:
        f"{B}/predictors/{{model}}/{FEWSHOT}.tsv"
    threads: pred_threads()
    resources:
        mem_mb=mem_mb_for(1000, 4000),
        runtime=runtime_for(5, 10),
        gpu=0,
    shell:
        "shadowllm train-predictor --traces {params.traces} --criterion {wildcards.criterion} --design static "
        "--position context --placement {wildcards.placement} --normalize {wildcards.normalize} {params.flags} "
        "--seed {params.seed} --held-out-seed {params.seed} --threads {threads} --out-dir {params.out} > {log} 2>&1"


rule ablate:
    """One ablation grid point: its masks (source, criterion, normalisation, shots, seed, style, units, protocol,
    sparsity) through lm-eval."""
    input:
        model=model_input,
        tasks=TASK_DIR,
        predictor=ab_predictor,
        datasets=datasets_input,
    output:
        f"{R}/ablations/{{model}}/{AB_PATH}.json",
    params:
        offline=OFFLINE_ENV,
        flags=model_flags,
        tasks=ab_tasks,
        limits=ab_limits(),
        predictor=lambda wc, input: f"--predictor {input.predictor}" if input.predictor else "",
        batch_size=AB["batch_size"] if AB else 0,
        hybrid=f"--min-heads {AB['hybrid']['min_heads']} --min-neurons {AB['hybrid']['min_neurons']}" if AB else "",
        seed=SEED,
    conda:
        CONDA_ENV
    log:
        f"{L}/ablations/{{model}}/{AB_PATH}.log",
    benchmark:
        f"{B}/ablations/{{model}}/{AB_PATH}.tsv"
    threads: ab_threads()
    resources:
        mem_mb=ablate_mem_mb,
        runtime=runtime_for(20, 30),
        gpu=model_gpus,
    shell:
        "{params.offline} shadowllm ablate-point {params.flags} --threads {threads} --model-name {wildcards.model} "
        "--source {wildcards.source} --criterion {wildcards.criterion} --normalize {wildcards.normalize} "
        "--shots {wildcards.shots} --point-seed {wildcards.seed} "
        "--placement {wildcards.placement} --style {wildcards.style} --units {wildcards.units} "
        "--protocol {wildcards.protocol} --sparsity {wildcards.sparsity} {params.predictor} {params.hybrid} "
        "{params.tasks} --include {input.tasks} {params.limits} --batch-size {params.batch_size} "
        "--seed {params.seed} --out {output} > {log} 2>&1"


rule ablation_table:
    """Every grid point of a model in one tidy CSV: one column per axis, then task, metric, value."""
    input:
        ab_jsons,
    output:
        table=f"{R}/tables/{{model}}/ablations.csv",
        samples=f"{R}/tables/{{model}}/samples.csv",
    conda:
        CONDA_ENV
    log:
        f"{L}/tables/{{model}}/ablations.log",
    benchmark:
        f"{B}/tables/{{model}}/ablations.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm collect-ablations --out {output.table} --samples {output.samples} {input} > {log} 2>&1"


rule figure_ablations:
    """Perplexity and accuracy against sparsity per criterion, style, shots, source and protocol (paper Figs.
    3, 6-9), and ShadowLLM - DejaVu accuracy per task (Fig. 10), drawn from the ablation table, with 95 % bootstrap
    intervals and the majority-class baseline from the per-document table."""
    input:
        table=f"{R}/tables/{{model}}/ablations.csv",
        samples=f"{R}/tables/{{model}}/samples.csv",
    output:
        report(expand(f"{R}/figures/{{{{model}}}}/{{fig}}.{{ext}}", fig=figure_names("ablations"), ext=FIG_FORMATS),
               caption="../report/figure.rst", category="Ablations"),
    params:
        outdir=lambda wc, output: os.path.dirname(output[0]),
        dpi=FIG_DPI,
        caption=lambda wc, output: figure_caption("ablations", wc.model),
    conda:
        CONDA_ENV
    log:
        f"{L}/figures/{{model}}/ablations.log",
    benchmark:
        f"{B}/figures/{{model}}/ablations.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    shell:
        "shadowllm plot-ablations --table {input.table} --samples {input.samples} --title {wildcards.model} "
        "--dpi {params.dpi} --outdir {params.outdir} > {log} 2>&1"


rule report_ablations:
    """The ablation table as reviewable Markdown: per criterion, per source and protocol, styles, shots."""
    input:
        f"{R}/tables/{{model}}/ablations.csv",
    output:
        f"{R}/reports/{{model}}/ablations.md",
    conda:
        CONDA_ENV
    log:
        f"{L}/reports/{{model}}/ablations.log",
    benchmark:
        f"{B}/reports/{{model}}/ablations.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm report-ablations --table {input} --model {wildcards.model} --out {output} > {log} 2>&1"


rule report_claims:
    """The model's report: the paper's claims one by one (our numbers beside the paper's, held / not held / not
    testable here), then each figure and table of the paper beside ours; read from the results tables only."""
    input:
        unpack(claims_inputs),
    output:
        report(f"{R}/reports/{{model}}/report.md", caption="../report/claims.rst", category="Report"),
    params:
        tables=lambda wc, input: " ".join(f"--{k} {v}" for k, v in input.items()),
        questions=claims_questions(),
        flags=claims_flags(),
        links=report_links,
    conda:
        CONDA_ENV
    log:
        f"{L}/reports/{{model}}/claims.log",
    benchmark:
        f"{B}/reports/{{model}}/claims.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm report-claims --model-name {wildcards.model} {params.tables} --questions {params.questions} "
        "{params.flags} {params.links} --out {output} > {log} 2>&1"
