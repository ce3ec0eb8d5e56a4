rule figure_eval:
    """Accuracy and perplexity of the model, unpruned and under each mask, against sparsity."""
    input:
        f"{R}/tables/{{model}}/eval.csv",
    output:
        png=report(f"{R}/figures/{{model}}/eval_vs_sparsity.png", caption="../report/figure.rst",
                   category="Evaluation"),
        pdf=f"{R}/figures/{{model}}/eval_vs_sparsity.pdf",
    params:
        dpi=FIG_DPI,
        caption=lambda wc, output: figure_caption("eval", wc.model),
    conda:
        CONDA_ENV
    log:
        f"{L}/figures/{{model}}/eval_vs_sparsity.log",
    benchmark:
        f"{B}/figures/{{model}}/eval_vs_sparsity.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm plot-eval --table {input} --title {wildcards.model} --dpi {params.dpi} --out {output.png} > {log} 2>&1"


rule figure_dependence:
    """Figure 2: input dependence of head importance, drawn from its CSV."""
    input:
        f"{R}/importance/{{model}}/input_dependence.csv",
    output:
        png=report(f"{R}/figures/{{model}}/input_dependence.png", caption="../report/figure.rst",
                   category="Importance"),
        pdf=f"{R}/figures/{{model}}/input_dependence.pdf",
    params:
        title=dependence_title,
        dpi=FIG_DPI,
        caption=lambda wc, output: figure_caption("dependence", wc.model),
    conda:
        CONDA_ENV
    log:
        f"{L}/figures/{{model}}/input_dependence.log",
    benchmark:
        f"{B}/figures/{{model}}/input_dependence.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm plot-dependence --csv {input} --title '{params.title}' --dpi {params.dpi} --out {output.png} "
        "> {log} 2>&1"


rule figure_latency:
    """Latency vs model size, sparsity and generation length, and the combined latency table."""
    input:
        lat_csvs(),
    output:
        figures=report(expand(f"{R}/figures/{{fig}}.{{ext}}", fig=figure_names("latency"), ext=FIG_FORMATS),
                       caption="../report/figure.rst", category="Latency"),
        table=f"{R}/latency/latency.csv",
    params:
        outdir=lambda wc, output: os.path.dirname(output.figures[0]),
        sparsity=LAT["figure_sparsity"] if LAT else 0.5,
        dpi=FIG_DPI,
        caption=lambda wc, output: figure_caption("latency"),
    conda:
        CONDA_ENV
    log:
        f"{L}/figures/latency.log",
    benchmark:
        f"{B}/figures/latency.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm plot-latency --csv {input} --outdir {params.outdir} --sparsity {params.sparsity} "
        "--dpi {params.dpi} --table {output.table} > {log} 2>&1"


rule figure_predictors:
    """Predictor quality: rho per criterion (Fig. 5), per design (Fig. 4), and rho / top-k recall vs placement."""
    input:
        f"{R}/tables/{{model}}/predictors.csv",
    output:
        report(expand(f"{R}/figures/{{{{model}}}}/{{fig}}.{{ext}}", fig=figure_names("predictors"), ext=FIG_FORMATS),
               caption="../report/figure.rst", category="Predictors"),
    params:
        outdir=lambda wc, output: os.path.dirname(output[0]),
        dpi=FIG_DPI,
        caption=lambda wc, output: figure_caption("predictors", wc.model),
    conda:
        CONDA_ENV
    log:
        f"{L}/figures/{{model}}/predictors.log",
    benchmark:
        f"{B}/figures/{{model}}/predictors.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm plot-predictors --table {input} --title {wildcards.model} --dpi {params.dpi} "
        "--outdir {params.outdir} > {log} 2>&1"


rule figure_tradeoff:
    """Mean zero-shot accuracy against decode latency, one curve per method over its sparsities (paper Fig. 1): the
    ablation table's accuracy beside the latency table's ms/token of the decoder mode that implements each source."""
    input:
        ablations=f"{R}/tables/{{model}}/ablations.csv",
        latency=f"{R}/latency/latency.csv",
    output:
        png=report(f"{R}/figures/{{model}}/accuracy_vs_latency.png", caption="../report/figure.rst",
                   category="Report"),
        pdf=f"{R}/figures/{{model}}/accuracy_vs_latency.pdf",
    params:
        dpi=FIG_DPI,
        caption=lambda wc, output: figure_caption("tradeoff", wc.model),
    conda:
        CONDA_ENV
    log:
        f"{L}/figures/{{model}}/accuracy_vs_latency.log",
    benchmark:
        f"{B}/figures/{{model}}/accuracy_vs_latency.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=0,
    shell:
        "shadowllm plot-tradeoff --ablations {input.ablations} --latency {input.latency} --title {wildcards.model} "
        "--dpi {params.dpi} --out {output.png} > {log} 2>&1"
