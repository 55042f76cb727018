"""Bootstrap intervals and paired permutation tests against independent references: scipy's
`bootstrap` (percentile intervals; a different random stream, so agreement within a stated Monte
Carlo tolerance) and `permutation_test` (paired, exact for small n: the same p-values), plus
cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from workbench.errors import InputError
from workbench.stats import (
    bootstrap_interval,
    mean_difference,
    mean_of,
    paired_comparison,
    small_sample_caveat,
    smallest_p_value,
)

RNG = np.random.default_rng(12345)
A = RNG.normal(0.4, 0.2, size=30)
B = A + RNG.normal(0.05, 0.1, size=30)


def scipy_paired_p(a: np.ndarray, b: np.ndarray, statistic=None, n_resamples=np.inf) -> float:
    """scipy's two-sided paired permutation test ('samples': swap the two values of a pair)."""
    statistic = statistic or (lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis))
    result = scipy_stats.permutation_test(
        (a, b), statistic, permutation_type="samples", vectorized=True, n_resamples=n_resamples,
        alternative="two-sided", rng=0,
    )  # fmt: skip
    return float(result.pvalue)


def test_bootstrap_interval_agrees_with_scipy_percentile_bootstrap() -> None:
    resamples = 20_000
    ours = bootstrap_interval(len(A), mean_of(A), resamples=resamples, confidence=0.95, seed=7)
    reference = scipy_stats.bootstrap(
        (A,), np.mean, method="percentile", confidence_level=0.95, n_resamples=resamples, rng=3
    ).confidence_interval
    # Two independent Monte Carlo estimates of the 2.5% / 97.5% quantiles of the bootstrap
    # distribution of the mean: each has a standard error of about 0.019 standard errors of the
    # mean at 20 000 resamples, so their difference about 0.027; 0.15 is over five of those.
    # (Percentiles for 90% instead of 95% would be 0.31 standard errors off.)
    tolerance = 0.15 * A.std(ddof=1) / math.sqrt(len(A))
    assert ours.value == pytest.approx(A.mean())
    assert ours.low == pytest.approx(reference.low, abs=tolerance)
    assert ours.high == pytest.approx(reference.high, abs=tolerance)


def test_paired_interval_agrees_with_scipy_bootstrap_of_paired_differences() -> None:
    resamples = 20_000
    [ours] = paired_comparison(len(A), mean_difference(A, B), resamples=resamples, seed=1)
    reference = scipy_stats.bootstrap(
        (A, B), lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis), paired=True,
        method="percentile", n_resamples=resamples, rng=2,
    ).confidence_interval  # fmt: skip
    d = B - A
    tolerance = 0.15 * d.std(ddof=1) / math.sqrt(len(d))
    assert ours.difference.value == pytest.approx(d.mean())
    assert ours.difference.low == pytest.approx(reference.low, abs=tolerance)
    assert ours.difference.high == pytest.approx(reference.high, abs=tolerance)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (A[:4], B[:4]),  # the newcomer's n = 4
        (A[:9], B[:9]),
        (A[:12], A[:12] + np.array([0.3, 0.0, 0.1, 0.0, -0.2, 0.1, 0.0, 0.05, 0.1, 0.1, -0.1, 0.2])),  # ties (zero differences)
        (np.array([1, 0, 1, 1, 0, 1, 1, 1.0]), np.array([1, 1, 1, 0, 1, 1, 1, 1.0])),  # 0/1 scores: many equal null values
    ],
)
def test_exact_permutation_p_value_equals_scipy(a, b) -> None:
    [ours] = paired_comparison(len(a), mean_difference(a, b), differing=a != b, resamples=10, permutations=10_000)
    assert ours.exact and ours.permutations == 2 ** int(np.sum(a != b))
    assert ours.p_value == scipy_paired_p(a, b)


def test_exact_p_value_of_a_non_mean_statistic_equals_scipy() -> None:
    """Swapping rows, not flipping signs of differences: right for statistics that are not means
    (here the difference of medians, where a swap changes both methods' values unrelatedly)."""
    a, b = A[:10], B[:10] + 0.05
    pooled = np.concatenate([a, b])
    difference = lambda rows_a, rows_b: np.array([np.median(pooled[rows_b]) - np.median(pooled[rows_a])])
    [ours] = paired_comparison(len(a), difference, permutations=2**10)
    assert ours.exact
    assert ours.p_value == scipy_paired_p(a, b, lambda x, y, axis: np.median(y, axis=axis) - np.median(x, axis=axis))


