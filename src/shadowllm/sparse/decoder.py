"""A compact OPT decoder that runs only the active attention heads and FFN neurons.

Built from a stock `OPTForCausalLM` (`OPTWeights.from_hf`) or from random weights of a real OPT shape
(`OPTWeights.random`), it reproduces the stock forward pass: pre-LN blocks, learned positions with OPT's
offset of 2, q scaled by head_dim**-0.5 before QK^T, ReLU FFN, final layer norm, optional
project_in/project_out (word_embed_proj_dim != hidden), lm_head (tied or not). Post-LN OPT (350m) is
rejected. Sequences of one batch have equal length (no padding); positions start at 0.

Weights are kept "one unit per row" so that any set of units is a set of rows:
    Wqkv [3*H*dh, d] (q rows, k rows, v rows; head h = rows h*dh:(h+1)*dh of each)
    WoT  [H*dh, d]   (out_proj transposed)      W1 [F, d] (fc1)      W2T [F, d] (fc2 transposed)

Modes (`SparseOPT(weights, mode, sparsity, ...)`):
  dense             all units.
  static            a fixed Mask (oracle), weights sliced once before generation ("pre-sliced").
  shadowllm-prompt  ShadowLLM, one mask per sequence: layer 0 runs dense on the prompt, the predictor reads
                    layer 0's attention output at the last prompt token, each layer l >= 1 keeps its top-k
                    heads / neurons; their q/k/v rows, out_proj columns, fc1 rows + bias and fc2 columns are
                    copied into persistent buffers (counted in the call's time) and the prompt and every
                    generated token run on those smaller matrices; the KV cache holds only active heads.
  shadowllm-token   ShadowLLM re-predicting at every token (the authors' latency benchmark): the predictor
                    runs on layer 0's attention output of the current token; active rows are read by fused
                    gather kernels (C++ on CPU, Triton on GPU) straight from the full matrices.
  dejavu            DejaVu-style: one predictor per layer l >= 1, each token, on that layer's input (or, with
                    lookahead=True, on the previous layer's input so it overlaps with that layer on a side
                    CUDA stream, as DejaVu does); same fused gather kernels.
Top-k is per layer ("local") with k = round((1 - sparsity) * units) (>= 1) in the predictor modes, so
shapes are fixed and a decode step can be captured in a CUDA graph; layer 0 is never pruned.

Per-token modes and the KV cache (`kv_policy`):
  full    (default, exact) K and V of ALL heads are computed for every token (dense k/v rows), only q,
          attention, out_proj and the FFN are sparse. Then the result equals the stock model with token t's
          mask applied to token t (heads at out_proj's input, neurons at fc2's input): tested.
  active  (latency variant) only the active heads' k/v are computed and written; an inactive head's cache
          entry for that token stays zero. Cheaper, not equal to any masked dense model.
  In the prompt the per-token modes use one mask per sequence (from the last prompt token) and a masked
  dense prefill; re-prediction starts with the first generated token.

Batch > 1: per-token modes gather per sequence (idx [B, k]): exact per sequence, no weight reuse across the
batch. static / shadowllm-prompt slice the UNION of the sequences' units, padded to a fixed capacity
(min(B*k, units) in prompt mode), and zero each sequence's non-selected units inside that union (a small
multiply), so every sequence still gets exactly its own mask.

GPU decode step (batch 1, CUDA graph): per layer one fused residual-add + layer norm (Triton), q/k/v GEMV,
one K/V write, one scaled_dot_product_attention with the step's additive mask, out_proj GEMV with its bias
epilogue, a second fused add + layer norm, fc1 with a bias+ReLU epilogue, fc2: about 11 kernels (21 before;
each costs 2-9 us at batch 1, as much as reading 10-40 MB of weights). Sliced FFN widths are padded to a
multiple of ALIGN rows (see _Slice). Numbers: reports/gpu/h200/README.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import kernels_triton
from .gather import GatherOps
from .predictors import DejaVuPredictor, ShadowPredictor, linear_relu

MODES = ("dense", "static", "shadowllm-prompt", "shadowllm-token", "dejavu")
TOKEN_MODES = ("shadowllm-token", "dejavu")
KV_POLICIES = ("full", "active")


# ---- weights ----------------------------------------------------------------------------------------

@dataclass
class LayerW:
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

    def tensors(self):
        return [t for t in vars(self).values() if isinstance(t, torch.Tensor)]


class OPTWeights:
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

    def layer_bytes(self, l: int = 1, head_frac: float = 1.0, neuron_frac: float = 1.0) -> int:
        lw = self.layers[l]
        es = lw.w1.element_size()
        d, Hd, Fn = self.d, self.H * self.dh, self.F
        attn = (4 * Hd * d + 3 * Hd) * head_frac
        ffn = (2 * Fn * d + Fn) * neuron_frac
        return int((attn + ffn + 5 * d) * es)

    def head_bytes(self) -> int:
        """lm_head (+ project_out, final LN) read per decoded token."""
        es = self.lm_head.element_size()
        n = self.lm_head.numel() + (self.project_out.numel() if self.project_out is not None else 0)
        n += (self.project_in.numel() if self.project_in is not None else 0)
        return n * es


# ---- helpers ----------------------------------------------------------------------------------------

def _ln(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def _topk_idx(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


def _onehot(idx: torch.Tensor, n: int, dtype) -> torch.Tensor:
    out = torch.zeros(*idx.shape[:-1], n, dtype=dtype, device=idx.device)
    return out.scatter_(-1, idx, 1.0)


def _union_capacity(m01: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """m01 [B, U] 0/1 -> (idx [cap] sorted, covering the union; keep [B, cap] or None when B == 1)."""
    u = m01.amax(0)
    order = torch.argsort(u, descending=True, stable=True)[:cap]
    idx = order.sort().values
    keep = m01[:, idx] if m01.shape[0] > 1 else None
    return idx, keep


ALIGN = 8  # sliced FFN widths are padded to a multiple of this many rows (16 bytes of fp16)


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class _Slice:
    """A layer's matrices restricted to `nh` heads and `nf` neurons (or the full LayerW, views).

    The FFN buffers have nf_pad = nf rounded up to a multiple of ALIGN rows; the extra rows of fc1 (weight
    and bias) and fc2 are zero, so their ReLU outputs are 0 and they add nothing: exact. Without it an odd
    width (e.g. 25,805 of OPT-30B's 28,672 neurons at 10 % sparsity) leaves fc2's input rows misaligned
    and cuBLAS falls back to slower kernels: on an H200 the sliced OPT-30B at 10-20 % sparsity was slower
    than dense, and 1.4-2.2x its roofline where the aligned 50 % point was 1.24x (padded: 1.11-1.55x up to
    80 %; reports/gpu/h200)."""
    ln1_w: torch.Tensor | None
    ln1_b: torch.Tensor | None
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    woT: torch.Tensor
    bo: torch.Tensor | None
    ln2_w: torch.Tensor | None
    ln2_b: torch.Tensor | None
    w1: torch.Tensor
    b1: torch.Tensor | None
    w2T: torch.Tensor
    b2: torch.Tensor | None
    nh: int
    nf: int
    head_keep: torch.Tensor | None = None    # [B, nh] per-sequence 0/1 inside the union
    neuron_keep: torch.Tensor | None = None  # [B, nf_pad] (0 in the padding)
    nf_pad: int = 0                          # rows of the FFN buffers (>= nf)

    def __post_init__(self):
        self.nf_pad = self.nf_pad or self.w1.shape[0]

    @classmethod
    def full(cls, lw: LayerW, H: int) -> "_Slice":
        return cls(lw.ln1_w, lw.ln1_b, lw.wqkv, lw.bqkv, lw.woT, lw.bo, lw.ln2_w, lw.ln2_b, lw.w1, lw.b1,
                   lw.w2T, lw.b2, H, lw.w1.shape[0])

    @classmethod
    def empty_like(cls, lw: LayerW, nh: int, nf: int, dh: int) -> "_Slice":
        nf_pad = _align(nf) if nf < lw.w1.shape[0] else nf

        def e(t, n):
            return None if t is None else torch.empty(n, *t.shape[1:], dtype=t.dtype, device=t.device)

        def ez(t):  # FFN buffer with its padding rows zeroed once (fill() writes only the first nf rows)
            if t is None:
                return None
            out = e(t, nf_pad)
            out[nf:].zero_()
            return out

        return cls(lw.ln1_w, lw.ln1_b, e(lw.wqkv, 3 * nh * dh), e(lw.bqkv, 3 * nh * dh), e(lw.woT, nh * dh), lw.bo,
                   lw.ln2_w, lw.ln2_b, ez(lw.w1), ez(lw.b1), ez(lw.w2T), lw.b2, nh, nf, nf_pad=nf_pad)

    def pad_keep(self, keep: torch.Tensor) -> torch.Tensor:
        """[B, nf] 0/1 -> [B, nf_pad] with zeros in the padding."""
        return F.pad(keep, (0, self.nf_pad - keep.shape[1]))

    def fill(self, lw: LayerW, head_idx: torch.Tensor, neuron_idx: torch.Tensor, dh: int, H: int) -> None:
        """Copy the rows of head_idx [nh] / neuron_idx [nf] into this slice's buffers (no reallocation)."""
        dev = head_idx.device
        rows = (head_idx[:, None] * dh + torch.arange(dh, device=dev)).reshape(-1)
        rows3 = torch.cat([rows, rows + H * dh, rows + 2 * H * dh])
        torch.index_select(lw.wqkv, 0, rows3, out=self.wqkv)
        if lw.bqkv is not None:
            torch.index_select(lw.bqkv, 0, rows3, out=self.bqkv)
        torch.index_select(lw.woT, 0, rows, out=self.woT)
        nf = neuron_idx.numel()
        torch.index_select(lw.w1, 0, neuron_idx, out=self.w1[:nf])
        if lw.b1 is not None:
            torch.index_select(lw.b1, 0, neuron_idx, out=self.b1[:nf])
        torch.index_select(lw.w2T, 0, neuron_idx, out=self.w2T[:nf])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.wqkv, self.woT, self.w1, self.w2T))


