"""Subcommand: make-mask (a static mask file for a model; its grid point is stored in the file)."""
from __future__ import annotations

from ..cli import args_config
from ..defaults import schema_default
from .run import SOURCES
from .select import PRUNE_STYLES, UNITS


def cmd_make_mask(args):
    from .run import make_mask

    mask = make_mask(args.model, args.out, args.sparsity, kind=args.kind, style=args.style, units=args.units,
                     placement=args.placement, seed=args.seed, config=args_config(args))
    print(f"mask {args.out}: nominal sparsity {args.sparsity}; fraction pruned over all layers "
          f"(layers <= {args.placement} kept) {mask.sparsity()}")


def register(sub) -> None:
    p = sub.add_parser("make-mask", help="a static mask file (safetensors) for a model")
    p.add_argument("--model", required=True, help="local model folder (config.json) or cached hub id")
    p.add_argument("--kind", default="random", help=f"mask source: {', '.join(SOURCES)}")
    p.add_argument("--sparsity", type=float, required=True)
    p.add_argument("--style", default=schema_default("masks.style"), choices=PRUNE_STYLES)
    p.add_argument("--units", default=schema_default("masks.units"), choices=UNITS, help="prune heads, neurons or both")
    p.add_argument("--placement", type=int, default=schema_default("masks.placement"),
                   help="layers 0..placement stay dense")
    p.add_argument("--seed", type=int, default=schema_default("seed"))
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_make_mask)
