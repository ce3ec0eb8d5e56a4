"""Importance criteria for attention heads and FFN neurons, registered by name.

Every criterion maps one layer's captured tensors for a batch (a `LayerData`) to per-example scores:
heads -> [B, H], neurons -> [B, F]. Adding a criterion is one class decorated with `@register`.

Notation (per example, over its REAL tokens only; padding is masked out everywhere):
  A  [T, H, dh]  per-head attention output = the INPUT of the attention output projection (out_proj)
  G  = dL/dA
  Z  [T, F]      activated FFN hidden = the INPUT of the FFN down projection (fc2)
  dZ = dL/dZ
  P  [T, F]      fc1 output (pre-activation), dP = dL/dP;  X [T, d] fc1 input;  W1 [F, d] fc1 weight
  dW1 = dL/dW1 of THIS example = sum_t dP[t, j] X[t, :]   (row j feeds neuron j)
  m  a gate (=1) multiplying a head's slice of A or a neuron's column of Z; dL/dm = sum_t,i A*G.
  L  = mean NLL over the example's continuation tokens.

  plainact  head  sum_t |sum_i G*A|               neuron sum_k |W1 * dW1| over row j
  fisher    head  sum_i mean_t (A*G)^2            neuron mean_t (Z*dZ)^2  (= (P*dP)^2 for ReLU)
  grad_norm head  ||G_h||_2 (tokens x dims)       neuron ||dW1 row j||_2
  l2_norm   head  ||A_h||_2                       neuron ||P_j||_2 over tokens (pre-activation, as the authors)
  snip      head  |dL/dm_h| = |sum_t,i A*G|       neuron |sum_t Z*dZ|
  grasp     head  -(H g)_m                        neuron -(H g)_m     (gates m, see Grasp)
  nwot      head  log(1 + #{A_h <= 0})            neuron log((1 + #{t: P_j <= 0}) / (1 + T))
  jacov     head  -sum_e log(v_e + k) + 1/(v_e + k), v = eigenvalues of the correlation matrix of
                  the per-token gradient rows G[t, h, :]  (k = 1e-5)             neuron: not defined
  epenas    head  sum_{c,c'} |s_c - s_c'|, s_c = sum log(|corr of rows of class c| + 1e-5), class of
                  position t = the token it predicts (input_ids[t+1])           neuron: not defined
"""
from __future__ import annotations

from functools import cached_property
from typing import Callable

import torch

JACOV_K = 1e-5
EPENAS_K = 1e-5

CRITERIA: dict[str, type["Criterion"]] = {}


def register(cls):
    """Class decorator: add a criterion to CRITERIA under `cls.name`."""
    if cls.name in CRITERIA:
        raise ValueError(f"criterion {cls.name!r} is registered twice")
    CRITERIA[cls.name] = cls
    return cls


def criterion_names() -> list[str]:
    return list(CRITERIA)


