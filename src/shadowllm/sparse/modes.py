"""The sparse decoder's modes as data, each with the strategy that runs it: adding a mode touches this file only.

p = placement (default 0): layers 0..p always run dense; top-k is per layer with
k = max(1, round((1 - sparsity) * units)), so shapes are fixed and a decode step can be a CUDA graph.
Batch > 1: gathered (per-token) modes gather per sequence (idx [B, k]); sliced modes slice the union of the
sequences' units (capacity min(B*k, units) in shadowllm-prompt) and zero each sequence's other units.
Grouped-query attention: the unit is the query head; a KV head's rows are read (and its cache kept) while any
of its query heads is kept (shadowllm-prompt: a fixed capacity of min(batch * k_heads, KV heads)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .slices import Slice, onehot, static_slices

# what a mode reads per decoded token to choose its units
READS = ("nothing", "static mask", "predictor once per prompt", "predictor per token",
         "per-layer predictors per token")
PER_TOKEN_READS = ("predictor per token", "per-layer predictors per token")
# its KV cache: every KV head, the KV heads of its slices' kept heads, or every KV head written per kv_policy
KV_CACHES = ("all", "kept", "policy")
KV_POLICIES = ("full", "active")
DESIGNS = ("none", "shadowllm", "dejavu")   # the predictor design it runs (a trained file's design)


@dataclass(frozen=True)
class ModeSpec:
    """One decoder mode: what it reads, its KV cache, its predictor, and `run`, its strategy (setup / prefill /
    step on a SparseDecoder)."""
    name: str
    reads: str       # READS
    kv: str          # KV_CACHES
    predictor: str   # DESIGNS
    run: object
    doc: str = ""

    def __post_init__(self):
        for field, value, allowed in (("reads", self.reads, READS), ("kv", self.kv, KV_CACHES),
                                      ("predictor", self.predictor, DESIGNS)):
            if value not in allowed:
                raise ValueError(f"mode {self.name!r}: {field} {value!r} is not one of {allowed}")

    @property
    def per_token(self) -> bool:
        """Units change every token: the active rows are read by fused gathers (GatherOps)."""
        return self.reads in PER_TOKEN_READS

    @property
    def placed(self) -> bool:
        """Runs a predictor, so `placement` applies: layers 0..placement run dense."""
        return self.predictor != "none"


# ---- strategies: setup(dec, batch) slices; prefill(dec, h, pos) -> h; step(dec, h, pos, t0) -> (h, final norm)

class Sliced:
    """Every layer on dec.slices (the full weights unless setup slices them)."""

    def setup(self, dec, batch: int) -> None:
        pass

    def prefill(self, dec, h, pos):
        for l in range(dec.L):
            h = dec.fwd.layer_mm(l, dec.slices[l], h, 0, pos)
        return h

    def step(self, dec, h, pos, t0):
        # each layer's last residual add is fused with the next layer norm (one kernel fewer per layer)
        w, x = dec.w, None
        for l in range(dec.L):
            if l + 1 < dec.L:
                nl = (dec.slices[l + 1].ln1_w, dec.slices[l + 1].ln1_b)
            else:
                nl = (w.lnf_w, w.lnf_b) if w.has_final_ln else None
            if nl is None:
                h, x = dec.fwd.layer_mm(l, dec.slices[l], h, t0, pos, x_in=x), None
            else:
                h, x = dec.fwd.layer_mm(l, dec.slices[l], h, t0, pos, x_in=x, next_ln=nl)
        return h, x


class Static(Sliced):
    """A fixed Mask: the union of its sequences' units sliced once, before generation."""

    def setup(self, dec, batch: int) -> None:
        dec.slices = static_slices(dec.w, dec.static_mask, dec.full, batch)

    def prefill(self, dec, h, pos):
        h = super().prefill(dec, h, pos)
        if dec.record:
            B, T = h.shape[:2]
            m = dec.static_mask
            dec.trace.append((T, m.heads.expand(B, -1, -1).float().cpu(), m.neurons.expand(B, -1, -1).float().cpu()))
        return h


