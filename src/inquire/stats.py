"""Statistics: bootstrap intervals, paired significance tests, Holm's correction and Wilson
intervals of proportions.

The bootstrap and the paired tests take per-query values (one number per query, the unit the
benchmark samples); :func:`wilson_interval` takes counts. Everything is vectorised with
numpy. Randomised procedures take an explicit ``seed`` and a stated number of resamples, so a
result can be reproduced exactly. Nothing here knows about runs, reports or collections: the
evaluation, the reports and the verification statistics all build on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inquire.errors import InputError

# Rows of bootstrap or sign matrices built at once; bounds memory to ~ rows * n * 8 bytes.
_CHUNK_ROWS = 2048
# Differences smaller than this (in the metric's fraction units) count as ties: per-query
# metrics are ratios of small integers, so genuine differences are far larger.
TIE_TOLERANCE = 1e-12
# Exact enumeration of 2**n sign patterns up to this many non-zero differences.
EXACT_MAX_N = 20
# The standard normal quantile of a two-sided 95% interval.
Z95 = 1.959963984540054


def _as_matrix(values: np.ndarray | Sequence[float]) -> tuple[np.ndarray, bool]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise InputError(f"expected per-query values of shape (n,) or (n, m), got {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError("cannot compute statistics over zero queries")
    if not np.isfinite(arr).all():
        raise InputError("per-query values contain NaN or infinity; check the result files")
    return (arr[:, None], True) if arr.ndim == 1 else (arr, False)


def bootstrap_means(
    values: np.ndarray | Sequence[float], n_resamples: int = 10000, seed: int = 0
) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples of the queries.

    ``values`` is ``(n,)`` or ``(n, m)`` float (one row per query, one column per metric).
    Resample ``b`` draws ``n`` query indices ``i_1..i_n`` uniformly with replacement
    (``numpy.random.default_rng(seed).integers(0, n, size=(n_resamples, n))``, the same
    indices for every column, so metrics of one resample stay paired) and returns

        mean_b = (1 / n) * sum_j values[i_j]

    Returns ``(n_resamples,)`` or ``(n_resamples, m)`` float64.
    """
    x, flat = _as_matrix(values)
    if n_resamples < 1:
        raise InputError(f"n_resamples must be >= 1, got {n_resamples}")
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    out = np.empty((n_resamples, x.shape[1]), dtype=np.float64)
    for start in range(0, n_resamples, _CHUNK_ROWS):
        block = idx[start : start + _CHUNK_ROWS]
        rows = len(block)
        # How often each query is drawn in each resample, then one matrix product: this
        # reads the (rows, n) indices once instead of gathering (rows, n, m) values.
        flat_idx = (block + n * np.arange(rows)[:, None]).ravel()
        counts = np.bincount(flat_idx, minlength=rows * n).reshape(rows, n)
        out[start : start + rows] = counts @ x / n
    return out[:, 0] if flat else out


