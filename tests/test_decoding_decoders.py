"""Every decoder against a hand-written, uncached, one-prompt-at-a-time reference computation."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.decoding import CAD, DPS, DeCoRe, DoLa, Greedy, Suppressed, generate
from workbench.decoding.dola import candidate_blocks, jensen_shannon
from workbench.heads import HeadWeights
from workbench.masks import HeadMask

STEPS = 8
TEXTS = ["hello there", "hi", "a somewhat longer prompt, with punctuation!"]


@pytest.fixture(scope="module")
def prompts(tiny):
    return [tiny.encode_chat(text) for text in TEXTS]


@pytest.fixture(scope="module")
def weights(tiny):
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[0, 1], grid[1, 2], grid[2, 0] = 1.0, 0.6, 0.3
    return HeadWeights(grid)


def last_logits(lens, sequence, mask=None):
    return lens.forward([sequence], mask=mask)[0, -1].float()


def reference_decode(lens, prompt, score):
    """Greedy on `score(sequence)`, recomputing every forward from scratch; stops like the loop."""
    sequence, generated = list(prompt), []
    for _ in range(STEPS):
        token = int(score(sequence).argmax())
        generated.append(token)
        sequence.append(token)
        if token in lens.stop_token_ids:
            break
    return generated


def contrast(full, weak, gamma, combine="logits", beta=None):
    if combine == "logprobs":
        full_used, weak = full.log_softmax(-1), weak.log_softmax(-1)
    else:
        full_used = full
    scores = (1 + gamma) * full_used - gamma * weak
    if beta is not None:
        probs = full.softmax(-1)
        scores[probs < beta * probs.max()] = -math.inf
    return scores


def entropy_of(logits):
    p = logits.softmax(-1)
    return float(-(p * p.log()).sum())


def tokens(generations):
    return [g.token_ids for g in generations]


def test_dps_with_gamma_zero_is_greedy(tiny, prompts, weights):
    greedy = generate(tiny, prompts, max_new_tokens=STEPS)
    for combine in ("logits", "logprobs"):
        dps = generate(tiny, prompts, decoder=DPS(weights, gamma=0.0, combine=combine), max_new_tokens=STEPS)
        assert tokens(dps) == tokens(greedy)
    assert tokens(greedy) == [reference_decode(tiny, p, lambda s: last_logits(tiny, s)) for p in prompts]


@pytest.mark.parametrize(
    "options",
    [
        dict(gamma=1.5),
        dict(gamma=2.0, combine="logprobs", plausibility=0.2),
        dict(gamma="adaptive", normalize_entropy=True),
        dict(gamma="adaptive", gamma_cap=0.7, combine="logprobs"),
        dict(gamma=1.0, suppression="zero"),
        dict(gamma=1.0, site="query-scale"),
    ],
)
def test_dps_equals_two_separate_passes(tiny, prompts, weights, options):
    decoder = DPS(weights, **options)
    w = weights.weights
    scale = 1 - w if decoder.suppression == "weighted" else (w == 0).float()
    generic = HeadMask(scale[None], site=decoder.site)

    def score(sequence):
        full, masked = last_logits(tiny, sequence), last_logits(tiny, sequence, generic)
        gamma = decoder.gamma
        if gamma == "adaptive":
            gamma = entropy_of(full) / (math.log(full.numel()) if decoder.normalize_entropy else 1)
            gamma = min(gamma, decoder.gamma_cap) if decoder.gamma_cap is not None else gamma
        return contrast(full, masked, gamma, decoder.combine, decoder.plausibility)

    generations = generate(tiny, prompts, decoder=decoder, max_new_tokens=STEPS, diagnostics=True)
    assert tokens(generations) == [reference_decode(tiny, p, score) for p in prompts]
    first = generations[0].steps[0]
    full, masked = last_logits(tiny, prompts[0]), last_logits(tiny, prompts[0], generic)
    assert first["top_full"][0]["value"] == pytest.approx(float(full.max()), abs=1e-4)
    assert first["top_contrast"][0]["value"] == pytest.approx(float(masked.max()), abs=1e-4)
    assert first["entropy"] == pytest.approx(entropy_of(full), abs=1e-4)


def test_dps_mean_suppression_uses_mean_head_outputs(tiny, prompts, weights):
    z_mean = tiny.mean_head_outputs(prompts)
    binary = (weights.weights > 0).float()
    generic = HeadMask((1 - binary)[None], z_ref=z_mean)
    expected = [
        reference_decode(tiny, p, lambda s: contrast(last_logits(tiny, s), last_logits(tiny, s, generic), 1.0)) for p in prompts
    ]
    assert tokens(generate(tiny, prompts, decoder=DPS(weights, suppression="mean"), max_new_tokens=STEPS)) == expected
    given = DPS(weights, suppression="mean", z_ref=z_mean)
    assert tokens(generate(tiny, prompts, decoder=given, max_new_tokens=STEPS)) == expected


def test_dps_shared_prefill_reuses_the_unmasked_prompt_cache(tiny, prompts, weights):
    """The authors' procedure: unmasked cache of prompt[:-1], then every step (from the last prompt
    token on) runs once unmasked and once masked, each pass on its own copy of the cache."""
    gamma, generic = 1.5, weights.mask()

    def authors_decode(prompt):
        _, cache_full = tiny.step(tiny.as_batch(prompt[:-1]))
        _, cache_generic = tiny.step(tiny.as_batch(prompt[:-1]))
        token, generated = prompt[-1], []
        for _ in range(STEPS):
            full, cache_full = tiny.step(tiny.as_batch([token]), cache_full)
            masked, cache_generic = tiny.step(tiny.as_batch([token]), cache_generic, mask=generic)
            token = int(contrast(full[0, -1], masked[0, -1], gamma).argmax())
            generated.append(token)
            if token in tiny.stop_token_ids:
                break
        return generated

    shared = generate(tiny, prompts, decoder=DPS(weights, gamma=gamma, shared_prefill=True), max_new_tokens=STEPS)
    assert tokens(shared) == [authors_decode(p) for p in prompts]
    full_context = generate(tiny, prompts, decoder=DPS(weights, gamma=gamma), max_new_tokens=STEPS)
    assert tokens(shared) != tokens(full_context)  # the variant is really different


def test_dps_controls_mask_their_own_heads(tiny, prompts, weights):
    for control in (
        HeadWeights.random_heads(tiny.geometry, 3, seed=1),
        weights.shuffled(seed=1),
        weights.random_mask(seed=1),
    ):
        mask = control.mask()
        expected = [
            reference_decode(tiny, p, lambda s, mask=mask: contrast(last_logits(tiny, s), last_logits(tiny, s, mask), 1.0))
            for p in prompts[:2]
        ]
        assert tokens(generate(tiny, prompts[:2], decoder=DPS(control), max_new_tokens=STEPS)) == expected


@pytest.mark.parametrize("alpha", [0.5, "entropy"])
def test_decore_contrasts_retrieval_heads_zeroed(tiny, prompts, weights, alpha):
    zeroed = HeadMask.ablate(tiny.geometry, weights.heads())

    def score(sequence):
        full, masked = last_logits(tiny, sequence), last_logits(tiny, sequence, zeroed)
        return contrast(full, masked, entropy_of(full) if alpha == "entropy" else alpha, "logprobs")

    decoded = generate(tiny, prompts, decoder=DeCoRe(weights, alpha=alpha), max_new_tokens=STEPS)
    assert tokens(decoded) == [reference_decode(tiny, p, score) for p in prompts]


def test_cad_with_identical_prompts_is_greedy(tiny, prompts):
    greedy = generate(tiny, prompts, max_new_tokens=STEPS)
    assert tokens(generate(tiny, prompts, decoder=CAD(), contrast_prompts=prompts, max_new_tokens=STEPS)) == tokens(greedy)


def test_cad_contrasts_the_prompt_without_profile(tiny, prompts):
    with_profile = [tiny.encode_chat("I love hiking. " + text) for text in TEXTS]

    def reference(prompt, contrast_prompt):
        sequence, extra = list(prompt), []
        for _ in range(STEPS):
            full, plain = last_logits(tiny, sequence), last_logits(tiny, list(contrast_prompt) + extra)
            token = int(contrast(full, plain, 0.5).argmax())
            sequence.append(token)
            extra.append(token)
            if token in tiny.stop_token_ids:
                break
        return extra

    decoded = generate(tiny, with_profile, decoder=CAD(alpha=0.5), contrast_prompts=prompts, max_new_tokens=STEPS)
    assert tokens(decoded) == [reference(p, c) for p, c in zip(with_profile, prompts)]


def hand_layer_logits(lens, sequence, block):
    """RMSNorm and unembedding by hand on Hugging Face's own hidden state after `block`."""
    hf = lens.bridge.original_model
    with torch.no_grad():
        hidden = hf(torch.tensor([sequence]), output_hidden_states=True).hidden_states[block + 1][0, -1]
    norm = hf.model.norm
    normed = hidden * torch.rsqrt(hidden.pow(2).mean() + norm.variance_epsilon) * norm.weight
    return (normed @ hf.lm_head.weight.T).float()


