"""Intervals on the study's comparisons: a paired bootstrap over documents (perplexity) and questions (accuracy).

Two grid points are compared on the same documents: each replicate resamples the documents once (per task for
accuracy) and scores both points on that resample, so what the two share (a hard document) cancels. Points that
differ only in a pooled axis (the predictor's seed) are one arm: each replicate also resamples that arm's seeds,
so the interval holds the seed-to-seed spread as well as the sampling of documents.

Perplexity is compared as a ratio, ppl(a) / ppl(b) (a word perplexity is exp(-sum ll / sum words) over the
documents); accuracy as a difference of mean accuracy (the mean over tasks of each task's mean, as the tables
report it). Intervals are 95 % percentile intervals of `REPS` replicates drawn from a fixed seed, so a report
renders to the same bytes every time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

REPS = 2000
LEVEL = 0.95
SEED = 0
PPL_METRICS = ("word_perplexity", "byte_perplexity")
DIGITS = 12                 # estimates and bounds are rounded here: sums in another order differ by ~1e-16
POOLED = ("seed",)          # axes whose values are replicates of one arm, not different arms


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95 % interval; for a comparison, `null` is the value of no difference."""
    value: float
    lo: float
    hi: float
    n: int                  # documents or questions resampled
    seeds: tuple = (1,)     # seeds pooled in each arm
    null: float | None = None

    def side(self) -> int:
        """+1: the interval lies above the null, -1: below, 0: it holds the null (not resolved)."""
        if self.null is None:
            raise ValueError("an interval on one point has no null to compare with")
        return 1 if self.lo > self.null else -1 if self.hi < self.null else 0

    def fmt(self, kind: str) -> str:
        """'ratio 0.93 [0.89, 0.97]' / 'diff +0.050 [+0.010, +0.090]' / '61.2 [58.0, 64.9]'."""
        if kind == "ratio":
            return f"ratio {self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"
        if kind == "diff":
            return f"diff {self.value:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"
        f = (lambda x: f"{x:,.0f}") if abs(self.value) >= 100 else (lambda x: f"{x:.3g}")
        return f"{f(self.value)} [{f(self.lo)}, {f(self.hi)}]"


def _match(samples: pd.DataFrame, axes: dict) -> pd.DataFrame:
    d = samples
    for k, v in axes.items():
        d = d[d[k].astype(str) == str(v)]
    return d


def arm(samples: pd.DataFrame, metric: str, **axes) -> pd.DataFrame:
    """The rows of one arm: the grid points matching `axes`, the right task kind for `metric`. Points that differ
    in an axis other than the pooled ones are refused, naming the axis (the caller must fix it)."""
    from ..layout.grid import AXES

    d = _match(samples, axes)
    col = "ll" if metric in PPL_METRICS else metric
    d = d[d[col].notna()] if col in d else d.iloc[0:0]
    free = [a for a in AXES if a in d and a not in axes and a not in POOLED and a != "model" and d[a].nunique() > 1]
    if free:
        raise ValueError(f"the points matching {axes} differ in {free} "
                         f"({ {a: sorted(map(str, d[a].unique())) for a in free} }); name them")
    return d


def _by_seed(d: pd.DataFrame) -> list[pd.DataFrame]:
    """An arm's rows per seed (one part for a table without the seed axis)."""
    return [g for _, g in d.groupby("seed", sort=True)] if "seed" in d else [d]


def _seed_matrix(d: pd.DataFrame, col: str, keys: pd.MultiIndex) -> np.ndarray:
    """[seeds, documents] of column `col`, documents in the order of `keys` (task, doc_id)."""
    rows = []
    for g in _by_seed(d):
        s = g.set_index(["task", "doc_id"])[col].astype(float)
        rows.append(s.reindex(keys).to_numpy())
    return np.stack(rows)


def _counts(rng: np.random.Generator, tasks: np.ndarray, reps: int) -> np.ndarray:
    """[reps, n] resampling counts of n documents, drawn within each task (each task keeps its size)."""
    C = np.zeros((reps, len(tasks)))
    for t in np.unique(tasks):
        idx = np.nonzero(tasks == t)[0]
        draw = rng.integers(0, len(idx), size=(reps, len(idx)))
        np.add.at(C, (np.arange(reps)[:, None], idx[draw]), 1.0)
    return C


