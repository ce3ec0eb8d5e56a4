"""Weight bytes one decode step reads, per mode, and the roofline time to read them at a measured bandwidth.

Bytes per decoded token count the weights only (the KV cache is not counted): the dense layers before the
placement, each later layer's slice or gathered rows, and the predictors run per token.
"""
from __future__ import annotations

import math

from .decoder import SparseDecoder
from .weights import DecoderWeights


def layer_bytes(w: DecoderWeights, l: int = 1, head_frac: float = 1.0, neuron_frac: float = 1.0,
                kv_frac: float | None = None) -> int:
    """Layer l's attention and FFN matrices + biases at these kept fractions (query heads, neurons, KV heads;
    kv_frac None: head_frac), plus its norms."""
    lw = w.layers[l]
    es = lw.w1.element_size()
    d, Hd, KVd, Fn = w.d, w.H * w.dh, w.Hkv * w.dh, w.F
    kv_frac = head_frac if kv_frac is None else kv_frac
    qo = (2 * Hd * d + (Hd if lw.bqkv is not None else 0)) * head_frac
    kv = 2 * KVd * (d + (1 if lw.bqkv is not None else 0)) * kv_frac
    ffn = ((3 if lw.w3 is not None else 2) * Fn * d + (Fn if lw.b1 is not None else 0)) * neuron_frac
    small = sum(t.numel() for t in (lw.ln1_w, lw.ln1_b, lw.ln2_w, lw.ln2_b, lw.bo, lw.b2) if t is not None)
    return int((qo + kv + ffn + small) * es)


def head_bytes(w: DecoderWeights) -> int:
    """lm_head (+ project_in / project_out) read per decoded token."""
    es = w.lm_head.element_size()
    n = w.lm_head.numel() + (w.project_out.numel() if w.project_out is not None else 0)
    n += (w.project_in.numel() if w.project_in is not None else 0)
    return n * es


def weight_bytes_per_token(dec: SparseDecoder) -> int:
    """Weights one decode step of `dec` reads: its dense layers, its slices or gathered rows, predictors."""
    w, spec = dec.w, dec.spec
    first = dec.placement + 1 if spec.placed else 1  # layers before `first` run dense (static: layer 0 kept)
    n = head_bytes(w) + sum(layer_bytes(w, l) for l in range(first))
    for l in range(first, dec.L):
        if spec.per_token:  # per sequence: its active rows; K/V rows dense (full) or one KV head per active head
            hf = dec.kh / dec.H
            kvf = 1.0 / (dec.B or 1) if dec.kv_policy == "full" else dec.kh / dec.Hkv
            n += (dec.B or 1) * layer_bytes(w, l, hf, dec.kf / dec.F, kvf)
        elif spec.kv == "kept":  # sliced: the slice's rows (before setup: k units, their KV heads)
            s = dec.slices[l] if dec.B is not None else None
            nh, nf = (s.nh, s.nf_pad) if s is not None else (dec.kh, dec.kf)
            nkv = s.nkv if s is not None else min(dec.kh, dec.Hkv)
            n += layer_bytes(w, l, nh / dec.H, nf / dec.F, nkv / dec.Hkv)
        else:
            n += layer_bytes(w, l)
    es = w.lm_head.element_size()
    if spec.per_token and dec.shadow is not None:  # prompt mode: once per sequence, not per token
        n += dec.shadow.n_params() * es
    if spec.per_token and dec.dejavu_pred is not None:
        n += dec.dejavu_pred.n_params(first=dec.placement + 1) * es
    return int(n)


def roofline_ms(nbytes: int, bandwidth_gbs: float) -> float:
    """ms to read nbytes at the measured bandwidth (nan when there is none)."""
    return nbytes / (bandwidth_gbs * 1e9) * 1e3 if bandwidth_gbs and not math.isnan(bandwidth_gbs) else float("nan")
