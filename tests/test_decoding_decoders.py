"""Every decoder on the generation loop against an independent reference (`reference_decoding`):
greedy loops of full forwards on a plain Hugging Face twin whose heads are suppressed by editing
its weights. Each decoder also meets a deliberately broken variant of itself (mask ignored, heads
shuffled, γ sign flipped, contrast prompts swapped, premature layer wrong, ...), which the same
comparison must catch: a test that cannot fail proves nothing."""

from __future__ import annotations

import math

import pytest
import torch
from reference_decoding import (
    STEPS,
    contrast,
    decode,
    decode_pair,
    entropy,
    head_output_means,
    layer_logits,
    next_logits,
    patched,
    shared_prefill_decode,
    twin,
)

import workbench.decoding.dola as dola_module
import workbench.decoding.greedy as greedy_module
from workbench.decoding import CAD, DPS, Contrast, DeCoRe, DoLa, Greedy, RandomHeads, Suppressed, Suppression, generate
from workbench.decoding.base import StepScores
from workbench.decoding.cad import _ContextContrastRun
from workbench.decoding.dola import candidate_blocks, jensen_shannon
from workbench.decoding.dps import SelfContrastRun
from workbench.engine.masks import HeadMask
from workbench.heads import HeadWeights

TEXTS = ["hello there", "hi", "a somewhat longer prompt, with punctuation!"]


@pytest.fixture(scope="module")
def hf():
    return twin()


@pytest.fixture(scope="module")
def prompts(tiny):
    return [tiny.encode_chat(text) for text in TEXTS]


@pytest.fixture(scope="module")
def weights(tiny):
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[0, 1], grid[1, 2], grid[2, 0] = 1.0, 0.6, 0.3
    return HeadWeights(grid)


def tokens(lens, prompts, decoder, contrast_prompts=None, **options):
    generations = generate(lens, prompts, decoder=decoder, contrast_prompts=contrast_prompts, max_new_tokens=STEPS, **options)
    return [g.token_ids for g in generations]


def greedy_reference(hf, lens, prompts):
    return [decode(p, lambda s: next_logits(hf, s), lens.stop_token_ids) for p in prompts]


def dps_reference(hf, lens, prompts, weights, options):
    """The reference of `DPS(weights, **options)` (masked prefill)."""
    w = weights.weights
    suppression, site = options.get("suppression", "weighted"), options.get("site", "head-output")
    scale = 1 - w if suppression == "weighted" else (w == 0).float()
    z_ref = head_output_means(hf, prompts) if suppression == "mean" else None
    weak = patched(hf, query_scale=scale) if site == "query-scale" else patched(hf, output_scale=scale, z_ref=z_ref)
    gamma, cap = options.get("gamma", 1.0), options.get("gamma_cap")
    ln_vocab = options.get("entropy_scale") == "ln-vocab"

    def score(sequence):
        full = next_logits(hf, sequence)
        g = gamma if gamma != "entropy" else entropy(full) / (math.log(full.numel()) if ln_vocab else 1)
        g = g if cap is None else min(g, cap)
        return contrast(full, next_logits(weak, sequence), g, options.get("combine", "logits"), options.get("plausibility"))

    return [decode(p, score, lens.stop_token_ids) for p in prompts]


# --- broken variants ------------------------------------------------------------------------


def mask_ignored(monkeypatch, lens):
    monkeypatch.setattr(Suppression, "mask", lambda self, lens_, heads, prompts: HeadMask.identity(lens.geometry))


def heads_shuffled(monkeypatch, lens):
    real = Suppression.mask
    monkeypatch.setattr(
        Suppression, "mask", lambda self, lens_, heads, prompts: real(self, lens_, heads.shuffled(seed=3), prompts)
    )


def gamma_sign_flipped(monkeypatch, lens):
    real = Contrast.gammas
    monkeypatch.setattr(Contrast, "gammas", lambda self, full: -real(self, full))


def rows_mixed_up(monkeypatch, lens):
    monkeypatch.setattr(greedy_module._GreedyRun, "score", lambda self, logits: StepScores(logits.roll(1, 0), logits))


def contrast_prompts_swapped(monkeypatch, lens):
    monkeypatch.setattr(_ContextContrastRun, "rows", lambda self, prompts, contrasts: list(prompts) + list(contrasts)[::-1])


def premature_layer_wrong(monkeypatch, lens):
    monkeypatch.setattr(dola_module, "jensen_shannon", lambda final, premature: -jensen_shannon(final, premature))


def prefill_not_shared(monkeypatch, lens):
    real = SelfContrastRun.__init__
    monkeypatch.setattr(SelfContrastRun, "__init__", lambda self, c, masks, shared: real(self, c, masks, False))


