"""Decoder weights stored "one unit per row", so that any set of heads / neurons is a set of rows.

    Wqkv [(H + 2*Hkv)*dh, d]  q rows (head h: rows h*dh:(h+1)*dh), then k rows, then v rows (KV head j likewise)
    WoT  [H*dh, d]            the attention out-projection transposed (OPT out_proj, Llama o_proj)
    W1   [F, d]               OPT fc1 / Llama gate_proj      (row j feeds neuron j)
    W3   [F, d] | None        Llama up_proj (None for OPT)
    W2T  [F, d]               the FFN down projection transposed (OPT fc2, Llama down_proj)

Two families, one layout; what differs is data on the weights, read by the decoder:
  OPT   LayerNorm with bias, learned positions (offset 2), ReLU FFN, Hkv = H, optional project_in / out.
  Llama RMSNorm, rotary positions, SwiGLU FFN (silu(W1 x) * (W3 x)), grouped-query attention (H = g * Hkv).
`from_hf` reads a stock transformers model through `shadowllm.adapter` (the only place module names live).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NORMS = ("layer", "rms")


@dataclass
class LayerW:
    """One decoder layer's tensors (None: no bias / no affine layer norm / no up projection)."""

    ln1_w: torch.Tensor | None
    ln1_b: torch.Tensor | None
    wqkv: torch.Tensor          # [(H + 2*Hkv)*dh, d]
    bqkv: torch.Tensor | None   # [(H + 2*Hkv)*dh]
    woT: torch.Tensor           # [H*dh, d]
    bo: torch.Tensor | None     # [d]
    ln2_w: torch.Tensor | None
    ln2_b: torch.Tensor | None
    w1: torch.Tensor            # [F, d]
    b1: torch.Tensor | None     # [F]
    w2T: torch.Tensor           # [F, d]
    b2: torch.Tensor | None     # [d]
    w3: torch.Tensor | None = None  # [F, d] (SwiGLU up projection)


