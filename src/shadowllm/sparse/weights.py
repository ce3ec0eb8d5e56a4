"""OPT weights stored "one unit per row", so that any set of heads / neurons is a set of rows.

    Wqkv [3*H*dh, d]  q rows, k rows, v rows; head h = rows h*dh:(h+1)*dh of each
    WoT  [H*dh, d]    out_proj transposed
    W1   [F, d]       fc1
    W2T  [F, d]       fc2 transposed
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerW:
    """One decoder layer's tensors (None: no bias / no affine layer norm)."""

    ln1_w: torch.Tensor | None
    ln1_b: torch.Tensor | None
    wqkv: torch.Tensor          # [3*H*dh, d]
    bqkv: torch.Tensor | None   # [3*H*dh]
    woT: torch.Tensor           # [H*dh, d]
    bo: torch.Tensor | None     # [d]
    ln2_w: torch.Tensor | None
    ln2_b: torch.Tensor | None
    w1: torch.Tensor            # [F, d]
    b1: torch.Tensor | None     # [F]
    w2T: torch.Tensor           # [F, d]
    b2: torch.Tensor | None     # [d]


class OPTWeights:
    """A pre-LN OPT decoder's weights (from a stock model or random of a real shape) in the decoder's layout."""

    def __init__(self, *, embed, pos, lm_head, layers: list[LayerW], n_heads: int, lnf_w=None, lnf_b=None,
                 project_in=None, project_out=None, eps: float = 1e-5, name: str = "opt"):
        self.embed, self.pos, self.lm_head, self.layers = embed, pos, lm_head, layers
        self.lnf_w, self.lnf_b, self.project_in, self.project_out = lnf_w, lnf_b, project_in, project_out
        self.has_final_ln = lnf_w is not None or lnf_b is not None  # from_hf overrides (LN without affine)
        self.eps, self.name = eps, name
        self.H = n_heads
        self.d = pos.shape[1]
        self.dh = self.d // n_heads
        self.F = layers[0].w1.shape[0]
        self.L = len(layers)
        self.V = embed.shape[0]

    @property
    def device(self):
        return self.embed.device

    def to(self, device=None, dtype=None) -> "OPTWeights":
        """A copy on another device / dtype (tied embeddings stay tied)."""
        def mv(t):
            return None if t is None else t.to(device=device or t.device, dtype=dtype or t.dtype)

        layers = [LayerW(**{k: mv(v) for k, v in vars(lw).items()}) for lw in self.layers]
        embed = mv(self.embed)
        w = OPTWeights(embed=embed, pos=mv(self.pos), lm_head=embed if self.lm_head is self.embed else mv(self.lm_head),
                       layers=layers, n_heads=self.H, lnf_w=mv(self.lnf_w), lnf_b=mv(self.lnf_b),
                       project_in=mv(self.project_in), project_out=mv(self.project_out), eps=self.eps, name=self.name)
        w.has_final_ln = self.has_final_ln
        return w

    @property
    def dtype(self):
        return self.embed.dtype

    @classmethod
    def from_hf(cls, model, dtype: torch.dtype | None = None, device=None) -> "OPTWeights":
        """The weights of a stock `OPTForCausalLM` (pre-LN, ReLU; post-LN opt-350m is rejected)."""
        cfg = model.config
        if getattr(cfg, "model_type", None) != "opt":
            raise ValueError(f"the sparse decoder supports OPT only, got model_type {cfg.model_type!r}")
        if not cfg.do_layer_norm_before:
            raise ValueError("post-LN OPT (do_layer_norm_before=False, e.g. opt-350m) is not supported")
        if cfg.activation_function != "relu":
            raise ValueError(f"activation {cfg.activation_function!r} is not supported (OPT uses relu)")
        dec = model.model.decoder

        def t(x):
            if x is None:
                return None
            x = x.detach()
            return x.to(device=device or x.device, dtype=dtype or x.dtype).contiguous()

        layers = []
        for lay in dec.layers:
            a = lay.self_attn
            bq = None if a.q_proj.bias is None else torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
            layers.append(LayerW(
                t(lay.self_attn_layer_norm.weight), t(lay.self_attn_layer_norm.bias),
                t(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])), t(bq),
                t(a.out_proj.weight.t()), t(a.out_proj.bias),
                t(lay.final_layer_norm.weight), t(lay.final_layer_norm.bias),
                t(lay.fc1.weight), t(lay.fc1.bias), t(lay.fc2.weight.t()), t(lay.fc2.bias)))
        fln = dec.final_layer_norm
        w = cls(embed=t(dec.embed_tokens.weight), pos=t(dec.embed_positions.weight), lm_head=t(model.lm_head.weight),
                layers=layers, n_heads=cfg.num_attention_heads,
                lnf_w=t(fln.weight) if fln is not None else None, lnf_b=t(fln.bias) if fln is not None else None,
                project_in=t(dec.project_in.weight) if dec.project_in is not None else None,
                project_out=t(dec.project_out.weight) if dec.project_out is not None else None,
                eps=dec.layers[0].self_attn_layer_norm.eps, name=getattr(cfg, "name_or_path", "opt") or "opt")
        w.has_final_ln = fln is not None
        return w

    @classmethod
    def random(cls, shape, dtype=torch.float32, device="cpu", seed: int = 0, std: float = 0.02) -> "OPTWeights":
        """Random weights of an OPTShape (see shapes.py), generated on `device`."""
        if not shape.pre_ln:
            raise ValueError(f"{shape.name} is post-LN; not supported")
        dev = torch.device(device)
        g = torch.Generator(device=dev).manual_seed(seed)
        d, f, E = shape.hidden, shape.ffn, shape.word_embed_proj_dim or shape.hidden

        def rn(*s):
            return (torch.randn(*s, generator=g, device=dev, dtype=torch.float32 if dev.type == "cpu" else dtype)
                    * std).to(dtype)

        def ones(n):
            return torch.ones(n, device=dev, dtype=dtype)

        layers = [LayerW(ones(d), rn(d), rn(3 * d, d), rn(3 * d), rn(d, d), rn(d), ones(d), rn(d),
                         rn(f, d), rn(f), rn(f, d), rn(d)) for _ in range(shape.layers)]
        embed = rn(shape.vocab, E)
        w = cls(embed=embed, pos=rn(shape.max_pos + 2, d), lm_head=embed, layers=layers, n_heads=shape.heads,
                lnf_w=ones(d), lnf_b=rn(d), project_in=rn(d, E) if E != d else None,
                project_out=rn(E, d) if E != d else None, name=shape.name)
        w.has_final_ln = True
        return w
