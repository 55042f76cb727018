"""The exact PCS engine against a naive loop: one full forward per head, batch 1, full vocabulary."""

from __future__ import annotations

import pytest
import torch

from workbench.masks import HeadMask
from workbench.scores.ablation import make_ablation
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence


def naive_nll(lens, sequence, mask=None):
    """Hand-written loss: full forward, full-vocabulary log-softmax in float64, target tokens only."""
    logits = lens.forward(list(sequence.ids), mask=mask)[0].double()
    log_probs = logits.log_softmax(-1)
    prompt_len = sequence.prompt_len
    total = sum(-log_probs[prompt_len - 1 + t, token] for t, token in enumerate(sequence.ids[prompt_len:]))
    return total / (len(sequence.ids) - prompt_len)


def naive_deltas(lens, sequence, ablation, heads):
    clean = naive_nll(lens, sequence)
    grid = torch.full((lens.n_layers, lens.n_heads), float("nan"), dtype=torch.float64)
    for layer, head in heads:
        grid[layer, head] = naive_nll(lens, sequence, ablation.together(lens, [(layer, head)])) - clean
    return grid


def short_sequence(lens):
    return TargetSequence(tuple(lens.encode_chat("Tell me about hiking.")), tuple(lens.encode("I love trails!")))


@pytest.mark.parametrize("ablation", ["zero", "mean", "resid-slice"])
def test_exact_engine_equals_naive_loop(tiny, ablation):
    sequence = short_sequence(tiny)
    chosen = make_ablation(tiny, ablation, [sequence.ids, tiny.encode("some other reference text")])
    expected = naive_deltas(tiny, sequence, chosen, tiny.geometry.all_heads())
    got = exact_deltas(tiny, sequence, chosen, max_rows=3)  # chunks of 3 rows split layers of 4 heads
    assert expected.abs().max() > 1e-3  # the ablations matter, so the comparison can fail
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_subset_of_heads_leaves_others_nan(tiny):
    sequence = short_sequence(tiny)
    chosen = make_ablation(tiny, "zero")
    got = exact_deltas(tiny, sequence, chosen, [(2, 1), (0, 3)])
    assert torch.isnan(got).sum() == tiny.geometry.n_total_heads - 2
    torch.testing.assert_close(got[2, 1], naive_deltas(tiny, sequence, chosen, [(2, 1)])[2, 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("start_layer", [0, 1, 2])
def test_tail_runner_from_cached_residual_equals_full_forward(tiny, start_layer):
    tokens = tiny.encode_chat("The tail runner must be exact.")
    context = tiny.tail_context(tokens)
    torch.testing.assert_close(tiny.run_tail(context, start_layer), tiny.forward(tokens), atol=1e-6, rtol=0)
    mask = HeadMask.one_head_per_row(tiny.geometry, [(2, 0), (2, 3)])
    full = torch.cat([tiny.forward(tokens, mask=HeadMask.ablate(tiny.geometry, [head])) for head in [(2, 0), (2, 3)]])
    tail = tiny.run_tail(context, start_layer, rows=2, mask=mask)
    assert (full - tiny.forward(tokens)).abs().max() > 1e-3
    torch.testing.assert_close(tail, full, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_exact_engine_equals_naive_loop_on_default_model(default_lens):
    sequence = TargetSequence(tuple(default_lens.encode_chat("Name a fruit.")), tuple(default_lens.encode("An apple.")))
    chosen = make_ablation(default_lens, "zero")
    heads = [(0, 0), (0, 4), (15, 2), (29, 8)]
    expected = naive_deltas(default_lens, sequence, chosen, heads)
    got = exact_deltas(default_lens, sequence, chosen, heads)
    assert expected.nan_to_num().abs().max() > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0, equal_nan=True)
