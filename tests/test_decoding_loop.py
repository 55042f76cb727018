"""The generation loop: batching, left padding, KV cache, stopping, sampling, diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.decoding import DPS, DoLa, Sampling, generate
from workbench.decoding.sampling import choose_tokens
from workbench.engine.lens import Lens
from workbench.heads import HeadWeights

TEXTS = ["hello there", "hi", "a somewhat longer prompt, with punctuation!", "abc"]


@pytest.fixture(scope="module")
def prompts(tiny):
    return [tiny.encode_chat(text) for text in TEXTS]


@pytest.fixture(scope="module")
def dps(tiny):
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[0, 3], grid[2, 1] = 1.0, 0.5
    return DPS(HeadWeights(grid), gamma="entropy")


def top_values(generation, name="top_full"):
    return torch.tensor([[entry["value"] for entry in step[name]] for step in generation.steps])


def late_stop_string(text: str, start: int = 2) -> str:
    """Two characters of `text` that first occur at `start` or later (a stop string that ends
    the generation a few tokens in)."""
    for k in range(start, len(text) - 1):
        if text.find(text[k : k + 2]) == k:
            return text[k : k + 2]
    raise AssertionError(f"no late stop string in {text!r}")


def assert_same(generations, others, names=("top_full",)):
    assert [g.token_ids for g in generations] == [g.token_ids for g in others]
    assert [g.stop_reason for g in generations] == [g.stop_reason for g in others]
    for a, b in zip(generations, others):
        for name in names:
            torch.testing.assert_close(top_values(a, name), top_values(b, name), atol=1e-4, rtol=0)


@pytest.mark.parametrize("use_dps", [False, True])
def test_cached_and_uncached_generation_agree(tiny, prompts, dps, use_dps):
    decoder = dps if use_dps else None
    names = ("top_full", "top_contrast", "top_scores") if use_dps else ("top_full",)
    cached = generate(tiny, prompts, decoder=decoder, max_new_tokens=10, diagnostics=True)
    uncached = generate(tiny, prompts, decoder=decoder, max_new_tokens=10, diagnostics=True, use_cache=False)
    assert_same(cached, uncached, names)


@pytest.mark.parametrize("use_dps", [False, True])
def test_left_padded_batch_equals_each_prompt_alone(tiny, prompts, dps, use_dps):
    decoder = dps if use_dps else None
    # A stop string that ends one prompt early makes the batch drop rows half-way.
    alone = [generate(tiny, [p], decoder=decoder, max_new_tokens=10, diagnostics=True)[0] for p in prompts]
    stop = late_stop_string(alone[1].text)
    batched = generate(tiny, prompts, decoder=decoder, max_new_tokens=10, diagnostics=True, stop_strings=[stop], batch_size=3)
    alone = [generate(tiny, [p], decoder=decoder, max_new_tokens=10, diagnostics=True, stop_strings=[stop])[0] for p in prompts]
    assert batched[1].stop_reason == "stop_string"
    assert any(g.stop_reason != "stop_string" for g in batched)
    assert_same(batched, alone)


def test_dola_hooks_follow_the_shrinking_batch(tiny, prompts):
    decoder = DoLa(candidate_layers=[0, 1])
    alone = [generate(tiny, [p], decoder=decoder, max_new_tokens=8)[0] for p in prompts]
    stop = late_stop_string(alone[0].text)
    batched = generate(tiny, prompts, decoder=decoder, max_new_tokens=8, stop_strings=[stop])
    alone = [generate(tiny, [p], decoder=decoder, max_new_tokens=8, stop_strings=[stop])[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]


def test_stop_string_is_cut_from_the_text(tiny, prompts):
    full = generate(tiny, prompts[:1], max_new_tokens=12)[0]
    assert full.stop_reason == "max_new_tokens" and len(full.token_ids) == 12
    stop = late_stop_string(full.text, start=4)
    cut = full.text.find(stop)
    stopped = generate(tiny, prompts[:1], max_new_tokens=12, stop_strings=["never-there", stop])[0]
    assert stopped.stop_reason == "stop_string"
    assert stopped.text == full.text[:cut]
    assert stopped.token_ids == full.token_ids[: len(stopped.token_ids)]
    assert tiny.decode(stopped.token_ids).find(stop) == cut


def test_stops_on_a_model_stop_token(tiny, prompts, monkeypatch):
    full = generate(tiny, prompts[:1], max_new_tokens=12)[0]
    stop_token = full.token_ids[3]
    first = full.token_ids.index(stop_token)
    monkeypatch.setattr(Lens, "stop_token_ids", property(lambda self: {stop_token}))
    stopped = generate(tiny, prompts[:1], max_new_tokens=12)[0]
    assert stopped.stop_reason == "eos"
    assert stopped.token_ids == full.token_ids[: first + 1]  # the stop token is kept in the ids
    assert stopped.text == tiny.decode(full.token_ids[: first + 1])
    assert generate(tiny, prompts[:1], max_new_tokens=12, stop_at_eos=False)[0].token_ids == full.token_ids


def test_special_tokens_are_removed_from_text(tiny):
    special = tiny.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tiny.decode([special, 70, 71]) == tiny.decode([70, 71])


def test_sampling_is_reproducible_and_independent_of_the_batch(tiny, prompts):
    sampling = Sampling(temperature=1.3, top_k=30, top_p=0.95, seed=7)
    first = generate(tiny, prompts, max_new_tokens=10, sampling=sampling)
    again = generate(tiny, prompts, max_new_tokens=10, sampling=sampling)
    one_by_one = generate(tiny, prompts, max_new_tokens=10, sampling=sampling, batch_size=1)
    other_seed = generate(tiny, prompts, max_new_tokens=10, sampling=Sampling(temperature=1.3, top_k=30, top_p=0.95, seed=8))
    greedy = generate(tiny, prompts, max_new_tokens=10)
    ids = lambda gs: [g.token_ids for g in gs]
    assert ids(first) == ids(again) == ids(one_by_one)
    assert ids(first) != ids(other_seed)
    assert ids(first) != ids(greedy)
    assert ids(generate(tiny, prompts, max_new_tokens=10, sampling=Sampling(top_k=1, seed=3))) == ids(greedy)


def test_sampling_filters_match_hand_computation():
    scores = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    sampling = Sampling(temperature=0.5, top_k=4, top_p=0.9)
    probs = (scores / 0.5).softmax(-1)[0]
    probs[4] = 0  # top-k = 4
    probs = probs / probs.sum()
    ordered = probs.sort(descending=True)
    keep = ordered.values.cumsum(0) - ordered.values < 0.9
    expected = torch.zeros_like(probs)
    expected[ordered.indices[keep]] = probs[ordered.indices[keep]]
    expected = expected / expected.sum()
    torch.testing.assert_close(sampling.filtered_logprobs(scores).exp()[0], expected)
    draws = choose_tokens(scores.repeat(2000, 1), sampling, [torch.Generator().manual_seed(i) for i in range(2000)])
    frequencies = torch.bincount(draws, minlength=5).float() / 2000
    assert torch.allclose(frequencies, expected, atol=0.04)


def test_diagnostics_report_gamma_entropies_and_top_tokens(tiny, prompts, dps):
    generation = generate(tiny, prompts[:1], decoder=dps, max_new_tokens=5, diagnostics=True)[0]
    assert len(generation.steps) == len(generation.token_ids)
    for step, token in zip(generation.steps, generation.token_ids):
        assert step["token_id"] == token == step["top_scores"][0]["token_id"]
        assert step["gamma"] == pytest.approx(step["entropy"])  # entropy γ = entropy of the full pass
        assert 0 < step["entropy_contrast"] <= math.log(tiny.geometry.d_vocab) + 1e-5
        assert len(step["top_full"]) == len(step["top_contrast"]) == 5
    assert generate(tiny, prompts[:1], decoder=dps, max_new_tokens=2)[0].steps is None


def test_progress_bar_and_prompt_order(tiny, prompts, capsys):
    generations = generate(tiny, prompts, max_new_tokens=3, batch_size=2, progress=True)
    alone = [generate(tiny, [p], max_new_tokens=3)[0].token_ids for p in prompts]
    assert [g.token_ids for g in generations] == alone
    assert "decoding (greedy)" in capsys.readouterr().err
