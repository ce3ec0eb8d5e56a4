"""Collect per-example importance scores for many criteria from ONE forward / backward pass.

Inputs: a task's calibration split as k-shot prompts (k demonstrations drawn from the calibration
split without the example itself, deterministic per seed) plus the gold continuation. The loss of an
example is the mean NLL over its continuation tokens; the batch loss is the SUM of the examples'
losses, so each example's gradients do not depend on what it is batched with. Batches are right
padded with an attention mask; padded positions are masked out of every score (and, being after
all real tokens in a causal model, never influence a real position).

Hooks (on stock modules, removed afterwards):
  pre-hook on attn_out(l):  A (made a grad-tracking leaf at layer 0), optional head gates for grasp
  pre-hook on ffn_out(l):   Z, optional neuron gates for grasp
  hook on each ffn_in(l):   its input X and output P (pre-activation)
  adapter.on_predictor_input(l), l in placement layers: the predictor input (input of attn_out(l)) at the
                            last real token and at the last context token, registered first (before any gate)
  adapter.on_layer_input(l) (optional): the residual stream entering layer l at the same two positions
                            (what a DejaVu-style per-layer predictor reads)
Model parameters are frozen during collection (no weight .grad is ever accumulated); per-example
fc1 weight gradients come from X and dL/dP by an einsum per example.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from ..adapter import Adapter, get_adapter
from .criteria import LayerData, get_criteria, is_finite_or_raise, supports

FEWSHOT_DELIMITER = "\n\n"


@dataclass
class Example:
    id: str
    ctx_ids: list[int]
    cont_ids: list[int]

    @property
    def n(self) -> int:
        return len(self.ctx_ids) + len(self.cont_ids)


@dataclass
class Collected:
    ids: list[str]
    heads: dict[str, torch.Tensor]            # criterion -> [N, L, H] float64
    neurons: dict[str, torch.Tensor]          # criterion -> [N, L, F] float64 (supported criteria)
    inputs: dict[int, torch.Tensor]           # placement layer -> [N, H*dh] predictor input, last real token
    inputs_context: dict[int, torch.Tensor]   # placement layer -> [N, H*dh] predictor input, last context token
    layer_inputs: dict[int, torch.Tensor]     # layer -> [N, d] residual stream entering it, last real token
    layer_inputs_context: dict[int, torch.Tensor]  # layer -> [N, d] the same at the last context token
    n_tokens: torch.Tensor                    # [N] int
    n_context: torch.Tensor                   # [N] int
    loss: torch.Tensor                        # [N] mean NLL of the continuation
    info: dict = field(default_factory=dict)


# ---- prompts ------------------------------------------------------------------------------------

def task_delimiters(task: str) -> tuple[str, str]:
    """(target_delimiter, fewshot_delimiter) from the shipped task YAML (lm-eval defaults: ' ', '\\n\\n')."""
    try:
        import yaml

        from ..data import ASSETS
        cfg = yaml.safe_load((ASSETS / "tasks" / task / f"{task}.yaml").read_text(encoding="utf-8"))
        return cfg.get("target_delimiter", " "), cfg.get("fewshot_delimiter", FEWSHOT_DELIMITER)
    except (ImportError, FileNotFoundError):
        return " ", FEWSHOT_DELIMITER


def kshot_prompts(rows: list[dict], k: int, seed: int, max_examples: int | None = None, task: str = "task",
                  target_delimiter: str = "", fewshot_delimiter: str = FEWSHOT_DELIMITER) -> list[tuple[str, str, str]]:
    """[(id, context, continuation)] for the first `max_examples` rows in a seeded random order.

    The k demonstrations of row i are drawn without replacement from all rows except i, with a
    generator seeded by (seed, i), so an example's prompt does not depend on max_examples.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k > len(rows) - 1:
        raise ValueError(f"k={k} demonstrations requested but the calibration split of task {task!r} has only "
                         f"{len(rows)} examples ({len(rows) - 1} available besides the example itself)")
    order = list(range(len(rows)))
    random.Random(f"order-{seed}").shuffle(order)
    if max_examples is not None:
        order = order[:max_examples]
    out = []
    for i in order:
        r = rows[i]
        others = [j for j in range(len(rows)) if j != i]
        demos = random.Random(f"shots-{seed}-{i}").sample(others, k)
        parts = [rows[j]["query"] + target_delimiter + rows[j]["choices"][rows[j]["gold"]] for j in demos]
        ctx = fewshot_delimiter.join(parts + [r["query"]])
        out.append((str(r["id"]), ctx, target_delimiter + r["choices"][r["gold"]]))
    return out


