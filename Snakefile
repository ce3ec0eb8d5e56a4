# shadowllm: reproducibility study of ShadowLLM (arXiv 2406.16635).
#   snakemake --cores all                      the embedded default (tiny OPT trained here, shipped tasks)
#   snakemake --cores all --configfile X.yaml  another configuration (see config/); its outputs go under
#                                              results/<its run name>/, never over another run's
#   snakemake --profile slurm                  on a SLURM cluster (workflow/profiles/slurm)
#   snakemake <stage>                          one stage and what it needs: data, importance, predictors,
#                                              ablations, latency, figures, report (figures and report read
#                                              only results tables)
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names other files (then only those are read: Snakemake
# would otherwise merge them into the default, adding its tiny model to every other configuration).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/importance.smk"
include: "workflow/rules/predictors.smk"
include: "workflow/rules/ablations.smk"
include: "workflow/rules/latency.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/publish.smk"
include: "workflow/rules/selftest.smk"


rule all:
    default_target: True
    input:
        all_outputs(),


localrules:
    all,
    download_model,
    download_datasets,
    data,
    importance,
    predictors,
    ablations,
    latency,
    figures,
    report,


rule data:
    input:
        stage_outputs("data"),


rule importance:
    input:
        stage_outputs("importance"),


rule predictors:
    input:
        stage_outputs("predictors"),


rule ablations:
    input:
        stage_outputs("ablations"),


rule latency:
    input:
        stage_outputs("latency"),


rule figures:
    input:
        stage_outputs("figures"),


rule report:
    input:
        stage_outputs("report"),
