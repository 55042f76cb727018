"""The hybrid's certificate: the Clopper–Pearson bound against scipy and hand values, the seeded
sample, and the adaptive growth on constructed scores and on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.engine.models import tiny_model
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.scores import score_heads
from workbench.scores.certificate import certify, clopper_pearson_upper, sample_order, sample_size
from workbench.scores.pcs import PCSScan, ScanOptions
from workbench.scores.ranking import ranked_heads


@pytest.mark.parametrize("n", [1, 7, 30, 59, 240])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.9875])
def test_the_bound_is_scipy_s_one_sided_clopper_pearson(n, confidence):
    for misses in sorted({0, 1, 2, n // 3, n - 1} & set(range(n))):
        expected = stats.binomtest(misses, n, alternative="less").proportion_ci(confidence, method="exact").high
        assert clopper_pearson_upper(misses, n, confidence) == pytest.approx(expected, abs=1e-10)
    assert clopper_pearson_upper(n, n, confidence) == 1.0


def test_the_bound_with_no_miss_is_the_closed_form():
    # P(no miss in n draws) = (1 - p)^n = 1 - c  at the bound, so U = 1 - (1 - c)^(1/n)
    assert clopper_pearson_upper(0, 59, 0.95) == pytest.approx(1 - 0.05 ** (1 / 59), abs=1e-12)
    assert clopper_pearson_upper(0, 1, 0.95) == pytest.approx(0.95, abs=1e-12)


def test_the_sample_size_is_the_least_that_can_meet_the_target():
    for target, confidence in [(0.05, 0.95), (0.1, 0.95), (0.05, 0.9875), (0.2, 0.99)]:
        size = sample_size(target, confidence)
        assert 1 - (1 - confidence) ** (1 / size) <= target < 1 - (1 - confidence) ** (1 / (size - 1))
    assert sample_size(0.05, 0.95) == 59  # ln(0.05) / ln(0.95) = 58.4


def test_the_sample_order_is_seeded_and_a_permutation():
    heads = [(layer, head) for layer in range(5) for head in range(6)]
    first = sample_order(heads, seed=3)
    assert first == sample_order(list(reversed(heads)), seed=3)  # the same draw whatever order the heads come in
    assert sorted(first) == heads
    assert first != sample_order(heads, seed=4)
    # uniform: each head leads the order about equally often over seeds
    leaders = [sample_order(heads, seed=seed)[0] for seed in range(3000)]
    counts = [leaders.count(head) for head in heads]
    assert stats.chisquare(counts).pvalue > 1e-3


def constructed(n_layers=10, n_heads=30):
    """Exact means where the estimate's order is good for its first 10 heads, then buries the true
    best 5 heads at positions 10-14 (the initial 10 candidates lack every one of them)."""
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    truth = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for position, head in enumerate(heads[:10]):
        truth[head] = 0.10 - 0.001 * position
    for position, head in enumerate(heads[10:15]):
        truth[head] = 1.0 - 0.01 * position
    return heads, truth


def test_the_growth_reaches_the_true_top_k_that_the_first_candidates_miss():
    order, truth = constructed()
    asked: list[list[tuple[int, int]]] = []

    def exact_means(heads):
        asked.append(list(heads))
        grid = torch.full_like(truth, float("nan"))
        for head in heads:
            grid[head] = truth[head]
        return grid

    certificate = certify(order, top_m=10, top_k=3, target=0.05, confidence=0.95, seed=0, exact_means=exact_means)
    # the first look (10 candidates): τ = 0.098 and 5 of the 290 others exceed it; a sample of 90 of them
    # finds one at least with probability 1 - C(285, 90) / C(290, 90) > 0.8, for seed 0 it does
    assert len(asked[0]) == 10 + certificate.sample_size
    assert sum(float(truth[head]) > 0.098 for head in asked[0][10:]) >= 1
    assert certificate.candidates == 20 and certificate.misses == 0  # grown once: τ is now the third of the buried heads
    assert certificate.threshold == pytest.approx(0.98)
    assert set(order[10:15]) <= set(order[: certificate.candidates])
    assert certificate.look_confidence == pytest.approx(1 - 0.05 / 5)  # looks at 10, 20, 40, 80, 160 candidates
    assert certificate.sample_size == 90  # ln(0.01) / ln(0.95) = 89.8
    assert certificate.bound == pytest.approx(clopper_pearson_upper(0, certificate.sample_size, certificate.look_confidence))
    assert certificate.bound <= 0.05


def test_a_miss_the_growth_never_reaches_makes_every_head_a_candidate():
    order = [(layer, head) for layer in range(2) for head in range(10)]
    truth = torch.zeros(2, 10, dtype=torch.float64)
    truth[order[-1]] = 1.0  # the best head is the estimate's last

    def exact_means(heads):
        grid = torch.full_like(truth, float("nan"))
        grid[tuple(zip(*heads))] = truth[tuple(zip(*heads))]
        return grid

    certificate = certify(order, top_m=4, top_k=2, target=0.01, confidence=0.95, seed=0, exact_means=exact_means)
    # looks at 4, 8, 16: the sample holds every head outside, so the rate is exact: 1/16, 1/12, 1/4 > 0.01
    assert certificate.candidates == 20 and certificate.bound == 0.0 and certificate.threshold is None


@pytest.fixture(scope="module")
def lens():
    return tiny_model(n_layers=4, n_heads=8, n_kv_heads=2)


@pytest.fixture(scope="module")
def examples(lens):
    topics = ["cats", "rain", "jazz", "tea"]
    return [tokenize_pair(lens, f"e{i}", f"u{i % 2}", f"Profile: likes {t}. Write a post.", f"All about {t}!")
            for i, t in enumerate(topics)]  # fmt: skip


def test_on_a_tiny_model_the_growth_takes_in_a_best_head_the_estimate_buries(lens, examples):
    exact = score_heads(lens, examples, method="exact", progress=False)
    truth = exact.mean()
    best = ranked_heads(truth)[0]
    # an estimate that ranks the truly best head last and the rest by their exact scores
    estimate = truth.clone()
    estimate[best] = truth.min() - 1
    magnitude = estimate.clamp(min=0)  # nor is it among the largest magnitudes
    estimates = {
        "pcs": estimate.expand(len(examples), -1, -1).clone(),
        "magnitude": magnitude.expand(len(examples), -1, -1).clone(),
    }
    options = ScanOptions(method="hybrid", top_k=2, top_m=4, miss_rate=0.03, seed=0)
    result = PCSScan(lens, examples, options, progress=False).verified_result(examples, estimates)
    certificate = result.metadata["certificate"]
    # 28 heads outside < the 116 a sample needs: the rate is exact, at least 1/28 > 0.03 until every head is in
    assert certificate["candidates"] == 32
    assert bool(result.exact[best])
    assert HeadWeights.from_scores(result, top_k=2).heads() == HeadWeights.from_scores(exact, top_k=2).heads()
    torch.testing.assert_close(result.per_example, exact.per_example, rtol=0, atol=1e-6)
    # without the certificate the buried head is never scored exactly
    plain = PCSScan(lens, examples, ScanOptions(method="hybrid", top_k=2, top_m=4), progress=False)
    assert not bool(plain.result(examples, estimates, plain.candidates(estimates)).exact[best])


def test_the_certified_scan_is_reproducible_and_records_its_certificate(lens, examples):
    first = score_heads(lens, examples, method="hybrid", top_k=2, miss_rate=0.2, seed=5, progress=False)
    again = score_heads(lens, examples, method="hybrid", top_k=2, miss_rate=0.2, seed=5, progress=False)
    other = score_heads(lens, examples, method="hybrid", top_k=2, miss_rate=0.2, seed=6, progress=False)
    certificate = first.metadata["certificate"]
    assert certificate == again.metadata["certificate"] and torch.equal(first.per_example, again.per_example)
    assert certificate["sample"] != other.metadata["certificate"]["sample"]
    sampled = {tuple(head) for head in certificate["sample"]}
    assert len(sampled) == certificate["sample_size"] == sample_size(0.2, certificate["look_confidence"])
    assert all(bool(first.exact[head]) for head in sampled)
    assert int(first.exact.sum()) == certificate["candidates"] + len(sampled)
    assert certificate["bound"] <= 0.2
    weights = HeadWeights.from_scores(first, top_k=2)
    assert weights.extra["certificate"] == certificate


def test_miss_rate_is_refused_where_it_means_nothing(lens, examples):
    with pytest.raises(InputError, match="not the exact method"):
        score_heads(lens, examples, method="exact", miss_rate=0.1, progress=False)
    with pytest.raises(InputError, match="miss_rate must lie strictly between 0 and 1, got 1"):
        score_heads(lens, examples, method="hybrid", miss_rate=1.0, progress=False)
    assert math.isfinite(clopper_pearson_upper(0, 3, 0.5))


def test_the_figure_and_the_report_state_the_bound(lens, examples):
    from workbench.figures.heatmaps import describe_scores
    from workbench.pipeline.report import verification_lines

    result = score_heads(lens, examples, method="hybrid", top_k=2, miss_rate=0.2, racing=True, seed=5, progress=False)
    certificate, racing = result.metadata["certificate"], result.metadata["racing"]
    phrase = describe_scores(result)["method"]
    assert f"certified: ≤ {certificate['bound']:.2f} of the other heads" in phrase and "(95%, 19 sampled)" in phrase
    assert f"raced: {racing['head_examples']} of {racing['head_examples_without_racing']}" in phrase
    report = " ".join(verification_lines(result))
    assert f"at most {certificate['bound']:.3f} of the others" in report and "19 sampled heads" in report
    plain = score_heads(lens, examples, method="hybrid", top_k=2, progress=False)
    assert "certified" not in describe_scores(plain)["method"] and verification_lines(plain) == []
