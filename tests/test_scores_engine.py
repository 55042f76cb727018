"""The ΔNLL engine and the lens primitives it runs on, against an independent reference: one
full forward per mask through an unwrapped Hugging Face twin with the intervention written by hand
(`reference_twin`), for zero, mean, weighted and residual-slice masks."""

from __future__ import annotations

import pytest
import torch
from reference_twin import ablated, intervention, tiny_twin, twin_token_nll

from workbench.engine.adapters import FAMILIES
from workbench.engine.fast_path import FastPath
from workbench.engine.masks import HeadMask
from workbench.engine.models import tiny_model
from workbench.engine.tail import Restart, finish_block
from workbench.errors import InputError
from workbench.scores.engine import sequence_nll
from workbench.scores.nll import TargetSequence

TOLERANCE = 1e-5  # nats per token; float32 forwards of different batch shapes


@pytest.fixture(scope="module")
def twin():
    return tiny_twin()


@pytest.fixture(scope="module")
def sequence(tiny):
    return TargetSequence(tuple(tiny.encode_chat("Tell me about hiking.")), tuple(tiny.encode("I love trails!")))


@pytest.fixture(scope="module")
def z_ref(tiny):
    return tiny.mean_head_outputs([tiny.encode("some reference text for the mean activations")])


def recorded_context(lens, tokens):
    """A tail context plus every layer's clean per-head outputs."""
    store = {}

    def recorder(layer):
        return lambda z, hook: store.__setitem__(layer, z.detach())

    with lens.intervene(None, [(lens.hook_name("z", layer), recorder(layer)) for layer in range(lens.n_layers)]):
        context = lens.tail_context(tokens)
    return context, store


# --- the tail runner: positions and reused head outputs against whole blocks and the twin ---


@pytest.mark.parametrize("start_layer", [0, 1, 2])
@pytest.mark.parametrize("reuse_z", [False, True])
def test_restart_at_positions_equals_whole_blocks_and_the_twin(tiny, twin, sequence, start_layer, reuse_z):
    tokens = list(sequence.ids)
    context, z = recorded_context(tiny, tokens)
    positions = sequence.positions
    ids = torch.tensor([tokens])
    # no mask, batch 1: the clean logits
    clean = tiny.run_tail(context, start_layer, positions=positions, head_outputs=z[start_layer] if reuse_z else None)
    with torch.no_grad():
        twin_clean = twin(ids).logits[:, positions]
    torch.testing.assert_close(clean, twin_clean, atol=TOLERANCE, rtol=0)
    # several rows, each ablating other heads of the start layer and above
    heads = [[(start_layer, 0)], [(start_layer, 3), (2, 1)], [(start_layer, 1), (start_layer, 2)]]
    mask = HeadMask.stack([HeadMask.ablate(tiny.geometry, row) for row in heads])
    fast = tiny.run_tail(
        context, start_layer, rows=3, mask=mask, positions=positions, head_outputs=z[start_layer] if reuse_z else None
    )
    replaced = tiny.run_tail(context, start_layer, rows=3, mask=mask)[:, positions]  # every block whole
    torch.testing.assert_close(fast, replaced, atol=TOLERANCE, rtol=0)  # the start block: the bridge's, or the fast path's
    for row, row_heads in enumerate(heads):
        with torch.no_grad(), intervention(twin, ablated(row_heads)):
            expected = twin(ids).logits[0, positions]
        assert (expected - twin_clean[0]).abs().max() > 1e-3  # the ablation matters
        torch.testing.assert_close(fast[row], expected, atol=TOLERANCE, rtol=0)


def test_finish_block_from_recorded_head_outputs_equals_the_block(tiny, sequence):
    tokens = list(sequence.ids)
    context, z = recorded_context(tiny, tokens)
    for layer in range(tiny.n_layers - 1):
        with torch.no_grad():
            full = finish_block(tiny.bridge, context, layer, context.residuals[layer])
            reused = finish_block(tiny.bridge, context, layer, context.residuals[layer], head_outputs=z[layer])
        torch.testing.assert_close(full, context.residuals[layer + 1], atol=1e-6, rtol=0)
        torch.testing.assert_close(reused, context.residuals[layer + 1], atol=1e-6, rtol=0)


