"""Seeded statistics over per-example scores: bootstrap intervals and paired comparisons.

A statistic is a function of an array of example indices (so that macro-F1 and RMSE, which are
not means, resample correctly).

A paired comparison of methods a and b scored on the same n examples works on their pooled rows:
row i is example i scored by a, row n + i the same example scored by b. A `Difference` takes the
pooled indices standing for "a" and for "b" and returns statistic(b) - statistic(a), one value per
metric. From it:

- the interval of the difference is the percentile bootstrap over examples (the same draws for
  both methods); with fewer than two examples there is no interval (NaN), since every resample
  repeats the one example and a zero-width interval would claim certainty;
- the p-value is the paired permutation (sign-flip) test: under "no difference", which of the two
  methods produced an example's scores is exchangeable, so the observed difference is compared
  with its values when the two rows of some examples are swapped (for a mean, swapping flips the
  sign of that example's difference). Swapping identical rows changes nothing, so only the m
  examples whose rows differ are swapped. When the 2^m swap patterns are no more than the
  Monte Carlo budget (`permutations`), all are enumerated and the p-value is exact; otherwise
  `permutations` seeded random patterns are drawn and p = (1 + hits) / (1 + permutations), whose
  resolution is 1 / (1 + permutations). Enumerating is never more work than the draws it
  replaces, and it is exact. Two-sided p = twice the smaller tail, capped at 1, counting values
  within 100 machine epsilons (relative) of the observed one as ties (scipy's convention). Swapping
  every example negates the difference, so the null distribution is symmetric and this equals
  P(|T| >= |t|). With m examples the smallest attainable exact p-value is 2 / 2^m: 0.125 for 4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from workbench.errors import InputError

Statistic = Callable[[np.ndarray], float]
Difference = Callable[[np.ndarray, np.ndarray], np.ndarray]

TIE_TOLERANCE = 100 * np.finfo(float).eps
MIN_INTERVAL_EXAMPLES = 10
"""Below this, percentile bootstrap intervals are markedly too narrow: for the mean of normal data
the interval is about mean ± z·s·sqrt((n-1)/n)/sqrt(n), which covers about 90% instead of 95% at
n = 10 and about 85% at n = 5 (the t distribution's heavier tails are ignored)."""


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
    """`b - a` with its bootstrap interval (NaN bounds when n < 2) and the two-sided permutation
    p-value; `exact` says whether all `permutations` swap patterns were enumerated (else they were
    seeded random draws); `differing` is the number of examples whose two rows differ."""

    difference: Interval
    p_value: float
    exact: bool
    permutations: int
    differing: int
    n: int
    resamples: int
    seed: int

    def as_dict(self) -> dict[str, float]:
        d = self.difference
        return {"difference": d.value, "low": d.low, "high": d.high, "confidence": d.confidence,
                "p_value": self.p_value, "p_exact": self.exact, "permutations": self.permutations,
                "differing": self.differing, "n": self.n, "resamples": self.resamples, "seed": self.seed}  # fmt: skip


def resampled_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """`[resamples, n]` example indices drawn with replacement (seeded): every bootstrap here."""
    if n < 1:
        raise InputError("bootstrap needs at least one example")
    if resamples < 1:
        raise InputError(f"bootstrap needs at least one resample, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")


def _percentiles(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds along the first axis (resamples)."""
    _check_confidence(confidence)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail], axis=0)
    return low, high


def bootstrap_interval(
    n: int, statistic: Statistic, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of `statistic` over `n` examples (seeded)."""
    _check_confidence(confidence)
    draws = resampled_indices(n, resamples, seed)
    values = np.array([statistic(indices) for indices in draws])
    low, high = _percentiles(values, confidence)
    return Interval(statistic(np.arange(n)), float(low), float(high), confidence)


def swap_patterns(differing: np.ndarray, permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """`([patterns, n] booleans: swap example i's rows?, exact)`. Only the `differing` examples
    are ever swapped. Exact: all 2^m patterns (the first is the identity) when 2^m <= permutations;
    otherwise `permutations` seeded random patterns."""
    if permutations < 1:
        raise InputError(f"the permutation test needs at least one permutation, got {permutations}")
    differing = np.asarray(differing, dtype=bool)
    columns = np.flatnonzero(differing)
    m = len(columns)
    exact = m < 63 and 2**m <= permutations
    if exact:
        chosen = (np.arange(2**m)[:, None] >> np.arange(m)[None, :]) & 1
    else:
        chosen = np.random.default_rng(seed).integers(0, 2, size=(permutations, m))
    patterns = np.zeros((len(chosen), len(differing)), dtype=bool)
    patterns[:, columns] = chosen.astype(bool)
    return patterns, exact


def permutation_p_value(null: np.ndarray, observed: np.ndarray, exact: bool) -> np.ndarray:
    """Two-sided p-values (one per column) of `observed` against the `[patterns, k]` null values."""
    tolerance = TIE_TOLERANCE * np.abs(observed)
    adjustment = 0 if exact else 1
    less = (np.count_nonzero(null <= observed + tolerance, axis=0) + adjustment) / (len(null) + adjustment)
    greater = (np.count_nonzero(null >= observed - tolerance, axis=0) + adjustment) / (len(null) + adjustment)
    return np.clip(2 * np.minimum(less, greater), 0.0, 1.0)


def paired_comparison(
    n: int,
    difference: Difference,
    *,
    differing: np.ndarray | None = None,
    resamples: int = 1000,
    permutations: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[PairedComparison]:
    """Compare methods a and b on the same `n` examples, one `PairedComparison` per value that
    `difference` returns (see the module docstring for the pooled-row convention). `differing`
    marks the examples whose two rows differ (default: all); the others are never swapped."""
    _check_confidence(confidence)
    examples = np.arange(n)
    draws = resampled_indices(n, resamples, seed)
    observed = np.atleast_1d(np.asarray(difference(examples, examples + n), dtype=float))
    if n >= 2:
        resampled = np.array([np.atleast_1d(difference(draw, draw + n)) for draw in draws], dtype=float)
        low, high = _percentiles(resampled, confidence)
    else:
        low = high = np.full_like(observed, np.nan)
    differing = np.ones(n, dtype=bool) if differing is None else np.asarray(differing, dtype=bool)
    if differing.shape != (n,):
        raise InputError(f"differing must mark each of the {n} examples, got shape {differing.shape}")
    patterns, exact = swap_patterns(differing, permutations, seed)
    swapped = examples + n * patterns  # pooled rows standing for "a" under each pattern
    null = np.array([np.atleast_1d(difference(rows, (rows + n) % (2 * n))) for rows in swapped], dtype=float)
    p_values = permutation_p_value(null, observed, exact)
    intervals = [Interval(float(v), float(lo), float(hi), confidence) for v, lo, hi in zip(observed, low, high)]
    return [
        PairedComparison(interval, float(p), exact, len(patterns), int(differing.sum()), n, resamples, seed)
        for interval, p in zip(intervals, p_values)
    ]


def smallest_p_value(differing: int) -> float:
    """The smallest two-sided exact permutation p-value attainable with `differing` examples."""
    return min(1.0, 2.0 / 2**differing)


def small_sample_caveat(n: int, *, noun: str = "paired example", paired: bool = True, alpha: float = 0.05) -> str | None:
    """Why intervals over `n` examples (and, for a `paired` comparison, its sign-flip p-values) cannot
    mean much, or None: the one wording of the comparison command's warning and of the figures'
    caution lines (`noun` names what was counted)."""
    reasons = []
    if n < MIN_INTERVAL_EXAMPLES:
        reasons.append(
            "there is no interval with one example"
            if n < 2
            else f"bootstrap intervals are too narrow below {MIN_INTERVAL_EXAMPLES}"
        )
    if paired and n < 2:
        reasons.append("the p-value is always 1")
    elif paired and smallest_p_value(n) > alpha:
        reasons.append(f"no two-sided p-value can fall below {smallest_p_value(n):.3g}")
    if not reasons:
        return None
    return f"only {n} {noun}{'s' if n != 1 else ''}: {' and '.join(reasons)}; read the differences as descriptive"


def mean_of(values: np.ndarray) -> Statistic:
    """The statistic "mean of `values` at the resampled indices"."""
    values = np.asarray(values, dtype=float)
    return lambda indices: float(values[indices].mean())


def mean_difference(a: np.ndarray, b: np.ndarray) -> Difference:
    """The `Difference` "mean of b minus mean of a" over pooled rows (a's first, then b's)."""
    pooled = np.concatenate([np.asarray(a, dtype=float), np.asarray(b, dtype=float)])
    return lambda rows_a, rows_b: np.array([pooled[rows_b].mean() - pooled[rows_a].mean()])


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
