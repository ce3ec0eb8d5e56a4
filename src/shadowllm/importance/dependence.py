"""Input dependence of head importance (the paper's Figure 2).

For every example the L*H heads are ranked by score over the whole model (rank 0 = most important);
per head we report the variance of its rank across examples (population variance):
  - input-independent importance (same order for every input): variance 0;
  - random importance (every order equally likely): variance (M^2 - 1) / 12, M = L*H ("random" line).
The authors' own plot (ablation_powerlaw/powerlaw_ablation.py) used a different statistic: the variance,
over rank positions, of a head's rank-histogram counts ("hist_var" here; HIGH = input independent).
Both are written. Their "power-law" reference draws M scores from a power law (a = 4), shuffles them
for each of 1000 samples and applies the same statistic; because the shuffle makes every head's rank
uniform, under rank variance it equals the random reference in expectation (we report it anyway).
"""
from __future__ import annotations

import csv

import numpy as np

from ..io import atomic_path
from ..provenance import write_meta


def ranks(scores: np.ndarray) -> np.ndarray:
    """scores [N, L, H] -> global ranks [N, L*H] (0 = highest score; ties by index)."""
    flat = scores.reshape(scores.shape[0], -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    r = np.empty_like(order)
    np.put_along_axis(r, order, np.arange(flat.shape[1])[None].repeat(flat.shape[0], 0), axis=1)
    return r


def rank_variance(scores: np.ndarray) -> np.ndarray:
    """[N, L, H] -> [L, H] variance across examples of each head's global rank."""
    return ranks(scores).var(axis=0).reshape(scores.shape[1:])


def hist_variance(scores: np.ndarray) -> np.ndarray:
    """Authors' statistic: [L, H] variance over rank positions of each head's rank-count histogram."""
    r = ranks(scores)
    N, M = r.shape
    counts = np.zeros((M, M))
    np.add.at(counts, (np.arange(M)[None].repeat(N, 0), r), 1)
    return counts.var(axis=1).reshape(scores.shape[1:])


def references(M: int, n_samples: int, seed: int = 0, alpha: float = 4.0) -> dict:
    """Random and power-law references under both statistics, simulated with n_samples inputs."""
    rng = np.random.default_rng(seed)
    rand = rng.random((n_samples, 1, M))
    vals = rng.power(alpha, M)
    vals = vals / vals.max()
    pl = np.stack([rng.permutation(vals) for _ in range(n_samples)])[:, None, :]
    return {"random_rank_var": (M * M - 1) / 12.0,
            "random_rank_var_sim": float(rank_variance(rand).mean()),
            "powerlaw_rank_var_sim": float(rank_variance(pl).mean()),
            "random_hist_var_sim": float(hist_variance(rand).mean()),
            "powerlaw_hist_var_sim": float(hist_variance(pl).mean())}


def input_dependence(scores: np.ndarray, out_csv, seed: int = 0, meta_config: dict | None = None,
                     inputs=None) -> dict:
    """Write the per-head CSV (statistics and reference rows); returns summary numbers."""
    if scores.ndim != 3 or scores.shape[0] < 2:
        raise ValueError(f"need per-example head scores [N >= 2, L, H], got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("head scores contain NaN or inf")
    N, L, H = scores.shape
    rv, hv = rank_variance(scores), hist_variance(scores)
    ref = references(L * H, N, seed)
    with atomic_path(out_csv, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", "head", "rank_var", "hist_var"])
            for l in range(L):
                for h in range(H):
                    w.writerow([l, h, f"{rv[l, h]:.6g}", f"{hv[l, h]:.6g}"])
            for k, v in ref.items():
                w.writerow([f"ref:{k}", "", f"{v:.6g}", ""])
    summary = {"n_inputs": N, "layers": L, "heads": H, "mean_rank_var": float(rv.mean()),
               "mean_rank_var_by_layer": rv.mean(1).tolist(), **ref}
    write_meta(out_csv, config=dict(meta_config or {}, summary=summary), seed=seed, inputs=inputs)
    return summary


def read_dependence(csv_path) -> tuple[np.ndarray, np.ndarray, dict]:
    """The CSV written by input_dependence -> (rank_var [L, H], hist_var [L, H], references)."""
    rows = list(csv.DictReader(open(csv_path, newline="")))
    ref = {r["layer"][4:]: float(r["rank_var"]) for r in rows if r["layer"].startswith("ref:")}
    per = [r for r in rows if not r["layer"].startswith("ref:")]
    L = 1 + max(int(r["layer"]) for r in per)
    H = 1 + max(int(r["head"]) for r in per)
    rv, hv = np.zeros((L, H)), np.zeros((L, H))
    for r in per:
        rv[int(r["layer"]), int(r["head"])] = float(r["rank_var"])
        hv[int(r["layer"]), int(r["head"])] = float(r["hist_var"])
    return rv, hv, ref
