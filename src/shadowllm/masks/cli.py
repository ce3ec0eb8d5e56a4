"""Subcommand: make-mask (a static mask file for a model; its grid point is stored in the file)."""
from __future__ import annotations

from .. import provenance
from .select import PRUNE_STYLES, UNITS

SOURCES = ("random",)  # static mask sources this command builds (predicted masks come from predictors)


def mask_point(args) -> dict:
    """The grid point a mask file stands for: one entry per axis."""
    return {"source": args.kind, "criterion": "none", "placement": args.placement, "style": args.style,
            "units": args.units, "protocol": "none", "sparsity": args.sparsity}


def cmd_make_mask(args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..adapter import get_adapter
    from ..cli import args_config
    from ..loading import resolve_source
    from .select import mask_from_scores, random_scores

    if args.kind not in SOURCES:
        raise ValueError(f"mask kind {args.kind!r} is not one of {list(SOURCES)}")
    src, local = resolve_source(args.model)  # clear error, no waiting on an unreachable hub
    with torch.device("meta"):  # shapes only
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src, local_files_only=local))
    ad = get_adapter(model)
    hs, ns = random_scores(ad, args.seed)
    mask = mask_from_scores(hs, ns, args.sparsity, args.style, units=args.units, placement=args.placement)
    point = mask_point(args)
    mask.save(args.out, metadata={**point, "seed": args.seed})
    provenance.write_meta(args.out, config=args_config(args), seed=args.seed, point=point,
                          achieved=mask.sparsity())
    print(f"mask {args.out}: nominal sparsity {args.sparsity}; fraction pruned over all layers "
          f"(layers <= {args.placement} kept) {mask.sparsity()}")


def register(sub) -> None:
    p = sub.add_parser("make-mask", help="a static mask file (safetensors) for a model")
    p.add_argument("--model", required=True, help="local model folder (config.json) or cached hub id")
    p.add_argument("--kind", default="random", help=f"mask source: {', '.join(SOURCES)}")
    p.add_argument("--sparsity", type=float, required=True)
    p.add_argument("--style", default="global", choices=PRUNE_STYLES)
    p.add_argument("--units", default="both", choices=UNITS, help="prune heads, neurons or both")
    p.add_argument("--placement", type=int, default=0, help="layers 0..placement stay dense")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_make_mask)
