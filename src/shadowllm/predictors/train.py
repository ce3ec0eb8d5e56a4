"""Train a predictor on importance traces: MSE to normalised targets, AdamW with a cosine schedule, early
stopping on a validation split, best weights kept. Heads and neurons are trained one after the other, each with
its own width, epochs and batch size (the paper: heads 2048 / 100 / 32, neurons 1024 / 20 / 16).

Targets stream in by batch (`Rows`), so no step holds a big model's traces in memory; they are mapped per kind
into the normalisation `normalize_targets` as they arrive (`normalize.normalize_scores`):
  raw     (the paper's choice, the default): the criterion's own scores, divided by one positive constant per
          kind (the mean |score| over the training split's examples and layers > placement), which the predictor
          keeps (`Predictor.target_scale`) and multiplies back, so it predicts in the criterion's units;
  layer   (the paper's "b1eL"): min-max per (example, layer) over the layer's units of that kind;
  example per-example rank over all units of that kind in the layers > placement, onto [0, 1].
Only layers > placement count in the loss; layers 0..placement are never pruned. The static design (no network)
is the mean of the normalised targets over every training row it is given (it has no early stopping: its
validation split is only reported).
The validation split is by group (`groups`, e.g. the example id shared by a question's rows at different shots),
so one question never sits on both sides. Deterministic for a seed on one machine: seeded split, shuffling and
initialisation, no global RNG touched.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .designs import Design, get_design
from .model import KINDS, Packed
from .normalize import NORMALIZE, normalize_scores, raw_scale
from .rows import ArrayRows, Rows, as_rows

HYPER = ("hidden", "epochs", "batch_size")
CHUNK = 256  # examples per streamed chunk in checks and statistics


def split_targets(Y, n_heads: int | None) -> dict[str, Rows]:
    """{kind: Rows [N, L, U_kind]} from a tensor [N, L, H+F] (heads first) or such a dict itself."""
    if isinstance(Y, dict):
        bad = set(Y) - set(KINDS)
        if bad:
            raise ValueError(f"target kinds {sorted(bad)} are not among {KINDS}")
        return {k: as_scores(v) for k, v in Y.items() if v is not None}
    Y = torch.as_tensor(Y)
    if Y.dim() != 3:
        raise ValueError(f"targets Y must be [N, L, U], got shape {tuple(Y.shape)}")
    H = Y.shape[2] if n_heads is None else n_heads
    if not 0 <= H <= Y.shape[2]:
        raise ValueError(f"n_heads {n_heads!r} does not fit U={Y.shape[2]} units per layer (expected 0..{Y.shape[2]})")
    parts = {"heads": Y[..., :H], "neurons": Y[..., H:]}
    return {k: as_scores(v) for k, v in parts.items() if v.shape[2] > 0}


def as_scores(y) -> Rows:
    if isinstance(y, Rows):
        return y
    y = torch.as_tensor(y).float().contiguous()
    if y.dim() != 3:
        raise ValueError(f"targets must be [N, L, U], got shape {tuple(y.shape)}")
    return ArrayRows([y], kind="scores")


def _first_bad(name: str, rows: Rows) -> None:
    """Raise naming `name` and the first example holding NaN or inf (read in chunks)."""
    for i in range(0, len(rows), CHUNK):
        t = rows[i:i + CHUNK]
        t = t.x if isinstance(t, Packed) else t
        bad = (~torch.isfinite(t)).flatten(1).any(1)
        if bad.any():
            j = i + int(bad.nonzero()[0])
            raise ValueError(f"{name} contains NaN or inf (first at example {j}); expected finite values")


def _split(n: int, val_fraction: float, seed: int, groups: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, validation) row indices. groups (one label per row, e.g. the example id): round(val_fraction
    x distinct groups) whole groups are validation, so rows of one group never sit on both sides; the groups are
    ordered by name before the seeded shuffle, so the split does not depend on the order of the rows. None: every
    row is its own group (in row order)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction!r} is outside [0, 1)")
    if groups is not None and len(groups) != n:
        raise ValueError(f"{len(groups)} groups given for {n} rows")
    names = sorted(set(groups)) if groups is not None else None
    m = n if names is None else len(names)
    n_val = int(round(val_fraction * m))
    what = "examples" if names is None else "groups"
    if n_val == 0 or n_val == m:
        raise ValueError(f"val_fraction {val_fraction} splits {m} {what} into {m - n_val} train and {n_val} "
                         "validation; both must be non-empty")
    perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed))
    if names is None:
        return perm[n_val:].sort().values, perm[:n_val].sort().values
    val = {names[i] for i in perm[:n_val].tolist()}
    is_val = torch.tensor([g in val for g in groups])
    return (~is_val).nonzero()[:, 0], is_val.nonzero()[:, 0]


def kind_settings(hidden: int, epochs: int, batch_size: int, per_kind: dict | None) -> dict[str, dict]:
    """{kind: {hidden, epochs, batch_size}}: the shared values, overridden per kind by `per_kind`."""
    out = {}
    for kind in KINDS:
        hp = {"hidden": hidden, "epochs": epochs, "batch_size": batch_size, **((per_kind or {}).get(kind) or {})}
        bad = set(hp) - set(HYPER)
        if bad:
            raise ValueError(f"{kind} settings {sorted(bad)} are not among {HYPER}")
        for name, v in hp.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{kind} {name} {v!r} must be an integer >= 1")
        out[kind] = hp
    unknown = set(per_kind or {}) - set(KINDS)
    if unknown:
        raise ValueError(f"per-kind settings for {sorted(unknown)}; expected kinds {KINDS}")
    return out


def _check(design: Design, X: Rows, Y: dict[str, Rows], placement: int, normalize_targets: str) -> int:
    """Validate everything before any work; returns d_in."""
    if normalize_targets not in NORMALIZE:
        raise ValueError(f"normalize_targets {normalize_targets!r} is not one of {NORMALIZE}")
    if not Y:
        raise ValueError("no targets given")
    shapes = {k: tuple(y.shape) for k, y in Y.items()}
    N, L = next(iter(shapes.values()))[:2]
    if any(s[:2] != (N, L) for s in shapes.values()):
        raise ValueError(f"head and neuron targets differ in examples or layers: {shapes}")
    if len(X) != N:
        raise ValueError(f"inputs X {tuple(X.shape)} and targets Y {shapes} have different example counts")
    d_in = design.input_dim(X, L)
    if N < 2:
        raise ValueError(f"training needs at least 2 examples (one to train, one to validate), got {N}")
    if not 0 <= placement < L - 1:
        raise ValueError(f"placement layer {placement!r} is outside 0..{L - 2} (a {L}-layer model; at least one "
                         "layer after the placement must be scored)")
    _first_bad("inputs X", X)
    for k, y in Y.items():
        _first_bad(f"targets Y ({k})", y)
    return d_in


def _target(Y: Rows, b, mode: str, placement: int, scale: float, device) -> torch.Tensor:
    """Training target of rows `b` [B, L', U]: normalised, divided by `scale` (raw targets' constant, else 1)."""
    y = normalize_scores(Y[b], mode, placement)[:, placement + 1:]
    return (y / scale if scale != 1.0 else y).to(device)


def _loss(design, model, kind, X, Y, idx, mode, placement, batch_size, device, scale=1.0) -> float:
    """Mean MSE over examples `idx`, in batches, without gradients (in the scale the network is trained in)."""
    was = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(idx), batch_size):
            b = idx[i:i + batch_size]
            y = _target(Y, b, mode, placement, scale, device)
            p = design.scores(model, X[b].to(device), kind)[:, placement + 1:]
            total += nn.functional.mse_loss(p, y, reduction="sum").item() / y[0].numel()
    model.train(was)
    return total / len(idx)


def _mean_target(Y: Rows, idx, mode, placement) -> torch.Tensor:
    """Mean normalised target [L, U] over examples `idx`, summed chunk by chunk in float64."""
    total = None
    for i in range(0, len(idx), CHUNK):
        s = normalize_scores(Y[idx[i:i + CHUNK]], mode, placement).double().sum(0)
        total = s if total is None else total + s
    return (total / len(idx)).float()


def _raw_scale(Y: Rows, idx, placement) -> float:
    """The positive constant raw targets are divided by: mean |target| over examples `idx`, layers > placement
    (1 where that is 0 or not finite)."""
    total, count = 0.0, 0
    for i in range(0, len(idx), CHUNK):
        t, c = raw_scale(Y[idx[i:i + CHUNK]], placement)
        total, count = total + t, count + c
    s = total / max(count, 1)
    return s if math.isfinite(s) and s > 0 else 1.0


def _fit(design, model, kind, X, Y, tr, va, hp, *, lr, weight_decay, patience, seed, mode, placement, device,
         record, scale=1.0) -> None:
    """Train `kind`'s part of the model; keeps its best validation weights."""
    params = design.parameters(model, kind)
    names = {id(p) for p in params}
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)  # one kernel per step
    bs = hp["batch_size"]
    steps = hp["epochs"] * math.ceil(len(tr) / bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed + 1 + KINDS.index(kind))
    own = [k for k, v in model.named_parameters() if id(v) in names]
    best, best_state, since = math.inf, None, 0
    for epoch in range(hp["epochs"]):
        model.train()
        lr_now, seen, total = opt.param_groups[0]["lr"], 0, 0.0
        order = tr[torch.randperm(len(tr), generator=gen)]
        for i in range(0, len(order), bs):
            b = order[i:i + bs]
            y = _target(Y, b, mode, placement, scale, device)
            p = design.scores(model, X[b].to(device), kind)[:, placement + 1:]
            loss = nn.functional.mse_loss(p, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
            seen += len(b)
        val = _loss(design, model, kind, X, Y, va, mode, placement, bs, device, scale)
        record({"kind": kind, "epoch": epoch, "train_loss": total / seen, "val_loss": val, "lr": lr_now})
        if val < best:
            best, since = val, 0
            state = model.state_dict()
            best_state = {k: state[k].detach().clone() for k in own}
        else:
            since += 1
            if since >= patience:
                break
    if best_state is None:
        raise RuntimeError(f"{kind}: validation loss was never finite (last {val!r}); lower lr {lr}?")
    model.load_state_dict(best_state, strict=False)


def train_predictor(design: str | Design, X, Y, *, placement: int = 0, hidden: int = 1024,
                    n_heads: int | None = None, epochs: int = 50, lr: float = 1e-3, weight_decay: float = 0.01,
                    batch_size: int = 64, per_kind: dict | None = None, val_fraction: float = 0.1,
                    patience: int = 5, seed: int = 0, normalize_targets: str = "raw",
                    groups: list | None = None, device: str | torch.device = "cpu",
                    log: Callable[[dict], None] | None = None) -> tuple[nn.Module, list[dict]]:
    """(model with the best validation weights, curve [{kind, epoch, train_loss, val_loss, lr}]).

    X: shadowllm [N, d] (the placement layer's input); dejavu [N, L, d] (layer l's input at [:, l]); fullseq
    SeqRows of per-token inputs; static: any (ignored); a tensor or `Rows`. Y: importance [N, L, U] with n_heads
    of the U units heads, the rest neurons (None: all heads), or {kind: Rows [N, L, U_kind]}. `hidden`, `epochs`
    and `batch_size` hold for both kinds unless `per_kind` ({"heads": {...}, "neurons": {...}}) overrides them.
    `log` is called with each curve row as it is made. normalize_targets: raw, layer or example (module
    docstring). groups: one label per row (e.g. the example id); the validation split keeps each group on one side.
    """
    design = get_design(design)
    X, Y = as_rows(X), split_targets(Y, n_heads)
    hps = kind_settings(hidden, epochs, batch_size, per_kind)
    if not isinstance(patience, int) or patience < 1:
        raise ValueError(f"patience {patience!r} must be an integer >= 1")
    d_in = _check(design, X, Y, placement, normalize_targets)
    N, L = len(X), Y[next(iter(Y))].shape[1]
    U = {k: (Y[k].shape[2] if k in Y else 0) for k in KINDS}
    tr, va = _split(N, val_fraction, seed, groups)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = design.build(d_in, L, U["heads"], U["neurons"], hidden_heads=hps["heads"]["hidden"],
                             hidden_neurons=hps["neurons"]["hidden"], placement=placement).to(device)
    curve: list[dict] = []

    def record(row):
        curve.append(row)
        if log is not None:
            log(row)

    for kind in Y:
        bs = hps[kind]["batch_size"]
        if not design.trainable:   # every training row: no early stopping, the validation split is only reported
            every = torch.arange(N)
            design.calibrate(model, kind, _mean_target(Y[kind], every, normalize_targets, placement).to(device))
            record({"kind": kind, "epoch": 0,
                    "train_loss": _loss(design, model, kind, X, Y[kind], tr, normalize_targets, placement, bs, device),
                    "val_loss": _loss(design, model, kind, X, Y[kind], va, normalize_targets, placement, bs, device),
                    "lr": 0.0})
            continue
        scale = _raw_scale(Y[kind], tr, placement) if normalize_targets == "raw" else 1.0
        _fit(design, model, kind, X, Y[kind], tr, va, hps[kind], lr=lr, weight_decay=weight_decay,
             patience=patience, seed=seed, mode=normalize_targets, placement=placement, device=device,
             record=record, scale=scale)
        if hasattr(model, "target_scale"):  # outputs in the criterion's units from now on (1: layer, example)
            model.target_scale[kind] = scale
    return model.eval(), curve