def tokenize_prompts(tok, prompts, max_length: int) -> list[Example]:
    """Context with the tokenizer's special tokens, continuation without; left-truncated to max_length."""
    exs = []
    for pid, ctx, cont in prompts:
        c = tok(ctx)["input_ids"]
        y = tok(cont, add_special_tokens=False)["input_ids"]
        if not y:
            raise ValueError(f"example {pid!r} has an empty continuation")
        if len(y) >= max_length:
            raise ValueError(f"example {pid!r}: continuation of {len(y)} tokens does not fit max_length={max_length}")
        c = c[max(0, len(c) + len(y) - max_length):]
        exs.append(Example(pid, c, y))
    return exs


def task_examples(task: str, k: int, tok, seed: int = 0, max_examples: int | None = 500,
                  max_length: int = 2048) -> list[Example]:
    from .. import data

    rows = data.load_split(task, "calib")
    td, fd = task_delimiters(task)
    return tokenize_prompts(tok, kshot_prompts(rows, k, seed, max_examples, task, td, fd), max_length)


# ---- collection ---------------------------------------------------------------------------------

class _Capture:
    """Installs the hooks for one batch and holds what they capture."""

    def __init__(self, ad: Adapter, B: int, want_grad: bool, want_gates: bool, placement, last_idx, ctx_idx,
                 want_layer_inputs: bool = False):
        self.ad, self.B = ad, B
        self.want_grad, self.want_gates = want_grad, want_gates
        self.placement, self.last_idx, self.ctx_idx = set(placement), last_idx, ctx_idx
        self.A, self.Z, self.X, self.P, self.inputs, self.inputs_ctx = {}, {}, {}, {}, {}, {}
        self.layer_in, self.layer_in_ctx = {}, {}
        self.gh, self.gn = {}, {}
        self.handles = []
        L = ad.n_layers
        if want_gates:
            for l in range(L):
                dt = next(ad.attn_out(l).parameters()).dtype
                dev = next(ad.attn_out(l).parameters()).device
                self.gh[l] = torch.ones(B, ad.n_heads, dtype=dt, device=dev, requires_grad=True)
                self.gn[l] = torch.ones(B, ad.n_neurons, dtype=dt, device=dev, requires_grad=True)
        for l in sorted(self.placement):  # first: they must see the attention output before any gate
            self.handles.append(ad.on_predictor_input(l, self._grab(l, self.inputs, self.inputs_ctx)))
        if want_layer_inputs:
            for l in range(L):
                self.handles.append(ad.on_layer_input(l, self._grab(l, self.layer_in, self.layer_in_ctx)))
        for l in range(L):
            self.handles.append(ad.attn_out(l).register_forward_pre_hook(self._attn_pre(l)))
            self.handles.append(ad.ffn_out(l).register_forward_pre_hook(self._ffn_pre(l)))
            for j, mod in enumerate(ad.ffn_in(l)):
                self.handles.append(mod.register_forward_hook(self._ffn_in(l, j)))

    def _track(self, x):
        if self.want_grad and not x.requires_grad:
            x = x.detach().requires_grad_(True)
        return x

    def _attn_pre(self, l):
        def hook(mod, args):
            a = self._track(args[0])
            self.A[l] = a
            if self.want_gates:
                B, T, D = a.shape
                H = self.ad.n_heads
                a = (a.view(B, T, H, -1) * self.gh[l][:, None, :, None]).view(B, T, D)
            return (a,) + tuple(args[1:])
        return hook

    def _ffn_pre(self, l):
        def hook(mod, args):
            z = self._track(args[0])
            self.Z[l] = z
            if self.want_gates:
                shp = z.shape
                z = (z.reshape(self.B, -1, shp[-1]) * self.gn[l][:, None, :]).reshape(shp)
            return (z,) + tuple(args[1:])
        return hook

    def _ffn_in(self, l, j):
        def hook(mod, args, out):
            self.X[(l, j)] = args[0]
            self.P[(l, j)] = out
        return hook

    def _grab(self, l, at_last: dict, at_ctx: dict):
        """Store x [B, T, D] at each sequence's last real token and at its last context token."""
        def grab(x):
            rows = torch.arange(self.B, device=x.device)
            at_last[l] = x[rows, self.last_idx.to(x.device)].detach()
            at_ctx[l] = x[rows, self.ctx_idx.to(x.device)].detach()
        return grab

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def _bt(x: torch.Tensor, B: int) -> torch.Tensor:
    """[B*T, F] (OPT's flattened FFN) or [B, T, F] -> [B, T, F]."""
    return x.reshape(B, -1, x.shape[-1])


