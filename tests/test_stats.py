"""Seeded bootstrap intervals and the paired bootstrap test against a hand-written loop."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import InputError
from workbench.stats import bootstrap_interval, mean_of, paired_bootstrap

A = np.array([0.1, 0.4, 0.3, 0.9, 0.5, 0.2, 0.7, 0.6])
B = A + np.array([0.2, 0.1, 0.3, 0.0, 0.2, 0.1, 0.25, 0.15])


def test_interval_matches_a_hand_written_bootstrap() -> None:
    interval = bootstrap_interval(len(A), mean_of(A), resamples=500, confidence=0.9, seed=7)
    rng = np.random.default_rng(7)
    means = [A[rng.integers(0, len(A), size=len(A))].mean() for _ in range(500)]
    assert interval.value == pytest.approx(A.mean())
    assert interval.low == pytest.approx(np.percentile(means, 5))
    assert interval.high == pytest.approx(np.percentile(means, 95))
    assert interval.low < interval.value < interval.high


def test_seed_makes_it_reproducible() -> None:
    first = bootstrap_interval(len(A), mean_of(A), seed=1)
    assert bootstrap_interval(len(A), mean_of(A), seed=1) == first
    assert bootstrap_interval(len(A), mean_of(A), seed=2) != first


def test_paired_bootstrap_difference_interval_and_p_value() -> None:
    comparison = paired_bootstrap(len(A), mean_of(A), mean_of(B), resamples=2000, seed=3)
    assert comparison.difference.value == pytest.approx((B - A).mean())
    # every paired difference is >= 0 and most are > 0: no resample can reach zero or below
    assert comparison.difference.low > 0
    assert comparison.p_value == pytest.approx(1 / 2000)
    same = paired_bootstrap(len(A), mean_of(A), mean_of(A), seed=3)
    assert same.difference.value == 0 and same.p_value == 1.0
    # a mixed difference: p equals twice the smaller tail, computed by hand
    C = A + np.array([0.3, -0.2, 0.1, -0.1, 0.05, -0.3, 0.2, 0.0])
    mixed = paired_bootstrap(len(A), mean_of(A), mean_of(C), resamples=1000, seed=5)
    rng = np.random.default_rng(5)
    draws = [rng.integers(0, len(A), size=len(A)) for _ in range(1000)]
    diffs = np.array([C[idx].mean() - A[idx].mean() for idx in draws])
    assert mixed.p_value == pytest.approx(2 * min((diffs <= 0).mean(), (diffs >= 0).mean()))
    assert 0.05 < mixed.p_value <= 1


def test_non_mean_statistics_resample_indices() -> None:
    values = np.array([1.0, 4.0, 9.0])
    rmse_like = lambda indices: float(np.sqrt(values[indices].mean()))
    interval = bootstrap_interval(3, rmse_like, resamples=200, seed=0)
    assert interval.value == pytest.approx(np.sqrt(values.mean()))
    assert 1.0 <= interval.low <= interval.high <= 3.0


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="at least one example"):
        bootstrap_interval(0, mean_of(A))
    with pytest.raises(InputError, match="confidence"):
        bootstrap_interval(len(A), mean_of(A), confidence=1.5)
