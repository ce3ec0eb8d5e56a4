"""SparseDecoder: greedy OPT / Llama decoding that runs only the active attention heads and FFN neurons.

Reproduces the stock pre-norm forward pass of either family (see weights.py): OPT (LayerNorm, learned
positions with offset 2, ReLU FFN, optional project_in/out) and Llama (RMSNorm, rotary positions, SwiGLU FFN,
grouped-query attention); sequences of a batch have equal length and start at position 0.

Grouped-query attention: the unit is the query head. A KV head's rows are read (and its cache kept) while any
of its query heads is kept; static masks keep exactly those, shadowllm-prompt a fixed capacity of
min(batch * k_heads, KV heads) so that a decode step keeps its shapes.

Modes; p = placement (default 0): layers 0..p always run dense, top-k is per layer with
k = max(1, round((1 - sparsity) * units)), so shapes are fixed and a decode step can be a CUDA graph.
  dense             all units.
  static            a fixed Mask (oracle); weights sliced once before generation (placement not used).
  shadowllm-prompt  one mask per sequence: the ShadowLLM predictor reads layer p's attention output (the
                    input of its out_proj) at the last prompt token; each layer l > p keeps its top-k units,
                    copied into persistent slice buffers; the KV cache holds only the kept heads.
  shadowllm-token   the same predictor at every token; active rows are read by fused gather kernels.
  dejavu            one predictor per layer l > p on that layer's input (lookahead: on layer l-1's input, on
                    a side CUDA stream); fused gathers.

kv_policy of the per-token modes: "full" computes K/V of every head, so token t's output equals the stock
model with token t's mask (tested); "active" computes only the active heads' K/V (not equal to any masked
model). The prompt of a per-token mode uses one mask per sequence (from its last token).

Batch > 1: per-token modes gather per sequence (idx [B, k]); static / shadowllm-prompt slice the union of
the sequences' units (capacity min(B*k, units) in prompt mode) and zero each sequence's other units.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import kernels_triton
from .gather import GatherOps
from .predictors import DejaVuPredictor, ShadowPredictor, linear_relu
from .slices import Slice, kv_heads_of, onehot, topk_idx, union_capacity
from .weights import DecoderWeights

MODES = ("dense", "static", "shadowllm-prompt", "shadowllm-token", "dejavu")
TOKEN_MODES = ("shadowllm-token", "dejavu")
KV_POLICIES = ("full", "active")


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


class SparseDecoder:
    """Greedy decoding that reads only the active heads' and neurons' rows (see the module docstring)."""

    def __init__(self, weights: DecoderWeights, mode: str = "dense", sparsity: float = 0.0, *, static_mask=None,
                 predictor_hidden: int = 1024, shadow: ShadowPredictor | None = None,
                 dejavu: DejaVuPredictor | None = None, kv_policy: str = "full", gather: str = "auto",
                 lookahead: bool = False, side_stream: bool = True, seed: int = 0, fused_ln: bool | None = None,
                 placement: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        if kv_policy not in KV_POLICIES:
            raise ValueError(f"kv_policy {kv_policy!r} is not one of {KV_POLICIES}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity {sparsity!r} is outside [0, 1)")
        if mode == "static" and static_mask is None:
            raise ValueError("mode 'static' needs static_mask (a masks.Mask)")
        if not 0 <= placement < weights.L:
            raise ValueError(f"placement layer {placement!r} is outside the model's layers 0..{weights.L - 1}")
        w = self.w = weights
        self.placement = placement  # layers 0..placement run dense; the predictors read / start after it
        self.mode, self.sparsity, self.kv_policy, self.lookahead = mode, sparsity, kv_policy, lookahead
        self.device, self.dtype = w.device, w.dtype
        self.H, self.dh, self.F, self.L, self.d = w.H, w.dh, w.F, w.L, w.d
        self.Hkv, self.group = w.Hkv, w.group
        self.kh = max(1, int(round((1 - sparsity) * self.H)))
        self.kf = max(1, int(round((1 - sparsity) * self.F)))
        self.scaling = self.dh ** -0.5
        self.static_mask = static_mask
        self.shadow = self.dejavu_pred = None
        if mode in ("shadowllm-prompt", "shadowllm-token"):
            self.shadow = shadow or ShadowPredictor(self.H * self.dh, self.L, self.H, self.F, predictor_hidden,
                                                    self.dtype, self.device, seed)
        if mode == "dejavu":
            self.dejavu_pred = dejavu or DejaVuPredictor(self.d, self.L, self.H, self.F, predictor_hidden,
                                                         self.dtype, self.device, seed)
        self.ops = GatherOps(gather, self.device) if mode in TOKEN_MODES else None
        cuda = self.device.type == "cuda"
        # residual add + layer norm in one Triton kernel (None: on CUDA when triton is there; every mode alike)
        self.fused_ln = (cuda and kernels_triton.available()) if fused_ln is None else bool(fused_ln)
        self.fused_ln = self.fused_ln and w.norm == "layer"  # the Triton kernel is LayerNorm with bias
        self.side = torch.cuda.Stream(self.device) if (cuda and side_stream) else None
        self.full = [Slice.full(lw, self.H, self.Hkv) for lw in w.layers]
        self.record = False
        self.trace: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.B = None
        self.graph = None
        self._ar_dh = torch.arange(self.dh, device=self.device)

    # ---- setup ----------------------------------------------------------------------------------
    def setup(self, batch: int, max_len: int) -> "SparseDecoder":
        """Allocate the KV cache and slice buffers for `batch` sequences of up to `max_len` tokens."""
        if max_len > self.w.max_pos:
            raise ValueError(f"max_len {max_len} exceeds the model's {self.w.max_pos} positions")
        if self.B == batch and self.Tmax >= max_len:
            return self
        # a multiple of 16 where the positions allow: the attention kernels want 16-byte-aligned mask rows
        max_len = min(-(-max_len // 16) * 16, self.w.max_pos)
        rope = self.w.rope_tables(max_len, self.dtype, self.device)
        self.cos, self.sin = rope if rope is not None else (None, None)
        self.B, self.Tmax = batch, max_len
        self.graph = None
        self.slices = list(self.full)
        if self.mode == "static":
            self._prepare_static(batch)
        elif self.mode == "shadowllm-prompt":
            capH, capF = min(batch * self.kh, self.H), min(batch * self.kf, self.F)
            capKV = min(capH, self.Hkv)   # the KV heads of capH query heads, whichever they are
            p1 = self.placement + 1
            if capH == self.H and capF == self.F:  # nothing to slice (e.g. sparsity 0): share the full weights
                self.slices = self.full[:p1] + [Slice(**vars(s)) for s in self.full[p1:]]
            else:
                self.slices = self.full[:p1] + [Slice.empty_like(lw, capH, capF, self.dh, capKV, self.group > 1)
                                                for lw in self.w.layers[p1:]]
            if batch > 1:  # persistent per-sequence keep buffers (a captured graph reads them in place)
                for s in self.slices[p1:]:
                    s.head_keep = torch.ones(batch, s.nh, dtype=self.dtype, device=self.device)
                    s.neuron_keep = torch.zeros(batch, s.nf_pad, dtype=self.dtype, device=self.device)
        heads = [s.nkv for s in self.slices]
        if self.mode in TOKEN_MODES:
            heads = [self.Hkv] * self.L
        # one buffer per layer for K and V: [B, heads, 2, T, dh] (one write and one head gather per layer)
        self.KV = [torch.zeros(batch, h, 2, max_len, self.dh, dtype=self.dtype, device=self.device) for h in heads]
        self.K = [kv[:, :, 0] for kv in self.KV]
        self.Vc = [kv[:, :, 1] for kv in self.KV]
        self._smask = None
        self._ar_T = torch.arange(max_len, device=self.device)
        self._bidx = torch.arange(batch, device=self.device)[:, None]
        self.t = 0
        return self

    def _prepare_static(self, batch: int) -> None:
        m = self.static_mask
        heads, neurons = m.heads.to(self.device), m.neurons.to(self.device)
        if heads.shape[1:] != (self.L, self.H) or neurons.shape[1:] != (self.L, self.F):
            raise ValueError(f"static mask shapes {tuple(heads.shape)} / {tuple(neurons.shape)} do not fit "
                             f"L={self.L}, H={self.H}, F={self.F}")
        if heads.shape[0] not in (1, batch):
            raise ValueError(f"static mask batch {heads.shape[0]} does not match batch {batch}")
        self.slices = []
        for l, lw in enumerate(self.w.layers):
            mh, mn = heads[:, l] > 0, neurons[:, l] > 0
            if bool(mh.all()) and bool(mn.all()):
                self.slices.append(self.full[l])
                continue
            hu, nu = mh.any(0), mn.any(0)
            if not bool(hu.any()) or not bool(nu.any()):
                raise ValueError(f"static mask prunes every head or every neuron of layer {l}")
            hidx, nidx = hu.nonzero().flatten(), nu.nonzero().flatten()
            kv, kv_map = kv_heads_of(hidx, self.group)
            s = Slice.empty_like(lw, hidx.numel(), nidx.numel(), self.dh, kv.numel(), self.group > 1)
            s.fill(lw, hidx, nidx, self.dh, self.H, kv_idx=kv, kv_map=kv_map, Hkv=self.Hkv)
            if heads.shape[0] > 1 and not bool((mh == hu).all()):
                s.head_keep = mh[:, hidx].to(self.dtype)
            if neurons.shape[0] > 1 and not bool((mn == nu).all()):
                s.neuron_keep = s.pad_keep(mn[:, nidx].to(self.dtype))
            self.slices.append(s)

    def reset(self) -> None:
        self.t = 0
        self.trace = []

    def _add_ln(self, h: torch.Tensor, y: torch.Tensor | None, w, b):
        """h, y [M, d] -> (h + y, norm(h + y)); y None: (h, norm(h)). norm: LayerNorm or RMSNorm."""
        if self.fused_ln and w is not None and b is not None:
            return kernels_triton.add_layer_norm(h, y, w, b, self.w.eps)
        if y is not None:
            h = h + y
        if self.w.norm == "rms":
            return h, _rms(h, w, self.w.eps)
        return h, _ln(h, w, b, self.w.eps)

    # ---- embeddings / head ------------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = F.embedding(ids, self.w.embed)
        if self.w.project_in is not None:
            h = F.linear(h, self.w.project_in)
        return h if self.w.pos is None else h + F.embedding(pos + 2, self.w.pos)

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [B, T, h, dh] at positions pos [T] -> rotated (rotary models), else x."""
        if self.cos is None:
            return x
        return _rotate(x, self.cos[pos], self.sin[pos])

    def _head(self, h: torch.Tensor, x_ln: torch.Tensor | None = None) -> torch.Tensor:
        """h [..., d] -> logits; x_ln: the final layer norm of h if already computed."""
        if x_ln is not None:
            h = x_ln.view(h.shape)
        elif self.w.has_final_ln:
            shp = h.shape
            h = self._add_ln(h.reshape(-1, shp[-1]), None, self.w.lnf_w, self.w.lnf_b)[1].view(shp)
        if self.w.project_out is not None:
            h = F.linear(h, self.w.project_out)
        return F.linear(h, self.w.lm_head)

    # ---- attention core -------------------------------------------------------------------------
    def _attend(self, q, K, V, t0: int | None, T: int, kv_map=None):
        """q [B, h, T, dh] (unscaled); K/V [B, hkv, Tmax, dh] already holding the new entries -> [B, h, T, dh].

        kv_map [h]: the KV head of each query head (gathered); None with hkv < h: the standard GQA grouping.
        One scaled_dot_product_attention call. In a CUDA graph (t0 None, T == 1) it attends over the whole
        buffer with the step's additive mask (-inf after the current position), built once per step."""
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
        keep = self._ar_T[:n][None, :] <= (t0 + self._ar_T[:T])[:, None]
        return F.scaled_dot_product_attention(q, K, V, attn_mask=keep, **kw)

    @staticmethod
    def _ffn_act(x: torch.Tensor, s) -> torch.Tensor:
        """x [M, d] -> the activated FFN hidden [M, nf_pad]: relu(W1 x + b1) (OPT) or silu(W1 x) * (W3 x) (Llama)."""
        if s.w3 is None:
            return linear_relu(x, s.w1, s.b1)
        return F.silu(F.linear(x, s.w1, s.b1)) * F.linear(x, s.w3)

    # ---- a layer on (sliced or full) matrices, any T --------------------------------------------
    def _layer_mm(self, l: int, s: Slice, h: torch.Tensor, t0, pos: torch.Tensor, on_attn=None,
                  head_keep=None, neuron_keep=None, x_in=None, next_ln=None):
        """h [B, T, d] -> h [B, T, d]. x_in: this layer's ln1(h) [B*T, d] if already computed; next_ln:
        (weight, bias) of the NEXT layer norm, to fuse with the last residual add -> returns (h, x_next)."""
        B, T, d = h.shape
        dh, nh, nkv = self.dh, s.nh, s.nkv
        h = h.reshape(B * T, d)
        x = x_in if x_in is not None else self._add_ln(h, None, s.ln1_w, s.ln1_b)[1]
        qkv = F.linear(x, s.wqkv, s.bqkv)
        q = self._rope(qkv[:, : nh * dh].view(B, T, nh, dh), pos)               # [B, T, nh, dh]
        kv = qkv[:, nh * dh:].view(B, T, 2, nkv, dh)
        if self.cos is not None:
            kv = torch.stack([self._rope(kv[:, :, 0], pos), kv[:, :, 1]], 2)
        self.KV[l].index_copy_(3, pos, kv.permute(0, 3, 2, 1, 4))             # [B, nkv, 2, T, dh]
        a = self._attend(q.transpose(1, 2), self.K[l], self.Vc[l], t0, T, s.kv_map).transpose(1, 2)  # [B,T,nh,dh]
        hk = head_keep if head_keep is not None else s.head_keep
        if hk is not None:
            a = a * hk[:, None, :, None]
        a = a.reshape(B * T, nh * dh)
        if on_attn is not None:
            on_attn(a.view(B, T, nh * dh))
        h, x = self._add_ln(h, torch.addmm(s.bo, a, s.woT) if s.bo is not None else a @ s.woT, s.ln2_w, s.ln2_b)
        z = self._ffn_act(x, s)
        nk = neuron_keep if neuron_keep is not None else s.neuron_keep
        if nk is not None:
            z = (z.view(B, T, -1) * nk[:, None, :]).view(B * T, -1)
        o = torch.addmm(s.b2, z, s.w2T) if s.b2 is not None else z @ s.w2T
        if next_ln is not None:
            h, x = self._add_ln(h, o, *next_ln)
            return h.view(B, T, d), x
        return (h + o).view(B, T, d)

    # ---- a layer through fused gathers (per-token modes, T == 1) ---------------------------------
    def _layer_gather(self, l: int, h: torch.Tensor, hidx: torch.Tensor, nidx: torch.Tensor, t0, pos,
                      rows: torch.Tensor | None = None):
        """h [B, 1, d]; hidx [B, kh], nidx [B, kf] sorted unit indices; rows [B, kh*dh] = the active heads'
        q rows (given when known ahead, as in ShadowLLM, else computed here)."""
        lw, ops = self.w.layers[l], self.ops
        B = h.shape[0]
        dh, H, Hkv, kh = self.dh, self.H, self.Hkv, hidx.shape[-1]
        Hd = H * dh
        kvh = hidx // self.group if self.group > 1 else hidx                   # [B, kh] each head's KV head
        x = self._add_ln(h[:, 0], None, lw.ln1_w, lw.ln1_b)[1]                # [B, d]
        if rows is None:
            rows = (hidx[..., None] * dh + self._ar_dh).reshape(B, kh * dh)   # [B, kh*dh]
        KV = self.KV[l]
        if self.kv_policy == "full":
            q = ops.mv(lw.wqkv, x, rows, bias=lw.bqkv)                         # bias[rows]: the q rows
            kv = F.linear(x, lw.wqkv[Hd:], None if lw.bqkv is None else lw.bqkv[Hd:]).view(B, 1, 2, Hkv, dh)
            if self.cos is not None:
                kv = torch.stack([self._rope(kv[:, :, 0], pos), kv[:, :, 1]], 2)
            KV.index_copy_(3, pos, kv.permute(0, 3, 2, 1, 4))                 # [B, Hkv, 2, 1, dh]
        else:  # the active heads' K/V only (a KV head shared by several active heads is computed for each)
            kvr = rows if self.group == 1 else (kvh[..., None] * dh + self._ar_dh).reshape(B, kh * dh)
            rows3 = torch.cat([rows, kvr + Hd, kvr + Hd + Hkv * dh], dim=1)
            qkv = ops.mv(lw.wqkv, x, rows3, bias=lw.bqkv).view(B, 3, kh, dh)
            q = qkv[:, 0].reshape(B, kh * dh)
            k = self._rope(qkv[:, 1][:, None], pos)[:, 0]
            pidx = pos.expand(B, kh)
            self.K[l].index_put_((self._bidx.expand(B, kh), kvh, pidx), k)
            self.Vc[l].index_put_((self._bidx.expand(B, kh), kvh, pidx), qkv[:, 2])
        q = self._rope(q.view(B, 1, kh, dh), pos).transpose(1, 2)             # [B, kh, 1, dh]
        if t0 is not None:
            KV = KV[:, :, :, : t0 + 1]
        KVs = KV[self._bidx, kvh]                                               # [B, kh, 2, n, dh]
        if t0 is None:
            a = F.scaled_dot_product_attention(q, KVs[:, :, 0], KVs[:, :, 1], attn_mask=self._smask,
                                               scale=self.scaling)
        else:
            a = F.scaled_dot_product_attention(q, KVs[:, :, 0], KVs[:, :, 1], scale=self.scaling)
        h1 = ops.tmv(lw.woT, a.reshape(B, kh * dh), rows, bias=lw.bo, residual=h[:, 0])
        x = self._add_ln(h1, None, lw.ln2_w, lw.ln2_b)[1]
        if lw.w3 is None:
            z = ops.mv(lw.w1, x, nidx, bias=lw.b1, relu=True)
        else:
            z = F.silu(ops.mv(lw.w1, x, nidx, bias=lw.b1)) * ops.mv(lw.w3, x, nidx)
        return ops.tmv(lw.w2T, z, nidx, bias=lw.b2, residual=h1)[:, None]

    # ---- masks from scores ------------------------------------------------------------------------
    def _split_idx(self, scores: torch.Tensor):
        """scores [..., H+F] -> (head idx [..., kh], neuron idx [..., kf])."""
        return topk_idx(scores[..., : self.H], self.kh), topk_idx(scores[..., self.H:], self.kf)

    def _record(self, n: int, hidx_layers, nidx_layers) -> None:
        """hidx_layers / nidx_layers: per layer [B, k] index tensors (None = all units)."""
        if not self.record:
            return
        B = self.B
        hm = torch.ones(B, self.L, self.H)
        nm = torch.ones(B, self.L, self.F)
        for l, (hi, ni) in enumerate(zip(hidx_layers, nidx_layers)):
            if hi is not None:
                hm[:, l] = onehot(hi.cpu(), self.H, torch.float32)
            if ni is not None:
                nm[:, l] = onehot(ni.cpu(), self.F, torch.float32)
        self.trace.append((n, hm, nm))

    def _run_side(self, fn):
        """Run fn on the side stream (GPU) and return (result, join callable)."""
        if self.side is None:
            r = fn()
            return r, (lambda: None)
        main = torch.cuda.current_stream(self.device)
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            r = fn()
        return r, (lambda: main.wait_stream(self.side))

    # ---- prefill ----------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
        if self.B is None or ids.shape[0] != self.B:
            self.setup(ids.shape[0], max(ids.shape[1] + 64, 2 * ids.shape[1]))
        self.reset()
        B, T = ids.shape
        pos = self._ar_T[:T]
        h = self._embed(ids, pos)
        mode = self.mode
        if mode in ("dense", "static"):
            for l in range(self.L):
                h = self._layer_mm(l, self.slices[l], h, 0, pos)
            if mode == "static" and self.record:
                self.trace.append((T, self.static_mask.heads.expand(B, -1, -1).float().cpu(),
                                   self.static_mask.neurons.expand(B, -1, -1).float().cpu()))
        elif mode in ("shadowllm-prompt", "shadowllm-token"):
            p = self.placement
            got = {}
            for l in range(p):
                h = self._layer_mm(l, self.full[l], h, 0, pos)
            h = self._layer_mm(p, self.full[p], h, 0, pos, on_attn=lambda a: got.setdefault("a", a[:, -1]))
            scores = self.shadow(got["a"])[:, p + 1:]                   # [B, L-1-p, H+F]
            hidx, nidx = self._split_idx(scores)                        # [B, L-1-p, k]
            self._record(T, [None] * (p + 1) + list(hidx.unbind(1)), [None] * (p + 1) + list(nidx.unbind(1)))
            if mode == "shadowllm-prompt":
                self._fill_prompt_slices(hidx, nidx)
                for l in range(p + 1, self.L):
                    h = self._layer_mm(l, self.slices[l], h, 0, pos)
            else:
                hk = onehot(hidx, self.H, self.dtype)
                nk = onehot(nidx, self.F, self.dtype)
                for l in range(p + 1, self.L):
                    h = self._layer_mm(l, self.full[l], h, 0, pos, head_keep=hk[:, l - p - 1],
                                       neuron_keep=nk[:, l - p - 1])
        else:  # dejavu: each layer's predictor on its own input at the last prompt token
            p = self.placement
            for l in range(p + 1):
                h = self._layer_mm(l, self.full[l], h, 0, pos)
            his, nis = [None] * (p + 1), [None] * (p + 1)
            for l in range(p + 1, self.L):
                hi, ni = self._split_idx(self.dejavu_pred(l, h[:, -1]))
                his.append(hi), nis.append(ni)
                h = self._layer_mm(l, self.full[l], h, 0, pos, head_keep=onehot(hi, self.H, self.dtype),
                                   neuron_keep=onehot(ni, self.F, self.dtype))
            self._record(T, his, nis)
        self.t = T
        return self._head(h if all_logits else h[:, -1:])

    def _fill_prompt_slices(self, hidx: torch.Tensor, nidx: torch.Tensor) -> None:
        """Copy each layer's kept rows into its persistent slice buffers (union over the batch)."""
        p1 = self.placement + 1
        hm = onehot(hidx, self.H, self.dtype)   # [B, L-p1, H]
        nm = onehot(nidx, self.F, self.dtype)
        for l in range(p1, self.L):
            s = self.slices[l]
            full = s.nh == self.H and s.nf == self.F
            if full:  # the full matrices are used as they are; only per-sequence keeps change
                if self.B > 1:
                    s.head_keep.copy_(hm[:, l - p1])
                    s.neuron_keep.copy_(nm[:, l - p1])
                continue
            hi, hk = union_capacity(hm[:, l - p1], s.nh)
            ni, nk = union_capacity(nm[:, l - p1], s.nf)
            kvi = kv_map = None
            if self.group > 1:  # the KV heads of the kept query heads, padded to the slice's capacity
                need = torch.zeros(1, self.Hkv, dtype=self.dtype, device=self.device)
                need[0, hi // self.group] = 1
                kvi = union_capacity(need, s.nkv)[0]
                kv_map = torch.searchsorted(kvi, hi // self.group)
            if self.B > 1:
                s.head_keep.copy_(hk)
                s.neuron_keep[:, : s.nf].copy_(nk)
            s.fill(self.w.layers[l], hi, ni, self.dh, self.H, kv_idx=kvi, kv_map=kv_map, Hkv=self.Hkv)

    # ---- one decode step --------------------------------------------------------------------------
    def _step(self, ids: torch.Tensor, pos: torch.Tensor, t0: int | None) -> torch.Tensor:
        """ids [B] at position pos ([1] tensor; t0 = the same as int, or None in a CUDA graph) -> logits [B, V]."""
        h = self._embed(ids[:, None], pos)
        mode = self.mode
        if t0 is None:  # graph mode attends over the whole buffer: -inf after the current position
            self._smask = torch.zeros(self.Tmax, dtype=self.dtype, device=self.device).masked_fill(
                self._ar_T > pos, float("-inf")).view(1, 1, 1, self.Tmax)
        if mode in ("dense", "static", "shadowllm-prompt"):
            # each layer's last residual add is fused with the next layer norm (one kernel fewer per layer)
            x = None
            for l in range(self.L):
                if l + 1 < self.L:
                    nl = (self.slices[l + 1].ln1_w, self.slices[l + 1].ln1_b)
                else:
                    nl = (self.w.lnf_w, self.w.lnf_b) if self.w.has_final_ln else None
                if nl is None:
                    h, x = self._layer_mm(l, self.slices[l], h, t0, pos, x_in=x), None
                else:
                    h, x = self._layer_mm(l, self.slices[l], h, t0, pos, x_in=x, next_ln=nl)
            return self._head(h[:, 0], x_ln=x)
        p = self.placement
        for l in range(p):  # the dense layers before the placement layer
            h = self._layer_mm(l, self.full[l], h, t0, pos)
        if mode == "shadowllm-token":
            box = {}

            def predict(a):
                def run():
                    sc = self.shadow(a[:, 0])[:, p + 1:]
                    return self._split_idx(sc)
                box["idx"], box["join"] = self._run_side(run)

            h = self._layer_mm(p, self.full[p], h, t0, pos, on_attn=predict)
            box["join"]()
            hidx, nidx = box["idx"]                                          # [B, L-1-p, k]
            if t0 is not None:
                self._record(1, [None] * (p + 1) + list(hidx.unbind(1)), [None] * (p + 1) + list(nidx.unbind(1)))
            # every layer's masks are known now: their q rows in one op (DejaVu learns them layer by layer)
            rows = (hidx[..., None] * self.dh + self._ar_dh).flatten(2)      # [B, L-1-p, kh*dh]
            for l in range(p + 1, self.L):
                j = l - p - 1
                h = self._layer_gather(l, h, hidx[:, j], nidx[:, j], t0, pos, rows=rows[:, j])
        else:  # dejavu
            his, nis = [None] * (p + 1), [None] * (p + 1)
            if self.lookahead and p + 1 < self.L:
                pending, join = self._run_side(lambda: self._split_idx(self.dejavu_pred(p + 1, h[:, 0])))
                h = self._layer_mm(p, self.full[p], h, t0, pos)
                for l in range(p + 1, self.L):
                    join()
                    hi, ni = pending
                    if l + 1 < self.L:
                        x_in = h[:, 0]
                        pending, join = self._run_side(lambda l=l, x_in=x_in: self._split_idx(self.dejavu_pred(l + 1, x_in)))
                    his.append(hi), nis.append(ni)
                    h = self._layer_gather(l, h, hi, ni, t0, pos)
            else:
                h = self._layer_mm(p, self.full[p], h, t0, pos)
                for l in range(p + 1, self.L):
                    hi, ni = self._split_idx(self.dejavu_pred(l, h[:, 0]))
                    his.append(hi), nis.append(ni)
                    h = self._layer_gather(l, h, hi, ni, t0, pos)
            if t0 is not None:
                self._record(1, his, nis)
        return self._head(h[:, 0])

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Eager decode step: ids [B] -> logits [B, V]."""
        if self.t >= self.Tmax:
            raise ValueError(f"KV cache full ({self.Tmax} tokens)")
        pos = self._ar_T[self.t: self.t + 1]
        out = self._step(ids, pos, self.t)
        self.t += 1
        return out

    # ---- CUDA graph -------------------------------------------------------------------------------
    @torch.no_grad()
    def capture_graph(self, warmup: int = 2) -> None:
        """Capture one greedy decode step (ids -> next ids) in a CUDA graph; reused across generate calls."""
        if self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self._g_ids = torch.zeros(self.B, dtype=torch.long, device=self.device)
        self._g_pos = torch.zeros(1, dtype=torch.long, device=self.device)
        rec, self.record = self.record, False
        s = torch.cuda.Stream(self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            for _ in range(warmup):
                self._step(self._g_ids, self._g_pos, None)
        torch.cuda.current_stream(self.device).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self._g_logits = self._step(self._g_ids, self._g_pos, None)
            self._g_next = self._g_logits.argmax(-1)
        self.graph = g
        self.record = rec

    # ---- greedy generation ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, ids: torch.Tensor, n_new: int, use_graph: bool = False, return_logits: bool = False,
                 all_prompt_logits: bool = False):
        """Greedy: prefill, then n_new decode steps (each feeds the previous greedy token).

        Returns tokens [B, n_new + 1] (the prompt's next token and one per decode step) and, with
        return_logits, (prefill logits, [decode logits...]) from the eager path.
        """
        B, T = ids.shape
        if self.B != B or self.Tmax < T + n_new + 1:
            self.setup(B, T + n_new + 1)
        logits0 = self.prefill(ids, all_logits=all_prompt_logits)
        nxt = logits0[:, -1].argmax(-1)
        new, outs = self.decode_n(nxt, n_new, use_graph, return_logits)
        tokens = torch.cat([nxt[:, None], new], 1)
        return (tokens, (logits0, outs)) if return_logits else tokens

    @torch.no_grad()
    def decode_n(self, nxt: torch.Tensor, n_new: int, use_graph: bool = False, return_logits: bool = False):
        """n_new greedy decode steps starting from tokens nxt [B] -> (tokens [B, n_new], [logits...])."""
        B = nxt.shape[0]
        outs = []
        if self.t + n_new > self.Tmax:
            raise ValueError(f"KV cache holds {self.Tmax} tokens; {self.t} + {n_new} do not fit")
        if use_graph:
            if self.graph is None:
                raise ValueError("call capture_graph() first")
            self._g_ids.copy_(nxt)
            self._g_pos.fill_(self.t)
            buf = torch.empty(B, n_new, dtype=torch.long, device=self.device)
            for i in range(n_new):
                self.graph.replay()
                buf[:, i].copy_(self._g_next)
                self._g_ids.copy_(self._g_next)
                self._g_pos += 1
            self.t += n_new
            return buf, outs
        toks = []
        for _ in range(n_new):
            lg = self.decode(nxt)
            if return_logits:
                outs.append(lg)
            nxt = lg.argmax(-1)
            toks.append(nxt)
        if not toks:
            return torch.empty(B, 0, dtype=torch.long, device=self.device), outs
        return torch.stack(toks, 1), outs


SparseOPT = SparseDecoder  # the name of the OPT-only version
