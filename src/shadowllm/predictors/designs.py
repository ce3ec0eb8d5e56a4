"""Predictor designs, registered by name (like lm-eval's task registry): how each builds its model and scores inputs.

shadowllm: one network on the placement layer's input,   x [N, d]        -> scores [N, L, U].
dejavu:    one network per layer l > placement,          x [N, L, d]     -> scores [N, L, U] (x[:, l] feeds layer l).
static:    no network: the calibration mean of the training targets, one ranking for every input (the baseline).

U = H + F, heads first, then neurons. Rows of layers 0..placement are never pruned; their scores are unused
(dejavu and static leave them 0). Add a design with `@register("name")` on a `Design` subclass.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .metrics import static_scores
from .model import Predictor

DESIGNS: dict[str, Design] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: one shared instance per design name, so a name typo fails at lookup, not at training."""
    def deco(cls: type) -> type:
        if name in DESIGNS:
            raise ValueError(f"predictor design {name!r} is already registered ({type(DESIGNS[name]).__name__})")
        inst = cls()
        inst.name = name
        DESIGNS[name] = inst
        return cls
    return deco


def get_design(name: str | Design) -> Design:
    """The registered design called `name` (a Design passes through)."""
    if isinstance(name, Design):
        return name
    if name not in DESIGNS:
        raise ValueError(f"predictor design {name!r} is not one of {sorted(DESIGNS)}")
    return DESIGNS[name]


class Design:
    """How one design builds its model and turns a batch of inputs into scores [N, L, U]."""

    name = ""
    trainable = True    # False: `calibrate` sets the model from the targets, no gradient steps
    input_rank = 2      # 2: x [N, d]; 3: per-layer x [N, L, d]

    def build(self, d_in: int, n_layers: int, n_heads: int, n_neurons: int, hidden: int = 1024,
              placement: int = 0) -> nn.Module:
        raise NotImplementedError

    def scores(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Differentiable scores [B, L, U] for one batch (training uses this)."""
        raise NotImplementedError

    def calibrate(self, model: nn.Module, y_train: torch.Tensor) -> None:
        """Non-trainable designs: set the model from normalised training targets [N, L, U]."""

    def input_dim(self, x: torch.Tensor, n_layers: int) -> int:
        """d_in of inputs `x`; the shape error names the shape this design expects."""
        want = "[N, d]" if self.input_rank == 2 else f"[N, L={n_layers}, d]"
        if x.dim() != self.input_rank or (self.input_rank == 3 and x.shape[1] != n_layers):
            raise ValueError(f"design {self.name!r} takes inputs {want}, got shape {tuple(x.shape)}")
        return int(x.shape[-1])

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Scores [N, L, U] on CPU in float32, computed in batches of `batch_size` inputs."""
        was = model.training
        model.eval()
        dev = next(iter(model.buffers()), next(iter(model.parameters()), None)).device
        out = [self.scores(model, x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)]
        model.train(was)
        return torch.cat(out)


@register("shadowllm")
class ShadowLLM(Design):
    """One predictor for all layers, so masks for every later layer are known after the placement layer."""

    def build(self, d_in, n_layers, n_heads, n_neurons, hidden=1024, placement=0):
        return Predictor("shadowllm", d_in, n_layers, n_heads, n_neurons, hidden=hidden, placement=placement)

    def scores(self, model, x):
        return model(x.float())                                                  # [B, L, U]


@register("dejavu")
class DejaVu(Design):
    """One predictor per layer on that layer's own input (DejaVu's lookahead predictors)."""

    input_rank = 3

    def build(self, d_in, n_layers, n_heads, n_neurons, hidden=1024, placement=0):
        return Predictor("dejavu", d_in, n_layers, n_heads, n_neurons, hidden=hidden, placement=placement)

    def scores(self, model, x):
        x = x.float()                                                            # [B, L, d]
        B, first, U = x.shape[0], model.placement + 1, model.H + model.F
        rows = [model(x[:, l], layer=l) for l in range(first, model.L)]          # each [B, U]
        dense = x.new_zeros(B, first, U)
        return torch.cat([dense, torch.stack(rows, 1)], 1) if rows else dense    # [B, L, U]


class StaticScores(nn.Module):
    """The static design's 'model': a fixed score table [L, U] that ignores its input."""

    def __init__(self, n_layers: int, n_units: int, placement: int = 0):
        super().__init__()
        if not 0 <= placement < n_layers:
            raise ValueError(f"placement layer {placement!r} is outside the model's layers 0..{n_layers - 1}")
        self.L, self.U, self.placement = n_layers, n_units, placement
        self.register_buffer("table", torch.zeros(n_layers, n_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table.expand(x.shape[0], self.L, self.U)                      # [B, L, U], no copy


@register("static")
class Static(Design):
    """The calibration mean of the training targets: what a predictor must beat to be worth running."""

    trainable = False

    def input_dim(self, x, n_layers):
        if x.dim() < 1:
            raise ValueError(f"design 'static' takes inputs with examples first [N, ...], got shape {tuple(x.shape)}")
        return int(x[0].numel())

    def build(self, d_in, n_layers, n_heads, n_neurons, hidden=1024, placement=0):
        return StaticScores(n_layers, n_heads + n_neurons, placement)

    def scores(self, model, x):
        return model(x)

    def calibrate(self, model, y_train):
        table = static_scores(y_train)                                           # [L, U]
        table[: model.placement + 1] = 0.0
        model.table.copy_(table)