def get_criteria(names) -> list[type["Criterion"]]:
    """Resolve names (list or comma-separated string); ValueError naming any unknown one."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError(f"no criterion given; valid criteria: {', '.join(CRITERIA)}")
    bad = [n for n in names if n not in CRITERIA]
    if bad:
        raise ValueError(f"unknown criterion {', '.join(map(repr, bad))}; valid criteria: {', '.join(CRITERIA)}")
    return [CRITERIA[n] for n in names]


class LayerData:
    """One layer's captures for a batch, in padded layout; `mask` [B, T] marks real tokens.

    Shared intermediate results are cached properties so criteria that need the same thing
    (e.g. the per-example fc1 weight gradient) compute it once.
    """

    def __init__(self, *, mask, input_ids, A=None, G=None, Z=None, dZ=None, P=None, dP=None, X=None, W1=None,
                 hvp_heads=None, hvp_neurons=None):
        self.mask = mask.to(torch.bool)
        self.input_ids = input_ids
        self.A, self.G = A, G                 # [B, T, H, dh]
        self.Z, self.dZ = Z, dZ               # [B, T, F]
        self.P, self.dP = P or [], dP or []   # lists over ffn_in modules of [B, T, F]
        self.X, self.W1 = X or [], W1 or []   # lists of [B, T, d] and [F, d]
        self.hvp_heads, self.hvp_neurons = hvp_heads, hvp_neurons

    # ---- helpers -------------------------------------------------------------------------------
    @cached_property
    def m(self) -> torch.Tensor:        # [B, T] float in the activations' dtype
        ref = self.A if self.A is not None else self.Z
        return self.mask.to(ref.dtype)

    @cached_property
    def n_tok(self) -> torch.Tensor:    # [B]
        return self.m.sum(1).clamp_min(1)

    @cached_property
    def ag(self) -> torch.Tensor:       # [B, T, H, dh] A*G (shared by plainact, snip and fisher)
        return self.A * self.G

    @cached_property
    def head_dot(self) -> torch.Tensor:  # [B, T, H] sum_i A*G on real tokens
        return self.ag.sum(-1) * self.m[:, :, None]

    @cached_property
    def neuron_dot(self) -> torch.Tensor:  # [B, T, F] Z*dZ on real tokens
        return self.Z * self.dZ * self.m[:, :, None]

    def token_sum(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, U] -> [B, U]: the sum over each example's real tokens (one batched matmul, no masked copy)."""
        return torch.bmm(self.m.to(x.dtype)[:, None, :], x)[:, 0]

    @cached_property
    def w1_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example: (sum_k |W1*dW1| [B, F], ||dW1 row||^2 [B, F]), summed over ffn_in modules."""
        B = self.mask.shape[0]
        pa, gn = None, None
        for X, dP, W in zip(self.X, self.dP, self.W1):
            rows_pa, rows_gn = [], []
            for b in range(B):
                keep = self.mask[b]
                dW = dP[b, keep].transpose(0, 1) @ X[b, keep]          # [F, d] this example's dL/dW1
                rows_pa.append((dW * W).abs().sum(-1))
                rows_gn.append(dW.pow(2).sum(-1))
            a, g = torch.stack(rows_pa), torch.stack(rows_gn)
            pa = a if pa is None else pa + a
            gn = g if gn is None else gn + g
        return pa, gn

    @cached_property
    def unit_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(standardised gradient rows R [B, H, T, dh] float64, 0 on dropped rows; kept rows [B, T] bool).

        Kept rows are the real positions whose gradient is non-constant for every head of the layer
        (in practice this drops only the last real token, whose gradient is exactly zero). Each row
        is centred and scaled to unit norm, so R @ R^T is the row correlation matrix (np.corrcoef).
        Heads before tokens, contiguous: the Gram matrices are then plain batched matmuls.
        """
        g = self.G.transpose(1, 2).to(torch.float64, memory_format=torch.contiguous_format)
        g = g - g.mean(-1, keepdim=True)
        nrm = g.norm(dim=-1)                                                  # [B, H, T]
        keep = self.mask & (nrm > 0).all(1)                                   # [B, T]
        scale = torch.where(keep[:, None, :], 1 / torch.where(nrm > 0, nrm, 1), 0)
        return g * scale[..., None], keep


class Criterion:
    """Base class. `heads` / `neurons` return [B, H] / [B, F]; set `neurons = None` for head-only criteria."""

    name: str = ""
    needs_grad: bool = True     # needs dL/dA, dL/dZ, dL/dP (one backward pass)
    needs_hvp: bool = False     # needs the gate Hessian-vector product H g (see collect's grasp_hvp)

    @staticmethod
    def heads(d: LayerData) -> torch.Tensor:
        raise NotImplementedError

    neurons: Callable | None = None


# ---- first-order (activation x gradient) --------------------------------------------------------

@register
class PlainAct(Criterion):
    """plainact: head sum_t |sum_i G*A|; neuron sum_k |W1 * dW1| (per-example fc1 weight gradient)."""
    name = "plainact"

    @staticmethod
    def heads(d):
        return d.head_dot.abs().sum(1)

    @staticmethod
    def neurons(d):
        return d.w1_stats[0]


@register
class Fisher(Criterion):
    """fisher (authors' form): head sum_i mean_t (A*G)^2; neuron mean_t (Z*dZ)^2."""
    name = "fisher"

    @staticmethod
    def heads(d):
        return d.token_sum(d.ag.square().sum(-1)) / d.n_tok[:, None]

    @staticmethod
    def neurons(d):
        return d.neuron_dot.square().sum(1) / d.n_tok[:, None]


@register
class GradNorm(Criterion):
    """grad_norm: head ||G_h||_2 over tokens and dims; neuron ||dW1 row||_2."""
    name = "grad_norm"

    @staticmethod
    def heads(d):
        return d.token_sum(d.G.square().sum(-1)).sqrt()

    @staticmethod
    def neurons(d):
        return d.w1_stats[1].sqrt()


@register
class Snip(Criterion):
    """snip: |dL/dm| for a gate m on the unit: head |sum_t,i A*G|; neuron |sum_t Z*dZ|.

    (The authors' hooks stored the module's output gradient instead of the gate's gradient; this is
    the published SNIP connection sensitivity applied to the unit gates.)
    """
    name = "snip"

    @staticmethod
    def heads(d):
        return d.head_dot.sum(1).abs()

    @staticmethod
    def neurons(d):
        return d.neuron_dot.sum(1).abs()


