"""Sliced (contextually sparse) execution of OPT and Llama-family decoders, and its latency benchmark.

    from shadowllm.sparse import DecoderWeights, SparseDecoder
    w = DecoderWeights.from_hf(model)          # a stock OPT or Llama; or DecoderWeights.random(parse_size("llama-3-8b"))
    dec = SparseDecoder(w, mode="shadowllm-prompt", sparsity=0.5)
    tokens = dec.generate(prompt_ids, n_new=32)
(parse_size and the model shapes: shadowllm.shapes)
"""
from .bench import make_static_mask
from .decoder import SparseDecoder
from .modes import KV_POLICIES, MODE_SPECS, MODES, TOKEN_MODES, ModeSpec
from .predictors import DejaVuPredictor, ShadowPredictor
from .roofline import roofline_ms, weight_bytes_per_token
from .weights import DecoderWeights

__all__ = ["MODES", "MODE_SPECS", "ModeSpec", "KV_POLICIES", "TOKEN_MODES", "DecoderWeights", "SparseDecoder",
           "make_static_mask", "weight_bytes_per_token", "roofline_ms", "DejaVuPredictor", "ShadowPredictor"]
