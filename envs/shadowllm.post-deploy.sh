#!/usr/bin/env bash
# Run by Snakemake inside the new conda env: install the shadowllm package from the workflow's source folder,
# which the Snakefile exports as SHADOWLLM_SRC (this script itself runs from a copy under .snakemake/conda/).
set -euo pipefail
: "${SHADOWLLM_SRC:?SHADOWLLM_SRC is not set: run this through snakemake, or pip install -e . by hand}"
python -m pip install --no-deps -e "$SHADOWLLM_SRC"