def test_dola_premature_layer_logits_equal_hand_computation(tiny, prompts):
    run = DoLa(candidate_layers=[0, 1]).prepare(tiny, prompts, None)
    with tiny.intervene(None, run.hooks()):
        tiny.forward([prompts[2]])
    computed = run.layer_logits()[0]
    for index, block in enumerate([0, 1]):
        torch.testing.assert_close(computed[index], hand_layer_logits(tiny, prompts[2], block), atol=1e-4, rtol=1e-4)


def test_dola_decodes_like_hand_computation(tiny, prompts):
    candidates, beta = [0, 1], 0.1
    chosen_layers = []

    def score(sequence):
        final = last_logits(tiny, sequence)
        layers = torch.stack([hand_layer_logits(tiny, sequence, block) for block in candidates])
        p, q = final.softmax(-1), layers.softmax(-1)
        m = 0.5 * (p + q)
        jsd = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
        premature = int(jsd.argmax())
        chosen_layers.append(candidates[premature])
        scores = final.log_softmax(-1) - layers[premature].log_softmax(-1)
        scores[p < beta * p.max()] = -math.inf
        return scores

    decoded = generate(tiny, prompts, decoder=DoLa(candidate_layers=candidates), max_new_tokens=STEPS, diagnostics=True)
    assert tokens(decoded) == [reference_decode(tiny, p, score) for p in prompts]
    assert [s["premature_layer"] for g in decoded for s in g.steps] == chosen_layers


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


def test_greedy_is_the_default_decoder(tiny, prompts):
    assert tokens(generate(tiny, prompts, decoder=Greedy(), max_new_tokens=4)) == tokens(
        generate(tiny, prompts, max_new_tokens=4)
    )


def test_suppressed_decodes_with_the_generic_pass_alone(tiny, prompts, weights):
    generic = weights.mask()
    expected = [reference_decode(tiny, p, lambda s: last_logits(tiny, s, generic)) for p in prompts]
    assert tokens(generate(tiny, prompts, decoder=Suppressed(weights), max_new_tokens=STEPS)) == expected
