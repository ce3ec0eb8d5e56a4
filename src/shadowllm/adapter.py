"""A uniform view of a stock transformers decoder: layers, heads, FFN neurons and hook points.

Hook points (the tensors that masks and importance criteria act on):
  attn_out(l): the attention output projection (OPT out_proj, Llama o_proj). Its INPUT is the
               concatenation of per-head attention outputs A: [B, T, H*dh]; head h is A[..., h*dh:(h+1)*dh].
  ffn_out(l):  the FFN down projection (OPT fc2, Llama down_proj). Its INPUT is the activated FFN
               hidden Z: [B, T, F] (OPT flattens it to [B*T, F]); neuron j is Z[..., j].
  ffn_in(l):   the FFN up projection(s) whose row j feeds neuron j (OPT [fc1], Llama [gate_proj, up_proj]).
  predictor_input(l): the input of attn_out(l), A, read by the importance predictors at placement layer l
               (traces, masks decided in the forward pass, the sliced decoder: one tensor everywhere).
Zeroing the input of attn_out / ffn_out removes a head / neuron from the residual stream exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle


@dataclass
class Adapter:
    model: nn.Module
    family: str          # "opt" | "llama"
    n_layers: int
    n_heads: int         # query heads (the unit that is masked)
    n_kv_heads: int      # key/value heads (= n_heads for OPT, fewer under GQA)
    head_dim: int
    d_model: int
    n_neurons: int       # FFN hidden size F

    # ---- modules -------------------------------------------------------------------------
    def layers(self) -> nn.ModuleList:
        if self.family == "opt":
            return self.model.model.decoder.layers
        return self.model.model.layers

    def attn(self, l: int) -> nn.Module:
        return self.layers()[l].self_attn

    def attn_out(self, l: int) -> nn.Linear:
        a = self.attn(l)
        return a.out_proj if self.family == "opt" else a.o_proj

    def ffn_in(self, l: int) -> list[nn.Linear]:
        layer = self.layers()[l]
        if self.family == "opt":
            return [layer.fc1]
        return [layer.mlp.gate_proj, layer.mlp.up_proj]

    def ffn_out(self, l: int) -> nn.Linear:
        layer = self.layers()[l]
        return layer.fc2 if self.family == "opt" else layer.mlp.down_proj

    def qkv(self, l: int) -> list[nn.Linear]:
        """The query, key and value projections of layer l (query rows: n_heads*dh; key, value: n_kv_heads*dh)."""
        a = self.attn(l)
        return [a.q_proj, a.k_proj, a.v_proj]

    def norms(self, l: int) -> tuple[nn.Module, nn.Module]:
        """Layer l's norm before attention and its norm before the FFN (OPT LayerNorm, Llama RMSNorm)."""
        layer = self.layers()[l]
        if self.family == "opt":
            return layer.self_attn_layer_norm, layer.final_layer_norm
        return layer.input_layernorm, layer.post_attention_layernorm

    def final_norm(self) -> nn.Module | None:
        return self.model.model.decoder.final_layer_norm if self.family == "opt" else self.model.model.norm

    def embed_tokens(self) -> nn.Embedding:
        return self.model.model.decoder.embed_tokens if self.family == "opt" else self.model.model.embed_tokens

    @property
    def max_positions(self) -> int:
        return self.model.config.max_position_embeddings

    def lm_head(self) -> nn.Linear:
        return self.model.lm_head

    def learned_positions(self) -> nn.Embedding | None:
        """OPT's learned position table (rows offset by 2); None for rotary positions (Llama)."""
        return self.model.model.decoder.embed_positions if self.family == "opt" else None

    def projections(self) -> tuple[nn.Linear | None, nn.Linear | None]:
        """(project_in, project_out) around the decoder stack where the embeddings are narrower (OPT), else None."""
        if self.family != "opt":
            return None, None
        dec = self.model.model.decoder
        return dec.project_in, dec.project_out

    def rope(self) -> tuple[torch.Tensor, float] | None:
        """(inverse frequencies [dh/2], attention scaling) of rotary positions (Llama); None for OPT."""
        if self.family == "opt":
            return None
        rot = self.model.model.rotary_emb
        return rot.inv_freq, float(getattr(rot, "attention_scaling", 1.0))

    @property
    def norm_kind(self) -> str:
        """The norm: "layer" (LayerNorm with bias, OPT) or "rms" (RMSNorm, Llama)."""
        return "layer" if self.family == "opt" else "rms"

    def norm_eps(self) -> float:
        """The norms' epsilon (OPT LayerNorm eps, Llama RMSNorm variance_epsilon)."""
        n = self.norms(0)[0]
        return n.eps if self.family == "opt" else n.variance_epsilon

    def standard_issue(self) -> str | None:
        """Why the model departs from its family's standard pre-norm layout (None: it does not); a re-implementation
        of that layout (the sliced decoder) cannot reproduce such a model."""
        cfg = self.model.config
        if self.family == "opt":
            if not cfg.do_layer_norm_before:
                return "post-LN OPT (do_layer_norm_before=False, e.g. opt-350m) is not supported"
            if cfg.activation_function != "relu":
                return f"activation {cfg.activation_function!r} is not supported (OPT uses relu)"
            return None
        if cfg.model_type != "llama":
            return f"the sparse decoder supports model_type 'opt' and 'llama', got {cfg.model_type!r}"
        if cfg.hidden_act != "silu":
            return f"hidden_act {cfg.hidden_act!r} is not supported (Llama uses silu)"
        rope_type = getattr(self.model.model.rotary_emb, "rope_type", "default")
        if "dynamic" in str(rope_type):
            return f"rope_type {rope_type!r} changes with the sequence length; not supported"
        return None

    @property
    def relu_ffn(self) -> bool:
        """True for a ReLU FFN (OPT): its activation pattern has kinks that finite differences must hold fixed."""
        return self.family == "opt" and getattr(self.model.config, "activation_function", None) == "relu"

    # ---- the predictor input -------------------------------------------------------------
    def predictor_input(self, l: int) -> nn.Module:
        """The module whose INPUT is the predictor's input at placement layer l: the per-head attention
        output A [B, T, H*dh] entering the attention out-projection (what the sliced decoder reads)."""
        return self.attn_out(l)

    def on_layer_input(self, l: int, fn: Callable[[torch.Tensor], None]) -> RemovableHandle:
        """Call fn(h [B, T, d]) with the residual stream entering decoder layer l (a DejaVu predictor's input)."""
        def hook(module, args, kwargs):
            fn(args[0] if args else kwargs["hidden_states"])
        return self.layers()[l].register_forward_pre_hook(hook, with_kwargs=True)

    def on_predictor_input(self, l: int, fn: Callable[[torch.Tensor], None]) -> RemovableHandle:
        """Call fn(A [B, T, H*dh]) whenever layer l's predictor input is computed; returns the hook handle.
        Register it before any hook that rescales the same tensor (masks, gates), so fn sees it unscaled."""
        def hook(module, args):
            fn(args[0])
        return self.predictor_input(l).register_forward_pre_hook(hook)


def get_adapter(model: nn.Module) -> Adapter:
    """Adapter for an OPT or Llama-family (Llama, Mistral, Qwen2: GQA + SwiGLU) causal LM."""
    cfg = model.config
    mt = getattr(cfg, "model_type", None)
    if mt == "opt":
        return Adapter(model, "opt", cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_attention_heads,
                       cfg.hidden_size // cfg.num_attention_heads, cfg.hidden_size, cfg.ffn_dim)
    if mt in ("llama", "mistral", "qwen2"):
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return Adapter(model, "llama", cfg.num_hidden_layers, cfg.num_attention_heads,
                       getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
                       head_dim, cfg.hidden_size, cfg.intermediate_size)
    raise ValueError(f"model_type {mt!r} is not supported; expected one of 'opt', 'llama', 'mistral', 'qwen2'")