class DecoderWeights:
    """A pre-norm decoder's weights (from a stock model or random of a real shape) in the decoder's layout.

    pos: learned position table [max_pos + 2, d] (OPT) or None; rope_inv_freq [dh/2] (Llama) or None."""

    def __init__(self, *, embed, lm_head, layers: list[LayerW], n_heads: int, n_kv_heads: int | None = None,
                 head_dim: int | None = None, pos=None, rope_inv_freq=None, rope_scaling: float = 1.0,
                 max_pos: int | None = None, norm: str = "layer", lnf_w=None, lnf_b=None, project_in=None,
                 project_out=None, eps: float = 1e-5, name: str = "opt"):
        if norm not in NORMS:
            raise ValueError(f"norm {norm!r} is not one of {NORMS}")
        if (pos is None) == (rope_inv_freq is None):
            raise ValueError("exactly one of a learned position table (pos) and rotary frequencies is expected")
        self.embed, self.pos, self.lm_head, self.layers = embed, pos, lm_head, layers
        self.rope_inv_freq, self.rope_scaling = rope_inv_freq, rope_scaling
        self.lnf_w, self.lnf_b, self.project_in, self.project_out = lnf_w, lnf_b, project_in, project_out
        self.has_final_ln = lnf_w is not None or lnf_b is not None  # from_hf overrides (LN without affine)
        self.norm, self.eps, self.name = norm, eps, name
        self.H = n_heads
        self.Hkv = n_kv_heads or n_heads
        if self.H % self.Hkv:
            raise ValueError(f"{n_heads} query heads do not split into {self.Hkv} KV groups")
        self.group = self.H // self.Hkv          # query heads per KV head
        self.d = embed.shape[1] if project_in is None else project_in.shape[0]
        self.dh = head_dim or self.d // n_heads
        self.F = layers[0].w1.shape[0]
        self.L = len(layers)
        self.V = embed.shape[0]
        self.max_pos = max_pos if max_pos is not None else (pos.shape[0] - 2 if pos is not None else 2048)

    @property
    def gated(self) -> bool:
        """SwiGLU FFN (an up projection beside the gate)."""
        return self.layers[0].w3 is not None

    @property
    def device(self):
        return self.embed.device

    @property
    def dtype(self):
        return self.embed.dtype

    def _kw(self, mv) -> dict:
        return dict(n_heads=self.H, n_kv_heads=self.Hkv, head_dim=self.dh, pos=mv(self.pos),
                    rope_inv_freq=self.rope_inv_freq, rope_scaling=self.rope_scaling, max_pos=self.max_pos,
                    norm=self.norm, lnf_w=mv(self.lnf_w), lnf_b=mv(self.lnf_b), project_in=mv(self.project_in),
                    project_out=mv(self.project_out), eps=self.eps, name=self.name)

    def to(self, device=None, dtype=None) -> "DecoderWeights":
        """A copy on another device / dtype (tied embeddings stay tied; rotary frequencies stay float32)."""
        def mv(t):
            return None if t is None else t.to(device=device or t.device, dtype=dtype or t.dtype)

        layers = [LayerW(**{k: mv(v) for k, v in vars(lw).items()}) for lw in self.layers]
        embed = mv(self.embed)
        kw = self._kw(mv)
        if self.rope_inv_freq is not None:
            kw["rope_inv_freq"] = self.rope_inv_freq.to(device=device or self.rope_inv_freq.device)
        w = DecoderWeights(embed=embed, lm_head=embed if self.lm_head is self.embed else mv(self.lm_head),
                           layers=layers, **kw)
        w.has_final_ln = self.has_final_ln
        return w

    # ---- rotary positions ------------------------------------------------------------------------
    def rope_tables(self, n: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(cos, sin) [n, dh] for positions 0..n-1 (the transformers convention: frequencies repeated twice)."""
        if self.rope_inv_freq is None:
            return None
        t = torch.arange(n, dtype=torch.float32, device=device)
        f = torch.outer(t, self.rope_inv_freq.to(device=device, dtype=torch.float32))
        e = torch.cat([f, f], -1)
        return ((e.cos() * self.rope_scaling).to(dtype), (e.sin() * self.rope_scaling).to(dtype))

    # ---- from a stock model --------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, model, dtype: torch.dtype | None = None, device=None) -> "DecoderWeights":
        """The weights of a stock OPT (pre-LN, ReLU) or Llama (RMSNorm, RoPE, SwiGLU, GQA) causal LM."""
        from ..adapter import get_adapter

        try:
            ad = get_adapter(model)
        except ValueError as e:
            raise ValueError(f"the sparse decoder supports OPT and Llama; {e}") from None
        issue = ad.standard_issue()
        if issue is not None:
            raise ValueError(issue)

        def t(x):
            if x is None:
                return None
            x = x.detach()
            return x.to(device=device or x.device, dtype=dtype or x.dtype).contiguous()

        def cat(mods, attr):
            xs = [getattr(m, attr) for m in mods]
            return None if any(x is None for x in xs) else t(torch.cat([x.detach() for x in xs]))

        layers = []
        for l in range(ad.n_layers):
            n1, n2 = ad.norms(l)
            qkv, o = ad.qkv(l), ad.attn_out(l)
            fin = ad.ffn_in(l)
            layers.append(LayerW(
                t(n1.weight), t(getattr(n1, "bias", None)), cat(qkv, "weight"), cat(qkv, "bias"),
                t(o.weight.t()), t(o.bias), t(n2.weight), t(getattr(n2, "bias", None)),
                t(fin[0].weight), t(fin[0].bias), t(ad.ffn_out(l).weight.t()), t(ad.ffn_out(l).bias),
                t(fin[1].weight) if len(fin) > 1 else None))
        fln, pos, rope = ad.final_norm(), ad.learned_positions(), ad.rope()
        p_in, p_out = ad.projections()
        name = getattr(model.config, "name_or_path", ad.family) or ad.family
        w = cls(embed=t(ad.embed_tokens().weight), lm_head=t(ad.lm_head().weight), layers=layers,
                n_heads=ad.n_heads, n_kv_heads=ad.n_kv_heads, head_dim=ad.head_dim,
                pos=t(pos.weight) if pos is not None else None,
                rope_inv_freq=None if rope is None else rope[0].detach().float().to(device or rope[0].device),
                rope_scaling=1.0 if rope is None else rope[1], max_pos=ad.max_positions, norm=ad.norm_kind,
                lnf_w=t(fln.weight) if fln is not None else None,
                lnf_b=t(getattr(fln, "bias", None)) if fln is not None else None,
                project_in=t(p_in.weight) if p_in is not None else None,
                project_out=t(p_out.weight) if p_out is not None else None, eps=ad.norm_eps(), name=name)
        w.has_final_ln = fln is not None
        return w

    # ---- random weights of a real shape ----------------------------------------------------------------
    @classmethod
    def random(cls, shape, dtype=torch.float32, device="cpu", seed: int = 0, std: float = 0.02) -> "DecoderWeights":
        """Random weights of a shadowllm.shapes.ModelShape, generated on `device`."""
        if not shape.pre_ln:
            raise ValueError(f"{shape.name} is post-LN; not supported")
        dev = torch.device(device)
        g = torch.Generator(device=dev).manual_seed(seed)
        d, f, E = shape.hidden, shape.ffn, shape.word_embed_proj_dim or shape.hidden
        H, Hkv, dh = shape.heads, shape.kv_heads or shape.heads, shape.head_dim

        def rn(*s):
            return (torch.randn(*s, generator=g, device=dev, dtype=torch.float32 if dev.type == "cpu" else dtype)
                    * std).to(dtype)

        def ones(n):
            return torch.ones(n, device=dev, dtype=dtype)

        nq = (H + 2 * Hkv) * dh
        if shape.family == "llama":
            layers = [LayerW(ones(d), None, rn(nq, d), None, rn(H * dh, d), None, ones(d), None,
                             rn(f, d), None, rn(f, d), None, rn(f, d)) for _ in range(shape.layers)]
            embed = rn(shape.vocab, d)
            inv = 1.0 / (shape.rope_theta ** (torch.arange(0, dh, 2, dtype=torch.float32, device=dev) / dh))
            return cls(embed=embed, lm_head=embed if shape.tied else rn(shape.vocab, d), layers=layers, n_heads=H,
                       n_kv_heads=Hkv, head_dim=dh, rope_inv_freq=inv, max_pos=shape.max_pos, norm="rms",
                       lnf_w=ones(d), eps=1e-5, name=shape.name)
        layers = [LayerW(ones(d), rn(d), rn(nq, d), rn(nq), rn(d, d), rn(d), ones(d), rn(d),
                         rn(f, d), rn(f), rn(f, d), rn(d)) for _ in range(shape.layers)]
        embed = rn(shape.vocab, E)
        w = cls(embed=embed, pos=rn(shape.max_pos + 2, d), lm_head=embed, layers=layers, n_heads=H,
                lnf_w=ones(d), lnf_b=rn(d), project_in=rn(d, E) if E != d else None,
                project_out=rn(E, d) if E != d else None, name=shape.name)
        w.has_final_ln = True
        return w

