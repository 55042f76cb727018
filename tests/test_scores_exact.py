"""Exact PCS against a naive loop: one full forward per head of an unwrapped twin of the model
(the ablation written by hand on the output projection), batch 1, full vocabulary."""

from __future__ import annotations

import pytest
import torch
from reference_twin import ablated, tiny_twin, twin_token_nll

from workbench.engine.masks import HeadMask
from workbench.scores.ablation import make_ablation
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence


def naive_deltas(twin, sequence, heads, *, z_ref=None, site="head-output"):
    prompt, target = sequence.ids[: sequence.prompt_len], sequence.ids[sequence.prompt_len :]
    clean = twin_token_nll(twin, prompt, target).mean()
    grid = torch.full((twin.config.num_hidden_layers, twin.config.num_attention_heads), float("nan"), dtype=torch.float64)
    for layer, head in heads:
        grid[layer, head] = twin_token_nll(twin, prompt, target, ablated([(layer, head)]), z_ref=z_ref, site=site).mean() - clean
    return grid


def short_sequence(lens):
    return TargetSequence(tuple(lens.encode_chat("Tell me about hiking.")), tuple(lens.encode("I love trails!")))


@pytest.mark.parametrize("ablation", ["zero", "mean", "resid-slice"])
def test_exact_engine_equals_naive_loop(tiny, ablation):
    sequence = short_sequence(tiny)
    chosen = make_ablation(tiny, ablation, [sequence.ids, tiny.encode("some other reference text")])
    site = "resid-slice" if ablation == "resid-slice" else "head-output"
    expected = naive_deltas(tiny_twin(), sequence, tiny.geometry.all_heads(), z_ref=chosen.z_ref, site=site)
    got = exact_deltas(tiny, sequence, chosen, max_rows=3)  # chunks of 3 rows split layers of 4 heads
    assert expected.abs().max() > 1e-3  # the ablations matter, so the comparison can fail
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_subset_of_heads_in_any_order_leaves_others_nan(tiny):
    sequence = short_sequence(tiny)
    heads = [(2, 1), (0, 3), (1, 0)]
    got = exact_deltas(tiny, sequence, make_ablation(tiny, "zero"), heads)
    assert torch.isnan(got).sum() == tiny.geometry.n_total_heads - len(heads)
    torch.testing.assert_close(got, naive_deltas(tiny_twin(), sequence, heads), atol=1e-5, rtol=0, equal_nan=True)


@pytest.mark.parametrize("start_layer", [0, 1, 2])
def test_tail_runner_from_cached_residual_equals_full_forward(tiny, start_layer):
    tokens = tiny.encode_chat("The tail runner must be exact.")
    context = tiny.tail_context(tokens)
    torch.testing.assert_close(tiny.run_tail(context, start_layer), tiny.forward(tokens), atol=1e-5, rtol=0)  # SDPA vs eager
    mask = HeadMask.one_head_per_row(tiny.geometry, [(2, 0), (2, 3)])
    full = torch.cat([tiny.forward(tokens, mask=HeadMask.ablate(tiny.geometry, [head])) for head in [(2, 0), (2, 3)]])
    tail = tiny.run_tail(context, start_layer, rows=2, mask=mask)
    assert (full - tiny.forward(tokens)).abs().max() > 1e-3
    torch.testing.assert_close(tail, full, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_exact_engine_equals_naive_loop_on_default_model(default_lens):
    lens = default_lens
    sequence = TargetSequence(tuple(lens.encode_chat("Name a fruit.")), tuple(lens.encode("An apple.")))
    heads = [(0, 0), (0, 4), (15, 2), (29, 8)]
    got = exact_deltas(lens, sequence, make_ablation(lens, "zero"), heads)

    def nll(mask=None):
        logits = lens.forward(list(sequence.ids), mask=mask)[0, sequence.positions].double()
        return -logits.log_softmax(-1)[torch.arange(len(sequence.targets)), sequence.targets].mean()

    clean = nll()
    for layer, head in heads:
        expected = nll(HeadMask.ablate(lens.geometry, [(layer, head)])) - clean
        assert got[layer, head].item() == pytest.approx(float(expected), abs=1e-4)
    assert got.nan_to_num().abs().max() > 1e-3