def control_ignored(monkeypatch, lens):
    monkeypatch.setattr(RandomHeads, "control_heads", lambda self, lens_: self.heads)


def assert_caught(monkeypatch, lens, breakage, run, reference):
    with monkeypatch.context() as patch:
        breakage(patch, lens)
        assert run() != reference, f"{breakage.__name__} was not caught"


# --- greedy ---------------------------------------------------------------------------------


def test_greedy_equals_full_forwards_of_the_twin(tiny, hf, prompts, monkeypatch):
    reference = greedy_reference(hf, tiny, prompts)
    assert tokens(tiny, prompts, Greedy()) == reference
    assert tokens(tiny, prompts, None) == reference  # the default decoder
    assert tokens(tiny, prompts, Greedy(), batch_size=1) == reference
    assert_caught(monkeypatch, tiny, rows_mixed_up, lambda: tokens(tiny, prompts, Greedy()), reference)


# --- DPS ------------------------------------------------------------------------------------

DPS_OPTIONS = [
    dict(gamma=1.5),
    dict(gamma=2.0, combine="logprobs", plausibility=0.2),
    dict(gamma="entropy", entropy_scale="ln-vocab"),
    dict(gamma="entropy", gamma_cap=0.7, combine="logprobs"),
    dict(gamma=1.0, suppression="zero"),
    dict(gamma=1.0, suppression="mean"),
    dict(gamma=1.0, site="query-scale"),
]