def bootstrap_ci(
    values: np.ndarray | Sequence[float],
    n_resamples: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence interval of the mean over queries.

    With ``mean_b`` from :func:`bootstrap_means` and ``a = 1 - confidence``:

        lo = quantile_{a/2}(mean_1..mean_B),   hi = quantile_{1-a/2}(mean_1..mean_B)

    (numpy's default linear interpolation between order statistics). ``values`` is ``(n,)``
    or ``(n, m)``; returns ``(mean, lo, hi)``, each ``(m,)`` float64 (``(1,)`` for 1-d input).
    """
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    x, _ = _as_matrix(values)
    means = bootstrap_means(x, n_resamples=n_resamples, seed=seed)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    return x.mean(axis=0), lo, hi


@dataclass(frozen=True)
class PermutationResult:
    """Outcome of :func:`paired_permutation_test`."""

    statistic: float  # mean of the differences a - b
    p_value: float
    n_resamples: int  # sign patterns evaluated (2**n_nonzero when exact)
    exact: bool


def _sign_flip_count(d: np.ndarray, signs: np.ndarray, observed: float, n_total: int) -> int:
    """How many rows of ``signs (r, n)`` give |sum(signs * d)| / n_total >= |observed|."""
    stats = np.abs(signs @ d) / n_total
    # Relative slack so that the observed pattern itself always counts despite rounding.
    return int(np.count_nonzero(stats >= abs(observed) - 1e-12 * max(1.0, abs(observed))))


def paired_permutation_test(
    a: np.ndarray | Sequence[float],
    b: np.ndarray | Sequence[float],
    n_resamples: int = 10000,
    seed: int = 0,
    exact_max_n: int = EXACT_MAX_N,
) -> PermutationResult:
    """Two-sided paired randomization test of mean(a) = mean(b) by sign flipping.

    Under the null hypothesis each query's difference ``d_i = a_i - b_i`` is as likely to
    have either sign. The statistic is ``T = mean(d)``; for sign vectors ``s in {-1, +1}^n``

        p = #{s : |mean(s * d)| >= |T|} / #{s}

    Differences of zero cannot change sign and are dropped (they add nothing to either
    side of the inequality). With ``n' <= exact_max_n`` non-zero differences all ``2**n'``
    patterns are enumerated (exact p). Otherwise ``n_resamples`` patterns are drawn with
    ``numpy.random.default_rng(seed)`` and ``p = (1 + hits) / (1 + n_resamples)`` (the
    observed pattern counted once, so the Monte Carlo p is never 0).
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise InputError(
            f"paired values must be two 1-d arrays of equal length: {x.shape}, {y.shape}"
        )
    if len(x) == 0:
        raise InputError("cannot test over zero queries")
    d_all = x - y
    observed = float(d_all.mean())
    d = d_all[np.abs(d_all) > TIE_TOLERANCE]
    n = len(d)
    if n == 0:
        return PermutationResult(statistic=observed, p_value=1.0, n_resamples=1, exact=True)
    if n <= exact_max_n:
        total = 2**n
        hits = 0
        bits = np.arange(n, dtype=np.int64)
        for start in range(0, total, _CHUNK_ROWS * 16):
            codes = np.arange(start, min(total, start + _CHUNK_ROWS * 16), dtype=np.int64)
            signs = 1.0 - 2.0 * ((codes[:, None] >> bits) & 1)
            hits += _sign_flip_count(d, signs, observed, len(d_all))
        return PermutationResult(observed, hits / total, total, exact=True)
    if n_resamples < 1:
        raise InputError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, _CHUNK_ROWS):
        rows = min(_CHUNK_ROWS, n_resamples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(rows, n))
        hits += _sign_flip_count(d, signs, observed, len(d_all))
    return PermutationResult(observed, (1 + hits) / (1 + n_resamples), n_resamples, exact=False)


@dataclass(frozen=True)
class TTestResult:
    """Outcome of :func:`paired_t_test`."""

    statistic: float
    p_value: float
    df: int


def paired_t_test(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> TTestResult:
    """Two-sided paired t-test (the test of ``scipy.stats.ttest_rel``).

    With ``d_i = a_i - b_i``, ``n`` queries, ``s`` the sample standard deviation of ``d``
    (divisor ``n - 1``):

        t = mean(d) / (s / sqrt(n)),   df = n - 1,   p = 2 * P(T_df >= |t|)

    All differences equal to zero gives ``t = 0, p = 1`` (no evidence of a difference);
    equal non-zero differences give ``t = +-inf, p = 0``. Needs ``n >= 2``.
    """
    from scipy import stats

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise InputError(
            f"paired values must be two 1-d arrays of equal length: {x.shape}, {y.shape}"
        )
    n = len(x)
    if n < 2:
        raise InputError(f"a paired t-test needs at least 2 queries, got {n}")
    d = x - y
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd <= TIE_TOLERANCE:
        if abs(mean) <= TIE_TOLERANCE:
            return TTestResult(0.0, 1.0, n - 1)
        return TTestResult(math.copysign(math.inf, mean), 0.0, n - 1)
    t = mean / (sd / math.sqrt(n))
    p = float(2.0 * stats.t.sf(abs(t), df=n - 1))
    return TTestResult(t, min(1.0, p), n - 1)


def holm(p_values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment for ``m`` tests (family-wise error control).

    Sort the p-values ascending, ``p_(1) <= ... <= p_(m)``; the adjusted values are

        p~_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))

    returned in the input order, ``(m,)`` float64. Reject test ``i`` at level ``alpha`` when
    ``p~_i <= alpha``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise InputError(f"p-values must be 1-d, got shape {p.shape}")
    if ((p < 0) | (p > 1) | np.isnan(p)).any():
        raise InputError(f"p-values must lie in [0, 1], got {p.tolist()}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    factors = m - np.arange(m)
    stepped = np.maximum.accumulate(np.minimum(1.0, factors * p[order]))
    out = np.empty(m, dtype=np.float64)
    out[order] = stepped
    return out


def wins_losses_ties(
    a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float], tol: float = TIE_TOLERANCE
) -> tuple[int, int, int]:
    """Queries where ``a`` beats ``b`` (``a_i - b_i > tol``), loses, and ties."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    wins = int(np.count_nonzero(d > tol))
    losses = int(np.count_nonzero(d < -tol))
    return wins, losses, len(d) - wins - losses


def wilson_interval(k: Any, n: Any, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion ``k / n`` (arrays or scalars).

    With ``p = k / n``:

        centre = (p + z²/2n) / (1 + z²/n),   half = z sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)

    and ``(lo, hi) = (centre - half, centre + half)`` clipped to [0, 1]; ``n = 0`` gives
    ``(0, 1)``. Returns two float64 arrays of the broadcast shape of ``k`` and ``n``.
    """
    k = np.asarray(k, np.float64)
    n = np.asarray(n, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n > 0, k / n, 0.0)
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        lo = np.where(n > 0, np.clip(centre - half, 0, 1), 0.0)
        hi = np.where(n > 0, np.clip(centre + half, 0, 1), 1.0)
    return lo, hi
