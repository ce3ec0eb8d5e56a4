"""shadowllm: a reproducibility study of ShadowLLM (predictor-based contextual sparsity).

One package per stage, each with its `cli.py`: data, train, masks, evaluate, importance, predictors, sparse,
figures; shared modules: loading (stock transformers models), adapter (OPT / Llama-family view and hook
points), config (+ schemas/), io (atomic writes), provenance (sidecars), cli (the command-line registry).
"""

__version__ = "0.1.0"

import os as _os

# MKL and OpenMP may use fewer threads than asked when the machine is busy, which changes the order of float sums:
# the same seed then trains a different tiny OPT. Fixed thread counts keep every rerun bit-identical.
for _k in ("MKL_DYNAMIC", "OMP_DYNAMIC"):
    _os.environ.setdefault(_k, "FALSE")
