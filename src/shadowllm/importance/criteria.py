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
    def head_dot(self) -> torch.Tensor:  # [B, T, H] sum_i A*G on real tokens
        return (self.A * self.G).sum(-1) * self.m[:, :, None]

    @cached_property
    def neuron_dot(self) -> torch.Tensor:  # [B, T, F] Z*dZ on real tokens
        return self.Z * self.dZ * self.m[:, :, None]

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
    def grad_rows(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per example: (standardised gradient rows [H, n, dh] in float64, kept positions [n]).

        Rows are the real positions whose gradient is non-constant for every head of the layer
        (in practice this drops only the last real token, whose gradient is exactly zero). Each row
        is centred and scaled to unit norm, so R @ R^T is the row correlation matrix (np.corrcoef).
        """
        out = []
        for b in range(self.mask.shape[0]):
            pos = torch.nonzero(self.mask[b]).flatten()
            g = self.G[b, pos].to(torch.float64).transpose(0, 1)     # [H, n, dh]
            g = g - g.mean(-1, keepdim=True)
            nrm = g.norm(dim=-1)                                     # [H, n]
            ok = (nrm > 0).all(0)
            r = g[:, ok] / nrm[:, ok, None]
            out.append((r, pos[ok]))
        return out


class Criterion:
    """Base class. `heads` / `neurons` return [B, H] / [B, F]; set `neurons = None` for head-only criteria."""

    name: str = ""
    needs_grad: bool = True     # needs dL/dA, dL/dZ, dL/dP (one backward pass)
    needs_hvp: bool = False     # needs the gate Hessian-vector product (double backward)

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
        sq = (d.A * d.G).pow(2).sum(-1) * d.m[:, :, None]       # [B, T, H]
        return sq.sum(1) / d.n_tok[:, None]

    @staticmethod
    def neurons(d):
        return d.neuron_dot.pow(2).sum(1) / d.n_tok[:, None]


@register
class GradNorm(Criterion):
    """grad_norm: head ||G_h||_2 over tokens and dims; neuron ||dW1 row||_2."""
    name = "grad_norm"

    @staticmethod
    def heads(d):
        return (d.G.pow(2).sum(-1) * d.m[:, :, None]).sum(1).sqrt()

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
        return (d.A.pow(2).sum(-1) * d.m[:, :, None]).sum(1).sqrt()

    @staticmethod
    def neurons(d):
        P = d.P[0]
        return (P.pow(2) * d.m.to(P.dtype)[:, :, None]).sum(1).sqrt()


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
        cnt = ((d.A <= 0).to(d.A.dtype).sum(-1) * d.m[:, :, None]).sum(1)
        return torch.log1p(cnt)

    @staticmethod
    def neurons(d):
        P = d.P[0]
        m = d.m.to(P.dtype)
        cnt = ((P <= 0).to(P.dtype) * m[:, :, None]).sum(1)
        return torch.log((1 + cnt) / (1 + m.sum(1))[:, None])


# ---- second order ------------------------------------------------------------------------------

@register
class Grasp(Criterion):
    """grasp: -theta * (H g) with theta = the unit gates m (all = 1, one per head / neuron and example),
    g = dL/dm over every gate of the model and H = d^2L/dm^2, so the score is -(H g) for that gate.

    This is the published GraSP score (Wang et al. 2020) on the gate parameterisation that snip uses.
    The authors' code (flagged "Backward pass below is WRONG" in their own comments) multiplied stored
    gradients that carried no graph, so their second backward did not compute H g.
    Computed from a double backward through the same forward pass; per example exactly, because each
    example has its own gates and its loss depends on no other example's gates.
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

def _corr_eigvals(r: torch.Tensor) -> torch.Tensor:
    """Eigenvalues [H, n] of R R^T for unit rows R [H, n, dh], via the smaller Gram matrix."""
    H, n, dh = r.shape
    if n == 0:
        return r.new_zeros(H, 0)
    if n <= dh:
        v = torch.linalg.eigvalsh(r @ r.transpose(1, 2))
    else:
        v = torch.linalg.eigvalsh(r.transpose(1, 2) @ r)
        v = torch.cat([v, v.new_zeros(H, n - dh)], dim=1)
    return v


@register
class Jacov(Criterion):
    """jacov: per example and head, the correlation matrix C [n, n] of the per-token gradient rows
    G[t, h, :] (np.corrcoef of the rows), eigenvalues v; score -sum(log(|v| + k) + 1/(|v| + k)), k = 1e-5.

    The authors pooled every token of every example into one matrix (one static score); here it is
    per example. Eigenvalues come from the min(n, dh)-sized Gram matrix (the others are exactly 0).
    """
    name = "jacov"
    neurons = None

    @staticmethod
    def heads(d):
        out = []
        for r, _ in d.grad_rows:
            v = _corr_eigvals(r).abs()
            out.append(-(torch.log(v + JACOV_K) + 1.0 / (v + JACOV_K)).sum(-1))
        return torch.stack(out).to(d.G.dtype)


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
        out = []
        for b, (r, pos) in enumerate(d.grad_rows):
            H = r.shape[0]
            nxt = pos + 1
            ok = nxt < d.mask.shape[1]
            ok[ok.clone()] = d.mask[b, nxt[ok]]
            cls = torch.full_like(pos, -1)
            cls[ok] = d.input_ids[b, nxt[ok]]
            s = []
            for c, cnt in zip(*torch.unique(cls[ok], return_counts=True)):
                if cnt < 2:
                    continue
                rc = r[:, cls == c]                                       # [H, n_c, dh]
                s.append(torch.log((rc @ rc.transpose(1, 2)).abs() + EPENAS_K).sum((1, 2)))
            if len(s) < 2:
                out.append(r.new_zeros(H))
                continue
            s = torch.stack(s, 1)                                         # [H, C]
            out.append((s[:, :, None] - s[:, None, :]).abs().sum((1, 2)))
        return torch.stack(out).to(d.G.dtype)


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