# ---- activation only ---------------------------------------------------------------------------

@register
class L2Norm(Criterion):
    """l2_norm (DejaVu-like magnitude): head ||A_h||_2; neuron ||P_j||_2 (fc1 output, pre-activation)."""
    name = "l2_norm"
    needs_grad = False

    @staticmethod
    def heads(d):
        return d.token_sum(d.A.square().sum(-1)).sqrt()

    @staticmethod
    def neurons(d):
        return d.token_sum(d.P[0].square()).sqrt()


@register
class Nwot(Criterion):
    """nwot: log-count of inactive (<= 0) entries. head log(1 + #{A_h <= 0}) over tokens x dims;
    neuron log((1 + #{t: P_j <= 0}) / (1 + T)).

    The authors' neuron form log(#inactive / T) is -inf for a neuron active on every token; the +1
    smoothing keeps every score finite and leaves the order of the finite ones unchanged.
    """
    name = "nwot"
    needs_grad = False

    @staticmethod
    def heads(d):
        return torch.log1p(d.token_sum((d.A <= 0).sum(-1).to(d.A.dtype)))

    @staticmethod
    def neurons(d):
        P = d.P[0]
        cnt = d.token_sum((P <= 0).to(P.dtype))
        return torch.log((1 + cnt) / (1 + d.m.to(P.dtype).sum(1))[:, None])


# ---- second order ------------------------------------------------------------------------------

@register
class Grasp(Criterion):
    """grasp: -theta * (H g) with theta = the unit gates m (all = 1, one per head / neuron and example),
    g = dL/dm over every gate of the model and H = d^2L/dm^2, so the score is -(H g) for that gate.

    This is the published GraSP score (Wang et al. 2020) on the gate parameterisation that snip uses.
    The authors' code (flagged "Backward pass below is WRONG" in their own comments) multiplied stored
    gradients that carried no graph, so their second backward did not compute H g.
    H g comes from collect(grasp_hvp=...): a forward difference of the gate gradient (default; one more
    forward + backward, ReLU pattern held fixed) or a double backward through the same pass (exact).
    Per example either way, because each example has its own gates and its loss depends on no other
    example's gates.
    """
    name = "grasp"
    needs_hvp = True

    @staticmethod
    def heads(d):
        return -d.hvp_heads

    @staticmethod
    def neurons(d):
        return -d.hvp_neurons


# ---- gradient-correlation (heads only, as in the authors' code) --------------------------------

def _jacov_f(v: torch.Tensor) -> torch.Tensor:
    """jacov's term of one eigenvalue."""
    return -(torch.log(v + JACOV_K) + 1.0 / (v + JACOV_K))


@register
class Jacov(Criterion):
    """jacov: per example and head, the correlation matrix C [n, n] of the per-token gradient rows
    G[t, h, :] (np.corrcoef of the rows), eigenvalues v; score -sum(log(|v| + k) + 1/(|v| + k)), k = 1e-5.

    The authors pooled every token of every example into one matrix (one static score); here it is
    per example. For n > dh the non-zero eigenvalues of C = R R^T come from the [dh, dh] Gram matrix R^T R
    (one batched eigvalsh for the batch; the other n - dh are exactly 0). For n <= dh C itself is used:
    the Gram matrix's extra near-zero eigenvalues would cost ~1e-6 each through 1/(v + k).
    """
    name = "jacov"
    neurons = None

    @staticmethod
    def heads(d):
        r, keep = d.unit_rows                                             # [B, H, T, dh], [B, T]
        B, H, _, dh = r.shape
        n = keep.sum(1)                                                   # [B]
        out = r.new_zeros(B, H)
        long = torch.nonzero(n > dh).flatten()
        if len(long):
            rl = r if len(long) == B else r[long]
            gram = rl.transpose(2, 3) @ rl                                # [b, H, dh, dh]
            v = torch.linalg.eigvalsh(gram).abs()
            out[long] = _jacov_f(v).sum(-1) + (n[long] - dh).to(v.dtype)[:, None] * _jacov_f(v.new_zeros(()))
        for b in torch.nonzero((n <= dh) & (n > 0)).flatten().tolist():
            rows = r[b][:, keep[b]]                                       # [H, n, dh]
            out[b] = _jacov_f(torch.linalg.eigvalsh(rows @ rows.transpose(1, 2)).abs()).sum(-1)
        return out.to(d.G.dtype)


