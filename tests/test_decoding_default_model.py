"""Integration checks of the generation loop on the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

import pytest

from workbench.decoding import DPS, generate
from workbench.heads import HeadWeights


@pytest.mark.slow
def test_dps_gamma_zero_and_left_padding_on_the_default_model(default_lens):
    prompts = [default_lens.encode_chat(text) for text in ("What is the capital of France?", "Say hi.")]
    weights = HeadWeights.random_heads(default_lens.geometry, 20, seed=0)
    greedy = generate(default_lens, prompts, max_new_tokens=8)
    alone = [generate(default_lens, [p], max_new_tokens=8)[0] for p in prompts]
    dps_zero = generate(default_lens, prompts, decoder=DPS(weights, gamma=0.0), max_new_tokens=8)
    assert [g.token_ids for g in greedy] == [g.token_ids for g in alone] == [g.token_ids for g in dps_zero]
    assert "Paris" in greedy[0].text
    dps = generate(default_lens, prompts, decoder=DPS(weights, gamma=3.0), max_new_tokens=8)
    assert [g.token_ids for g in dps] != [g.token_ids for g in greedy]
