"""How well predicted scores rank units: per-example Spearman rho, Kendall tau-b and top-k recall.

Every metric is computed per example and averaged over examples, separately for heads and neurons, over the
whole model (all layers > placement flattened per example) and per layer. Only the ranking matters, so the
predictions need no normalisation; the TRUE scores are first mapped into the space the predictor ranks in
(`normalize`: raw, layer or example, `normalize.normalize_scores`, each kind on its own), so that a predictor
trained on per-layer targets is scored against per-layer truth. Per-layer scopes and recall (a local top-k) are
the same in every space, and `example` (a rank) keeps raw's order; the model scope's Spearman and Kendall differ
under `layer`. Spearman is computed here (average-tie ranks in torch); Kendall tau-b uses scipy.
"""
from __future__ import annotations

import numpy as np
import torch

from .normalize import avg_ranks, check_mode, normalize_scores

METRICS = ("spearman", "kendall", "recall")


def static_scores(y_train: torch.Tensor) -> torch.Tensor:
    """Mean target over training examples, [N, L, U] -> [L, U]: the static design's one ranking."""
    if y_train.dim() != 3 or y_train.shape[0] == 0:
        raise ValueError(f"training targets must be [N >= 1, L, U], got shape {tuple(y_train.shape)}")
    return y_train.double().mean(0).float()


