"""The raced exact phase: Student-t quantiles against scipy, the elimination rule on constructed
per-example scores (a clear gap settles early, ties never), and a raced tiny-model scan against
the plain hybrid."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.engine.models import tiny_model
from workbench.heads import HeadWeights
from workbench.scores import score_heads
from workbench.scores.racing import filled_with_means, race, race_order, t_cdf, t_quantile


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 16, 61])
def test_t_distribution_matches_scipy(df):
    for x in (-4.2, -1.0, 0.0, 0.3, 2.0, 25.0):
        assert t_cdf(x, df) == pytest.approx(stats.t.cdf(x, df), abs=1e-12)
    for probability in (0.6, 0.975, 1 - 1e-5):
        assert t_quantile(probability, df) == pytest.approx(stats.t.ppf(probability, df), rel=1e-9)


def fake_scores(per_head: dict[tuple[int, int], list[float]], asked: list[tuple[int, list]]):
    """A scorer that returns constructed per-example values and logs what the race asked for."""

    def score(example, heads):
        asked.append((example, list(heads)))
        grid = torch.full((2, 4), float("nan"), dtype=torch.float64)
        for head in heads:
            grid[head] = per_head[head][example]
        return grid

    return score


NOISE = [0.01 * ((7 * i) % 5 - 2) for i in range(20)]  # a fixed wiggle of ±0.02 (not constant: sd > 0)


def test_a_clear_gap_settles_every_head_after_three_examples():
    high, low = [(0, 0), (1, 3)], [(0, 1), (0, 2), (0, 3), (1, 0)]
    per_head = {head: [5.0 + w for w in NOISE] for head in high} | {head: [0.0 + w for w in NOISE] for head in low}
    asked: list = []
    counts = race(high + low, 20, top_k=2, confidence=0.95, seed=0, score=fake_scores(per_head, asked))
    # δ = 0.05 / (6 · 20): after two examples t(1 − δ/2, 1) ≈ 1528 makes every interval wider than the gap;
    # after three t(·, 2) ≈ 49 and sd ≤ 0.02 give half-widths below 0.6, far inside the gap of 5
    assert counts == dict.fromkeys(high + low, 3)
    assert len(asked) == 3 and [example for example, _ in asked] == race_order(20, 0)[:3]


def test_tied_heads_at_the_boundary_are_never_settled():
    tied, low = [(0, 0), (0, 1)], [(1, 0), (1, 1)]
    per_head = {head: [1.0 + w for w in NOISE] for head in tied} | {head: [-3.0 + w for w in NOISE] for head in low}
    asked: list = []
    counts = race(tied + low, 20, top_k=1, confidence=0.95, seed=1, score=fake_scores(per_head, asked))
    assert counts[(0, 0)] == counts[(0, 1)] == 20  # which of two equal heads is first is never settled
    assert counts[(1, 0)] == counts[(1, 1)] == 3
    # constant scores: zero-width intervals that touch
    constant = {(0, 0): [1.0] * 20, (0, 1): [1.0] * 20, (1, 0): [0.0] * 20}
    counts = race(list(constant), 20, top_k=1, confidence=0.95, seed=1, score=fake_scores(constant, []))
    assert counts == {(0, 0): 20, (0, 1): 20, (1, 0): 2}


def test_heads_whose_scores_overlap_stay_in_the_race():
    # two heads whose per-example scores swap order from example to example: mean 1.0 against 0.9
    first = [1.0 + (0.5 if i % 2 else -0.5) for i in range(20)]
    second = [0.9 + (-0.5 if i % 2 else 0.5) for i in range(20)]
    counts = race([(0, 0), (0, 1)], 20, top_k=1, confidence=0.95, seed=0,
                  score=fake_scores({(0, 0): first, (0, 1): second}, []))  # fmt: skip
    assert counts == {(0, 0): 20, (0, 1): 20}


def test_gaps_are_filled_with_the_mean_of_the_scored_examples():
    values = torch.tensor([[[1.0, 2.0]], [[3.0, float("nan")]], [[float("nan"), float("nan")]]], dtype=torch.float64)
    filled = filled_with_means(values)
    assert filled[:, 0, 0].tolist() == [1.0, 3.0, 2.0]
    assert filled[:, 0, 1].tolist() == [2.0, 2.0, 2.0]
    assert math.isclose(float(filled.mean(dim=0)[0, 0]), 2.0)


@pytest.fixture(scope="module")
def lens():
    return tiny_model(n_layers=4, n_heads=8, n_kv_heads=2)


@pytest.fixture(scope="module")
def examples(lens):
    topics = ["cats", "rain", "jazz", "tea", "golf", "maps", "bees", "snow"]
    return [tokenize_pair(lens, f"e{i}", f"u{i % 3}", f"Profile: likes {t}. Write a post.", f"All about {t}!")
            for i, t in enumerate(topics)]  # fmt: skip


def test_a_raced_scan_keeps_the_plain_hybrid_s_exact_values_and_its_selection(lens, examples):
    plain = score_heads(lens, examples, method="hybrid", top_k=2, top_m=12, progress=False)
    raced = score_heads(lens, examples, method="hybrid", top_k=2, top_m=12, racing=True, confidence=0.8, progress=False)
    assert torch.equal(raced.exact, plain.exact)
    record = raced.metadata["racing"]
    assert record["head_examples_without_racing"] == 12 * len(examples)
    assert record["head_examples"] < record["head_examples_without_racing"]  # some head settled early
    for layer, head, count in record["examples_scored"]:
        assert count >= 2
        values, truth = raced.per_example[:, layer, head], plain.per_example[:, layer, head]
        scored = values == truth  # the scored examples hold the plain scan's exact values, bit for bit
        assert int(scored.sum()) >= count
        if count < len(examples):
            assert torch.allclose(values[~scored], truth[scored].mean().expand(int((~scored).sum())))
    assert torch.equal(raced.per_example[:, ~raced.exact], plain.per_example[:, ~plain.exact])
    assert HeadWeights.from_scores(raced, top_k=2).heads() == HeadWeights.from_scores(plain, top_k=2).heads()


def test_racing_off_is_the_plain_hybrid(lens, examples):
    plain = score_heads(lens, examples, method="hybrid", top_k=2, progress=False)
    off = score_heads(lens, examples, method="hybrid", top_k=2, racing=False, confidence=0.5, progress=False)
    assert torch.equal(off.per_example, plain.per_example) and torch.equal(off.exact, plain.exact)
    assert "racing" not in off.metadata and "certificate" not in off.metadata
