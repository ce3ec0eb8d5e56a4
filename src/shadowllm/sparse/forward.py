"""The layer math every decoder mode shares: a pre-norm OPT / Llama layer on full or sliced rows, with its KV cache.

Reproduces the stock forward pass of either family (see weights.py): OPT (LayerNorm, learned positions with
offset 2, ReLU FFN, optional project_in/out) and Llama (RMSNorm, rotary positions, SwiGLU FFN, grouped-query
attention); sequences of a batch have equal length and start at position 0.

kv_policy of the gathered (per-token) layers: "full" computes K/V of every head, so token t's output equals the
stock model with token t's mask (tested); "active" computes only the active heads' K/V (not equal to any
masked model).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import kernels_triton
from .gather import GatherOps
from .predictors import linear_relu
from .slices import Slice
from .weights import DecoderWeights


def _ln(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def _rms(x, w, eps):
    """RMSNorm op for op as transformers' Llama computes it (float32 statistics, weight after the cast back)."""
    x32 = x.float()
    y = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return y if w is None else w * y


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [B, T, h, dh] with cos / sin [T, dh] (transformers' rotate-half convention)."""
    x1, x2 = x.chunk(2, -1)
    return x * cos[None, :, None] + torch.cat([-x2, x1], -1) * sin[None, :, None]


def _ffn_act(x: torch.Tensor, s) -> torch.Tensor:
    """x [M, d] -> the activated FFN hidden [M, nf_pad]: relu(W1 x + b1) (OPT) or silu(W1 x) * (W3 x) (Llama)."""
    if s.w3 is None:
        return linear_relu(x, s.w1, s.b1)
    return F.silu(F.linear(x, s.w1, s.b1)) * F.linear(x, s.w3)


class Forward:
    """Embedding, layers and LM head of `w` over a KV cache of [B, heads, 2, Tmax, dh] per layer.

    ops: the fused gathers of layer_gather (None: only layer_mm runs); fused_ln: residual add + LayerNorm in one
    Triton kernel (LayerNorm models only)."""

    def __init__(self, w: DecoderWeights, ops: GatherOps | None, kv_policy: str, fused_ln: bool):
        self.w, self.ops, self.kv_policy = w, ops, kv_policy
        self.fused_ln = fused_ln and w.norm == "layer"  # the Triton kernel is LayerNorm with bias
        self.scaling = w.dh ** -0.5
        self.ar_dh = torch.arange(w.dh, device=w.device)
        self.K = self.V = None

    def alloc(self, batch: int, max_len: int, heads: list[int]) -> None:
        """The KV cache (heads[l] KV heads in layer l) and the position tables for max_len tokens."""
        w = self.w
        rope = w.rope_tables(max_len, w.dtype, w.device)
        self.cos, self.sin = rope if rope is not None else (None, None)
        # one buffer per layer for K and V: [B, heads, 2, T, dh] (one write and one head gather per layer)
        self.KV = [torch.zeros(batch, h, 2, max_len, w.dh, dtype=w.dtype, device=w.device) for h in heads]
        self.K = [kv[:, :, 0] for kv in self.KV]
        self.V = [kv[:, :, 1] for kv in self.KV]
        self._smask = None
        self.ar_T = torch.arange(max_len, device=w.device)
        self._bidx = torch.arange(batch, device=w.device)[:, None]

    def graph_mask(self, pos: torch.Tensor) -> None:
        """A graph step attends over the whole buffer: its additive mask is -inf after position pos ([1])."""
        n = self.ar_T.numel()
        self._smask = torch.zeros(n, dtype=self.w.dtype, device=self.w.device).masked_fill(
            self.ar_T > pos, float("-inf")).view(1, 1, 1, n)

    def add_ln(self, h: torch.Tensor, y: torch.Tensor | None, w, b):
        """h, y [M, d] -> (h + y, norm(h + y)); y None: (h, norm(h)). norm: LayerNorm or RMSNorm."""
        if self.fused_ln and w is not None and b is not None:
            return kernels_triton.add_layer_norm(h, y, w, b, self.w.eps)
        if y is not None:
            h = h + y
        if self.w.norm == "rms":
            return h, _rms(h, w, self.w.eps)
        return h, _ln(h, w, b, self.w.eps)

    # ---- embeddings / head ------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = F.embedding(ids, self.w.embed)
        if self.w.project_in is not None:
            h = F.linear(h, self.w.project_in)
        return h if self.w.pos is None else h + F.embedding(pos + 2, self.w.pos)

    def rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [B, T, h, dh] at positions pos [T] -> rotated (rotary models), else x."""
        if self.cos is None:
            return x
        return _rotate(x, self.cos[pos], self.sin[pos])

    def head(self, h: torch.Tensor, x_ln: torch.Tensor | None = None) -> torch.Tensor:
        """h [..., d] -> logits; x_ln: the final layer norm of h if already computed."""
        if x_ln is not None:
            h = x_ln.view(h.shape)
        elif self.w.has_final_ln:
            shp = h.shape
            h = self.add_ln(h.reshape(-1, shp[-1]), None, self.w.lnf_w, self.w.lnf_b)[1].view(shp)
        if self.w.project_out is not None:
            h = F.linear(h, self.w.project_out)
        return F.linear(h, self.w.lm_head)

    # ---- attention core -------------------------------------------------------------------------
    def attend(self, q, K, V, t0: int | None, T: int, kv_map=None):
        """q [B, h, T, dh] (unscaled); K/V [B, hkv, Tmax, dh] already holding the new entries -> [B, h, T, dh].

        kv_map [h]: the KV head of each query head (gathered); None with hkv < h: the standard GQA grouping.
        One scaled_dot_product_attention call. In a CUDA graph (t0 None, T == 1) it attends over the whole
        buffer with the step's additive mask (graph_mask)."""
        if t0 is not None:
            K, V = K[:, :, : t0 + T], V[:, :, : t0 + T]
        if kv_map is not None:
            K, V = K.index_select(1, kv_map), V.index_select(1, kv_map)
        kw = dict(scale=self.scaling, enable_gqa=K.shape[1] != q.shape[1])
        if t0 is None:
            return F.scaled_dot_product_attention(q, K, V, attn_mask=self._smask, **kw)
        n = t0 + T
        if T == 1:
            return F.scaled_dot_product_attention(q, K, V, **kw)
        if t0 == 0:
            return F.scaled_dot_product_attention(q, K, V, is_causal=True, **kw)
        keep = self.ar_T[:n][None, :] <= (t0 + self.ar_T[:T])[:, None]
        return F.scaled_dot_product_attention(q, K, V, attn_mask=keep, **kw)

    # ---- a layer on (sliced or full) matrices, any T --------------------------------------------
    def layer_mm(self, l: int, s: Slice, h: torch.Tensor, t0, pos: torch.Tensor, on_attn=None,
                 head_keep=None, neuron_keep=None, x_in=None, next_ln=None):
        """h [B, T, d] -> h [B, T, d]. x_in: this layer's ln1(h) [B*T, d] if already computed; next_ln:
        (weight, bias) of the NEXT layer norm, to fuse with the last residual add -> returns (h, x_next)."""
        B, T, d = h.shape
        dh, nh, nkv = self.w.dh, s.nh, s.nkv
        h = h.reshape(B * T, d)
        x = x_in if x_in is not None else self.add_ln(h, None, s.ln1_w, s.ln1_b)[1]
        qkv = F.linear(x, s.wqkv, s.bqkv)
        q = self.rope(qkv[:, : nh * dh].view(B, T, nh, dh), pos)                # [B, T, nh, dh]
        kv = qkv[:, nh * dh:].view(B, T, 2, nkv, dh)
        if self.cos is not None:
            kv = torch.stack([self.rope(kv[:, :, 0], pos), kv[:, :, 1]], 2)
        self.KV[l].index_copy_(3, pos, kv.permute(0, 3, 2, 1, 4))             # [B, nkv, 2, T, dh]
        a = self.attend(q.transpose(1, 2), self.K[l], self.V[l], t0, T, s.kv_map).transpose(1, 2)  # [B,T,nh,dh]
        hk = head_keep if head_keep is not None else s.head_keep
        if hk is not None:
            a = a * hk[:, None, :, None]
        a = a.reshape(B * T, nh * dh)
        if on_attn is not None:
            on_attn(a.view(B, T, nh * dh))
        h, x = self.add_ln(h, torch.addmm(s.bo, a, s.woT) if s.bo is not None else a @ s.woT, s.ln2_w, s.ln2_b)
        z = _ffn_act(x, s)
        nk = neuron_keep if neuron_keep is not None else s.neuron_keep
        if nk is not None:
            z = (z.view(B, T, -1) * nk[:, None, :]).view(B * T, -1)
        o = torch.addmm(s.b2, z, s.w2T) if s.b2 is not None else z @ s.w2T
        if next_ln is not None:
            h, x = self.add_ln(h, o, *next_ln)
            return h.view(B, T, d), x
        return (h + o).view(B, T, d)

    # ---- a layer through fused gathers (per-token modes, T == 1) ---------------------------------
    def layer_gather(self, l: int, h: torch.Tensor, hidx: torch.Tensor, nidx: torch.Tensor, t0, pos,
                     rows: torch.Tensor | None = None):
        """h [B, 1, d]; hidx [B, kh], nidx [B, kf] sorted unit indices; rows [B, kh*dh] = the active heads'
        q rows (given when known ahead, as in ShadowLLM, else computed here)."""
        lw, ops, group = self.w.layers[l], self.ops, self.w.group
        B = h.shape[0]
        dh, H, Hkv, kh = self.w.dh, self.w.H, self.w.Hkv, hidx.shape[-1]
        Hd = H * dh
        kvh = hidx // group if group > 1 else hidx                             # [B, kh] each head's KV head
        x = self.add_ln(h[:, 0], None, lw.ln1_w, lw.ln1_b)[1]                  # [B, d]
        if rows is None:
            rows = (hidx[..., None] * dh + self.ar_dh).reshape(B, kh * dh)   # [B, kh*dh]
        KV = self.KV[l]
        if self.kv_policy == "full":
            q = ops.mv(lw.wqkv, x, rows, bias=lw.bqkv)                         # bias[rows]: the q rows
            kv = F.linear(x, lw.wqkv[Hd:], None if lw.bqkv is None else lw.bqkv[Hd:]).view(B, 1, 2, Hkv, dh)
            if self.cos is not None:
                kv = torch.stack([self.rope(kv[:, :, 0], pos), kv[:, :, 1]], 2)
            KV.index_copy_(3, pos, kv.permute(0, 3, 2, 1, 4))                 # [B, Hkv, 2, 1, dh]
        else:  # the active heads' K/V only (a KV head shared by several active heads is computed for each)
            kvr = rows if group == 1 else (kvh[..., None] * dh + self.ar_dh).reshape(B, kh * dh)
            rows3 = torch.cat([rows, kvr + Hd, kvr + Hd + Hkv * dh], dim=1)
            qkv = ops.mv(lw.wqkv, x, rows3, bias=lw.bqkv).view(B, 3, kh, dh)
            q = qkv[:, 0].reshape(B, kh * dh)
            k = self.rope(qkv[:, 1][:, None], pos)[:, 0]
            pidx = pos.expand(B, kh)
            self.K[l].index_put_((self._bidx.expand(B, kh), kvh, pidx), k)
            self.V[l].index_put_((self._bidx.expand(B, kh), kvh, pidx), qkv[:, 2])
        q = self.rope(q.view(B, 1, kh, dh), pos).transpose(1, 2)              # [B, kh, 1, dh]
        if t0 is not None:
            KV = KV[:, :, :, : t0 + 1]
        KVs = KV[self._bidx, kvh]                                               # [B, kh, 2, n, dh]
        if t0 is None:
            a = F.scaled_dot_product_attention(q, KVs[:, :, 0], KVs[:, :, 1], attn_mask=self._smask,
                                               scale=self.scaling)
        else:
            a = F.scaled_dot_product_attention(q, KVs[:, :, 0], KVs[:, :, 1], scale=self.scaling)
        h1 = ops.tmv(lw.woT, a.reshape(B, kh * dh), rows, bias=lw.bo, residual=h[:, 0])
        x = self.add_ln(h1, None, lw.ln2_w, lw.ln2_b)[1]
        if lw.w3 is None:
            z = ops.mv(lw.w1, x, nidx, bias=lw.b1, relu=True)
        else:
            z = F.silu(ops.mv(lw.w1, x, nidx, bias=lw.b1)) * ops.mv(lw.w3, x, nidx)
        return ops.tmv(lw.w2T, z, nidx, bias=lw.b2, residual=h1)[:, None]