# ---- the decoder ------------------------------------------------------------------------------------

class SparseOPT:
    def __init__(self, weights: OPTWeights, mode: str = "dense", sparsity: float = 0.0, *, static_mask=None,
                 predictor_hidden: int = 1024, shadow: ShadowPredictor | None = None,
                 dejavu: DejaVuPredictor | None = None, kv_policy: str = "full", gather: str = "auto",
                 lookahead: bool = False, side_stream: bool = True, seed: int = 0, fused_ln: bool | None = None):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        if kv_policy not in KV_POLICIES:
            raise ValueError(f"kv_policy {kv_policy!r} is not one of {KV_POLICIES}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity {sparsity!r} is outside [0, 1)")
        if mode == "static" and static_mask is None:
            raise ValueError("mode 'static' needs static_mask (a masks.Mask)")
        w = self.w = weights
        self.mode, self.sparsity, self.kv_policy, self.lookahead = mode, sparsity, kv_policy, lookahead
        self.device, self.dtype = w.device, w.dtype
        self.H, self.dh, self.F, self.L, self.d = w.H, w.dh, w.F, w.L, w.d
        self.kh = max(1, int(round((1 - sparsity) * self.H)))
        self.kf = max(1, int(round((1 - sparsity) * self.F)))
        self.scaling = self.dh ** -0.5
        self.static_mask = static_mask
        self.shadow = self.dejavu_pred = None
        if mode in ("shadowllm-prompt", "shadowllm-token"):
            self.shadow = shadow or ShadowPredictor(self.d, self.L, self.H, self.F, predictor_hidden,
                                                    self.dtype, self.device, seed)
        if mode == "dejavu":
            self.dejavu_pred = dejavu or DejaVuPredictor(self.d, self.L, self.H, self.F, predictor_hidden,
                                                         self.dtype, self.device, seed)
        self.ops = GatherOps(gather, self.device) if mode in TOKEN_MODES else None
        cuda = self.device.type == "cuda"
        # residual add + layer norm in one Triton kernel (None: on CUDA when triton is there; every mode alike)
        self.fused_ln = (cuda and kernels_triton.available()) if fused_ln is None else bool(fused_ln)
        self.side = torch.cuda.Stream(self.device) if (cuda and side_stream) else None
        self.full = [_Slice.full(lw, self.H) for lw in w.layers]
        self.record = False
        self.trace: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.B = None
        self.graph = None
        self._ar_dh = torch.arange(self.dh, device=self.device)

    # ---- setup ----------------------------------------------------------------------------------
    def setup(self, batch: int, max_len: int) -> "SparseOPT":
        """Allocate the KV cache and slice buffers for `batch` sequences of up to `max_len` tokens."""
        if max_len > self.w.pos.shape[0] - 2:
            raise ValueError(f"max_len {max_len} exceeds the model's {self.w.pos.shape[0] - 2} positions")
        if self.B == batch and self.Tmax >= max_len:
            return self
        # a multiple of 16 where the positions allow: the attention kernels want 16-byte-aligned mask rows
        max_len = min(-(-max_len // 16) * 16, self.w.pos.shape[0] - 2)
        self.B, self.Tmax = batch, max_len
        self.graph = None
        self.slices = list(self.full)
        if self.mode == "static":
            self._prepare_static(batch)
        elif self.mode == "shadowllm-prompt":
            capH, capF = min(batch * self.kh, self.H), min(batch * self.kf, self.F)
            if capH == self.H and capF == self.F:  # nothing to slice (e.g. sparsity 0): share the full weights
                self.slices = [self.full[0]] + [_Slice(**vars(s)) for s in self.full[1:]]
            else:
                self.slices = [self.full[0]] + [_Slice.empty_like(lw, capH, capF, self.dh)
                                                for lw in self.w.layers[1:]]
            if batch > 1:  # persistent per-sequence keep buffers (a captured graph reads them in place)
                for s in self.slices[1:]:
                    s.head_keep = torch.ones(batch, s.nh, dtype=self.dtype, device=self.device)
                    s.neuron_keep = torch.zeros(batch, s.nf_pad, dtype=self.dtype, device=self.device)
        heads = [s.nh for s in self.slices]
        if self.mode in TOKEN_MODES:
            heads = [self.H] * self.L
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
            s = _Slice.empty_like(lw, hidx.numel(), nidx.numel(), self.dh)
            s.fill(lw, hidx, nidx, self.dh, self.H)
            if heads.shape[0] > 1 and not bool((mh == hu).all()):
                s.head_keep = mh[:, hidx].to(self.dtype)
            if neurons.shape[0] > 1 and not bool((mn == nu).all()):
                s.neuron_keep = s.pad_keep(mn[:, nidx].to(self.dtype))
            self.slices.append(s)

    def reset(self) -> None:
        self.t = 0
        self.trace = []

    def _add_ln(self, h: torch.Tensor, y: torch.Tensor | None, w, b):
        """h, y [M, d] -> (h + y, layer_norm(h + y)); y None: (h, layer_norm(h))."""
        if self.fused_ln and w is not None and b is not None:
            return kernels_triton.add_layer_norm(h, y, w, b, self.w.eps)
        if y is not None:
            h = h + y
        return h, _ln(h, w, b, self.w.eps)

    # ---- embeddings / head ------------------------------------------------------------------------
    def _embed(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = F.embedding(ids, self.w.embed)
        if self.w.project_in is not None:
            h = F.linear(h, self.w.project_in)
        return h + F.embedding(pos + 2, self.w.pos)

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
    def _attend(self, q, K, V, t0: int | None, T: int):
        """q [B, h, T, dh] (unscaled); K/V [B, h, Tmax, dh] already holding the new entries -> [B, h, T, dh].

        One scaled_dot_product_attention call. In a CUDA graph (t0 None, T == 1) it attends over the whole
        buffer with the step's additive mask (-inf after the current position), built once per step."""
        if t0 is None:
            return F.scaled_dot_product_attention(q, K, V, attn_mask=self._smask, scale=self.scaling)
        n = t0 + T
        K, V = K[:, :, :n], V[:, :, :n]
        if T == 1:
            return F.scaled_dot_product_attention(q, K, V, scale=self.scaling)
        if t0 == 0:
            return F.scaled_dot_product_attention(q, K, V, is_causal=True, scale=self.scaling)
        keep = self._ar_T[:n][None, :] <= (t0 + self._ar_T[:T])[:, None]
        return F.scaled_dot_product_attention(q, K, V, attn_mask=keep, scale=self.scaling)

    # ---- a layer on (sliced or full) matrices, any T --------------------------------------------
    def _layer_mm(self, l: int, s: _Slice, h: torch.Tensor, t0, pos: torch.Tensor, on_attn=None,
                  head_keep=None, neuron_keep=None, x_in=None, next_ln=None):
        """h [B, T, d] -> h [B, T, d]. x_in: this layer's ln1(h) [B*T, d] if already computed; next_ln:
        (weight, bias) of the NEXT layer norm, to fuse with the last residual add -> returns (h, x_next)."""
        B, T, d = h.shape
        dh, nh = self.dh, s.nh
        h = h.reshape(B * T, d)
        x = x_in if x_in is not None else self._add_ln(h, None, s.ln1_w, s.ln1_b)[1]
        qkv = F.linear(x, s.wqkv, s.bqkv).view(B, T, 3, nh, dh)
        self.KV[l].index_copy_(3, pos, qkv[:, :, 1:].permute(0, 3, 2, 1, 4))   # [B, nh, 2, T, dh]
        q = qkv[:, :, 0].transpose(1, 2)                                       # [B, nh, T, dh]
        a = self._attend(q, self.K[l], self.Vc[l], t0, T).transpose(1, 2)     # [B, T, nh, dh]
        hk = head_keep if head_keep is not None else s.head_keep
        if hk is not None:
            a = a * hk[:, None, :, None]
        a = a.reshape(B * T, nh * dh)
        if on_attn is not None:
            on_attn(a.view(B, T, nh * dh))
        h, x = self._add_ln(h, torch.addmm(s.bo, a, s.woT) if s.bo is not None else a @ s.woT, s.ln2_w, s.ln2_b)
        z = linear_relu(x, s.w1, s.b1)
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
        dh, H, kh = self.dh, self.H, hidx.shape[-1]
        Hd = H * dh
        x = self._add_ln(h[:, 0], None, lw.ln1_w, lw.ln1_b)[1]                # [B, d]
        if rows is None:
            rows = (hidx[..., None] * dh + self._ar_dh).reshape(B, kh * dh)   # [B, kh*dh]
        KV = self.KV[l]
        if self.kv_policy == "full":
            q = ops.mv(lw.wqkv, x, rows, bias=lw.bqkv)                         # bias[rows]: the q rows
            kv = F.linear(x, lw.wqkv[Hd:], None if lw.bqkv is None else lw.bqkv[Hd:])
            KV.index_copy_(3, pos, kv.view(B, 2, H, 1, dh).transpose(1, 2))    # [B, H, 2, 1, dh]
        else:
            rows3 = torch.cat([rows, rows + Hd, rows + 2 * Hd], dim=1)
            qkv = ops.mv(lw.wqkv, x, rows3, bias=lw.bqkv).view(B, 3, kh, dh)
            q = qkv[:, 0].reshape(B, kh * dh)
            pidx = pos.expand(B, kh)
            self.K[l].index_put_((self._bidx.expand(B, kh), hidx, pidx), qkv[:, 1])
            self.Vc[l].index_put_((self._bidx.expand(B, kh), hidx, pidx), qkv[:, 2])
        q = q.view(B, kh, 1, dh)
        if t0 is not None:
            KV = KV[:, :, :, : t0 + 1]
        KVs = KV[self._bidx, hidx]                                              # [B, kh, 2, n, dh]
        if t0 is None:
            a = F.scaled_dot_product_attention(q, KVs[:, :, 0], KVs[:, :, 1], attn_mask=self._smask,
                                               scale=self.scaling)
        else:
            a = F.scaled_dot_product_attention(q, KVs[:, :, 0], KVs[:, :, 1], scale=self.scaling)
        h1 = ops.tmv(lw.woT, a.reshape(B, kh * dh), rows, bias=lw.bo, residual=h[:, 0])
        x = self._add_ln(h1, None, lw.ln2_w, lw.ln2_b)[1]
        z = ops.mv(lw.w1, x, nidx, bias=lw.b1, relu=True)
        return ops.tmv(lw.w2T, z, nidx, bias=lw.b2, residual=h1)[:, None]

    # ---- masks from scores ------------------------------------------------------------------------
    def _split_idx(self, scores: torch.Tensor):
        """scores [..., H+F] -> (head idx [..., kh], neuron idx [..., kf])."""
        return _topk_idx(scores[..., : self.H], self.kh), _topk_idx(scores[..., self.H:], self.kf)

    def _record(self, n: int, hidx_layers, nidx_layers) -> None:
        """hidx_layers / nidx_layers: per layer [B, k] index tensors (None = all units)."""
        if not self.record:
            return
        B = self.B
        hm = torch.ones(B, self.L, self.H)
        nm = torch.ones(B, self.L, self.F)
        for l, (hi, ni) in enumerate(zip(hidx_layers, nidx_layers)):
            if hi is not None:
                hm[:, l] = _onehot(hi.cpu(), self.H, torch.float32)
            if ni is not None:
                nm[:, l] = _onehot(ni.cpu(), self.F, torch.float32)
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
            got = {}
            h = self._layer_mm(0, self.full[0], h, 0, pos, on_attn=lambda a: got.setdefault("a", a[:, -1]))
            scores = self.shadow(got["a"])[:, 1:]                       # [B, L-1, H+F]
            hidx, nidx = self._split_idx(scores)                        # [B, L-1, k]
            self._record(T, [None] + list(hidx.unbind(1)), [None] + list(nidx.unbind(1)))
            if mode == "shadowllm-prompt":
                self._fill_prompt_slices(hidx, nidx)
                for l in range(1, self.L):
                    h = self._layer_mm(l, self.slices[l], h, 0, pos)
            else:
                hk = _onehot(hidx, self.H, self.dtype)
                nk = _onehot(nidx, self.F, self.dtype)
                for l in range(1, self.L):
                    h = self._layer_mm(l, self.full[l], h, 0, pos, head_keep=hk[:, l - 1], neuron_keep=nk[:, l - 1])
        else:  # dejavu: each layer's predictor on its own input at the last prompt token
            h = self._layer_mm(0, self.full[0], h, 0, pos)
            his, nis = [None], [None]
            for l in range(1, self.L):
                hi, ni = self._split_idx(self.dejavu_pred(l, h[:, -1]))
                his.append(hi), nis.append(ni)
                h = self._layer_mm(l, self.full[l], h, 0, pos, head_keep=_onehot(hi, self.H, self.dtype),
                                   neuron_keep=_onehot(ni, self.F, self.dtype))
            self._record(T, his, nis)
        self.t = T
        return self._head(h if all_logits else h[:, -1:])

    def _fill_prompt_slices(self, hidx: torch.Tensor, nidx: torch.Tensor) -> None:
        """Copy each layer's kept rows into its persistent slice buffers (union over the batch)."""
        hm = _onehot(hidx, self.H, self.dtype)   # [B, L-1, H]
        nm = _onehot(nidx, self.F, self.dtype)
        for l in range(1, self.L):
            s = self.slices[l]
            full = s.nh == self.H and s.nf == self.F
            if full:  # the full matrices are used as they are; only per-sequence keeps change
                if self.B > 1:
                    s.head_keep.copy_(hm[:, l - 1])
                    s.neuron_keep.copy_(nm[:, l - 1])
                continue
            hi, hk = _union_capacity(hm[:, l - 1], s.nh)
            ni, nk = _union_capacity(nm[:, l - 1], s.nf)
            if self.B > 1:
                s.head_keep.copy_(hk)
                s.neuron_keep[:, : s.nf].copy_(nk)
            s.fill(self.w.layers[l], hi, ni, self.dh, self.H)

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
        elif mode == "shadowllm-token":
            box = {}

            def predict(a):
                def run():
                    sc = self.shadow(a[:, 0])[:, 1:]
                    return self._split_idx(sc)
                box["idx"], box["join"] = self._run_side(run)

            h = self._layer_mm(0, self.full[0], h, t0, pos, on_attn=predict)
            box["join"]()
            hidx, nidx = box["idx"]
            if t0 is not None:
                self._record(1, [None] + list(hidx.unbind(1)), [None] + list(nidx.unbind(1)))
            # every layer's masks are known now: their q rows in one op (DejaVu learns them layer by layer)
            rows = (hidx[..., None] * self.dh + self._ar_dh).flatten(2)      # [B, L-1, kh*dh]
            for l in range(1, self.L):
                h = self._layer_gather(l, h, hidx[:, l - 1], nidx[:, l - 1], t0, pos, rows=rows[:, l - 1])
        else:  # dejavu
            his, nis = [None], [None]
            if self.lookahead:
                pending, join = self._run_side(lambda: self._split_idx(self.dejavu_pred(1, h[:, 0])))
                h = self._layer_mm(0, self.full[0], h, t0, pos)
                for l in range(1, self.L):
                    join()
                    hi, ni = pending
                    if l + 1 < self.L:
                        x_in = h[:, 0]
                        pending, join = self._run_side(lambda l=l, x_in=x_in: self._split_idx(self.dejavu_pred(l + 1, x_in)))
                    his.append(hi), nis.append(ni)
                    h = self._layer_gather(l, h, hi, ni, t0, pos)
            else:
                h = self._layer_mm(0, self.full[0], h, t0, pos)
                for l in range(1, self.L):
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
        return torch.stack(toks, 1), outs

    # ---- bytes read per decoded token (for the roofline) ---------------------------------------------
    def weight_bytes_per_token(self) -> int:
        w = self.w
        n = w.head_bytes() + w.layer_bytes(0)
        for l in range(1, self.L):
            if self.mode == "dense":
                n += w.layer_bytes(l)
            elif self.mode in ("static", "shadowllm-prompt"):
                s = self.slices[l] if self.B is not None else None
                nh, nf = (s.nh, s.nf_pad) if s is not None else (self.kh, self.kf)
                n += w.layer_bytes(l, nh / self.H, nf / self.F)
            else:
                es = w.layers[l].w1.element_size()
                hf = self.kh / self.H
                if self.kv_policy == "full":  # k, v rows are dense
                    extra = 2 * self.H * self.dh * self.d * es * (1 - hf)
                else:
                    extra = 0
                n += (self.B or 1) * w.layer_bytes(l, hf, self.kf / self.F) + int(extra)
        if self.shadow is not None and self.mode == "shadowllm-token":  # prompt mode: once per sequence
            n += self.shadow.n_params() * w.lm_head.element_size()
        if self.dejavu_pred is not None:
            n += self.dejavu_pred.n_params() * w.lm_head.element_size()
        return int(n)


def make_static_mask(weights: OPTWeights, sparsity: float, seed: int = 0, batch: int = 1):
    """A random local-top-k mask (layer 0 kept), the 'static' oracle for latency runs."""
    from ..masks import Mask, topk_mask

    g = torch.Generator().manual_seed(seed)
    hs = torch.rand(batch, weights.L, weights.H, generator=g)
    ns = torch.rand(batch, weights.L, weights.F, generator=g)
    if sparsity == 0:
        return Mask(torch.ones_like(hs), torch.ones_like(ns))
    return Mask(topk_mask(hs, sparsity, "local"), topk_mask(ns, sparsity, "local"))


def roofline_ms(nbytes: int, bandwidth_gbs: float) -> float:
    return nbytes / (bandwidth_gbs * 1e9) * 1e3 if bandwidth_gbs and not math.isnan(bandwidth_gbs) else float("nan")