def test_query_scale_masks_cannot_reuse_head_outputs(tiny, sequence):
    context, z = recorded_context(tiny, list(sequence.ids))
    mask = HeadMask.ablate(tiny.geometry, [(1, 0)], site="query-scale")
    with pytest.raises(InputError, match="query-scale"):
        tiny.run_tail(context, 1, positions=sequence.positions, mask=mask, head_outputs=z[1])


# --- the engine: every kind of mask, each from its own start layer, in batches or one by one ---

MASKED_SETS = [[(0, 1)], [(1, 2)], [(2, 3)], [(1, 0), (2, 2)], [(0, 3), (2, 0), (1, 1)], []]


@pytest.mark.parametrize("max_rows", [1, 64])
@pytest.mark.parametrize("kind", ["zero", "mean", "weighted", "resid-slice"])
def test_sequence_nll_equals_one_twin_forward_per_mask(tiny, twin, sequence, z_ref, kind, max_rows):
    scales = [{head: 0.0 for head in heads} for heads in MASKED_SETS]
    if kind == "weighted":
        scales = [{head: 0.25 + 0.2 * i for i, head in enumerate(heads)} for heads in MASKED_SETS]
    reference = z_ref if kind == "mean" else None
    site = "resid-slice" if kind == "resid-slice" else "head-output"
    masks = []
    for scale in scales:
        grid = torch.ones(1, tiny.n_layers, tiny.n_heads)
        for (layer, head), value in scale.items():
            grid[0, layer, head] = value
        masks.append(HeadMask(grid, reference, site))
    result = sequence_nll(tiny, sequence, masks, max_rows=max_rows)
    clean = twin_token_nll(twin, sequence.ids[: sequence.prompt_len], sequence.ids[sequence.prompt_len :])
    torch.testing.assert_close(result.clean, clean, atol=TOLERANCE, rtol=0)
    for row, scale in enumerate(scales):
        expected = twin_token_nll(
            twin, sequence.ids[: sequence.prompt_len], sequence.ids[sequence.prompt_len :], scale, z_ref=reference, site=site
        )
        if scale:
            assert (expected - clean).abs().max() > 1e-3  # the mask matters
        torch.testing.assert_close(result.masked[row], expected, atol=TOLERANCE, rtol=0)
        assert result.deltas[row].item() == pytest.approx(float(expected.mean() - clean.mean()), abs=TOLERANCE)


