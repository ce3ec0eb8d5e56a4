"""Sliced (contextually sparse) execution of OPT and its latency benchmark.

    from shadowllm.sparse import OPTWeights, SparseOPT
    w = OPTWeights.from_hf(model)                      # or OPTWeights.random(parse_size("opt-1.3b"))
    dec = SparseOPT(w, mode="shadowllm-prompt", sparsity=0.5)
    tokens = dec.generate(prompt_ids, n_new=32)
"""
from .bench import make_static_mask, roofline_ms, weight_bytes_per_token
from .decoder import KV_POLICIES, MODES, TOKEN_MODES, SparseOPT
from .predictors import DejaVuPredictor, ShadowPredictor
from .shapes import OPT_SHAPES, OPTShape, parse_size
from .weights import OPTWeights

__all__ = ["MODES", "KV_POLICIES", "TOKEN_MODES", "OPTWeights", "SparseOPT", "make_static_mask",
           "weight_bytes_per_token", "roofline_ms", "DejaVuPredictor", "ShadowPredictor", "OPT_SHAPES",
           "OPTShape", "parse_size"]
