"""Sliced (contextually sparse) execution of OPT and its latency benchmark.

    from shadowllm.sparse import OPTWeights, SparseOPT
    w = OPTWeights.from_hf(model)                      # or OPTWeights.random(parse_size("opt-1.3b"))
    dec = SparseOPT(w, mode="shadowllm-prompt", sparsity=0.5)
    tokens = dec.generate(prompt_ids, n_new=32)
"""
from .decoder import MODES, KV_POLICIES, TOKEN_MODES, OPTWeights, SparseOPT, make_static_mask
from .predictors import DejaVuPredictor, ShadowPredictor
from .shapes import OPT_SHAPES, OPTShape, parse_size

__all__ = ["MODES", "KV_POLICIES", "TOKEN_MODES", "OPTWeights", "SparseOPT", "make_static_mask",
           "DejaVuPredictor", "ShadowPredictor", "OPT_SHAPES", "OPTShape", "parse_size"]