def _pad_batch(batch: list[Example], pad_id: int, device):
    B, T = len(batch), max(e.n for e in batch)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, e in enumerate(batch):
        seq = e.ctx_ids + e.cont_ids
        ids[b, :len(seq)] = torch.tensor(seq)
        mask[b, :len(seq)] = 1
    return ids.to(device), mask.to(device)


def example_losses(model, ids, mask, batch: list[Example]) -> torch.Tensor:
    """[B] mean NLL over each example's continuation tokens (lm_head applied to those positions only)."""
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    rows, cols, tgt, owner = [], [], [], []
    for b, e in enumerate(batch):
        c, n = len(e.ctx_ids), e.n
        pos = list(range(c - 1, n - 1))
        rows += [b] * len(pos)
        cols += pos
        tgt += e.cont_ids
        owner += [b] * len(pos)
    dev = hidden.device
    h = hidden[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]
    # log-softmax in float32 whatever the model's dtype: in float16 the NLL of a 50k-way softmax loses most
    # of its digits, and every gradient-based criterion starts from this loss
    logp = torch.log_softmax(model.lm_head(h).float(), dim=-1)
    nll = -logp.gather(1, torch.tensor(tgt, device=dev)[:, None])[:, 0]
    owner = torch.tensor(owner, device=dev)
    sums = torch.zeros(len(batch), device=dev, dtype=nll.dtype).index_add_(0, owner, nll)
    counts = torch.tensor([len(e.cont_ids) for e in batch], device=dev, dtype=nll.dtype)
    return sums / counts


