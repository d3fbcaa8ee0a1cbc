"""How sure a number is: percentile-bootstrap intervals over the evaluated items, and
McNemar's test for two models scored on the same items.

An interval resamples the items (clips, images, caption queries) with replacement
``resamples`` times from ``numpy.random.default_rng(seed)`` and takes the
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the statistic over the
resamples (numpy's default linear quantile), so it is reproducible from its seed. What
it covers is the sampling of the *test items*, not training noise: two seeds of a
training run can differ by more than one interval.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CHUNK = 128  # resamples drawn at once (memory: CHUNK x items)


def _quantiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.nanquantile(stats, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return float(lo), float(hi)


def mean_interval(values: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """The bootstrap interval of the mean of per-item ``values`` (a 0/1 correctness for
    an accuracy or an R@k, a reciprocal rank, ...)."""
    values = np.asarray(values, dtype=np.float64)
    rng, n, means = np.random.default_rng(seed), len(values), []
    for start in range(0, resamples, CHUNK):
        idx = rng.integers(0, n, size=(min(CHUNK, resamples - start), n))
        means.append(values[idx].mean(axis=1))
    return _quantiles(np.concatenate(means), level)


def weighted_interval(stat: Callable[[np.ndarray], float], n: int, resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """The bootstrap interval of ``stat(counts)``, a statistic of the items weighted by
    how often a resample drew each (``counts``: (n,) whole numbers summing to n), for
    statistics that are no mean over items (mAP, mean-class accuracy)."""
    return weighted_intervals(lambda w: {"stat": stat(w)}, n, resamples, seed, level)["stat"]


def weighted_intervals(stats: Callable[[np.ndarray], dict[str, float]], n: int, resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict[str, tuple[float, float]]:
    """:func:`weighted_interval` of several statistics computed together on each resample
    (the same resamples for all: one pass, e.g. two mAP conventions from one AP per class)."""
    rng = np.random.default_rng(seed)
    drawn = [stats(np.bincount(rng.integers(0, n, size=n), minlength=n)) for _ in range(resamples)]
    return {k: _quantiles(np.asarray([d[k] for d in drawn], dtype=np.float64), level) for k in drawn[0]}


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """McNemar's exact test of two classifiers on the same items: under the null the
    discordant items (one right, the other wrong) split 50/50, so the two-sided p-value
    is ``min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``."""
    from scipy.stats import binom

    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"the two models were scored on different items ({a.shape} and {b.shape})")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else min(1.0, 2.0 * float(binom.cdf(min(only_a, only_b), n, 0.5)))
    return {"only_a": only_a, "only_b": only_b, "p_value": p, "difference": float(a.mean() - b.mean())}


def paired_bootstrap(difference: Callable[[np.ndarray], float], n: int, resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """The interval of a paired difference between two models scored on the same ``n``
    items (``difference(counts)``: model A's statistic minus B's on one resample, the
    same resample for both), and the two-sided bootstrap p-value of no difference:
    ``min(1, 2 * min(P(d <= 0), P(d >= 0)))`` over the resamples."""
    rng = np.random.default_rng(seed)
    d = np.array([difference(np.bincount(rng.integers(0, n, size=n), minlength=n)) for _ in range(resamples)])
    lo, hi = _quantiles(d, level)
    p = min(1.0, 2.0 * min(float((d <= 0).mean()), float((d >= 0).mean())))
    return lo, hi, p
