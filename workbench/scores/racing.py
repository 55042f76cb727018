"""Racing the exact phase: score heads example by example and stop re-scoring a head once its place
relative to the top K is settled (successive elimination; docs/certified_hybrid.md).

Rule. Examples come in a seeded random order (`race_order`). After each example, every head still
racing that has n ≥ 2 exact values gets a Student-t interval of its mean,
mean ± t(1 − δ/2, n − 1) · sd / √n, with δ = (1 − confidence) / (heads · examples): Bonferroni over
every interval the race can look at, so that all of them hold together with probability ≥ the
confidence. A head is settled *out* when at least K other heads have a lower bound above its upper
bound, and settled *in* when fewer than K other heads have an upper bound at or above its lower
bound; a settled head keeps its last interval and is not scored again. Heads whose intervals touch
stay in the race (ties are never settled), and every head is scored on at least two examples.

Assumption: the target is the mean over all the examples of the scan. The race's prefix is then a
uniform sample without replacement of them (the order is random), and the t interval treats each
head's per-example scores as roughly normal (no finite-population correction, which would only
narrow it). With heavy-tailed scores and few examples the stated confidence is approximate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch

from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.tensor_types import HeadGrid

MIN_EXAMPLES = 2  # a t interval needs two values


def t_quantile(probability: float, df: int) -> float:
    """The `probability` quantile (above 0.5) of Student's t with integer `df`, by bisection of its CDF."""
    if not 0.5 <= probability < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 <= probability < 1 and df >= 1, got {probability}, {df}")
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return high


def t_cdf(x: float, df: int) -> float:
    """P(T ≤ x) for Student's t with integer `df`, from the closed form of P(|T| ≤ x) in θ = atan(x / √df)
    (a finite sum of powers of cos θ: odd df adds θ and the arctangent series, even df the sine series)."""
    theta = math.atan(abs(x) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:
        term, total = math.cos(theta), 0.0
        if df > 1:
            total = term
            for j in range(3, df - 1, 2):  # cos^j θ · (2·4···(j−1)) / (1·3···j)
                term *= cos2 * (j - 1) / j
                total += term
        inside = 2 / math.pi * (theta + math.sin(theta) * total)
    else:
        term, total = 1.0, 1.0
        for j in range(2, df - 1, 2):  # cos^j θ · (1·3···(j−1)) / (2·4···j)
            term *= cos2 * (j - 1) / j
            total += term
        inside = math.sin(theta) * total
    return 0.5 + math.copysign(inside / 2, x)


def race_order(n_examples: int, seed: int) -> list[int]:
    """The seeded random order in which the race scores the examples."""
    order = list(range(n_examples))
    random.Random(f"{seed}:race").shuffle(order)
    return order


def settled_heads(
    values: dict[Head, list[float]], bounds: dict[Head, tuple[float, float]], top_k: int, delta: float
) -> dict[Head, str]:
    """Which heads of `values` (each head's exact values so far) are now settled, `in` or `out` of
    the top `top_k`; `bounds` holds the frozen intervals of heads settled before (and is updated)."""
    for head, scored in values.items():
        n = len(scored)
        if n < MIN_EXAMPLES:
            bounds[head] = (-math.inf, math.inf)
            continue
        mean = math.fsum(scored) / n
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in scored) / (n - 1))
        half = t_quantile(1 - delta / 2, n - 1) * sd / math.sqrt(n)
        bounds[head] = (mean - half, mean + half)
    decided = {}
    for head in values:
        low, high = bounds[head]
        if math.isinf(low):
            continue
        others = [bound for other, bound in bounds.items() if other != head]
        if sum(other_low > high for other_low, _ in others) >= top_k:
            decided[head] = "out"
        elif sum(other_high >= low for _, other_high in others) < top_k:
            decided[head] = "in"
    return decided


def race(
    heads: Sequence[Head],
    n_examples: int,
    *,
    top_k: int,
    confidence: float,
    seed: int,
    score: Callable[[int, list[Head]], HeadGrid],
) -> dict[Head, int]:
    """Race `heads` over the examples (see the module docstring); `score(example, heads)` gives that
    example's exact scores of `heads` (a grid). Returns each head's number of examples scored."""
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    heads = list(heads)
    delta = (1 - confidence) / max(1, len(heads) * n_examples)
    values: dict[Head, list[float]] = {head: [] for head in heads}
    bounds: dict[Head, tuple[float, float]] = {}
    active = list(heads)
    for example in race_order(n_examples, seed):
        if not active:
            break
        grid = score(example, active)
        for head in active:
            values[head].append(float(grid[head]))
        decided = settled_heads({head: values[head] for head in active}, bounds, top_k, delta)
        active = [head for head in active if head not in decided]
    return {head: len(scored) for head, scored in values.items()}


def filled_with_means(per_example: torch.Tensor) -> torch.Tensor:
    """`per_example` ([example, layer, head], NaN where a raced head was not scored) with each gap
    filled by that head's mean over the examples it was scored on, so the mean over all examples is
    that mean (heads scored on no example stay NaN)."""
    means = per_example.nanmean(dim=0, keepdim=True).expand_as(per_example)
    return torch.where(per_example.isnan(), means, per_example)
