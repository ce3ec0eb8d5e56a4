"""Collect per-example importance scores for many criteria from ONE forward / backward pass.

Inputs: a task's calibration split as k-shot prompts (k demonstrations drawn from the calibration
split without the example itself, deterministic per seed) plus the gold continuation. The loss of an
example is the mean NLL over its continuation tokens; the batch loss is the SUM of the examples'
losses, so each example's gradients do not depend on what it is batched with. Batches are right
padded with an attention mask; padded positions are masked out of every score (and, being after
all real tokens in a causal model, never influence a real position).

Hooks (on stock modules, removed afterwards):
  pre-hook on attn_out(l):  A (made a grad-tracking leaf at layer 0), head gates for the exact grasp HVP
  pre-hook on ffn_out(l):   Z, neuron gates for the exact grasp HVP
  hook on each ffn_in(l):   its input X and output P (pre-activation)
  adapter.on_predictor_input(l), l in placement layers: the predictor input (input of attn_out(l)) at the
                            last real token and at the last context token, registered first (before any gate)
                            and, with sequence_inputs, at every real token of the example
  adapter.on_layer_input(l) (optional): the residual stream entering layer l at the same two positions
                            (what a DejaVu-style per-layer predictor reads)
Model parameters are frozen during collection (no weight .grad is ever accumulated); per-example
fc1 weight gradients come from X and dL/dP by an einsum per example.

grasp needs H g on unit gates m (= 1; g = dL/dm). grasp_hvp="finite_difference" (default): g from the
captures (sum A*G per head, sum Z*dZ per neuron; the main pass has no gates), then one more forward +
backward at gates 1 + eps g that differentiates the gates only (`fd_steps`, `relu_patterns`).
grasp_hvp="exact": gates in the main pass, its backward with create_graph, and g.g differentiated through
it (on the tiny CPU models the whole collection takes ~1.3x the finite-difference time; it also needs an
attention implementation whose backward is differentiable).
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
    seq_inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # placement layer -> [sum_i n_i, H*dh]
    #   float32 predictor input at every real token (context + gold), example i = rows seq_offsets[i]:[i+1]
    seq_offsets: torch.Tensor | None = None   # [N+1] int64 row offsets into seq_inputs (None when not kept)
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


PAPER_DOCS = 2500   # the paper traces each task's first 2,500 training docs (in a seeded random order)


def lm_eval_rows(task: str, include: str | None = None, max_docs: int = PAPER_DOCS) -> tuple[list[dict], str, str]:
    """(rows, target_delimiter, fewshot_delimiter) of an lm-eval multiple-choice task: its training split (its
    validation split where it has none), as the shipped tasks' rows: id, query, choices, gold. The paper's traces come
    from its 7 tasks this way; a task whose choices are contexts (winogrande) becomes one choice, the shared ending,
    after the context that holds the right option."""
    from lm_eval.tasks import TaskManager, get_task_dict

    tm = TaskManager(include_path=include)
    if task not in tm.all_tasks:
        raise ValueError(f"unknown task {task!r}: neither a shipped task nor one lm-eval knows")
    t = get_task_dict([task], tm)[task]
    if t.OUTPUT_TYPE != "multiple_choice":
        raise ValueError(f"task {task!r} is {t.OUTPUT_TYPE!r}: importance traces need a multiple-choice task")
    docs = t.training_docs() if t.has_training_docs() else t.validation_docs()
    rows = []
    for i, doc in enumerate(docs):
        if i >= max_docs:
            break
        text, choices, target = t.doc_to_text(doc), list(t.doc_to_choice(doc)), t.doc_to_target(doc)
        if isinstance(text, int):            # multiple inputs: choices are contexts, the target the shared ending
            rows.append(dict(id=i, query=choices[text], choices=[str(target)], gold=0))
            continue
        gold = choices.index(target) if isinstance(target, str) else int(target)
        rows.append(dict(id=i, query=text, choices=choices, gold=gold))
    if not rows:
        raise ValueError(f"task {task!r} has no training or validation documents")
    return rows, t.config.target_delimiter, t.config.fewshot_delimiter


def task_examples(task: str, k: int, tok, seed: int = 0, max_examples: int | None = 500,
                  max_length: int = 2048, include: str | None = None) -> list[Example]:
    """A shipped task's calibration split, or an lm-eval task's training docs (the paper's tasks, from the hub)."""
    from .. import data

    if task in data.task_names():
        rows = data.load_split(task, "calib")
        td, fd = task_delimiters(task)
    else:
        rows, td, fd = lm_eval_rows(task, include)
    return tokenize_prompts(tok, kshot_prompts(rows, k, seed, max_examples, task, td, fd), max_length)


# ---- collection ---------------------------------------------------------------------------------

class _Capture:
    """Installs the hooks for one forward pass and holds what they capture.

    gates: None, or per layer the initial head gates [B, H] and neuron gates [B, F] (leaves that require
    grad). record: keep A, Z, X, P (False for the finite-difference pass, which needs the gates only).
    seq: (store {l: [sum n_i, H*dh]}, [(row offset, n tokens)] per batch row) to copy every real token of the
    placement layers' predictor input into. frozen: {l: [P_base > 0]}: the FFN input of fc2 becomes
    P * [P_base > 0] instead of relu(P) (see `relu_patterns`).
    """

    def __init__(self, ad: Adapter, B: int, want_grad: bool = False, gates=None, placement=(), last_idx=None,
                 ctx_idx=None, want_layer_inputs: bool = False, record: bool = True, seq=None, frozen=None):
        self.ad, self.B, self.want_grad, self.record, self.frozen = ad, B, want_grad, record, frozen
        self.last_idx, self.ctx_idx, self.seq = last_idx, ctx_idx, seq
        self.A, self.Z, self.X, self.P, self.inputs, self.inputs_ctx = {}, {}, {}, {}, {}, {}
        self.layer_in, self.layer_in_ctx = {}, {}
        self.gh, self.gn = {}, {}
        self.handles = []
        L = ad.n_layers
        if gates is not None:
            for l in range(L):
                self.gh[l] = gates[0][l].detach().clone().requires_grad_(True)
                self.gn[l] = gates[1][l].detach().clone().requires_grad_(True)
        for l in sorted(set(placement)):  # first: they must see the attention output before any gate
            self.handles.append(ad.on_predictor_input(l, self._grab_predictor(l)))
        if want_layer_inputs:
            for l in range(L):
                self.handles.append(ad.on_layer_input(l, self._grab(l, self.layer_in, self.layer_in_ctx)))
        for l in range(L):
            self.handles.append(ad.attn_out(l).register_forward_pre_hook(self._attn_pre(l)))
            self.handles.append(ad.ffn_out(l).register_forward_pre_hook(self._ffn_pre(l)))
            if record or frozen is not None:
                for j, mod in enumerate(ad.ffn_in(l)):
                    self.handles.append(mod.register_forward_hook(self._ffn_in(l, j)))

    @property
    def want_gates(self) -> bool:
        return bool(self.gh)

    def gates(self) -> list[torch.Tensor]:
        """Head gates of every layer, then neuron gates of every layer."""
        if not self.want_gates:
            return []
        return [self.gh[l] for l in range(self.ad.n_layers)] + [self.gn[l] for l in range(self.ad.n_layers)]

    def _track(self, x):
        if self.want_grad and not x.requires_grad:
            x = x.detach().requires_grad_(True)
        return x

    def _attn_pre(self, l):
        def hook(mod, args):
            a = self._track(args[0])
            if self.record:
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
            if self.frozen is not None:  # relu(P) with the pattern of the unperturbed pass: P * [P_base > 0]
                z = torch.where(self.frozen[l], self.P.pop((l, 0)), 0)
            if self.record:
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

    def _grab_predictor(self, l):
        """The predictor input at the two positions and, when asked, at every real token."""
        at_two = self._grab(l, self.inputs, self.inputs_ctx)

        def grab(x):  # x [B, T, H*dh]
            at_two(x)
            if self.seq is not None:
                store, rows = self.seq
                for b, (off, n) in enumerate(rows):
                    store[l][off:off + n] = x[b, :n].detach()
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


# ---- the gate Hessian-vector product (grasp) -----------------------------------------------------

GRASP_HVP = ("finite_difference", "exact")


def check_grasp_hvp(method: str, dtype: torch.dtype | None = None) -> str:
    """ValueError naming a method that is not one of GRASP_HVP (or finite differences of a half-precision model)."""
    if method not in GRASP_HVP:
        raise ValueError(f"grasp_hvp {method!r} is not one of {', '.join(map(repr, GRASP_HVP))}")
    if method == "finite_difference" and dtype is not None and torch.finfo(dtype).bits < 32:
        raise ValueError(f"grasp_hvp 'finite_difference' needs a float32 or float64 model, got {dtype}: "
                         f"its steps drown in half-precision rounding; use grasp_hvp 'exact'")
    return method


def relu_patterns(ad: Adapter, cap: _Capture) -> dict[int, torch.Tensor] | None:
    """{l: [P > 0]} of a ReLU FFN (shaped like its fc1 output) for the finite-difference pass, else None.

    Autograd's H g takes relu'' = 0: it is the Hessian with the activation pattern fixed. A finite step flips
    some of the B*T*F pre-activations near 0, and each flip adds a gradient jump / eps: on the trained tiny
    OPT this left Spearman(fd, exact) at ~0.8. Keeping the unperturbed pattern in the perturbed pass makes
    the difference quotient converge to autograd's H g. Smooth activations (Llama's SiLU) need nothing.
    """
    if not ad.relu_ffn:
        return None
    return {l: cap.P[(l, 0)].detach() > 0 for l in range(ad.n_layers)}


def fd_steps(g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, U] per-example gate gradients -> [B] float64 steps ε_b = sqrt(eps) (1 + |m|) / |g_b| (max norms).

    The textbook forward-difference step (Nocedal & Wright, 8.1) balancing truncation O(ε) against rounding
    O(eps / ε): the gate that moves most moves by 2 sqrt(eps) (m = 1). Max norms, because the l2 norm grows
    with the number of gates and moved the few gates that carry the gradient too far (measured). eps is at
    least float32's: attention softmax and the loss's log-softmax run in float32 even in a float64 model.
    An example whose gate gradient is 0 gets step 0 (and H g = 0).
    """
    top = g.double().abs().amax(dim=1)                                      # [B]
    scale = max(torch.finfo(dtype).eps, torch.finfo(torch.float32).eps) ** 0.5 * 2
    return torch.where(top > 0, scale / torch.where(top > 0, top, 1), 0)


def _exact_hvp(first_grads: list[torch.Tensor], gates: list[torch.Tensor]) -> list[torch.Tensor]:
    """H g per gate tensor by a second backward through the graph of g = dL/dm (built with create_graph)."""
    z = sum((g * g.detach()).sum() for g in first_grads)
    hv = torch.autograd.grad(z, gates, allow_unused=True)
    return [(torch.zeros_like(m) if h is None else h).detach() for h, m in zip(hv, gates)]


def _fd_hvp(model, ad: Adapter, ids, mask, batch, g0: list[torch.Tensor], frozen=None) -> list[torch.Tensor]:
    """H g ~ (dL/dm(1 + ε g) - dL/dm(1)) / ε per example (float64): one more forward + backward, gates only.

    Exact per example up to O(ε): the summed loss is block diagonal in the examples' gates.
    """
    B = len(batch)
    eps = fd_steps(torch.cat(g0, 1), g0[0].dtype)                                     # [B]
    L = ad.n_layers
    moved = [(1 + eps[:, None] * g.double()).to(g.dtype) for g in g0]
    cap = _Capture(ad, B, gates=(moved[:L], moved[L:]), record=False, frozen=frozen)
    try:
        with torch.enable_grad():
            g1 = torch.autograd.grad(example_losses(model, ids, mask, batch).sum(), cap.gates())
    finally:
        cap.remove()
    inv = torch.where(eps > 0, 1 / torch.where(eps > 0, eps, 1), 0)[:, None]              # [B, 1]
    return [(a.double() - b.double()) * inv for a, b in zip(g1, g0)]


# ---- one batch --------------------------------------------------------------------------------------

def _backward(cap: _Capture, losses, L: int, exact: bool):
    """(grads {("A"|"Z", l) | ("P", (l, j)): tensor}, H g per gate tensor when exact else None)."""
    keys = [("A", l) for l in range(L)] + [("Z", l) for l in range(L)] + [("P", lj) for lj in cap.P]
    tens = [cap.A[l] for l in range(L)] + [cap.Z[l] for l in range(L)] + [cap.P[lj] for lj in cap.P]
    gates = cap.gates()
    out = torch.autograd.grad(losses.sum(), tens + gates, create_graph=exact, allow_unused=True)
    grads = {k: (torch.zeros_like(t) if g is None else g.detach()) for k, g, t in zip(keys, out, tens)}
    if not exact:
        return grads, None
    gg = [torch.zeros_like(m) if g is None else g for g, m in zip(out[len(tens):], gates)]
    return grads, _exact_hvp(gg, gates)


def _gate_grads(cap: _Capture, grads: dict, ad: Adapter, B: int) -> list[torch.Tensor]:
    """dL/dm of the unit gates at m = 1 from the captures (no gates in the pass): per layer head sum_t,i A*G
    [B, H], then per layer neuron sum_t Z*dZ [B, F]. Padded positions have exactly zero gradient."""
    L, H = ad.n_layers, ad.n_heads
    gh = [(cap.A[l].detach() * grads[("A", l)]).view(B, -1, H, ad.head_dim).sum((1, 3)) for l in range(L)]
    gn = [_bt(cap.Z[l].detach() * grads[("Z", l)], B).sum(1) for l in range(L)]
    return gh + gn


def _layer_data(cap: _Capture, ad: Adapter, l: int, B: int, ids, mask, grads, hv) -> LayerData:
    """One layer's captures of the batch in the [B, T, ...] layout the criteria read."""
    A = cap.A[l].detach()
    A = A.view(B, A.shape[1], ad.n_heads, -1)
    nin = len(ad.ffn_in(l))
    g = bool(grads)
    return LayerData(
        mask=mask, input_ids=ids, A=A,
        G=grads[("A", l)].view_as(A) if g else None,
        Z=_bt(cap.Z[l].detach(), B), dZ=_bt(grads[("Z", l)], B) if g else None,
        P=[_bt(cap.P[(l, j)].detach(), B) for j in range(nin)],
        dP=[_bt(grads[("P", (l, j))], B) for j in range(nin)] if g else None,
        X=[_bt(cap.X[(l, j)].detach(), B) for j in range(nin)],
        W1=[m.weight.detach() for m in ad.ffn_in(l)],
        hvp_heads=hv[l] if hv else None, hvp_neurons=hv[ad.n_layers + l] if hv else None)


@dataclass
class _Plan:
    """What one collection computes, shared by its batches."""
    crits: list
    placement: list[int]
    want_grad: bool
    hvp: str | None            # None (no grasp), "exact" or "finite_difference"
    layer_inputs: bool
    seq: dict | None           # {l: [sum n_i, H*dh]} to fill, or None
    offsets: torch.Tensor      # [N+1] row offsets of the examples in seq


def _one_batch(model, ad: Adapter, examples, idx, plan: _Plan, pad_token_id: int, out: dict) -> None:
    """Forward (+ backward, + the grasp HVP) for examples[idx]; scores and inputs go into out's tensors."""
    batch = [examples[i] for i in idx]
    B, L = len(batch), ad.n_layers
    device = next(model.parameters()).device
    dt = next(model.parameters()).dtype
    ids, mask = _pad_batch(batch, pad_token_id, device)
    last = (mask.sum(1) - 1)
    ctx_last = torch.tensor([len(e.ctx_ids) - 1 for e in batch], device=last.device)
    ones = ([torch.ones(B, ad.n_heads, dtype=dt, device=device)] * L,
            [torch.ones(B, ad.n_neurons, dtype=dt, device=device)] * L)
    rows = [(int(plan.offsets[i]), examples[i].n) for i in idx]
    cap = _Capture(ad, B, plan.want_grad, ones if plan.hvp == "exact" else None, plan.placement, last, ctx_last,
                   plan.layer_inputs, seq=(plan.seq, rows) if plan.seq is not None else None)
    try:
        with torch.set_grad_enabled(plan.want_grad):
            losses = example_losses(model, ids, mask, batch)
            grads, hv = _backward(cap, losses, L, plan.hvp == "exact") if plan.want_grad else ({}, None)
        if plan.hvp == "finite_difference":
            cap.remove()  # its hooks would overwrite the captures (and inputs) with the perturbed pass's
            hv = _fd_hvp(model, ad, ids, mask, batch, _gate_grads(cap, grads, ad, B), relu_patterns(ad, cap))
        bid = [e.id for e in batch]
        for l in range(L):
            d = _layer_data(cap, ad, l, B, ids, mask, grads, hv)
            for c in plan.crits:
                for unit, fn in (("head", c.heads), ("neuron", c.neurons)):
                    if fn is not None:
                        s = fn(d).detach()
                        is_finite_or_raise(c.name, unit, s, bid, l)
                        out[unit + "s"][c.name][idx, l] = s.double().cpu()
            del d
        for l in plan.placement:
            out["inputs"][l][idx] = cap.inputs[l].float().cpu()
            out["inputs_ctx"][l][idx] = cap.inputs_ctx[l].float().cpu()
        for l in out["lin"]:
            out["lin"][l][idx] = cap.layer_in[l].float().cpu()
            out["lin_ctx"][l][idx] = cap.layer_in_ctx[l].float().cpu()
        lv = losses.detach().double().cpu()
        is_finite_or_raise("loss", "example", lv, bid)
        out["loss"][idx] = lv
    finally:
        cap.remove()


def _f32(*shape) -> torch.Tensor:
    """Zeros for stored inputs: float32 whatever the model's (or torch's default) dtype."""
    return torch.zeros(*shape, dtype=torch.float32)


def collect(model, examples: list[Example], criteria, batch_size: int = 8, placement_layers=(0,),
            pad_token_id: int = 0, sort_by_length: bool = True, progress=None,
            layer_inputs: bool = False, grasp_hvp: str = "finite_difference",
            sequence_inputs: bool = False) -> Collected:
    """Score every example under every criterion; returns float64 scores in the examples' order.

    grasp_hvp: how grasp's gate Hessian-vector product is computed, "finite_difference" (one more forward +
    backward; see `fd_steps`) or "exact" (double backward). sequence_inputs: also keep the placement layers'
    predictor input at every real token (`Collected.seq_inputs`). Raises ValueError naming the criterion /
    example on any NaN or inf.
    """
    crits = get_criteria(criteria)
    ad = get_adapter(model)
    if not examples:
        raise ValueError("no examples to score")
    placement = sorted(set([0] + [int(l) for l in placement_layers]))
    for l in placement:
        if not 0 <= l < ad.n_layers:
            raise ValueError(f"placement layer {l} is outside the model's {ad.n_layers} layers")
    want_hvp = any(c.needs_hvp for c in crits)
    check_grasp_hvp(grasp_hvp, next(model.parameters()).dtype if want_hvp else None)
    L, H, F, N = ad.n_layers, ad.n_heads, ad.n_neurons, len(examples)
    D = ad.n_heads * ad.head_dim
    offsets = torch.tensor([0] + [e.n for e in examples]).cumsum(0)                     # [N+1]
    plan = _Plan(crits, placement, any(c.needs_grad or c.needs_hvp for c in crits), grasp_hvp if want_hvp else None,
                 layer_inputs, {l: _f32(int(offsets[-1]), D) for l in placement} if sequence_inputs else None,
                 offsets)
    out = {"heads": {c.name: torch.zeros(N, L, H, dtype=torch.float64) for c in crits},
           "neurons": {c.name: torch.zeros(N, L, F, dtype=torch.float64) for c in crits if supports(c, "neurons")},
           "inputs": {l: _f32(N, D) for l in placement}, "inputs_ctx": {l: _f32(N, D) for l in placement},
           "lin": {l: _f32(N, ad.d_model) for l in range(L)} if layer_inputs else {},
           "lin_ctx": {l: _f32(N, ad.d_model) for l in range(L)} if layer_inputs else {},
           "loss": torch.zeros(N, dtype=torch.float64)}
    order = sorted(range(N), key=lambda i: -examples[i].n) if sort_by_length else list(range(N))

    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for start in range(0, N, batch_size):
            _one_batch(model, ad, examples, order[start:start + batch_size], plan, pad_token_id, out)
            if progress:
                progress(min(start + batch_size, N), N)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    return Collected(ids=[e.id for e in examples], heads=out["heads"], neurons=out["neurons"], inputs=out["inputs"],
                     inputs_context=out["inputs_ctx"], layer_inputs=out["lin"], layer_inputs_context=out["lin_ctx"],
                     n_tokens=torch.tensor([e.n for e in examples]),
                     n_context=torch.tensor([len(e.ctx_ids) for e in examples]),
                     loss=out["loss"], seq_inputs=plan.seq or {}, seq_offsets=offsets if sequence_inputs else None,
                     info={"placement_layers": placement, "criteria": [c.name for c in crits],
                           "grasp_hvp": plan.hvp})