def spearman(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Spearman rho per row of [N, M] -> [N]; NaN for a row whose pred or true is constant."""
    rp, rt = avg_ranks(pred), avg_ranks(true)
    rp, rt = rp - rp.mean(-1, keepdim=True), rt - rt.mean(-1, keepdim=True)
    return (rp * rt).sum(-1) / (rp.square().sum(-1) * rt.square().sum(-1)).sqrt()


def kendall(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Kendall tau-b per row of [N, M] -> [N] (scipy's O(M log M) implementation)."""
    from scipy.stats import kendalltau

    p, t = pred.double().numpy(), true.double().numpy()
    return torch.tensor([kendalltau(p[i], t[i]).statistic for i in range(len(p))], dtype=torch.float64)


def keep_count(sparsity: float, n_units: int) -> int:
    """Units kept per layer at `sparsity`: round((1 - s) * U), as the local top-k masks keep."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity!r} is outside [0, 1)")
    k = int(round((1 - sparsity) * n_units))
    if k < 1:
        raise ValueError(f"sparsity {sparsity} keeps no unit of {n_units} (expected round((1 - s) * U) >= 1)")
    return k


def topk_hits(pred: torch.Tensor, true: torch.Tensor, k: int) -> torch.Tensor:
    """|predicted top-k ∩ true top-k| per row of [N, U] -> [N]; ties in `true` at the k-th value are
    broken in the prediction's favour (any such unit may be in the true top-k)."""
    picked = pred.topk(k, -1).indices                                            # [N, k]
    kth = true.topk(k, -1).values[:, -1:]                                        # [N, 1]
    tp = true.gather(-1, picked)                                                 # [N, k]
    above = (tp > kth).sum(-1)
    slots = k - (true > kth).sum(-1)                                             # true top-k places at the tie
    return above + torch.minimum((tp == kth).sum(-1), slots)


def recall(pred: torch.Tensor, true: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Local top-k recall per example of [N, L', U] -> [N]: hits summed over layers / (k * L')."""
    N, L, U = true.shape
    k = keep_count(sparsity, U)
    hits = topk_hits(pred.reshape(N * L, U).double(), true.reshape(N * L, U).double(), k)
    return hits.view(N, L).sum(-1).double() / (k * L)


def _chunked(fn, pred: torch.Tensor, true: torch.Tensor, elems: int = 1 << 22) -> torch.Tensor:
    """fn over row chunks of [N, M] -> [N], so ranking a whole model's neurons stays within memory."""
    step = max(1, elems // max(1, pred.shape[-1]))
    return torch.cat([fn(pred[i:i + step], true[i:i + step]) for i in range(0, len(pred), step)])


def _values(unit, scope, layer, pred, true, sparsities, metrics) -> list[tuple[tuple, torch.Tensor]]:
    """Per-example values [N] for one unit kind and scope, keyed (unit, scope, layer, metric, sparsity);
    pred/true [N, L', U] (L' = 1 for one layer)."""
    flat_p, flat_t = pred.flatten(1), true.flatten(1)                            # [N, L'*U]
    out = []
    for name, fn in (("spearman", spearman), ("kendall", kendall)):
        if name in metrics:
            out.append(((unit, scope, layer, name, None), _chunked(fn, flat_p, flat_t)))
    if "recall" in metrics:
        out += [((unit, scope, layer, "recall", s), recall(pred, true, s)) for s in sparsities]
    return out


class MetricAccumulator:
    """Metrics over examples added chunk by chunk (so a big model's held-out set need not fit in memory);
    `rows()` gives the same rows as `evaluate_predictions` on all chunks at once."""

    def __init__(self, H: int, sparsities=(0.5,), placement: int = 0, metrics=METRICS, normalize: str | None = None):
        """normalize: the space the true scores are mapped into before scoring (None: as given)."""
        bad = [m for m in metrics if m not in METRICS]
        if bad:
            raise ValueError(f"metrics {bad} are not among {METRICS}")
        self.H, self.sparsities, self.placement, self.metrics = H, tuple(sparsities), placement, metrics
        # raw and example keep the order within an example, so every (rank-based) metric is that of the scores as
        # given; only layer (a map per layer) changes the model scope
        self.normalize = None if normalize in (None, "raw") or check_mode(normalize) == "example" else normalize
        self.values: dict[tuple, list[torch.Tensor]] = {}
        self.n = 0

    def add(self, pred_scores: torch.Tensor, true_scores: torch.Tensor) -> None:
        """Score one chunk: pred_scores, true_scores [N, L, U], U = H + F (heads first)."""
        p, t = torch.as_tensor(pred_scores), torch.as_tensor(true_scores)
        if p.shape != t.shape or p.dim() != 3:
            raise ValueError(f"pred_scores {tuple(p.shape)} and true_scores {tuple(t.shape)} must both be [N, L, U]")
        N, L, U = t.shape
        H, placement = self.H, self.placement
        if N == 0:
            raise ValueError(f"no example to evaluate (shape {tuple(t.shape)})")
        if not 0 <= H <= U:
            raise ValueError(f"H={H!r} heads does not fit U={U} units per layer (expected 0..{U})")
        if not 0 <= placement < L - 1:
            raise ValueError(f"placement layer {placement!r} leaves no layer to score (expected 0..{L - 2})")
        for s in self.sparsities:
            for n in {H, U - H} - {0}:
                keep_count(s, n)
        for name, x in (("pred_scores", p), ("true_scores", t)):
            if not torch.isfinite(x).all():
                i = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0])
                raise ValueError(f"{name} contains NaN or inf (first at example {self.n + i})")
        first = placement + 1
        for unit, sl in (("heads", slice(0, H)), ("neurons", slice(H, U))):
            if sl.stop == sl.start:
                continue
            tk = t[..., sl] if self.normalize is None else normalize_scores(t[..., sl], self.normalize, placement)
            pu, tu = p[:, first:, sl].double(), tk[:, first:].double()                # [N, L', U_kind]
            got = _values(unit, "model", -1, pu, tu, self.sparsities, self.metrics)
            for l in range(first, L):
                i = l - first
                got += _values(unit, "layer", l, pu[:, i:i + 1], tu[:, i:i + 1], self.sparsities, self.metrics)
            for key, v in got:
                self.values.setdefault(key, []).append(v)
        self.n += N

    def rows(self) -> list[dict]:
        """Rows {unit, scope, layer, metric, sparsity, value}: means over examples; an example whose true or
        predicted scores are all equal has no rank correlation and is left out of the rank means."""
        if not self.n:
            raise ValueError("no example to evaluate")
        out = []
        for (unit, scope, layer, metric, sp), vs in self.values.items():
            v = torch.cat(vs)
            value = (v.nanmean() if metric != "recall" else v.mean()).item()
            out.append({"unit": unit, "scope": scope, "layer": layer, "metric": metric, "sparsity": sp,
                        "value": value})
        return out


def evaluate_predictions(pred_scores: torch.Tensor, true_scores: torch.Tensor, H: int, sparsities=(0.5,),
                         placement: int = 0, metrics=METRICS, normalize: str | None = None) -> list[dict]:
    """Rows {unit, scope ('model'|'layer'), layer (-1 for model), metric, sparsity (recall only), value}.

    pred_scores, true_scores: [N, L, U], U = H + F (heads first). Layers 0..placement are not scored. normalize:
    the space the predictions rank in (raw, layer, example); the true scores are mapped into it first.
    """
    acc = MetricAccumulator(H, sparsities, placement, metrics, normalize)
    acc.add(pred_scores, true_scores)
    return acc.rows()


def mean_metric(rows: list[dict], metric: str = "spearman", unit: str | None = None, scope: str = "model",
                sparsity: float | None = None) -> float:
    """Mean value of the matching rows (e.g. model-scope Spearman over both unit kinds)."""
    vals = [r["value"] for r in rows if r["metric"] == metric and r["scope"] == scope
            and (unit is None or r["unit"] == unit) and (sparsity is None or r["sparsity"] == sparsity)]
    if not vals:
        raise ValueError(f"no row with metric={metric!r}, unit={unit!r}, scope={scope!r}, sparsity={sparsity!r}")
    return float(np.mean(vals))
