"""Statistics: bootstrap intervals, paired tests and Holm's correction against references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from inquire.errors import InputError
from inquire.stats import (
    bootstrap_ci,
    bootstrap_means,
    holm,
    paired_permutation_test,
    paired_t_test,
    wilson_interval,
    wins_losses_ties,
)


def test_bootstrap_means_match_a_plain_loop() -> None:
    x = np.random.default_rng(5).random((37, 3))
    fast = bootstrap_means(x, n_resamples=3000, seed=11)  # > one chunk of 2048 rows
    rng = np.random.default_rng(11)
    idx = rng.integers(0, 37, size=(3000, 37))
    slow = np.array([[x[idx[b], j].mean() for j in range(3)] for b in range(3000)])
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    # 1-d input gives the 1-d column of the same draws.
    np.testing.assert_allclose(bootstrap_means(x[:, 1], 3000, seed=11), slow[:, 1], atol=1e-12)


def test_bootstrap_ci_is_seeded_reproducible_and_contains_the_mean() -> None:
    x = np.random.default_rng(0).beta(2, 3, size=120)
    a = bootstrap_ci(x, n_resamples=2000, seed=3)
    b = bootstrap_ci(x, n_resamples=2000, seed=3)
    c = bootstrap_ci(x, n_resamples=2000, seed=4)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[1], c[1])
    mean, lo, hi = a
    assert lo[0] < mean[0] < hi[0]
    assert mean[0] == pytest.approx(x.mean())
    # Percentile method: the bounds are the 2.5% / 97.5% quantiles of the resampled means.
    means = bootstrap_means(x, 2000, seed=3)
    assert lo[0] == pytest.approx(np.quantile(means, 0.025))
    assert hi[0] == pytest.approx(np.quantile(means, 0.975))
    # The interval is about mean +- 1.96 standard errors for a sample this size.
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert hi[0] - lo[0] == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_of_constant_values_is_a_point() -> None:
    mean, lo, hi = bootstrap_ci([0.25] * 9, n_resamples=500)
    assert (mean[0], lo[0], hi[0]) == (0.25, 0.25, 0.25)


@pytest.mark.parametrize("bad", [[], [[[1.0]]], [0.1, float("nan")]], ids=["empty", "3d", "nan"])
def test_bootstrap_rejects_bad_values(bad: list) -> None:
    with pytest.raises(InputError):
        bootstrap_ci(bad)


def _brute_force_p(d: np.ndarray) -> float:
    """Every sign pattern of all n differences (zeros included), by itertools."""
    obs = abs(d.mean())
    hits = 0
    total = 0
    for signs in itertools.product([-1.0, 1.0], repeat=len(d)):
        total += 1
        hits += abs((np.array(signs) * d).mean()) >= obs - 1e-12
    return hits / total


def test_permutation_test_exact_matches_brute_force() -> None:
    a = np.array([0.9, 0.4, 0.7, 0.3, 0.8, 0.55, 0.6, 0.2])
    b = np.array([0.5, 0.45, 0.2, 0.3, 0.6, 0.5, 0.1, 0.25])  # one tie (0.3, 0.3)
    res = paired_permutation_test(a, b)
    assert res.exact
    assert res.n_resamples == 2**7  # the tied query is dropped
    assert res.p_value == pytest.approx(_brute_force_p(a - b))
    assert res.statistic == pytest.approx((a - b).mean())


def test_permutation_test_hand_computed_tiny_case() -> None:
    # d = (1, 2, 3): patterns with |sum| >= 6 are (+,+,+) and (-,-,-): p = 2/8.
    res = paired_permutation_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert res.exact and res.p_value == pytest.approx(0.25)


def test_permutation_monte_carlo_approximates_exact_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(14)
    b = a + rng.normal(0.08, 0.2, 14)
    exact = paired_permutation_test(a, b).p_value
    mc = paired_permutation_test(a, b, n_resamples=40000, seed=2, exact_max_n=0)
    assert not mc.exact and mc.n_resamples == 40000
    # Monte Carlo standard error at 40k draws is at most 0.0025.
    assert mc.p_value == pytest.approx(exact, abs=0.01)
    again = paired_permutation_test(a, b, n_resamples=40000, seed=2, exact_max_n=0)
    assert again.p_value == mc.p_value


def test_permutation_all_ties_gives_p_one() -> None:
    res = paired_permutation_test([0.2, 0.5], [0.2, 0.5])
    assert res.p_value == 1.0 and res.statistic == 0.0


def test_paired_t_test_matches_scipy() -> None:
    a = np.array([0.62, 0.41, 0.75, 0.33, 0.58, 0.49, 0.71, 0.40, 0.66, 0.52])
    b = np.array([0.55, 0.43, 0.61, 0.30, 0.52, 0.50, 0.60, 0.41, 0.59, 0.47])
    ours = paired_t_test(a, b)
    ref = sps.ttest_rel(a, b)
    assert ours.statistic == pytest.approx(float(ref.statistic), rel=1e-12)
    assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-10)
    assert ours.df == 9
    # By hand: t = mean(d) / (sd(d) / sqrt(n)).
    d = a - b
    assert ours.statistic == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(10)))


def test_paired_t_test_degenerate_cases() -> None:
    assert paired_t_test([0.1, 0.2], [0.1, 0.2]).p_value == 1.0
    same = paired_t_test([0.3, 0.4, 0.5], [0.2, 0.3, 0.4])
    assert same.p_value == 0.0 and same.statistic == np.inf
    with pytest.raises(InputError, match="at least 2"):
        paired_t_test([0.1], [0.2])
    with pytest.raises(InputError, match="equal length"):
        paired_t_test([0.1, 0.2], [0.2])


def test_holm_hand_computed() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04)
    adj = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm([0.2]), [0.2])  # one test: unchanged
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def test_wins_losses_ties() -> None:
    assert wins_losses_ties([0.5, 0.2, 0.3, 0.9], [0.4, 0.2, 0.6, 0.1]) == (2, 1, 1)


def test_wilson_interval_matches_scipy() -> None:
    for k, n in [(0, 1), (1, 1), (3, 10), (7, 9), (50, 200), (0, 25)]:
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = wilson_interval(k, n)
        assert (float(lo), float(hi)) == pytest.approx((ci.low, ci.high), abs=1e-9)
    lo, hi = wilson_interval(np.array([0, 4]), np.array([0, 4]))  # n = 0: nothing known
    assert lo.tolist() == [0.0, pytest.approx(0.5101, abs=1e-4)] and hi.tolist() == [1.0, 1.0]
