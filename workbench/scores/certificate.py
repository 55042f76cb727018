"""A certificate for the hybrid's candidates: an upper bound on how many heads outside them belong
in the top K, from a seeded random sample of those heads scored exactly (docs/certified_hybrid.md).

Definitions. The candidates C are the first m heads of an order made from any estimate grid
(`candidate_order`); τ is the K-th highest exact mean PCS among C. A head outside C *misses* when
its exact mean PCS exceeds τ: it would displace one of the K best candidates. The miss rate is
p = (heads outside C that miss) / (heads outside C), so p · |outside| bounds how many of the true
top K the candidates lack. A uniform sample (without replacement, seeded) of s heads outside C is
scored exactly; x of them miss; the one-sided Clopper–Pearson bound U(x, s) at confidence c
(`clopper_pearson_upper`) has P(p ≤ U) ≥ c. It is the binomial bound; for draws without
replacement it is conservative (the hypergeometric tail below the mean is the lighter one).

The candidate count adapts to a target rate (`certify`): m = top_m, 2·top_m, 4·top_m, ... below the
number of heads (L looks); each look's bound is taken at confidence 1 − (1 − c) / L, so all L bounds
hold together with probability ≥ c (Bonferroni) and so does the one that stops the growth. It stops
at the first look whose bound is at most the target; else every head becomes a candidate (nothing
outside: p = 0). The sample size s is the least whose bound with no miss meets the target at the
look's confidence. The sample is the first s heads outside the candidates in a seeded random order
of all heads (`sample_order`): a uniform sample of them at every look, because the candidates
grow along the estimate's order, not the sample's; a grown look keeps the sampled heads still outside
and adds the next ones in that order. When the sample holds every head outside C, p is known
exactly and is the bound. τ is taken from the candidates alone, so it does not depend
on the sample; a sampled head that misses is scored exactly and so can still be selected.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.scores.ranking import ranked_heads
from workbench.tensor_types import HeadGrid


def clopper_pearson_upper(misses: int, n: int, confidence: float) -> float:
    """The one-sided Clopper–Pearson upper bound on a binomial rate after `misses` in `n` draws:
    the p at which P(X ≤ misses | n, p) = 1 − confidence (1 when n is 0 or every draw missed)."""
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if not 0 <= misses <= n:
        raise ValueError(f"misses must lie in 0..{n}, got {misses}")
    if misses == n:
        return 1.0
    alpha = 1.0 - confidence
    low, high = 0.0, 1.0  # binomial_cdf falls as p grows: bisect for the crossing
    for _ in range(200):
        middle = (low + high) / 2
        if binomial_cdf(misses, n, middle) > alpha:
            low = middle
        else:
            high = middle
        if high - low < 1e-15:
            break
    return high


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), summed in log space."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(term - top) for term in terms))


def sample_size(target: float, confidence: float) -> int:
    """The least number of sampled heads whose bound, with no miss among them, is at most `target`."""
    size = max(1, math.floor(math.log(1 - confidence) / math.log(1 - target)))
    while clopper_pearson_upper(0, size, confidence) > target:
        size += 1
    return size


def look_counts(top_m: int, n_heads: int) -> list[int]:
    """The candidate counts the growth tries: top_m, then doubling, each below `n_heads`."""
    counts = []
    count = top_m
    while count < n_heads:
        counts.append(count)
        count *= 2
    return counts


def sample_order(heads: Sequence[Head], seed: int) -> list[Head]:
    """`heads` in a seeded random order: the first s of any fixed subset are a uniform sample of it."""
    order = sorted(heads)
    random.Random(f"{seed}:certificate").shuffle(order)
    return order


def candidate_order(initial: Sequence[Head], estimate: HeadGrid) -> list[Head]:
    """Every head: the `initial` candidates first, then the others best estimate first."""
    chosen = set(initial)
    return [*initial, *(head for head in ranked_heads(estimate) if head not in chosen)]


@dataclass(frozen=True)
class Certificate:
    """What `certify` established: with probability ≥ `confidence`, at most a fraction `bound` of
    the heads outside the `candidates` first heads of the order have an exact mean PCS above
    `threshold` (τ, the K-th best among the candidates). `sample`: the sampled heads outside the
    final candidates ([layer, head]; at most `sample_size`), `misses` of them above τ;
    `look_confidence`: each look's level (Bonferroni over `looks` looks); `exact_rate`: the sample
    held every head outside, so the bound is the exact rate."""

    target: float
    confidence: float
    look_confidence: float
    looks: int
    top_k: int
    candidates: int
    n_heads: int
    sample_size: int
    threshold: float | None
    sample: list[list[int]]
    misses: int
    bound: float
    exact_rate: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One sentence: the bound and what it rests on."""
        if self.candidates == self.n_heads:
            return f"every head scored exactly (the sample could not bring the miss-rate bound to {self.target:g})"
        how = "exactly (the sample is every head outside)" if self.exact_rate else (
            f"with {self.confidence:.0%} confidence (Clopper–Pearson, {len(self.sample)} sampled heads, "
            f"{self.misses} above the K-th candidate)"
        )  # fmt: skip
        return (f"{self.candidates} of {self.n_heads} heads verified as candidates; at most {self.bound:.3f} of the "
                f"others exceed the top-{self.top_k}'s K-th exact score, {how}")  # fmt: skip


def certify(
    order: Sequence[Head],
    *,
    top_m: int,
    top_k: int,
    target: float,
    confidence: float,
    seed: int,
    exact_means: Callable[[list[Head]], HeadGrid],
) -> Certificate:
    """Grow the candidates along `order` until the miss-rate bound is at most `target` (see the
    module docstring). `exact_means(heads)` scores `heads` exactly (reusing what it has scored)
    and returns the exact mean PCS grid (NaN elsewhere)."""
    if not 0 < target < 1:
        raise InputError(f"miss_rate must lie strictly between 0 and 1, got {target}")
    n_heads = len(order)
    counts = look_counts(min(top_m, n_heads), n_heads)
    level = 1 - (1 - confidence) / max(1, len(counts))
    size = sample_size(target, level)
    priority = sample_order(order, seed)
    common: dict[str, Any] = {"target": target, "confidence": confidence, "look_confidence": level, "looks": len(counts), "n_heads": n_heads,
              "sample_size": size}  # fmt: skip
    for count in counts:
        candidates = list(order[:count])
        inside = set(candidates)
        outside = [head for head in priority if head not in inside][:size]
        means = exact_means(candidates + outside)
        k = min(top_k, count)
        threshold = float(sorted((float(means[head]) for head in candidates), reverse=True)[k - 1])
        misses = sum(float(means[head]) > threshold for head in outside)
        exact_rate = len(outside) == n_heads - count
        bound = misses / len(outside) if exact_rate else clopper_pearson_upper(misses, len(outside), level)
        if bound <= target:
            return Certificate(**common, top_k=k, candidates=count, threshold=threshold, sample=sorted(map(list, outside)),
                               misses=misses, bound=bound, exact_rate=exact_rate)  # fmt: skip
    exact_means(list(order))
    return Certificate(**common, top_k=min(top_k, n_heads), candidates=n_heads, threshold=None, sample=[], misses=0,
                       bound=0.0, exact_rate=True)  # fmt: skip