@pytest.mark.parametrize("options", DPS_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_dps_equals_the_contrast_of_a_weight_patched_twin(tiny, hf, prompts, weights, options, monkeypatch):
    reference = dps_reference(hf, tiny, prompts, weights, options)
    assert reference != greedy_reference(hf, tiny, prompts)  # the setting matters here
    decoder = DPS(weights, **options)
    generations = generate(tiny, prompts, decoder=decoder, max_new_tokens=STEPS, diagnostics=True)
    assert [g.token_ids for g in generations] == reference
    first, full = generations[0].steps[0], next_logits(hf, prompts[0])
    assert first["top_full"][0]["value"] == pytest.approx(float(full.max()), abs=1e-4)
    assert first["entropy"] == pytest.approx(entropy(full), abs=1e-4)
    for breakage in (mask_ignored, heads_shuffled, gamma_sign_flipped):
        assert_caught(monkeypatch, tiny, breakage, lambda: tokens(tiny, prompts, decoder), reference)


def test_dps_mean_suppression_with_a_given_reference_activation(tiny, hf, prompts, weights):
    z_mean = head_output_means(hf, prompts[:1])  # the mean over one prompt, not over the batch
    weak = patched(hf, output_scale=(weights.weights == 0).float(), z_ref=z_mean)
    score = lambda s: contrast(next_logits(hf, s), next_logits(weak, s), 1.0)
    reference = [decode(p, score, tiny.stop_token_ids) for p in prompts]
    assert reference != dps_reference(hf, tiny, prompts, weights, dict(suppression="mean"))
    assert tokens(tiny, prompts, DPS(weights, suppression="mean", z_ref=z_mean)) == reference


def test_dps_with_gamma_zero_is_greedy(tiny, hf, prompts, weights):
    for combine in ("logits", "logprobs"):
        assert tokens(tiny, prompts, DPS(weights, gamma=0.0, combine=combine)) == greedy_reference(hf, tiny, prompts)


@pytest.mark.parametrize("gamma", [1.5, "entropy"])
def test_dps_shared_prefill_continues_the_full_models_prompt_cache(tiny, hf, prompts, weights, gamma, monkeypatch):
    """The authors' prefill at the head output: the weak twin continues a cache of the prompt but
    its last token made by the unpatched twin."""
    weak = patched(hf, output_scale=1 - weights.weights)
    reference = [shared_prefill_decode(hf, weak, p, gamma, "logits", tiny.stop_token_ids) for p in prompts]
    decoder = DPS(weights, gamma=gamma, prefill="shared")
    assert tokens(tiny, prompts, decoder) == reference
    assert reference != dps_reference(hf, tiny, prompts, weights, dict(gamma=gamma))  # another procedure
    for breakage in (prefill_not_shared, mask_ignored):
        assert_caught(monkeypatch, tiny, breakage, lambda: tokens(tiny, prompts, decoder), reference)


@pytest.mark.parametrize("control", ["random-heads", "shuffled", "random-mask"])
def test_random_heads_decode_with_their_control_heads(tiny, hf, prompts, weights, control, monkeypatch):
    drawn = {
        "random-heads": HeadWeights.random_heads(tiny.geometry, len(weights.heads()), seed=5),
        "shuffled": weights.shuffled(seed=5),
        "random-mask": weights.random_mask(seed=5),
    }[control]
    reference = dps_reference(hf, tiny, prompts, drawn, dict(gamma=2.0))
    decoder = RandomHeads(weights, gamma=2.0, control=control, control_seed=5)
    assert tokens(tiny, prompts, decoder) == reference
    assert_caught(monkeypatch, tiny, control_ignored, lambda: tokens(tiny, prompts, decoder), reference)


def test_suppressed_decodes_with_the_patched_twin_alone(tiny, hf, prompts, weights, monkeypatch):
    weak = patched(hf, output_scale=1 - weights.weights)
    reference = [decode(p, lambda s: next_logits(weak, s), tiny.stop_token_ids) for p in prompts]
    assert reference != greedy_reference(hf, tiny, prompts)
    assert tokens(tiny, prompts, Suppressed(weights)) == reference
    assert_caught(monkeypatch, tiny, mask_ignored, lambda: tokens(tiny, prompts, Suppressed(weights)), reference)


# --- DeCoRe, CAD, DoLa ----------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.5, "entropy"])
def test_decore_contrasts_the_heads_zeroed_on_logprobs(tiny, hf, prompts, weights, gamma, monkeypatch):
    zeroed = patched(hf, output_scale=(weights.weights == 0).float())

    def score(sequence):
        full = next_logits(hf, sequence)
        return contrast(full, next_logits(zeroed, sequence), entropy(full) if gamma == "entropy" else gamma, "logprobs")

    reference = [decode(p, score, tiny.stop_token_ids) for p in prompts]
    assert reference != greedy_reference(hf, tiny, prompts)
    assert tokens(tiny, prompts, DeCoRe(weights, gamma=gamma)) == reference
    assert_caught(monkeypatch, tiny, gamma_sign_flipped, lambda: tokens(tiny, prompts, DeCoRe(weights, gamma=gamma)), reference)


def test_cad_contrasts_the_prompt_without_the_profile(tiny, hf, prompts, monkeypatch):
    with_profile = [tiny.encode_chat("I love hiking. " + text) for text in TEXTS]

    def score(sequence, other):
        return contrast(next_logits(hf, sequence), next_logits(hf, other), 0.5)

    reference = [decode_pair(p, c, score, tiny.stop_token_ids) for p, c in zip(with_profile, prompts)]
    assert reference != greedy_reference(hf, tiny, with_profile)
    assert tokens(tiny, with_profile, CAD(), prompts) == reference
    run = lambda: tokens(tiny, with_profile, CAD(), prompts)
    assert_caught(monkeypatch, tiny, contrast_prompts_swapped, run, reference)
    # contrasted with itself, CAD is greedy (the authors' CAD baseline on LaMP)
    assert tokens(tiny, prompts, CAD(), prompts) == greedy_reference(hf, tiny, prompts)


def test_dola_contrasts_the_most_divergent_premature_layer(tiny, hf, prompts, monkeypatch):
    candidates, beta = [0, 1], 0.1
    chosen_layers = []

    def score(sequence):
        final = next_logits(hf, sequence)
        layers = torch.stack([layer_logits(hf, sequence, block) for block in candidates])
        p, q = final.softmax(-1), layers.softmax(-1)
        m = 0.5 * (p + q)
        divergence = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
        premature = int(divergence.argmax())
        chosen_layers.append(candidates[premature])
        scores = final.log_softmax(-1) - layers[premature].log_softmax(-1)
        scores[p < beta * p.max()] = -math.inf
        return scores

    reference = [decode(p, score, tiny.stop_token_ids) for p in prompts]
    assert reference != greedy_reference(hf, tiny, prompts)
    decoded = generate(tiny, prompts, decoder=DoLa(candidate_layers=candidates), max_new_tokens=STEPS, diagnostics=True)
    assert [g.token_ids for g in decoded] == reference
    assert [s["premature_layer"] for g in decoded for s in g.steps] == chosen_layers
    run = lambda: tokens(tiny, prompts, DoLa(candidate_layers=candidates))
    assert_caught(monkeypatch, tiny, premature_layer_wrong, run, reference)


def test_dola_jensen_shannon_and_candidates():
    final = torch.tensor([[0.0, 1.0, 2.0]])
    same, other = final[:, None], torch.tensor([[[2.0, 1.0, 0.0]]])
    assert float(jensen_shannon(final, same)) == pytest.approx(0.0, abs=1e-7)
    p, q = final.softmax(-1)[0], other.softmax(-1)[0, 0]
    m = (p + q) / 2
    expected = 0.5 * float((p * (p / m).log()).sum() + (q * (q / m).log()).sum())
    assert float(jensen_shannon(final, other)) == pytest.approx(expected, rel=1e-5)
    assert candidate_blocks("low", 30) == list(range(0, 15, 2))
    assert candidate_blocks("high", 30) == list(range(15, 29, 2))
    assert candidate_blocks("high", 3) == [1]