def test_monte_carlo_p_value_when_the_patterns_exceed_the_budget() -> None:
    a, b = A[:16], A[:16] + RNG.normal(0.02, 0.1, size=16)
    permutations = 4000
    [ours] = paired_comparison(len(a), mean_difference(a, b), permutations=permutations, seed=5)
    exact = scipy_paired_p(a, b)  # 2^16 patterns
    assert not ours.exact and ours.permutations == permutations
    assert 0.02 < exact < 0.98  # a p-value that Monte Carlo error can move
    # (1 + hits) / (1 + R) with two tails: standard error about 2·sqrt(p/2·(1 - p/2)/R)
    tolerance = 4 * 2 * math.sqrt(exact / 2 * (1 - exact / 2) / permutations) + 2 / permutations
    assert ours.p_value == pytest.approx(exact, abs=tolerance)
    again = paired_comparison(len(a), mean_difference(a, b), permutations=permutations, seed=5)[0]
    assert again == ours


def test_monte_carlo_p_value_counts_the_observed_pattern_once() -> None:
    # 30 examples that all favour b by 0.5: none of 200 random sign patterns (almost surely not the
    # identity, drawn with probability 200 / 2^30) reaches the observed mean, so the upper tail has
    # 0 hits and p = 2 · (1 + 0) / (1 + 200) exactly; a count without the +1 would give 0.
    a = np.zeros(30)
    [ours] = paired_comparison(30, mean_difference(a, a + 0.5), permutations=200, seed=3)
    assert not ours.exact and ours.permutations == 200
    assert ours.p_value == 2 / 201


def test_hand_computed_cases() -> None:
    # n = 1: the null distribution is {d, -d}, so p = min(1, 2 · 1/2) = 1, and there is no interval
    [one] = paired_comparison(1, mean_difference([0.2], [0.7]))
    assert one.p_value == 1.0 and one.difference.value == pytest.approx(0.5)
    assert math.isnan(one.difference.low) and math.isnan(one.difference.high)
    # five equal positive differences: only the identity reaches the observed mean of the 2^5
    # sign patterns, so p = 2 · 1/32; every bootstrap resample has the same mean
    a = np.array([0.1, 0.5, 0.2, 0.9, 0.4])
    [equal] = paired_comparison(5, mean_difference(a, a + 0.25), permutations=32)
    assert equal.exact and equal.p_value == pytest.approx(2 / 32)
    assert equal.difference.low == pytest.approx(0.25) and equal.difference.high == pytest.approx(0.25)
    # ties: differences (1, 1, 0, 0); only the two non-zero ones are swapped: the null means are
    # {0.5, 0, 0, -0.5}, P(T >= 0.5) = 1/4, p = 0.5
    a, b = np.zeros(4), np.array([1.0, 1.0, 0.0, 0.0])
    [ties] = paired_comparison(4, mean_difference(a, b), differing=a != b)
    assert ties.differing == 2 and ties.permutations == 4 and ties.p_value == pytest.approx(0.5)
    # identical methods: every pattern gives 0, p = 1
    [same] = paired_comparison(6, mean_difference(A[:6], A[:6]), differing=np.zeros(6, dtype=bool))
    assert same.difference.value == 0 and same.p_value == 1.0 and same.permutations == 1


def test_small_samples_cannot_claim_significance_and_are_flagged() -> None:
    """The newcomer's n = 4 got p = 0.001 from the bootstrap; exactly, p >= 2/16 whatever the data."""
    a = np.array([0.1, 0.2, 0.3, 0.4])
    [four] = paired_comparison(4, mean_difference(a, a + np.array([0.5, 0.6, 0.7, 0.8])))
    assert four.p_value == pytest.approx(smallest_p_value(4)) == pytest.approx(0.125)
    assert "only 4 paired examples" in small_sample_caveat(4) and "0.125" in small_sample_caveat(4)
    assert "no interval" in small_sample_caveat(1)
    assert small_sample_caveat(10) is None


def test_seed_makes_it_reproducible() -> None:
    first = bootstrap_interval(len(A), mean_of(A), seed=1)
    assert bootstrap_interval(len(A), mean_of(A), seed=1) == first
    assert bootstrap_interval(len(A), mean_of(A), seed=2) != first


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="at least one example"):
        bootstrap_interval(0, mean_of(A))
    with pytest.raises(InputError, match="confidence"):
        bootstrap_interval(len(A), mean_of(A), confidence=1.5)
    with pytest.raises(InputError, match="at least one permutation"):
        paired_comparison(3, mean_difference(A[:3], B[:3]), permutations=0)