def collect(model, examples: list[Example], criteria, batch_size: int = 8, placement_layers=(0,),
            pad_token_id: int = 0, sort_by_length: bool = True, progress=None,
            layer_inputs: bool = False) -> Collected:
    """Score every example under every criterion; returns float64 scores in the examples' order.

    Raises ValueError naming the criterion / example on any NaN or inf.
    """
    crits = get_criteria(criteria)
    ad = get_adapter(model)
    if not examples:
        raise ValueError("no examples to score")
    placement = sorted(set([0] + [int(l) for l in placement_layers]))
    for l in placement:
        if not 0 <= l < ad.n_layers:
            raise ValueError(f"placement layer {l} is outside the model's {ad.n_layers} layers")
    want_grad = any(c.needs_grad or c.needs_hvp for c in crits)
    want_gates = any(c.needs_hvp for c in crits)
    device = next(model.parameters()).device
    L, H, F = ad.n_layers, ad.n_heads, ad.n_neurons
    N = len(examples)
    heads = {c.name: torch.zeros(N, L, H, dtype=torch.float64) for c in crits}
    neurons = {c.name: torch.zeros(N, L, F, dtype=torch.float64) for c in crits if supports(c, "neurons")}
    inputs = {l: torch.zeros(N, ad.n_heads * ad.head_dim, dtype=torch.float32) for l in placement}
    inputs_ctx = {l: torch.zeros_like(inputs[l]) for l in placement}
    lin = {l: torch.zeros(N, ad.d_model, dtype=torch.float32) for l in range(L)} if layer_inputs else {}
    lin_ctx = {l: torch.zeros_like(x) for l, x in lin.items()}
    loss_all = torch.zeros(N, dtype=torch.float64)
    order = sorted(range(N), key=lambda i: -examples[i].n) if sort_by_length else list(range(N))
    ids_all = [e.id for e in examples]

    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for start in range(0, N, batch_size):
            idx = order[start:start + batch_size]
            batch = [examples[i] for i in idx]
            B = len(batch)
            ids, mask = _pad_batch(batch, pad_token_id, device)
            last = (mask.sum(1) - 1)
            ctx_last = torch.tensor([len(e.ctx_ids) - 1 for e in batch], device=last.device)
            cap = _Capture(ad, B, want_grad, want_gates, placement, last, ctx_last, layer_inputs)
            try:
                with torch.set_grad_enabled(want_grad):
                    losses = example_losses(model, ids, mask, batch)
                    grads = {}
                    if want_grad:
                        keys = [("A", l) for l in range(L)] + [("Z", l) for l in range(L)] + \
                               [("P", lj) for lj in cap.P]
                        tens = [cap.A[l] for l in range(L)] + [cap.Z[l] for l in range(L)] + \
                               [cap.P[lj] for lj in cap.P]
                        gates = [cap.gh[l] for l in range(L)] + [cap.gn[l] for l in range(L)] if want_gates else []
                        out = torch.autograd.grad(losses.sum(), tens + gates, create_graph=want_gates,
                                                  allow_unused=True)
                        for key, g, t in zip(keys, out[:len(tens)], tens):
                            grads[key] = torch.zeros_like(t) if g is None else g.detach()
                        hvp_h, hvp_n = {}, {}
                        if want_gates:
                            gg = out[len(tens):]
                            z = sum((g * g.detach()).sum() for g in gg if g is not None)
                            hv = torch.autograd.grad(z, gates, allow_unused=True)
                            for l in range(L):
                                hvp_h[l] = (hv[l] if hv[l] is not None else torch.zeros_like(gates[l])).detach()
                                hvp_n[l] = (hv[L + l] if hv[L + l] is not None else torch.zeros_like(gates[L + l])).detach()
                            del gg, z, hv
                        del out
                for l in range(L):
                    A = cap.A[l].detach()
                    A = A.view(B, A.shape[1], H, -1)
                    nin = len(ad.ffn_in(l))
                    d = LayerData(
                        mask=mask, input_ids=ids, A=A,
                        G=grads[("A", l)].view_as(A) if want_grad else None,
                        Z=_bt(cap.Z[l].detach(), B), dZ=_bt(grads[("Z", l)], B) if want_grad else None,
                        P=[_bt(cap.P[(l, j)].detach(), B) for j in range(nin)],
                        dP=[_bt(grads[("P", (l, j))], B) for j in range(nin)] if want_grad else None,
                        X=[_bt(cap.X[(l, j)].detach(), B) for j in range(nin)],
                        W1=[m.weight.detach() for m in ad.ffn_in(l)],
                        hvp_heads=hvp_h.get(l) if want_gates else None,
                        hvp_neurons=hvp_n.get(l) if want_gates else None)
                    bid = [examples[i].id for i in idx]
                    for c in crits:
                        s = c.heads(d).detach()
                        is_finite_or_raise(c.name, "head", s, bid, l)
                        heads[c.name][idx, l] = s.double().cpu()
                        if c.name in neurons:
                            s = c.neurons(d).detach()
                            is_finite_or_raise(c.name, "neuron", s, bid, l)
                            neurons[c.name][idx, l] = s.double().cpu()
                    del d
                for l in placement:
                    inputs[l][idx] = cap.inputs[l].float().cpu()
                    inputs_ctx[l][idx] = cap.inputs_ctx[l].float().cpu()
                for l in lin:
                    lin[l][idx] = cap.layer_in[l].float().cpu()
                    lin_ctx[l][idx] = cap.layer_in_ctx[l].float().cpu()
                lv = losses.detach().double().cpu()
                is_finite_or_raise("loss", "example", lv, [examples[i].id for i in idx])
                loss_all[idx] = lv
            finally:
                cap.remove()
            if progress:
                progress(min(start + batch_size, N), N)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    return Collected(ids=ids_all, heads=heads, neurons=neurons, inputs=inputs, inputs_context=inputs_ctx,
                     layer_inputs=lin, layer_inputs_context=lin_ctx,
                     n_tokens=torch.tensor([e.n for e in examples]),
                     n_context=torch.tensor([len(e.ctx_ids) for e in examples]),
                     loss=loss_all, info={"placement_layers": placement, "criteria": [c.name for c in crits]})