def _dense_until(dec, h, pos, t0, n: int):
    """Layers 0..n-1 on the full weights."""
    for l in range(n):
        h = dec.fwd.layer_mm(l, dec.full[l], h, t0, pos)
    return h


def _shadow_prompt(dec, h, pos):
    """Layers 0..p; the ShadowLLM predictor on layer p's attention output at the last prompt token ->
    (h, head idx [B, L-1-p, kh], neuron idx [B, L-1-p, kf]) of layers p+1.. (recorded)."""
    p, got = dec.placement, {}
    h = _dense_until(dec, h, pos, 0, p)
    h = dec.fwd.layer_mm(p, dec.full[p], h, 0, pos, on_attn=lambda a: got.setdefault("a", a[:, -1]))
    hidx, nidx = dec.split_idx(dec.shadow(got["a"])[:, p + 1:])
    dec.trace_masks(h.shape[1], [None] * (p + 1) + list(hidx.unbind(1)), [None] * (p + 1) + list(nidx.unbind(1)))
    return h, hidx, nidx


class ShadowPrompt(Sliced):
    """One mask per sequence from the prompt, copied into persistent capacity slices (a graph reads them)."""

    def setup(self, dec, batch: int) -> None:
        capH, capF = min(batch * dec.kh, dec.H), min(batch * dec.kf, dec.F)
        capKV = min(capH, dec.Hkv)   # the KV heads of capH query heads, whichever they are
        p1, w = dec.placement + 1, dec.w
        if capH == dec.H and capF == dec.F:  # nothing to slice (e.g. sparsity 0): share the full weights
            dec.slices = dec.full[:p1] + [Slice(**vars(s)) for s in dec.full[p1:]]
        else:
            dec.slices = dec.full[:p1] + [Slice.empty_like(lw, capH, capF, w.dh, capKV, w.group > 1)
                                          for lw in w.layers[p1:]]
        if batch > 1:  # persistent per-sequence keep buffers (a captured graph reads them in place)
            for s in dec.slices[p1:]:
                s.head_keep = torch.ones(batch, s.nh, dtype=w.dtype, device=w.device)
                s.neuron_keep = torch.zeros(batch, s.nf_pad, dtype=w.dtype, device=w.device)

    def prefill(self, dec, h, pos):
        h, hidx, nidx = _shadow_prompt(dec, h, pos)
        p1, w = dec.placement + 1, dec.w
        hm, nm = onehot(hidx, dec.H, w.dtype), onehot(nidx, dec.F, w.dtype)   # [B, L-p1, H], [B, L-p1, F]
        for l in range(p1, dec.L):
            dec.slices[l].fill_union(w.layers[l], hm[:, l - p1], nm[:, l - p1], w.dh, w.H, w.Hkv)
            h = dec.fwd.layer_mm(l, dec.slices[l], h, 0, pos)
        return h


class ShadowToken:
    """The ShadowLLM predictor at every token (on a side stream); every later layer gathers its active rows."""

    def setup(self, dec, batch: int) -> None:
        pass

    def prefill(self, dec, h, pos):
        h, hidx, nidx = _shadow_prompt(dec, h, pos)
        p = dec.placement
        hk, nk = onehot(hidx, dec.H, dec.w.dtype), onehot(nidx, dec.F, dec.w.dtype)
        for l in range(p + 1, dec.L):
            h = dec.fwd.layer_mm(l, dec.full[l], h, 0, pos, head_keep=hk[:, l - p - 1], neuron_keep=nk[:, l - p - 1])
        return h

    def step(self, dec, h, pos, t0):
        p, box = dec.placement, {}
        h = _dense_until(dec, h, pos, t0, p)

        def predict(a):
            box["idx"], box["join"] = dec.run_side(lambda: dec.split_idx(dec.shadow(a[:, 0])[:, p + 1:]))

        h = dec.fwd.layer_mm(p, dec.full[p], h, t0, pos, on_attn=predict)
        box["join"]()
        hidx, nidx = box["idx"]                                              # [B, L-1-p, k]
        if t0 is not None:
            dec.trace_masks(1, [None] * (p + 1) + list(hidx.unbind(1)), [None] * (p + 1) + list(nidx.unbind(1)))
        # every layer's masks are known now: their q rows in one op (DejaVu learns them layer by layer)
        rows = (hidx[..., None] * dec.w.dh + dec.fwd.ar_dh).flatten(2)      # [B, L-1-p, kh*dh]
        for l in range(p + 1, dec.L):
            j = l - p - 1
            h = dec.fwd.layer_gather(l, h, hidx[:, j], nidx[:, j], t0, pos, rows=rows[:, j])
        return h, None