EPENAS_CHUNK = 2 ** 24  # float64 elements of gathered rows per batched matmul (128 MB)


def _class_groups(keep: torch.Tensor, mask: torch.Tensor, input_ids: torch.Tensor):
    """Kept positions grouped by (example, next token); groups of >= 2 rows only.

    Returns (flat positions b*T+t sorted by group [P], group sizes [G], group starts in it [G], group example [G]).
    """
    B = keep.shape[0]
    ok = torch.zeros_like(keep)
    ok[:, :-1] = keep[:, :-1] & mask[:, 1:]                              # has a real next token
    V = int(input_ids.max()) + 1
    key = torch.arange(B, device=keep.device)[:, None] * V + input_ids.roll(-1, dims=1)   # [B, T]
    flat = torch.nonzero(ok.flatten()).flatten()
    k, order = torch.sort(key.flatten()[flat], stable=True)
    flat = flat[order]
    groups, size = torch.unique_consecutive(k, return_counts=True)
    start = size.cumsum(0) - size
    big = size >= 2
    return flat, size[big], start[big], groups[big] // V


def _group_logsums(r: torch.Tensor, flat, size, start) -> torch.Tensor:
    """[G, H] sum over the group's row pairs of log(|<r_i, r_j>| + k), rows R [B, H, T, dh]; groups padded
    to the largest in power-of-two buckets of size, in chunks of at most EPENAS_CHUNK gathered elements."""
    _, H, T, dh = r.shape
    out = r.new_zeros(len(size), H)
    bucket = torch.ceil(torch.log2(size.double())).long()
    for bk in torch.unique(bucket).tolist():
        gsel = torch.nonzero(bucket == bk).flatten()
        M = int(size[gsel].max())
        step = max(1, EPENAS_CHUNK // (M * H * dh))
        for c in range(0, len(gsel), step):
            g = gsel[c:c + step]
            j = torch.arange(M, device=r.device)
            valid = j[None, :] < size[g][:, None]                                 # [Gb, M]
            idx = flat[(start[g][:, None] + j).clamp(max=len(flat) - 1)]          # b*T + t
            rows = (r[idx // T, :, idx % T] * valid[:, :, None, None]).transpose(1, 2)   # [Gb, H, M, dh]
            lg = torch.log((rows @ rows.transpose(2, 3)).abs() + EPENAS_K)        # [Gb, H, M, M]
            pair = valid[:, None, :, None] & valid[:, None, None, :]
            out[g] = torch.where(pair, lg, 0).sum((2, 3))
    return out


@register
class EpeNas(Criterion):
    """epenas: per example and head, group the gradient rows G[t, h, :] by class c = the token position t
    predicts (input_ids[t+1]; on continuation positions this is the label, the authors' grouping),
    keep classes with >= 2 rows, s_c = sum log(|C_c| + 1e-5) over the class correlation matrix C_c,
    score = sum over ordered class pairs |s_c - s_c'| (0 with fewer than two classes).

    The authors pooled label tokens over the whole dataset; per example the continuation alone has
    almost no repeated labels, so every position with a next token is used.
    """
    name = "epenas"
    neurons = None

    @staticmethod
    def heads(d):
        r, keep = d.unit_rows                                             # [B, H, T, dh], [B, T]
        B, H = r.shape[:2]
        flat, size, start, owner = _class_groups(keep, d.mask, d.input_ids)
        s_all = _group_logsums(r, flat, size, start)                                # [G, H]
        out = r.new_zeros(B, H)
        for b in torch.unique(owner).tolist():
            s = s_all[owner == b].T                                               # [H, C]
            out[b] = (s[:, :, None] - s[:, None, :]).abs().sum((1, 2))
        return out.to(d.G.dtype)


UNITS = ("heads", "neurons")


def supports(crit: type[Criterion], unit: str) -> bool:
    return unit == "heads" or crit.neurons is not None


def is_finite_or_raise(name: str, unit: str, scores: torch.Tensor, ids=None, layer: int | None = None) -> None:
    """ValueError naming the criterion, unit, example and layer of the first NaN / inf."""
    bad = ~torch.isfinite(scores)
    if bad.any():
        b = int(torch.nonzero(bad)[0, 0])
        who = f"example {ids[b]!r}" if ids is not None else f"batch row {b}"
        where = f" at layer {layer}" if layer is not None else ""
        raise ValueError(f"criterion {name!r} produced a non-finite {unit} score (NaN or inf) for {who}{where}")


__all__ = ["CRITERIA", "Criterion", "LayerData", "register", "get_criteria", "criterion_names", "supports",
           "is_finite_or_raise", "UNITS"]
