"""Sliced (contextually sparse) execution of OPT and Llama-family decoders, and its latency benchmark.

    from shadowllm.sparse import DecoderWeights, SparseDecoder
    w = DecoderWeights.from_hf(model)          # a stock OPT or Llama; or DecoderWeights.random(parse_size("llama-3-8b"))
    dec = SparseDecoder(w, mode="shadowllm-prompt", sparsity=0.5)
    tokens = dec.generate(prompt_ids, n_new=32)
"""
from .bench import make_static_mask, roofline_ms, weight_bytes_per_token
from .decoder import KV_POLICIES, MODES, TOKEN_MODES, SparseDecoder, SparseOPT
from .predictors import DejaVuPredictor, ShadowPredictor
from .shapes import LLAMA_SHAPES, OPT_SHAPES, ModelShape, OPTShape, parse_size
from .weights import DecoderWeights, OPTWeights

__all__ = ["MODES", "KV_POLICIES", "TOKEN_MODES", "DecoderWeights", "SparseDecoder", "OPTWeights", "SparseOPT",
           "make_static_mask", "weight_bytes_per_token", "roofline_ms", "DejaVuPredictor", "ShadowPredictor",
           "OPT_SHAPES", "LLAMA_SHAPES", "ModelShape", "OPTShape", "parse_size"]
