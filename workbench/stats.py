"""Seeded bootstrap statistics over per-example scores.

A statistic is a function of an array of example indices (so that macro-F1 and RMSE, which are
not means, resample correctly). The paired bootstrap resamples the same indices for both
methods; its two-sided p-value is twice the smaller tail mass of the resampled differences
around zero (Koehn 2004 style), floored at one resample's mass so it is never reported as 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from workbench.errors import InputError

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    confidence: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """`b - a` with its bootstrap interval and two-sided p-value (no difference as the null)."""

    difference: Interval
    p_value: float
    n: int
    resamples: int
    seed: int

    def as_dict(self) -> dict[str, float]:
        d = self.difference
        return {"difference": d.value, "low": d.low, "high": d.high, "confidence": d.confidence,
                "p_value": self.p_value, "n": self.n, "resamples": self.resamples, "seed": self.seed}  # fmt: skip


def resampled_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """`[resamples, n]` example indices drawn with replacement (seeded): every bootstrap here."""
    if n < 1:
        raise InputError("bootstrap needs at least one example")
    if resamples < 1:
        raise InputError(f"bootstrap needs at least one resample, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(
    n: int, statistic: Statistic, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of `statistic` over `n` examples (seeded)."""
    draws = resampled_indices(n, resamples, seed)
    values = np.array([statistic(indices) for indices in draws])
    return Interval(statistic(np.arange(n)), *_percentiles(values, confidence), confidence)


def paired_bootstrap(
    n: int, statistic_a: Statistic, statistic_b: Statistic, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> PairedComparison:
    """Bootstrap the difference `b - a` of two methods scored on the same `n` examples."""
    draws = resampled_indices(n, resamples, seed)
    differences = np.array([statistic_b(indices) - statistic_a(indices) for indices in draws])
    everything = np.arange(n)
    observed = statistic_b(everything) - statistic_a(everything)
    tail = min(np.mean(differences <= 0), np.mean(differences >= 0))
    p_value = float(min(1.0, max(2 * tail, 1 / resamples)))
    return PairedComparison(Interval(observed, *_percentiles(differences, confidence), confidence), p_value, n, resamples, seed)


def mean_of(values: np.ndarray) -> Statistic:
    """The statistic "mean of `values` at the resampled indices"."""
    values = np.asarray(values, dtype=float)
    return lambda indices: float(values[indices].mean())


def bootstrap_mean_ci(
    values, *, level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap interval of the mean over the first axis (examples), for every entry
    of the rest at once (e.g. a `[example, layer, head]` grid of PCS), seeded."""
    if not 0 < level < 1:
        raise InputError(f"confidence level must lie in (0, 1), got {level}")
    values = torch.as_tensor(values, dtype=torch.float64)
    draws = torch.from_numpy(resampled_indices(values.shape[0], n_resamples, seed))
    means = values[draws].mean(dim=1)  # [resample, ...]
    tail = (1 - level) / 2
    return torch.quantile(means, tail, dim=0), torch.quantile(means, 1 - tail, dim=0)
