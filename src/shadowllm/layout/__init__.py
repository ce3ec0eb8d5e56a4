"""Where everything of a run lives, as plain functions of the validated configuration: the mask axes (axes.py), the
ablation grid (grid.py), the predictor grid (predictors.py), the run's roots (run.py), models and hub data
(models.py), each stage's files (paths.py), the final outputs and what a run publishes (outputs.py), job flags
(params.py) and resources (resources.py).

Torch-free: Snakemake plans with it (`snakemake -n` needs no torch); the CLIs and figures read the same grid.
"""
