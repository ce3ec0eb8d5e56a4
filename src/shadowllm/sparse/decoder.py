"""SparseDecoder: greedy OPT / Llama decoding that runs only the active attention heads and FFN neurons.

The layer math is forward.py's; what a mode reads and how it runs its layers is its ModeSpec's (modes.py).
This class holds one decoding's state (slices, predictors, KV cache, position) and the generation loop:
prefill, eager decode steps, and one decode step captured as a CUDA graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import kernels_triton
from .forward import Forward
from .gather import GatherOps
from .modes import KV_POLICIES, mode_spec
from .predictors import DejaVuPredictor, ShadowPredictor, random_predictor
from .slices import Slice, onehot, topk_idx
from .weights import DecoderWeights


@dataclass
class _Graph:
    """A captured greedy decode step and its static buffers: ids, pos [1] in; logits, next ids out."""
    graph: torch.cuda.CUDAGraph
    ids: torch.Tensor
    pos: torch.Tensor
    logits: torch.Tensor
    next: torch.Tensor


class SparseDecoder:
    """Greedy decoding that reads only the active heads' and neurons' rows (modes: see modes.py)."""

    def __init__(self, weights: DecoderWeights, mode: str = "dense", sparsity: float = 0.0, *, static_mask=None,
                 predictor_hidden: int = 1024, shadow: ShadowPredictor | None = None,
                 dejavu: DejaVuPredictor | None = None, kv_policy: str = "full", gather: str = "auto",
                 lookahead: bool = False, side_stream: bool = True, seed: int = 0, fused_ln: bool | None = None,
                 placement: int = 0):
        spec = self.spec = mode_spec(mode)
        if kv_policy not in KV_POLICIES:
            raise ValueError(f"kv_policy {kv_policy!r} is not one of {KV_POLICIES}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity {sparsity!r} is outside [0, 1)")
        if spec.reads == "static mask" and static_mask is None:
            raise ValueError(f"mode {mode!r} needs static_mask (a masks.Mask)")
        if not 0 <= placement < weights.L:
            raise ValueError(f"placement layer {placement!r} is outside the model's layers 0..{weights.L - 1}")
        w = self.w = weights
        self.placement = placement  # layers 0..placement run dense; the predictors read / start after it
        self.sparsity, self.kv_policy, self.lookahead = sparsity, kv_policy, lookahead
        self.H, self.F, self.L, self.Hkv = w.H, w.F, w.L, w.Hkv
        self.kh = max(1, int(round((1 - sparsity) * self.H)))
        self.kf = max(1, int(round((1 - sparsity) * self.F)))
        self.static_mask = static_mask
        self.shadow = self.dejavu_pred = None
        if spec.predictor == "shadowllm":
            self.shadow = shadow or random_predictor("shadowllm", w, predictor_hidden, seed)
        if spec.predictor == "dejavu":
            self.dejavu_pred = dejavu or random_predictor("dejavu", w, predictor_hidden, seed)
        self.ops = GatherOps(gather, w.device) if spec.per_token else None
        cuda = w.device.type == "cuda"
        # residual add + layer norm in one Triton kernel (None: on CUDA when triton is there; every mode alike)
        self.fwd = Forward(w, self.ops, kv_policy,
                           (cuda and kernels_triton.available()) if fused_ln is None else bool(fused_ln))
        self.side = torch.cuda.Stream(w.device) if (cuda and side_stream) else None
        self.full = [Slice.full(lw, self.H, self.Hkv) for lw in w.layers]
        self.record = False
        self.trace: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.B = self.graph = None

    @property
    def mode(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        return self.w.device

    @property
    def K(self) -> list[torch.Tensor]:
        """Each layer's key cache [B, KV heads kept, Tmax, dh]."""
        return self.fwd.K

    # ---- setup ----------------------------------------------------------------------------------
    def setup(self, batch: int, max_len: int) -> "SparseDecoder":
        """Allocate the KV cache and slice buffers for `batch` sequences of up to `max_len` tokens."""
        if max_len > self.w.max_pos:
            raise ValueError(f"max_len {max_len} exceeds the model's {self.w.max_pos} positions")
        if self.B == batch and self.Tmax >= max_len:
            return self
        # a multiple of 16 where the positions allow: the attention kernels want 16-byte-aligned mask rows
        max_len = min(-(-max_len // 16) * 16, self.w.max_pos)
        self.B, self.Tmax = batch, max_len
        self.graph = None
        self.slices = list(self.full)
        self.spec.run.setup(self, batch)
        heads = [self.Hkv] * self.L if self.spec.kv == "policy" else [s.nkv for s in self.slices]
        self.fwd.alloc(batch, max_len, heads)
        self.t = 0
        return self

    def reset(self) -> None:
        self.t = 0
        self.trace = []

    # ---- what the strategies share ------------------------------------------------------------------
    def split_idx(self, scores: torch.Tensor):
        """scores [..., H+F] -> (head idx [..., kh], neuron idx [..., kf])."""
        return topk_idx(scores[..., : self.H], self.kh), topk_idx(scores[..., self.H:], self.kf)

    def trace_masks(self, n: int, hidx_layers, nidx_layers) -> None:
        """With `record`: n tokens' masks from per layer [B, k] index tensors (None = all units)."""
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

    def run_side(self, fn):
        """Run fn on the side stream (GPU) and return (result, join callable)."""
        if self.side is None:
            r = fn()
            return r, (lambda: None)
        main = torch.cuda.current_stream(self.device)
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            r = fn()
        return r, (lambda: main.wait_stream(self.side))

    # ---- prefill and one decode step -----------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
        """ids [B, T] -> logits [B, T or 1, V]; the KV cache then holds the prompt."""
        if self.B is None or ids.shape[0] != self.B:
            self.setup(ids.shape[0], max(ids.shape[1] + 64, 2 * ids.shape[1]))
        self.reset()
        T = ids.shape[1]
        pos = self.fwd.ar_T[:T]
        h = self.spec.run.prefill(self, self.fwd.embed(ids, pos), pos)
        self.t = T
        return self.fwd.head(h if all_logits else h[:, -1:])

    def _step(self, ids: torch.Tensor, pos: torch.Tensor, t0: int | None) -> torch.Tensor:
        """ids [B] at position pos ([1] tensor; t0 = the same as int, or None in a CUDA graph) -> logits [B, V]."""
        h = self.fwd.embed(ids[:, None], pos)
        if t0 is None:
            self.fwd.graph_mask(pos)
        h, x = self.spec.run.step(self, h, pos, t0)
        return self.fwd.head(h[:, 0], x_ln=x)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Eager decode step: ids [B] -> logits [B, V]."""
        if self.t >= self.Tmax:
            raise ValueError(f"KV cache full ({self.Tmax} tokens)")
        pos = self.fwd.ar_T[self.t: self.t + 1]
        out = self._step(ids, pos, self.t)
        self.t += 1
        return out

    # ---- CUDA graph -------------------------------------------------------------------------------
    @torch.no_grad()
    def capture_graph(self, warmup: int = 2) -> None:
        """Capture one greedy decode step (ids -> next ids) in a CUDA graph; reused across generate calls."""
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {self.device}")
        ids = torch.zeros(self.B, dtype=torch.long, device=self.device)
        pos = torch.zeros(1, dtype=torch.long, device=self.device)
        rec, self.record = self.record, False
        s = torch.cuda.Stream(self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(s):
            for _ in range(warmup):
                self._step(ids, pos, None)
        torch.cuda.current_stream(self.device).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            logits = self._step(ids, pos, None)
            nxt = logits.argmax(-1)
        self.graph = _Graph(g, ids, pos, logits, nxt)
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
            return self._replay(nxt, n_new), outs
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

    def _replay(self, nxt: torch.Tensor, n_new: int) -> torch.Tensor:
        """n_new greedy steps of the captured graph from tokens nxt [B] -> tokens [B, n_new]."""
        g = self.graph
        if g is None:
            raise ValueError("call capture_graph() first")
        g.ids.copy_(nxt)
        g.pos.fill_(self.t)
        buf = torch.empty(nxt.shape[0], n_new, dtype=torch.long, device=self.device)
        for i in range(n_new):
            g.graph.replay()
            buf[:, i].copy_(g.next)
            g.ids.copy_(g.next)
            g.pos += 1
        self.t += n_new
        return buf
