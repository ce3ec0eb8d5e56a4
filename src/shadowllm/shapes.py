"""Real OPT and Llama-family model shapes (from the released configs), for random-weight latency benchmarks.

Torch-free data at the package root: the config, the predictor FLOPs table and the sparse decoder read it.

A size spec is a name, optionally truncated to its first k decoder layers: "opt-1.3b", "opt-1.3b_L4"
(or "opt-1.3b:L4"), "llama-3-8b_L4". Truncation keeps every per-layer shape and the embeddings / LM head, so per-layer
timings are those of the full model; the roofline is computed for the truncated model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int = 50272
    max_pos: int = 2048
    word_embed_proj_dim: int | None = None  # None = hidden
    pre_ln: bool = True
    family: str = "opt"                     # "opt" (LayerNorm, learned positions, ReLU) | "llama"
    kv_heads: int | None = None             # None = heads (no grouped-query attention)
    rope_theta: float = 10000.0
    tied: bool = True                       # LM head tied to the embeddings

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def params_b(self) -> float:
        """Billions of parameters (decoder layers + embeddings)."""
        d, f, dh = self.hidden, self.ffn, self.head_dim
        if self.family == "llama":
            kv = self.kv_heads or self.heads
            per_layer = 2 * d * self.heads * dh + 2 * d * kv * dh + 3 * d * f + 2 * d
            emb = self.vocab * d * (1 if self.tied else 2) + d
            return (self.layers * per_layer + emb) / 1e9
        per_layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
        emb = self.vocab * (self.word_embed_proj_dim or d) + (self.max_pos + 2) * d
        return (self.layers * per_layer + emb) / 1e9


OPT_SHAPES: dict[str, ModelShape] = {s.name: s for s in [
    ModelShape("opt-125m", 768, 12, 12, 3072),
    ModelShape("opt-350m", 1024, 24, 16, 4096, word_embed_proj_dim=512, pre_ln=False),
    ModelShape("opt-1.3b", 2048, 24, 32, 8192),
    ModelShape("opt-2.7b", 2560, 32, 32, 10240),
    ModelShape("opt-6.7b", 4096, 32, 32, 16384),
    ModelShape("opt-13b", 5120, 40, 40, 20480),
    ModelShape("opt-30b", 7168, 48, 56, 28672),
    ModelShape("opt-66b", 9216, 64, 72, 36864),
]}

LLAMA_SHAPES: dict[str, ModelShape] = {s.name: s for s in [
    ModelShape("smollm2-135m", 576, 30, 9, 1536, vocab=49152, max_pos=8192, family="llama", kv_heads=3,
               rope_theta=100000.0),
    ModelShape("llama-3.2-1b", 2048, 16, 32, 8192, vocab=128256, max_pos=131072, family="llama", kv_heads=8,
               rope_theta=500000.0),
    ModelShape("llama-2-7b", 4096, 32, 32, 11008, vocab=32000, max_pos=4096, family="llama", tied=False),
    ModelShape("llama-3-8b", 4096, 32, 32, 14336, vocab=128256, max_pos=8192, family="llama", kv_heads=8,
               rope_theta=500000.0, tied=False),
]}


def all_shapes() -> dict[str, ModelShape]:
    """Every known shape by name (read at call time, so a test may add one)."""
    return {**OPT_SHAPES, **LLAMA_SHAPES}


_SPEC = re.compile(r"^(?P<name>.+?)(?:[:_]L(?P<layers>\d+))?$")


def parse_size(spec: str) -> ModelShape:
    """'opt-1.3b', '1.3b' or 'llama-3-8b_L4' -> ModelShape (layers truncated). Rejects unknown and post-LN sizes."""
    m = _SPEC.match(spec.strip())
    name = m.group("name").lower() if m else spec
    SHAPES = all_shapes()
    if name not in SHAPES and "opt-" + name in SHAPES:
        name = "opt-" + name
    if name not in SHAPES:
        raise ValueError(f"unknown model size {spec!r}; expected one of {sorted(SHAPES)} "
                         f"(optionally with _L<k> to keep the first k layers)")
    shape = SHAPES[name]
    if not shape.pre_ln:
        raise ValueError(f"{name} is post-LN (do_layer_norm_before=False) with a 512-wide projected "
                         f"embedding; the sparse decoder supports pre-LN OPT only")
    if m and m.group("layers"):
        k = int(m.group("layers"))
        if not 1 <= k <= shape.layers:
            raise ValueError(f"{spec!r}: layer count must be in 1..{shape.layers}")
        shape = replace(shape, layers=k)
    return shape
