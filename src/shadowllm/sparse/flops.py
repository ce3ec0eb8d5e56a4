"""Predictor cost per token at the OPT shapes: DejaVu's per-layer predictors against ShadowLLM's single one."""
from __future__ import annotations

from ..shapes import OPT_SHAPES

FLOPS_FIELDS = ["model", "layers", "hidden", "heads", "ffn", "p", "dejavu_macs", "shadowllm_macs",
                "dejavu_over_shadowllm", "model_macs_per_token", "dejavu_pct_of_model", "shadowllm_pct_of_model"]


def predictor_flops_rows(p: int = 1024, names=None):
    """DejaVu N(E*p + p(H+F)) vs ShadowLLM E*p + p*N(H+F) multiply-accumulates per token (the paper's formulas)."""
    rows = []
    for name, s in OPT_SHAPES.items():
        if names and name not in names:
            continue
        N, E, H, Fn = s.layers, s.hidden, s.heads, s.ffn
        dv = N * (E * p + p * (H + Fn))
        sh = E * p + p * N * (H + Fn)
        model = N * (4 * E * E + 2 * E * Fn)
        rows.append(dict(model=name, layers=N, hidden=E, heads=H, ffn=Fn, p=p, dejavu_macs=dv, shadowllm_macs=sh,
                         dejavu_over_shadowllm=round(dv / sh, 4), model_macs_per_token=model,
                         dejavu_pct_of_model=round(100 * dv / model, 3),
                         shadowllm_pct_of_model=round(100 * sh / model, 3)))
    return rows
