"""A layer's matrices restricted to a set of heads and neurons, and the index helpers that pick them."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .weights import LayerW

ALIGN = 8  # sliced FFN widths are padded to a multiple of this many rows (16 bytes of fp16)


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def topk_idx(scores: torch.Tensor, k: int) -> torch.Tensor:
    """scores [..., U] -> the k best unit indices [..., k], sorted (sorted rows read memory in order)."""
    return scores.topk(k, dim=-1).indices.sort(dim=-1).values


def onehot(idx: torch.Tensor, n: int, dtype) -> torch.Tensor:
    """idx [..., k] -> 0/1 [..., n]."""
    out = torch.zeros(*idx.shape[:-1], n, dtype=dtype, device=idx.device)
    return out.scatter_(-1, idx, 1.0)


def union_capacity(m01: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """m01 [B, U] 0/1 -> (idx [cap] sorted, covering the union; keep [B, cap] or None when B == 1)."""
    u = m01.amax(0)
    order = torch.argsort(u, descending=True, stable=True)[:cap]
    idx = order.sort().values
    keep = m01[:, idx] if m01.shape[0] > 1 else None
    return idx, keep


def kv_heads_of(head_idx: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Query head indices [nh] (sorted) -> (the KV heads they read [nkv] sorted, each query head's position in
    that list [nh]; None when group == 1, where KV head i is query head i). A KV head is kept as long as one
    of its `group` query heads is."""
    if group == 1:
        return head_idx, None
    kv = head_idx // group
    uniq = torch.unique(kv)
    return uniq, torch.searchsorted(uniq, kv)


