"""A static mask file for a model from its shapes alone, its grid point stored in the file (make-mask)."""
from __future__ import annotations

from .. import provenance

SOURCES = ("random",)  # static mask sources built here (predicted masks come from predictors)


def mask_point(kind: str, sparsity: float, style: str, units: str, placement: int) -> dict:
    """The grid point a mask file stands for: one entry per axis."""
    return {"source": kind, "criterion": "none", "placement": placement, "style": style, "units": units,
            "protocol": "none", "sparsity": sparsity}


def make_mask(model: str, out, sparsity: float, kind: str = "random", style: str = "global", units: str = "both",
              placement: int = 0, seed: int = 0, config: dict | None = None):
    """Build the mask from the model's config (no weights are read) and write it with its point and provenance."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..adapter import get_adapter
    from ..loading import resolve_source
    from .select import mask_from_scores, random_scores

    if kind not in SOURCES:
        raise ValueError(f"mask kind {kind!r} is not one of {list(SOURCES)}")
    src, local = resolve_source(model)  # clear error, no waiting on an unreachable hub
    with torch.device("meta"):  # shapes only
        lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src, local_files_only=local))
    ad = get_adapter(lm)
    hs, ns = random_scores(ad, seed)
    mask = mask_from_scores(hs, ns, sparsity, style, units=units, placement=placement)
    point = mask_point(kind, sparsity, style, units, placement)
    mask.save(out, metadata={**point, "seed": seed})
    provenance.write_meta(out, config=config or {}, seed=seed, point=point, achieved=mask.sparsity())
    return mask