def test_query_scale_masks_rerun_their_start_block_in_full(tiny, sequence):
    masks = [HeadMask.ablate(tiny.geometry, heads, site="query-scale") for heads in ([(1, 2)], [(0, 0), (2, 1)])]
    result = sequence_nll(tiny, sequence, masks)
    for row, mask in enumerate(masks):
        logits = tiny.forward(list(sequence.ids), mask=mask)[0, sequence.positions].double()
        expected = -logits.log_softmax(-1)[torch.arange(len(sequence.targets)), sequence.targets]
        assert (expected - result.clean).abs().max() > 1e-3
        torch.testing.assert_close(result.masked[row], expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_s_masks_equal_twin_forwards(family):
    """Each family's blocks: pre-norm ones finished from recorded z and with the last MLP at the
    targets only, the others (Gemma's extra norms) replayed whole; sliding windows shorter than
    the sequence."""
    lens = tiny_model(family=family)
    twin = tiny_twin(family=family)
    sequence = TargetSequence(
        tuple(lens.encode("Tell me about hiking, please.", add_bos=True)), tuple(lens.encode(" I love trails!"))
    )
    sets = [[(0, 1)], [(1, 2), (2, 0)], [(2, 3)]]
    result = sequence_nll(lens, sequence, [HeadMask.ablate(lens.geometry, heads) for heads in sets], max_rows=2)
    prompt, target = sequence.ids[: sequence.prompt_len], sequence.ids[sequence.prompt_len :]
    clean = twin_token_nll(twin, prompt, target)
    torch.testing.assert_close(result.clean, clean, atol=TOLERANCE, rtol=0)
    for row, heads in enumerate(sets):
        expected = twin_token_nll(twin, prompt, target, ablated(heads))
        assert (expected - clean).abs().max() > 1e-3
        torch.testing.assert_close(result.masked[row], expected, atol=TOLERANCE, rtol=0)


def test_a_mask_without_effect_is_the_clean_pass(tiny, sequence):
    result = sequence_nll(tiny, sequence, [HeadMask.identity(tiny.geometry)])
    assert torch.equal(result.masked[0], result.clean) and result.deltas[0] == 0


def test_bad_masks_are_refused(tiny, sequence):
    with pytest.raises(InputError, match="one-row masks"):
        sequence_nll(tiny, sequence, [HeadMask.identity(tiny.geometry, rows=2)])
    with pytest.raises(InputError, match="max_rows"):
        sequence_nll(tiny, sequence, [], max_rows=0)
    other = HeadMask.ablate(tiny.geometry, [(0, 0)])
    wrong = HeadMask(torch.ones(1, 2, 4))
    with pytest.raises(InputError, match="layers"):
        sequence_nll(tiny, sequence, [other, wrong])


@pytest.mark.slow
def test_fast_tail_and_engine_equal_plain_forwards_on_the_default_model(default_lens):
    lens = default_lens
    sequence = TargetSequence(tuple(lens.encode_chat("Name a fruit.")), tuple(lens.encode("An apple, of course.")))
    tokens = list(sequence.ids)
    context, z = recorded_context(lens, tokens)
    last = lens.n_layers - 1
    for start in (0, 15, last):
        torch.testing.assert_close(
            lens.run_tail(context, start, positions=sequence.positions, head_outputs=z[start]),
            lens.forward(tokens)[:, sequence.positions],
            atol=1e-4,
            rtol=0,
        )
    sets = [[(0, 4)], [(15, 2), (20, 1)], [(last, 8)], [(3, 0), (3, 5), (29, 1)]]
    result = sequence_nll(lens, sequence, [HeadMask.ablate(lens.geometry, heads) for heads in sets])
    for row, heads in enumerate(sets):
        logits = lens.forward(tokens, mask=HeadMask.ablate(lens.geometry, heads))[0, sequence.positions].double()
        expected = -logits.log_softmax(-1)[torch.arange(len(sequence.targets)), sequence.targets]
        torch.testing.assert_close(result.masked[row], expected, atol=1e-4, rtol=0)
    assert result.deltas.abs().max() > 1e-3


def test_restarts_run_on_the_fast_path_unless_padded_or_differentiated(tiny, twin, sequence, monkeypatch):
    """A restart of an unpadded sequence runs its blocks on the fast path (SDPA), and still equals
    the hand-ablated twin; a padded batch and a differentiated tail stay on the bridge."""
    calls = []
    tail = FastPath.tail
    monkeypatch.setattr(FastPath, "tail", lambda self, *args, **kwargs: calls.append(args[1]) or tail(self, *args, **kwargs))
    masks = [HeadMask.ablate(tiny.geometry, [head]) for head in [(0, 2), (1, 1)]]
    result = sequence_nll(tiny, sequence, masks)
    # the clean run from layer 0; layer 0's head restarts at 0 and finishes that block from its recorded z, layer 1's likewise
    assert calls == [0, 1, 2]
    prompt, target = sequence.ids[: sequence.prompt_len], sequence.ids[sequence.prompt_len :]
    for row, head in enumerate([(0, 2), (1, 1)]):
        torch.testing.assert_close(
            result.masked[row], twin_token_nll(twin, prompt, target, ablated([head])), atol=TOLERANCE, rtol=0
        )
    calls.clear()
    batch, attention = tiny.pad_left([tiny.encode("a b c", add_bos=True), tiny.encode("a", add_bos=True)])
    tiny.run_tail(tiny.tail_context(batch, attention_mask=attention), 1)
    tiny.run(start=Restart(tiny.tail_context(list(sequence.ids)), 1), grad=True)
    assert calls == []
    recorded_fast = tiny.tail_context(list(sequence.ids), fast=True)
    with pytest.raises(InputError, match="recorded on the fast path.*does not differentiate"):
        tiny.run(start=Restart(recorded_fast, 1), grad=True)
