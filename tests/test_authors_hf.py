"""The lens's reproductions of the DPS authors' procedure against `workbench.authors_hf`, their
loops written on an unwrapped Hugging Face twin of the same weights (no lens, no bridge, no masks).

- `resid-slice` PCS (exact engine on the lens) equals their o_proj-output-slice loop within
  1e-5 nats (float32; observed differences are below 1e-6).
- DPS with `site="query-scale"`, `prefill="shared"`, `combine="logprobs"`, `gamma="entropy"`
  (the authors preset's decoder) generates exactly their loop's tokens, batched or not; the
  site, the prefill and γ set otherwise generate other tokens, so the test sees each of them.
  (The combination is invisible to greedy decoding: log-probabilities differ from logits by a
  constant per row, so `(1 + γ)·full − γ·weak` has the same argmax either way.)
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench.authors_hf import authors_dps, authors_pcs
from workbench.data.tokenized import TokenizedExample
from workbench.decoding import DPS, generate
from workbench.engine.masks import HeadMask
from workbench.engine.models import embedded_default_folder, tiny_hf_model
from workbench.heads import HeadWeights
from workbench.presets import AUTHORS
from workbench.scores import score_heads
from workbench.scores.nll import TargetSequence, mean_nll

PCS_TOLERANCE = 1e-5
TEXTS = ["hello there", "hi", "a somewhat longer prompt, with punctuation!"]
AUTHORS_DECODER = AUTHORS.evaluate["decoder"]


@pytest.fixture(scope="module")
def twin():
    """The tiny lens's weights in a plain Hugging Face model (same seed, same shape)."""
    return tiny_hf_model()[0]


@pytest.fixture(scope="module")
def weights(tiny):
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[0, 1], grid[1, 2], grid[2, 0] = 1.0, 0.6, 0.3
    return HeadWeights(grid)


@pytest.fixture(scope="module")
def prompts(tiny):
    return [tiny.encode_chat(text) for text in TEXTS]


def tokens(lens, prompts, decoder, steps, batch_size=8):
    return [g.token_ids for g in generate(lens, prompts, decoder=decoder, max_new_tokens=steps, batch_size=batch_size)]


def test_resid_slice_pcs_equals_the_authors_loop(tiny, twin, prompts):
    examples = [
        TokenizedExample("a", "u1", tuple(prompts[0]), tuple(tiny.encode(" hi there friend"))),
        TokenizedExample("b", "u2", tuple(prompts[2]), tuple(tiny.encode(" ok then"))),
    ]
    ours = score_heads(tiny, examples, method="exact", ablation="resid-slice", progress=False).per_example.double()
    theirs = authors_pcs(twin, [(e.prompt_ids, e.target_ids) for e in examples])
    torch.testing.assert_close(ours, theirs, atol=PCS_TOLERANCE, rtol=0)
    assert theirs.abs().mean() > 100 * PCS_TOLERANCE  # the ablations do move the loss
    zero = score_heads(tiny, examples, method="exact", ablation="zero", progress=False).per_example.double()
    assert (zero - theirs).abs().max() > 100 * PCS_TOLERANCE  # a head ablation is something else


@pytest.mark.parametrize("batch_size", [1, 8])
def test_authors_preset_dps_generates_the_authors_tokens(tiny, twin, prompts, weights, batch_size):
    steps = 12
    theirs = [authors_dps(twin, p, 1 - weights.weights, max_new_tokens=steps, stop_ids=tiny.stop_token_ids) for p in prompts]
    assert tokens(tiny, prompts, DPS(weights, **AUTHORS_DECODER), steps, batch_size) == theirs
    for option, other in (("site", "head-output"), ("prefill", "masked"), ("gamma", 1.0), ("entropy_scale", "ln-vocab")):
        changed = DPS(weights, **{**AUTHORS_DECODER, option: other})
        assert tokens(tiny, prompts, changed, steps, batch_size) != theirs, option


@pytest.mark.slow
def test_authors_procedure_on_the_default_model(default_lens):
    """On SmolLM2: the lens's resid-slice site on 27 heads (one head per batch row) against their
    loop, and 16 tokens of the authors preset's DPS against theirs."""
    twin = AutoModelForCausalLM.from_pretrained(embedded_default_folder(), dtype=torch.float32).eval()
    prompt = default_lens.encode_chat("Write a headline about the harvest festival in our town.")
    target = default_lens.encode(" Harvest festival draws record crowds")
    heads = [(layer, head) for layer in (3, 17, 28) for head in range(default_lens.n_heads)]
    rows = HeadMask.one_head_per_row(default_lens.geometry, heads, site="resid-slice")
    rows = HeadMask(torch.cat([torch.ones_like(rows.scale[:1]), rows.scale]), site="resid-slice")  # row 0 clean
    sequence = TargetSequence(tuple(prompt), tuple(target))
    batch = default_lens.as_batch(list(sequence.ids)).expand(len(heads) + 1, -1)
    logits = default_lens.forward(batch, mask=rows)
    nll = mean_nll(logits[:, sequence.positions], sequence.targets)
    theirs = authors_pcs(twin, [(prompt, target)], heads)
    for row, (layer, head) in enumerate(heads, start=1):
        assert float(nll[row] - nll[0]) == pytest.approx(float(theirs[0, layer, head]), abs=1e-4)
    weights = HeadWeights.random_heads(default_lens.geometry, 20, seed=0)
    expected = authors_dps(twin, prompt, 1 - weights.weights, max_new_tokens=16, stop_ids=default_lens.stop_token_ids)
    assert tokens(default_lens, [prompt], DPS(weights, **AUTHORS_DECODER), 16) == [expected]