class DejaVu:
    """One predictor per layer l > p on that layer's input (lookahead: on layer l-1's input, on a side stream)."""

    def setup(self, dec, batch: int) -> None:
        pass

    def prefill(self, dec, h, pos):
        p, dt = dec.placement, dec.w.dtype
        h = _dense_until(dec, h, pos, 0, p + 1)
        his, nis = [None] * (p + 1), [None] * (p + 1)
        for l in range(p + 1, dec.L):  # each layer's predictor on its own input at the last prompt token
            hi, ni = dec.split_idx(dec.dejavu_pred(l, h[:, -1]))
            his.append(hi), nis.append(ni)
            h = dec.fwd.layer_mm(l, dec.full[l], h, 0, pos, head_keep=onehot(hi, dec.H, dt),
                                 neuron_keep=onehot(ni, dec.F, dt))
        dec.trace_masks(h.shape[1], his, nis)
        return h

    def step(self, dec, h, pos, t0):
        p, pred = dec.placement, dec.dejavu_pred
        h = _dense_until(dec, h, pos, t0, p)
        his, nis = [None] * (p + 1), [None] * (p + 1)
        if dec.lookahead and p + 1 < dec.L:
            pending, join = dec.run_side(lambda: dec.split_idx(pred(p + 1, h[:, 0])))
            h = dec.fwd.layer_mm(p, dec.full[p], h, t0, pos)
            for l in range(p + 1, dec.L):
                join()
                hi, ni = pending
                if l + 1 < dec.L:
                    x_in = h[:, 0]
                    pending, join = dec.run_side(lambda l=l, x_in=x_in: dec.split_idx(pred(l + 1, x_in)))
                his.append(hi), nis.append(ni)
                h = dec.fwd.layer_gather(l, h, hi, ni, t0, pos)
        else:
            h = dec.fwd.layer_mm(p, dec.full[p], h, t0, pos)
            for l in range(p + 1, dec.L):
                hi, ni = dec.split_idx(pred(l, h[:, 0]))
                his.append(hi), nis.append(ni)
                h = dec.fwd.layer_gather(l, h, hi, ni, t0, pos)
        if t0 is not None:
            dec.trace_masks(1, his, nis)
        return h, None


MODE_SPECS = {s.name: s for s in (
    ModeSpec("dense", "nothing", "all", "none", Sliced(), "all units"),
    ModeSpec("static", "static mask", "kept", "none", Static(),
             "a fixed Mask (oracle); weights sliced once before generation (placement not used)"),
    ModeSpec("shadowllm-prompt", "predictor once per prompt", "kept", "shadowllm", ShadowPrompt(),
             "one mask per sequence: the ShadowLLM predictor reads layer p's attention output (the input of its "
             "out_proj) at the last prompt token; each layer l > p keeps its top-k units in persistent slice "
             "buffers; the KV cache holds only the kept heads"),
    ModeSpec("shadowllm-token", "predictor per token", "policy", "shadowllm", ShadowToken(),
             "the same predictor at every token; active rows read by fused gather kernels; the prompt uses one "
             "mask per sequence (from its last token)"),
    ModeSpec("dejavu", "per-layer predictors per token", "policy", "dejavu", DejaVu(),
             "one predictor per layer l > p on that layer's input (lookahead: on layer l-1's input, on a side "
             "CUDA stream); fused gathers"),
)}
MODES = tuple(MODE_SPECS)
TOKEN_MODES = tuple(n for n, s in MODE_SPECS.items() if s.per_token)


def mode_spec(name: str) -> ModeSpec:
    if name not in MODE_SPECS:
        raise ValueError(f"mode {name!r} is not one of {MODES}")
    return MODE_SPECS[name]
