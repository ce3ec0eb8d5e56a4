"""Train a predictor on importance traces: MSE to min-max normalised targets, AdamW with a cosine schedule,
early stopping on a held-out split, best weights kept.

Targets Y [N, L, U] are normalised per batch as they stream in (no full copy per step):
  per_layer (the paper's "b1eL"): min-max per (example, layer) over the layer's U units;
  global    (the paper's "b1e"):  min-max per example over all units of the layers the loss counts.
Only layers > placement count in the loss; layers 0..placement are never pruned.
Deterministic for a seed on one machine: seeded split, shuffling and initialisation, no global RNG touched.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from .designs import Design, get_design

NORMALIZE = ("per_layer", "global")


def normalise_targets(y: torch.Tensor, mode: str, placement: int, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalise targets [B, L, U] -> [B, L, U] in float32; layers 0..placement are left 0."""
    y = y.float()
    first = placement + 1
    s = y[:, first:]                                                              # [B, L', U]
    dims = (-1,) if mode == "per_layer" else (-2, -1)
    lo, hi = s.amin(dims, keepdim=True), s.amax(dims, keepdim=True)
    out = torch.zeros_like(y)
    out[:, first:] = (s - lo) / (hi - lo).clamp_min(eps)
    return out


def _first_bad(name: str, t: torch.Tensor) -> None:
    """Raise naming `name` and the first example holding NaN or inf."""
    for i in range(0, len(t), 1024):
        bad = (~torch.isfinite(t[i:i + 1024])).flatten(1).any(1)
        if bad.any():
            j = i + int(bad.nonzero()[0])
            raise ValueError(f"{name} contains NaN or inf (first at example {j}); expected finite values")


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) example indices."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction!r} is outside [0, 1)")
    n_val = int(round(val_fraction * n))
    if n_val == 0 or n_val == n:
        raise ValueError(f"val_fraction {val_fraction} splits {n} examples into {n - n_val} train and {n_val} "
                         "validation; both must be non-empty")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _check(design: Design, X: torch.Tensor, Y: torch.Tensor, placement: int, n_heads: int | None,
           normalize_targets: str) -> int:
    """Validate everything before any work; returns d_in."""
    if normalize_targets not in NORMALIZE:
        raise ValueError(f"normalize_targets {normalize_targets!r} is not one of {NORMALIZE}")
    if Y.dim() != 3:
        raise ValueError(f"targets Y must be [N, L, U], got shape {tuple(Y.shape)}")
    N, L, U = Y.shape
    if X.shape[:1] != Y.shape[:1]:
        raise ValueError(f"inputs X {tuple(X.shape)} and targets Y {tuple(Y.shape)} have different example counts")
    d_in = design.input_dim(X, L)
    if N < 2:
        raise ValueError(f"training needs at least 2 examples (one to train, one to validate), got {N}")
    if not 0 <= placement < L - 1:
        raise ValueError(f"placement layer {placement!r} is outside 0..{L - 2} (a {L}-layer model; at least one "
                         "layer after the placement must be scored)")
    if n_heads is not None and not 0 <= n_heads <= U:
        raise ValueError(f"n_heads {n_heads!r} does not fit U={U} units per layer (expected 0..{U})")
    _first_bad("inputs X", X)
    _first_bad("targets Y", Y)
    return d_in


def _loss(design, model, X, Y, idx, mode, placement, batch_size, device) -> float:
    """Mean MSE over examples `idx`, in batches, without gradients."""
    was = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(idx), batch_size):
            b = idx[i:i + batch_size]
            y = normalise_targets(Y[b], mode, placement).to(device)[:, placement + 1:]
            p = design.scores(model, X[b].to(device))[:, placement + 1:]
            total += nn.functional.mse_loss(p, y, reduction="sum").item() / y[0].numel()
    model.train(was)
    return total / len(idx)


def train_predictor(design: str | Design, X: torch.Tensor, Y: torch.Tensor, *, placement: int = 0,
                    hidden: int = 1024, n_heads: int | None = None, epochs: int = 50, lr: float = 1e-3,
                    weight_decay: float = 0.01, batch_size: int = 64, val_fraction: float = 0.1,
                    patience: int = 5, seed: int = 0, normalize_targets: str = "per_layer",
                    device: str | torch.device = "cpu",
                    log: Callable[[dict], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """(model with the best validation weights, curve [{epoch, train_loss, val_loss, lr}]).

    X: shadowllm [N, d] (the placement layer's input); dejavu [N, L, d] (layer l's input at [:, l]); static: any
    [N, ...] (ignored). Y: importance [N, L, U]; n_heads of the U units are heads, the rest neurons (None: all U
    are one kind, recorded as heads). `log` is called with each curve row as it is made.
    """
    design = get_design(design)
    X, Y = torch.as_tensor(X), torch.as_tensor(Y)
    d_in = _check(design, X, Y, placement, n_heads, normalize_targets)
    for name, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("patience", patience, 1),
                        ("hidden", hidden, 1)):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} {v!r} must be an integer >= {lo}")
    N, L, U = Y.shape
    H = U if n_heads is None else n_heads
    tr, va = _split(N, val_fraction, seed)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = design.build(d_in, L, H, U - H, hidden=hidden, placement=placement).to(device)
    curve: list[dict] = []

    def record(row):
        curve.append(row)
        if log is not None:
            log(row)

    if not design.trainable:
        design.calibrate(model, normalise_targets(Y[tr], normalize_targets, placement).to(device))
        record({"epoch": 0, "train_loss": _loss(design, model, X, Y, tr, normalize_targets, placement, batch_size,
                                                device),
                "val_loss": _loss(design, model, X, Y, va, normalize_targets, placement, batch_size, device),
                "lr": 0.0})
        return model.eval(), curve

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(tr) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed + 1)
    best, best_state, since = math.inf, None, 0
    for epoch in range(epochs):
        model.train()
        lr_now, seen, total = opt.param_groups[0]["lr"], 0, 0.0
        order = tr[torch.randperm(len(tr), generator=gen)]
        for i in range(0, len(order), batch_size):
            b = order[i:i + batch_size]
            y = normalise_targets(Y[b], normalize_targets, placement).to(device)[:, placement + 1:]
            p = design.scores(model, X[b].to(device))[:, placement + 1:]
            loss = nn.functional.mse_loss(p, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
            seen += len(b)
        val = _loss(design, model, X, Y, va, normalize_targets, placement, batch_size, device)
        record({"epoch": epoch, "train_loss": total / seen, "val_loss": val, "lr": lr_now})
        if val < best:
            best, since = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    if best_state is None:
        raise RuntimeError(f"validation loss was never finite (last {curve[-1]['val_loss']!r}); lower lr {lr}?")
    model.load_state_dict(best_state)
    return model.eval(), curve
