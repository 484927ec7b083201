"""Metrics shared by every task type: the unbiased pass@k estimator and percentile-bootstrap confidence intervals.

    pass_at_k(n=10, c=3, k=1)            -> 0.3
    bootstrap_ci([1, 0, 1, 1], seed=0)   -> (low, high)   # 95% percentile bootstrap of the mean

Both are pure functions of numbers (no torch) so they are cheap to test exhaustively.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k), for n samples of which c passed.

    Computed in the numerically stable product form 1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms the
    (huge) binomial coefficients: fine for n in the thousands.
    """
    if not (0 <= c <= n) or k < 1 or k > n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_exact(n: int, c: int, k: int) -> float:
    """The same estimator with exact binomials (reference for tests; slow for large n)."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def bootstrap_ci(values: Sequence[float], *, weights: Sequence[float] | None = None, resamples: int = 1000,
                 seed: int = 0, alpha: float = 0.05) -> tuple[float | None, float | None]:
    """Percentile bootstrap (1 - alpha) interval of the mean of `values` over items.

    With `weights`, the statistic is the ratio sum(values) / sum(weights) (e.g. instruction-level accuracy: values =
    instructions followed per prompt, weights = instructions per prompt), still resampling whole items. Resamples are
    drawn from a seeded generator, so the same inputs give the same interval. The interval is widened to contain the
    point estimate if resampling noise left it just outside (only possible with very few resamples).
    Returns (None, None) for no items; (v, v) when resamples is 0.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return None, None
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    point = float(x.sum() / w.sum()) if w is not None and w.sum() > 0 else float(x.mean())
    if resamples <= 0 or n == 1:
        return point, point
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    chunk = max(1, min(resamples, 2_000_000 // n))  # bound memory: (chunk, n) index matrices
    done = 0
    while done < resamples:
        m = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(m, n))
        if w is None:
            stats[done:done + m] = x[idx].mean(axis=1)
        else:
            den = w[idx].sum(axis=1)
            stats[done:done + m] = np.divide(x[idx].sum(axis=1), den, out=np.zeros(m), where=den > 0)
        done += m
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(min(lo, point)), float(max(hi, point))


def score_entry(task: str, metric: str, values: Sequence[float], *, weights: Sequence[float] | None = None,
                resamples: int = 1000, seed: int = 0, ids: Sequence[str] | None = None, **extra) -> dict:
    """One row of results.json `scores`: {task, metric, value, ci_low, ci_high, n} (+ any extra keys).

    `ids`: the item id of each value, for a metric that is the plain mean of per-item scores. The row then carries
    `per_item` ({id: value}), which `evaluate` moves into the task's meta file: paired comparisons of two methods
    (statistics.paired_deltas) read it by metric name. Weighted metrics and items scored twice have none."""
    x = list(values)
    if weights is not None and len(x):
        tot = float(np.sum(weights))
        value = float(np.sum(x) / tot) if tot > 0 else None
    else:
        value = mean(x)
    lo, hi = bootstrap_ci(x, weights=weights, resamples=resamples, seed=seed)
    row = {"task": task, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi, "n": len(x)}
    if weights is None:   # the task's minimum detectable effect at its n (statistics.task_mde)
        from ..statistics import task_mde

        m = task_mde(x)
        row["mde"] = None if m is None else round(m, 12)
    row.update(extra)
    if ids is not None and weights is None and len(set(ids)) == len(ids) == len(x):
        row["per_item"] = {str(i): float(v) for i, v in zip(ids, x)}
    return row


def paired_delta_ci(a: Sequence[float], b: Sequence[float], *, resamples: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> tuple[float, float, float]:
    """mean(b) - mean(a) with a percentile-bootstrap (1 - alpha) interval that resamples *items* (the same item
    for both sides): two methods scored on the same questions differ far less noisily than their separate CIs
    suggest. `a` and `b` are per-item scores in the same item order. Returns (delta, low, high)."""
    x = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(a) != len(b) or len(x) == 0:
        raise ValueError(f"paired_delta_ci needs two equally long, non-empty lists (got {len(a)} and {len(b)})")
    low, high = bootstrap_ci(x, resamples=resamples, seed=seed, alpha=alpha)
    # Rounded: means of averaged per-item scores (thirds, ...) carry float noise, and a bound of -1e-17 must not
    # read as "excludes 0".
    return round(float(x.mean()), 12) + 0.0, round(low, 12) + 0.0, round(high, 12) + 0.0   # + 0.0: no "-0.000"
