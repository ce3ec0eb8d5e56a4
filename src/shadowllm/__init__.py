"""shadowllm: a reproducibility study of ShadowLLM (predictor-based contextual sparsity).

One package per stage, each with its `cli.py`: data, train, masks, evaluate, importance, predictors, sparse,
figures; shared modules: loading (stock transformers models), adapter (OPT / Llama-family view and hook
points), config (+ schemas/), io (atomic writes), provenance (sidecars), cli (the command-line registry).
"""

__version__ = "0.1.0"