def _stat(metric: str, C: np.ndarray, M: np.ndarray, w: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """Per replicate and seed [reps, seeds]: log perplexity, or mean over tasks of the task's mean accuracy."""
    if metric in PPL_METRICS:
        return -(C @ M.T) / (C @ w)[:, None]
    out = 0.0
    uniq = np.unique(tasks)
    for t in uniq:
        sel = tasks == t
        out = out + (C[:, sel] @ M[:, sel].T) / C[:, sel].sum(1, keepdims=True)
    return out / len(uniq)


def _pick(rng: np.random.Generator, S: np.ndarray) -> np.ndarray:
    """[reps] mean over a resample (with replacement) of each replicate's seed columns; one seed: the column."""
    if S.shape[1] == 1:
        return S[:, 0]
    pick = rng.integers(0, S.shape[1], size=S.shape)
    return np.take_along_axis(S, pick, 1).mean(1)


def _aligned(arms: list[pd.DataFrame], metric: str) -> tuple[pd.MultiIndex, list[np.ndarray], np.ndarray, np.ndarray]:
    """The documents every arm (and every seed of it) scored, and per arm the [seeds, docs] matrix."""
    col = "ll" if metric in PPL_METRICS else metric
    sets = []
    for d in arms:
        per_seed = [set(zip(g.task, g.doc_id)) for g in _by_seed(d)]
        sets.append(set.intersection(*per_seed) if per_seed else set())
    common = sorted(set.intersection(*sets)) if sets else []
    if not common:
        raise ValueError("the points share no document")
    keys = pd.MultiIndex.from_tuples(common, names=["task", "doc_id"])
    mats = [_seed_matrix(d, col, keys) for d in arms]
    unit = "words" if metric == "word_perplexity" else "bytes"
    w = (arms[0].drop_duplicates(["task", "doc_id"]).set_index(["task", "doc_id"])[unit].astype(float)
         .reindex(keys).to_numpy()) if metric in PPL_METRICS else np.ones(len(keys))
    return keys, mats, w, keys.get_level_values("task").to_numpy()


def _finish(metric: str, est: float, reps: np.ndarray, n: int, seeds: tuple, null) -> Interval:
    a = (1 - LEVEL) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    if metric in PPL_METRICS:
        est, lo, hi = float(np.exp(est)), float(np.exp(lo)), float(np.exp(hi))
    est, lo, hi = (round(float(x), DIGITS) for x in (est, lo, hi))   # no float noise around an exact tie
    return Interval(est, lo, hi, n, seeds, null)


def point(samples: pd.DataFrame, metric: str, reps: int = REPS, seed: int = SEED, **axes) -> Interval | None:
    """One grid point's value (perplexity, or mean accuracy) with its bootstrap interval; None when not run."""
    d = arm(samples, metric, **axes)
    if d.empty:
        return None
    keys, (M,), w, tasks = _aligned([d], metric)
    rng = np.random.default_rng(seed)
    ones = np.ones((1, len(keys)))
    est = float(_stat(metric, ones, M, w, tasks).mean())
    S = _stat(metric, _counts(rng, tasks, reps), M, w, tasks)
    return _finish(metric, est, _pick(rng, S), len(keys), (M.shape[0],), None)


def paired(samples: pd.DataFrame, metric: str, a: dict, b: dict, reps: int = REPS,
           seed: int = SEED) -> Interval | None:
    """a against b on the documents both scored: perplexity ratio ppl(a) / ppl(b) (null 1), or accuracy difference
    acc(a) - acc(b) (null 0), with the paired bootstrap interval; None when either point was not run."""
    da, db = arm(samples, metric, **a), arm(samples, metric, **b)
    if da.empty or db.empty:
        return None
    keys, (Ma, Mb), w, tasks = _aligned([da, db], metric)
    rng = np.random.default_rng(seed)
    ones = np.ones((1, len(keys)))
    est = float(_stat(metric, ones, Ma, w, tasks).mean() - _stat(metric, ones, Mb, w, tasks).mean())
    C = _counts(rng, tasks, reps)
    diff = _pick(rng, _stat(metric, C, Ma, w, tasks)) - _pick(rng, _stat(metric, C, Mb, w, tasks))
    null = 1.0 if metric in PPL_METRICS else 0.0
    return _finish(metric, est, diff, len(keys), (Ma.shape[0], Mb.shape[0]), null)


def _dense_questions(samples: pd.DataFrame, task: str) -> pd.DataFrame:
    """The dense point's questions of one task, one row each."""
    d = _match(samples, {"source": "dense", "task": task})
    return d[d.acc.notna()].drop_duplicates("doc_id")


def majority_baseline(samples: pd.DataFrame, task: str) -> tuple[float, int] | None:
    """(accuracy of always giving the most frequent gold answer text, e.g. always "No", or of guessing where no
    answer repeats: the larger; questions) of one task, on the dense point's questions. A log-likelihood scorer
    never sees a choice's position, so position is no baseline."""
    d = _dense_questions(samples, task)
    if d.empty:
        return None
    by_label = float(d.label.astype(str).value_counts(normalize=True).iloc[0])
    chance = float((1.0 / d.n_choices.astype(float)).mean()) if "n_choices" in d and d.n_choices.notna().all() \
        else 0.0
    return max(by_label, chance), len(d)


def above_majority(samples: pd.DataFrame, task: str) -> tuple[bool, float, float, float] | None:
    """(dense beats the majority-class baseline by two standard errors, dense acc, baseline, 2 SE) for one task."""
    base, d = majority_baseline(samples, task), _dense_questions(samples, task)
    if base is None:
        return None
    acc, n = float(d.acc.astype(float).mean()), len(d)
    se2 = 2 * (max(acc * (1 - acc), 1.0 / n) / n) ** 0.5
    return acc - base[0] > se2, acc, base[0], se2


def mean_interval(x: np.ndarray, reps: int = REPS, seed: int = SEED) -> Interval:
    """The mean of paired differences x with its bootstrap interval over the pairs (null 0)."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        raise ValueError("no pairs to average")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(reps, x.size))].mean(1)
    a = (1 - LEVEL) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return Interval(float(x.mean()), float(lo), float(hi), int(x.size), null=0.0)


def rank_agreement(ref: np.ndarray, ours: np.ndarray, reps: int = 10000,
                   seed: int = SEED) -> tuple[float, float, float]:
    """(Spearman rank correlation r of ours with ref, permutation p-values that an ordering at random agrees at
    least as well (P[null >= r]) and at most as well (P[null <= r])). Exact over every ordering up to 8 items."""
    import itertools

    from scipy.stats import rankdata

    rr, ro = rankdata(ref), rankdata(ours)

    def rho(b):
        return float(np.corrcoef(rr, b)[0, 1])

    r = rho(ro)
    if len(ro) <= 8:
        null = np.array([rho(np.asarray(p)) for p in itertools.permutations(ro)])
    else:
        rng = np.random.default_rng(seed)
        null = np.array([rho(rng.permutation(ro)) for _ in range(reps)])
    return r, float((null >= r - 1e-12).mean()), float((null <= r + 1e-12).mean())
