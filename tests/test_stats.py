"""Intervals: the paired bootstrap against hand computations (a plain loop bootstrap, the normal approximation of a
mean difference, exact cancellation of what two arms share), and the seeds pooled into one arm."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shadowllm.report import stats

AX = dict(model="m", design="none", criterion="plainact", shots="0", placement=0, style="global", units="both",
          protocol="none", sparsity=0.5, normalize="raw", seed=0)


def docs(source, ll, words, task="corpus", **kw):
    return pd.DataFrame({**AX, "source": source, **kw, "task": task, "doc_id": np.arange(len(ll)), "ll": ll,
                         "words": words, "bytes": np.asarray(words) * 5, "acc": np.nan, "acc_norm": np.nan,
                         "gold": np.nan, "label": ""})


def questions(source, acc, task="qa", **kw):
    n = len(acc)
    return pd.DataFrame({**AX, "source": source, **kw, "task": task, "doc_id": np.arange(n), "ll": np.nan,
                         "words": np.nan, "bytes": np.nan, "acc": acc, "acc_norm": acc,
                         "gold": np.arange(n) % 2, "label": np.where(np.arange(n) % 2, "Yes", "No"),
                         "n_choices": 2})


def test_ratio_estimate_is_the_ratio_of_perplexities_and_what_both_share_cancels():
    rng = np.random.default_rng(1)
    words = rng.integers(50, 200, 40)
    ll = -words * rng.uniform(3, 6, 40)                          # documents of very different difficulty
    s = pd.concat([docs("static", ll, words), docs("predicted", ll - 0.1 * words, words)])
    iv = stats.paired(s, "word_perplexity", {"source": "predicted"}, {"source": "static"})
    ppl_a, ppl_b = np.exp(-(ll - 0.1 * words).sum() / words.sum()), np.exp(-ll.sum() / words.sum())
    assert iv.value == pytest.approx(ppl_a / ppl_b) and iv.value == pytest.approx(np.exp(0.1))
    # the arms differ by the same 0.1 nats a word in every document: every resample gives the same ratio
    assert iv.lo == pytest.approx(np.exp(0.1)) and iv.hi == pytest.approx(np.exp(0.1)) and iv.side() == 1
    same = stats.paired(s, "word_perplexity", {"source": "static"}, {"source": "static"})
    assert (same.lo, same.value, same.hi) == pytest.approx((1, 1, 1)) and same.side() == 0


def test_ratio_interval_matches_a_plain_loop_bootstrap():
    rng = np.random.default_rng(2)
    words = rng.integers(50, 200, 30)
    la, lb = -words * rng.uniform(3, 6, 30), -words * rng.uniform(3, 6, 30)
    s = pd.concat([docs("a", la, words), docs("b", lb, words)])
    iv = stats.paired(s, "word_perplexity", {"source": "a"}, {"source": "b"}, reps=4000)
    loop = np.random.default_rng(7)
    ratios = []
    for _ in range(4000):
        i = loop.integers(0, 30, 30)
        ratios.append(np.exp(-(la[i].sum() - lb[i].sum()) / words[i].sum()))
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    assert iv.lo == pytest.approx(lo, rel=0.02) and iv.hi == pytest.approx(hi, rel=0.02)


def test_accuracy_difference_interval_is_the_normal_one_for_many_questions():
    rng = np.random.default_rng(3)
    a = (rng.random(800) < 0.7).astype(float)
    b = np.where(rng.random(800) < 0.8, a, 1 - a)               # b agrees with a on 80 % of questions
    s = pd.concat([questions("a", a), questions("b", b)])
    iv = stats.paired(s, "acc", {"source": "a"}, {"source": "b"})
    d = a - b
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    assert iv.value == pytest.approx(d.mean())
    assert (iv.hi - iv.lo) / 2 == pytest.approx(half, rel=0.12)


def test_mean_accuracy_over_tasks_is_the_mean_of_task_means_and_resamples_within_tasks():
    s = pd.concat([questions("a", np.ones(10), task="t1"), questions("a", np.zeros(30), task="t2"),
                   questions("b", np.zeros(10), task="t1"), questions("b", np.zeros(30), task="t2")])
    iv = stats.paired(s, "acc", {"source": "a"}, {"source": "b"})
    # t1: 1 vs 0, t2: 0 vs 0 -> mean of task means 0.5 (not 10/40), the same in every resample
    assert (iv.value, iv.lo, iv.hi) == pytest.approx((0.5, 0.5, 0.5))
    one = stats.point(s, "acc", source="a")
    assert one.value == pytest.approx(0.5) and one.n == 40


def test_seeds_are_one_arm_and_their_spread_widens_the_interval():
    words = np.full(50, 100)
    base = -400.0 * np.ones(50) + np.random.default_rng(4).normal(0, 5, 50)
    b = docs("static", base, words)
    one = pd.concat([b, docs("predicted", base - 10, words)])
    three = pd.concat([b] + [docs("predicted", base - off, words, seed=k) for k, off in enumerate((0, 10, 20))])
    iv1 = stats.paired(one, "word_perplexity", {"source": "predicted"}, {"source": "static"})
    iv3 = stats.paired(three, "word_perplexity", {"source": "predicted"}, {"source": "static"})
    assert iv1.value == pytest.approx(iv3.value) and iv3.seeds == (3, 1)
    assert iv1.hi - iv1.lo < 1e-9 < iv3.hi - iv3.lo                  # the seeds' 0..0.2 nats/word shows up
    assert iv3.lo == pytest.approx(1.0) and iv3.hi == pytest.approx(np.exp(0.2))


def test_an_arm_that_names_too_little_is_refused_by_axis():
    s = pd.concat([docs("static", -np.ones(3), np.ones(3)), docs("static", -np.ones(3), np.ones(3), units="heads")])
    with pytest.raises(ValueError, match=r"differ in \['units'\]"):
        stats.point(s, "word_perplexity", source="static")


def test_majority_baseline_counts_the_most_frequent_gold_answer():
    s = questions("dense", np.array([1, 1, 1, 0, 1, 0, 1, 1.0]))
    s["label"] = ["No", "No", "No", "Yes", "No", "No", "Yes", "No"]
    assert stats.majority_baseline(s, "qa") == (pytest.approx(6 / 8), 8)
    ok, acc, base, se2 = stats.above_majority(s, "qa")
    assert acc == pytest.approx(6 / 8) and not ok
    s["label"] = [f"answer {i}" for i in range(8)]            # no answer repeats: guessing among 2 is the floor
    assert stats.majority_baseline(s, "qa") == (pytest.approx(0.5), 8)


def test_rank_agreement_against_every_ordering():
    r, p_hi, p_lo = stats.rank_agreement(np.array([4, 3, 2, 1.0]), np.array([0.9, 0.8, 0.7, 0.1]))
    assert r == pytest.approx(1.0) and p_hi == pytest.approx(1 / 24) and p_lo == 1.0
    r, p_hi, p_lo = stats.rank_agreement(np.array([5, 4, 3, 2, 1.0]), np.array([1, 2, 3, 4, 5.0]))
    assert r == pytest.approx(-1.0) and p_lo == pytest.approx(1 / 120)
