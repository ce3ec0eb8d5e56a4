"""Predictor designs, registered by name (like lm-eval's task registry): how each builds its model and scores inputs.

shadowllm: one network on the placement layer's input,          x [N, d]           -> scores [N, L, U].
dejavu:    one network per layer l > placement,                 x [N, L, d]        -> scores [N, L, U] (x[:, l] feeds l).
fullseq:   attention over the placement layer's input at every token, x [N, T_i, d] -> scores [N, L, U].
static:    no network: the calibration mean of the training targets, one ranking for every input (the baseline).

U = H + F, heads first, then neurons; each kind has its own network, trained on its own. Rows of layers
0..placement are never pruned; their scores are unused (dejavu and static leave them 0). Add a design with
`@register("name")` on a `Design` subclass.
"""
from __future__ import annotations

import json
from collections.abc import Callable

import torch
from torch import nn

from .model import Predictor, save_tensors
from .rows import Rows, as_rows

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


_WANT = {"flat": "[N, d]", "layers": "[N, L={L}, d]", "seq": "per-token sequences [N, T_i, d]"}


class Design:
    """How one design builds its model and turns a batch of inputs into scores [B, L, U]."""

    name = ""
    trainable = True    # False: `calibrate` sets the model from the targets, no gradient steps
    input_kind = "flat"  # "flat" x [N, d]; "layers" per-layer x [N, L, d]; "seq" per-token x [N, T_i, d]

    def build(self, d_in: int, n_layers: int, n_heads: int, n_neurons: int, hidden_heads: int = 2048,
              hidden_neurons: int = 1024, placement: int = 0) -> nn.Module:
        return Predictor(self.name, d_in, n_layers, n_heads, n_neurons, hidden_heads=hidden_heads,
                         hidden_neurons=hidden_neurons, placement=placement)

    def scores(self, model: nn.Module, x, kind: str | None = None) -> torch.Tensor:
        """Differentiable scores [B, L, U] for one batch (U: one kind's units when `kind` is given)."""
        return model(x, kind=kind)

    def calibrate(self, model: nn.Module, kind: str, mean_target: torch.Tensor) -> None:
        """Non-trainable designs: set `kind`'s scores from the mean normalised training target [L, U_kind]."""

    def parameters(self, model: nn.Module, kind: str) -> list:
        """The parameters trained for `kind`."""
        return model.part(kind)

    def input_dim(self, x: Rows, n_layers: int) -> int:
        """d_in of inputs `x`; the error names the shape this design expects."""
        shape = tuple(x.shape)
        ok = x.kind == self.input_kind and (self.input_kind != "layers" or shape[1] == n_layers)
        if not ok:
            want = _WANT[self.input_kind].format(L=n_layers)
            raise ValueError(f"design {self.name!r} takes inputs {want}, got {x.kind} rows of shape {shape}")
        return int(shape[-1])

    @torch.no_grad()
    def predict(self, model: nn.Module, x, batch_size: int = 256) -> torch.Tensor:
        """Scores [N, L, U] on CPU in float32, computed in batches of `batch_size` inputs."""
        x = as_rows(x)
        was = model.training
        model.eval()
        dev = next(iter(model.buffers()), next(iter(model.parameters()), None)).device
        out = [self.scores(model, x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)]
        model.train(was)
        return torch.cat(out)


@register("shadowllm")
class ShadowLLM(Design):
    """One predictor for all layers, so masks for every later layer are known after the placement layer."""


@register("fullseq")
class FullSeq(Design):
    """The paper's full-sequence predictor: attention over every token of the placement layer's input (it reads
    the whole sequence, so it can only choose one mask per sequence, not per token)."""

    input_kind = "seq"


@register("dejavu")
class DejaVu(Design):
    """One predictor per layer on that layer's own input (DejaVu's lookahead predictors)."""

    input_kind = "layers"

    def scores(self, model, x, kind=None):
        x = x.float()                                                            # [B, L, d]
        B, first = x.shape[0], model.placement + 1
        U = model.units[kind] if kind else model.H + model.F
        rows = [model(x[:, l], layer=l, kind=kind) for l in range(first, model.L)]   # each [B, U]
        dense = x.new_zeros(B, first, U)
        return torch.cat([dense, torch.stack(rows, 1)], 1) if rows else dense    # [B, L, U]


class StaticScores(nn.Module):
    """The static design's 'model': a fixed score table [L, H+F] that ignores its input."""

    def __init__(self, n_layers: int, n_heads: int, n_neurons: int, placement: int = 0):
        super().__init__()
        if not 0 <= placement < n_layers:
            raise ValueError(f"placement layer {placement!r} is outside the model's layers 0..{n_layers - 1}")
        self.L, self.H, self.F, self.placement = n_layers, n_heads, n_neurons, placement
        self.register_buffer("table", torch.zeros(n_layers, n_heads + n_neurons))

    def cols(self, kind: str | None) -> slice:
        return slice(0, self.H + self.F) if kind is None else \
            (slice(0, self.H) if kind == "heads" else slice(self.H, self.H + self.F))

    def forward(self, x, kind: str | None = None) -> torch.Tensor:
        t = self.table[:, self.cols(kind)]
        return t.expand(len(x), *t.shape)                                         # [B, L, U], no copy

    def save(self, path, meta: dict | None = None) -> None:
        """The table as safetensors, with its shape and `meta` as metadata."""
        save_tensors(path, {"table": self.table}, {"design": "static", "n_layers": self.L, "n_heads": self.H,
                                                   "n_neurons": self.F, "placement": self.placement}, meta)


def load_static_table(path) -> tuple[StaticScores, dict]:
    """(static table, meta) saved by `StaticScores.save`."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        md, table = f.metadata() or {}, f.get_tensor("table")
    cfg = json.loads(md.get("config", "{}"))
    if cfg.pop("design", None) != "static":
        raise ValueError(f"{path}: not a static score table")
    model = StaticScores(**cfg)
    model.table.copy_(table)
    return model, json.loads(md.get("meta", "{}"))


@register("static")
class Static(Design):
    """The calibration mean of the training targets: what a predictor must beat to be worth running."""

    trainable = False

    def input_dim(self, x, n_layers):
        return int(x.shape[-1])

    def build(self, d_in, n_layers, n_heads, n_neurons, hidden_heads=2048, hidden_neurons=1024, placement=0):
        return StaticScores(n_layers, n_heads, n_neurons, placement)

    def parameters(self, model, kind):
        return []

    def calibrate(self, model, kind, mean_target):
        table = mean_target.clone()
        table[: model.placement + 1] = 0.0
        model.table[:, model.cols(kind)] = table
