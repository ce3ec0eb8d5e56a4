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

from ..io import atomic_path, write_meta


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


def input_dependence(scores: np.ndarray, out_csv, out_png, title: str = "", seed: int = 0,
                     meta_config: dict | None = None) -> dict:
    """Write the per-head CSV and the figure; returns summary numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    cmap = plt.get_cmap("viridis", L)
    x = np.arange(L * H)
    for ax, vals, rr, pp, lab in ((axes[0], rv, ref["random_rank_var"], ref["powerlaw_rank_var_sim"],
                                   "rank variance across inputs"),
                                  (axes[1], hv, ref["random_hist_var_sim"], ref["powerlaw_hist_var_sim"],
                                   "rank-histogram variance (authors' statistic)")):
        for l in range(L):
            ax.scatter(x[l * H:(l + 1) * H], vals[l], s=10, color=cmap(l))
            ax.axvspan(l * H, (l + 1) * H, color=cmap(l), alpha=0.08, lw=0)
        ax.axhline(rr, color="firebrick", ls="--", label="random")
        ax.axhline(pp, color="tab:blue", ls=":", label="power-law (shuffled)")
        ax.set_xlabel("head (ordered by layer)")
        ax.set_ylabel(lab)
        if vals.min() > 0:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(title or f"input dependence of head importance ({N} inputs)")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, L - 1))
    fig.colorbar(sm, ax=axes, label="layer")
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(fig)
    summary = {"n_inputs": N, "layers": L, "heads": H, "mean_rank_var": float(rv.mean()),
               "mean_rank_var_by_layer": rv.mean(1).tolist(), **ref}
    write_meta(out_csv, config=dict(meta_config or {}, summary=summary), seed=seed)
    write_meta(out_png, config=dict(meta_config or {}, summary=summary), seed=seed)
    return summary
