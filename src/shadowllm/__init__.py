"""shadowllm: a reproducibility study of ShadowLLM (predictor-based contextual sparsity).

Modules are flat and small, one concept each:
  loading   - load a stock transformers causal LM from a hub id or a local folder
  adapter   - uniform view of a decoder (layers, heads, FFN neurons, hook points) for OPT and Llama
  masks     - per-sequence head/neuron masks applied through removable forward hooks
  train     - train the embedded tiny OPT from scratch
  perplexity, zeroshot - evaluation (rolling log-likelihood; lm-eval 0.4)
  io        - atomic writes and *.meta.json sidecars
"""

__version__ = "0.1.0"