@dataclass
class Slice:
    """A layer restricted to `nh` query heads, `nkv` KV heads and `nf` neurons (or the full LayerW, as views).

    The FFN buffers have nf_pad = nf rounded up to a multiple of ALIGN rows so cuBLAS keeps its aligned
    kernels; the extra rows of fc1 / gate / up (weight and bias) and fc2 / down are zero, their activations 0:
    exact. kv_map [nh]: each kept query head's index among the kept KV heads (None: the identity when nkv == nh,
    else the standard GQA grouping of the full layer)."""
    ln1_w: torch.Tensor | None
    ln1_b: torch.Tensor | None
    wqkv: torch.Tensor                       # [(nh + 2*nkv)*dh, d]
    bqkv: torch.Tensor | None
    woT: torch.Tensor                        # [nh*dh, d]
    bo: torch.Tensor | None
    ln2_w: torch.Tensor | None
    ln2_b: torch.Tensor | None
    w1: torch.Tensor                         # [nf_pad, d]
    b1: torch.Tensor | None
    w2T: torch.Tensor                        # [nf_pad, d]
    b2: torch.Tensor | None
    nh: int
    nf: int
    head_keep: torch.Tensor | None = None    # [B, nh] per-sequence 0/1 inside the union
    neuron_keep: torch.Tensor | None = None  # [B, nf_pad] (0 in the padding)
    nf_pad: int = 0                          # rows of the FFN buffers (>= nf)
    w3: torch.Tensor | None = None           # [nf_pad, d] SwiGLU up projection
    nkv: int = 0                             # KV heads (0: nh)
    kv_map: torch.Tensor | None = None       # [nh] int64

    def __post_init__(self):
        self.nf_pad = self.nf_pad or self.w1.shape[0]
        self.nkv = self.nkv or self.nh

    @classmethod
    def full(cls, lw: LayerW, H: int, Hkv: int | None = None) -> "Slice":
        return cls(lw.ln1_w, lw.ln1_b, lw.wqkv, lw.bqkv, lw.woT, lw.bo, lw.ln2_w, lw.ln2_b, lw.w1, lw.b1,
                   lw.w2T, lw.b2, H, lw.w1.shape[0], w3=lw.w3, nkv=Hkv or H)

    @classmethod
    def empty_like(cls, lw: LayerW, nh: int, nf: int, dh: int, nkv: int | None = None,
                   grouped: bool = False) -> "Slice":
        """Buffers for nh query heads / nkv KV heads / nf neurons, filled later by fill() (allocated once, before
        any graph). nkv None: nh; grouped: grouped-query attention (a kv_map buffer)."""
        nf_pad = align(nf) if nf < lw.w1.shape[0] else nf
        nkv = nkv or nh

        def e(t, n):
            return None if t is None else torch.empty(n, *t.shape[1:], dtype=t.dtype, device=t.device)

        def ez(t):  # FFN buffer with its padding rows zeroed once (fill() writes only the first nf rows)
            if t is None:
                return None
            out = e(t, nf_pad)
            out[nf:].zero_()
            return out

        nq = (nh + 2 * nkv) * dh
        s = cls(lw.ln1_w, lw.ln1_b, e(lw.wqkv, nq), e(lw.bqkv, nq), e(lw.woT, nh * dh), lw.bo,
                lw.ln2_w, lw.ln2_b, ez(lw.w1), ez(lw.b1), ez(lw.w2T), lw.b2, nh, nf, nf_pad=nf_pad, w3=ez(lw.w3),
                nkv=nkv)
        if grouped:
            s.kv_map = torch.zeros(nh, dtype=torch.long, device=lw.wqkv.device)
        return s

    def pad_keep(self, keep: torch.Tensor) -> torch.Tensor:
        """[B, nf] 0/1 -> [B, nf_pad] with zeros in the padding."""
        return F.pad(keep, (0, self.nf_pad - keep.shape[1]))

    def fill(self, lw: LayerW, head_idx: torch.Tensor, neuron_idx: torch.Tensor, dh: int, H: int,
             kv_idx: torch.Tensor | None = None, kv_map: torch.Tensor | None = None, Hkv: int | None = None) -> None:
        """Copy the rows of head_idx [nh], kv_idx [nkv] (default: head_idx) and neuron_idx [nf] into this slice's
        buffers (no reallocation); kv_map [nh] is copied into the slice's own."""
        dev = head_idx.device
        ar = torch.arange(dh, device=dev)
        Hkv = Hkv or H
        rows = (head_idx[:, None] * dh + ar).reshape(-1)
        kvr = rows if kv_idx is None else (kv_idx[:, None] * dh + ar).reshape(-1)
        rows3 = torch.cat([rows, kvr + H * dh, kvr + (H + Hkv) * dh])
        torch.index_select(lw.wqkv, 0, rows3, out=self.wqkv)
        if lw.bqkv is not None:
            torch.index_select(lw.bqkv, 0, rows3, out=self.bqkv)
        torch.index_select(lw.woT, 0, rows, out=self.woT)
        if kv_map is not None:
            self.kv_map.copy_(kv_map)
        nf = neuron_idx.numel()
        torch.index_select(lw.w1, 0, neuron_idx, out=self.w1[:nf])
        if lw.b1 is not None:
            torch.index_select(lw.b1, 0, neuron_idx, out=self.b1[:nf])
        if lw.w3 is not None:
            torch.index_select(lw.w3, 0, neuron_idx, out=self.w3[:nf])
        torch.index_select(lw.w2T, 0, neuron_idx, out=self.w2T[:nf])

    def fill_union(self, lw: LayerW, hm: torch.Tensor, nm: torch.Tensor, dh: int, H: int, Hkv: int) -> None:
        """Fill this capacity slice with the union of the batch's kept heads hm [B, H] and neurons nm [B, F]
        (0/1), and its per-sequence keeps (B > 1); a slice as wide as the layer only takes the keeps."""
        B, group = hm.shape[0], H // Hkv
        if self.nh == H and self.nf == nm.shape[1]:  # the full matrices are used as they are
            if B > 1:
                self.head_keep.copy_(hm)
                self.neuron_keep.copy_(nm)
            return
        hi, hk = union_capacity(hm, self.nh)
        ni, nk = union_capacity(nm, self.nf)
        kvi = kv_map = None
        if group > 1:  # the KV heads of the kept query heads, padded to the slice's capacity
            need = torch.zeros(1, Hkv, dtype=hm.dtype, device=hm.device)
            need[0, hi // group] = 1
            kvi = union_capacity(need, self.nkv)[0]
            kv_map = torch.searchsorted(kvi, hi // group)
        if B > 1:
            self.head_keep.copy_(hk)
            self.neuron_keep[:, : self.nf].copy_(nk)
        self.fill(lw, hi, ni, dh, H, kv_idx=kvi, kv_map=kv_map, Hkv=Hkv)


def static_slices(w, mask, full: list[Slice], batch: int) -> list[Slice]:
    """Each layer of DecoderWeights `w` restricted to the union over the batch of a static Mask's units (the full
    slice where it keeps everything); per-sequence keeps where the sequences' masks differ."""
    heads, neurons = mask.heads.to(w.device), mask.neurons.to(w.device)   # [1 | B, L, H], [1 | B, L, F]
    if heads.shape[1:] != (w.L, w.H) or neurons.shape[1:] != (w.L, w.F):
        raise ValueError(f"static mask shapes {tuple(heads.shape)} / {tuple(neurons.shape)} do not fit "
                         f"L={w.L}, H={w.H}, F={w.F}")
    if heads.shape[0] not in (1, batch):
        raise ValueError(f"static mask batch {heads.shape[0]} does not match batch {batch}")
    slices = []
    for l, lw in enumerate(w.layers):
        mh, mn = heads[:, l] > 0, neurons[:, l] > 0
        if bool(mh.all()) and bool(mn.all()):
            slices.append(full[l])
            continue
        hu, nu = mh.any(0), mn.any(0)
        if not bool(hu.any()) or not bool(nu.any()):
            raise ValueError(f"static mask prunes every head or every neuron of layer {l}")
        hidx, nidx = hu.nonzero().flatten(), nu.nonzero().flatten()
        kv, kv_map = kv_heads_of(hidx, w.group)
        s = Slice.empty_like(lw, hidx.numel(), nidx.numel(), w.dh, kv.numel(), w.group > 1)
        s.fill(lw, hidx, nidx, w.dh, w.H, kv_idx=kv, kv_map=kv_map, Hkv=w.Hkv)
        if heads.shape[0] > 1 and not bool((mh == hu).all()):
            s.head_keep = mh[:, hidx].to(w.dtype)
        if neurons.shape[0] > 1 and not bool((mn == nu).all()):
            s.neuron_keep = s.pad_keep(mn[:, nidx].to(w.dtype))
        slices.append(s)
    return slices
