"""The lens against hand-written reference computations on an unwrapped twin of the model.

The twin is a second, independently built Hugging Face model with the same weights; its
interventions are written directly on the output projection's input (or the query / the output
projection's output), with no TransformerLens involved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from workbench.engine.masks import HeadMask
from workbench.engine.models import tiny_hf_model
from workbench.errors import InputError

PROMPT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def twin() -> torch.nn.Module:
    """An unwrapped copy of the `tiny` fixture's model (same default arguments, same seed)."""
    model, _ = tiny_hf_model()
    return model


@pytest.fixture(scope="module")
def tokens(tiny) -> torch.Tensor:
    return tiny.as_batch(tiny.encode_chat(PROMPT))


@contextmanager
def edited_slice(
    module: torch.nn.Module, head: int, width: int, edit: Callable[[torch.Tensor], torch.Tensor], *, on: str
) -> Iterator[None]:
    """Replace slice `head` (of `width` features) of a module's input (`on="input"`) or output."""

    def rewrite(features: torch.Tensor) -> torch.Tensor:
        features = features.clone()
        part = features[..., head * width : (head + 1) * width]
        features[..., head * width : (head + 1) * width] = edit(part)
        return features

    if on == "input":
        handle = module.register_forward_pre_hook(lambda m, args: (rewrite(args[0]),) + args[1:])
    else:
        handle = module.register_forward_hook(lambda m, args, output: rewrite(output))
    try:
        yield
    finally:
        handle.remove()


def twin_logits(twin: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return twin(tokens).logits


def test_clean_forward_equals_the_unwrapped_model(tiny, twin, tokens):
    assert torch.allclose(tiny.forward(tokens), twin_logits(twin, tokens), atol=1e-5)


def test_zero_ablation_equals_zeroing_output_projection_columns_for_every_head(tiny, twin, tokens):
    clean = twin_logits(twin, tokens)
    d_head = tiny.d_head
    for layer, head in tiny.geometry.all_heads():
        o_proj = twin.model.layers[layer].self_attn.o_proj
        original = o_proj.weight.detach().clone()
        with torch.no_grad():
            o_proj.weight[:, head * d_head : (head + 1) * d_head] = 0.0
        try:
            expected = twin_logits(twin, tokens)
        finally:
            with torch.no_grad():
                o_proj.weight.copy_(original)
        actual = tiny.forward(tokens, mask=HeadMask.ablate(tiny.geometry, [(layer, head)]))
        assert (expected - clean).abs().max() > 1e-3, "ablation must change the logits for the test to mean anything"
        assert torch.allclose(actual, expected, atol=1e-5), (layer, head)


def test_one_head_per_row_equals_separate_forwards(tiny, tokens):
    heads = tiny.geometry.all_heads()
    batched = tiny.forward(tokens.expand(len(heads), -1), mask=HeadMask.one_head_per_row(tiny.geometry, heads))
    for row, head in enumerate(heads):
        single = tiny.forward(tokens, mask=HeadMask.ablate(tiny.geometry, [head]))[0]
        assert torch.allclose(batched[row], single, atol=1e-5), head


def test_mean_ablation_substitutes_the_reference_activation(tiny, twin, tokens):
    z_mean = tiny.mean_head_outputs([tiny.encode("some other text"), tiny.encode("and more of it, longer")])
    layer, head, d_head = 1, 2, tiny.d_head
    o_proj = twin.model.layers[layer].self_attn.o_proj
    with edited_slice(o_proj, head, d_head, lambda part: z_mean[layer, head].expand_as(part), on="input"):
        expected = twin_logits(twin, tokens)
    actual = tiny.forward(tokens, mask=HeadMask.ablate(tiny.geometry, [(layer, head)], z_ref=z_mean))
    assert (expected - twin_logits(twin, tokens)).abs().max() > 1e-3
    assert torch.allclose(actual, expected, atol=1e-5)


def test_mean_head_outputs_average_every_position(tiny):
    sequences = [tiny.encode("ab"), tiny.encode("cde")]
    captured = torch.cat([tiny.capture(s)[1][0] for s in sequences])  # [positions, layer, head, d]
    assert torch.allclose(tiny.mean_head_outputs(sequences), captured.mean(dim=0), atol=1e-6)


@pytest.mark.parametrize("scale", [0.0, 0.3, 1.0, 1.5])
def test_weighted_scale_interpolates_between_reference_and_clean(tiny, twin, tokens, scale):
    z_ref = torch.randn(tiny.n_layers, tiny.n_heads, tiny.d_head, generator=torch.Generator().manual_seed(1))
    layer, head, d_head = 2, 1, tiny.d_head
    o_proj = twin.model.layers[layer].self_attn.o_proj
    reference = z_ref[layer, head]
    with edited_slice(o_proj, head, d_head, lambda part: reference + scale * (part - reference), on="input"):
        expected = twin_logits(twin, tokens)
    weights = torch.zeros(tiny.n_layers, tiny.n_heads)
    mask = HeadMask(torch.ones(1, tiny.n_layers, tiny.n_heads), z_ref=z_ref)
    mask.scale[0, layer, head] = scale
    assert torch.allclose(tiny.forward(tokens, mask=mask), expected, atol=1e-5)
    if scale <= 1.0:
        weights[layer, head] = 1.0 - scale
        weighted = HeadMask.weighted(weights, z_ref=z_ref)
        assert torch.allclose(tiny.forward(tokens, mask=weighted), expected, atol=1e-5)


def test_query_scale_site_equals_scaling_the_query_projection(tiny, twin, tokens):
    layer, head, d_head = 1, 3, tiny.d_head
    q_proj = twin.model.layers[layer].self_attn.q_proj
    with edited_slice(q_proj, head, d_head, lambda part: 0.0 * part, on="output"):
        expected = twin_logits(twin, tokens)
    mask = HeadMask.ablate(tiny.geometry, [(layer, head)], site="query-scale")
    assert (expected - twin_logits(twin, tokens)).abs().max() > 1e-3
    assert torch.allclose(tiny.forward(tokens, mask=mask), expected, atol=1e-5)


def test_resid_slice_site_equals_zeroing_the_output_projection_output(tiny, twin, tokens):
    layer, head = 0, 2
    width = tiny.geometry.d_model // tiny.n_heads
    o_proj = twin.model.layers[layer].self_attn.o_proj
    with edited_slice(o_proj, head, width, lambda part: 0.0 * part, on="output"):
        expected = twin_logits(twin, tokens)
    mask = HeadMask.ablate(tiny.geometry, [(layer, head)], site="resid-slice")
    assert torch.allclose(tiny.forward(tokens, mask=mask), expected, atol=1e-5)
    head_ablation = tiny.forward(tokens, mask=HeadMask.ablate(tiny.geometry, [(layer, head)]))
    assert (head_ablation - expected).abs().max() > 1e-3, "resid-slice is not a head ablation"


def test_capture_returns_the_masked_head_outputs(tiny, tokens):
    mask = HeadMask.ablate(tiny.geometry, [(1, 0)])
    logits, z = tiny.capture(tokens, mask=mask)
    assert z.shape == (1, tokens.shape[1], tiny.n_layers, tiny.n_heads, tiny.d_head)
    assert torch.all(z[:, :, 1, 0] == 0) and z[:, :, 1, 1].abs().sum() > 0
    assert torch.allclose(logits, tiny.forward(tokens, mask=mask))


@pytest.mark.parametrize("masked", [False, True])
def test_tail_runner_equals_the_full_forward(tiny, tokens, masked):
    context = tiny.tail_context(tokens)
    heads = [(1, 0), (1, 3), (2, 2)]
    for start in range(tiny.n_layers):
        later = [h for h in heads if h[0] >= start]
        if masked and not later:
            continue
        mask = HeadMask.one_head_per_row(tiny.geometry, later) if masked else None
        rows = len(later) if masked else 1
        expected = tiny.forward(tokens.expand(rows, -1), mask=mask)
        assert torch.allclose(tiny.run_tail(context, start, rows=rows, mask=mask), expected, atol=1e-5)
    positions = torch.tensor([3, 7])
    subset = tiny.run_tail(context, 1, positions=positions)
    assert torch.allclose(subset, tiny.forward(tokens)[:, positions], atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_cached_step_equals_the_last_position_of_a_full_forward(tiny, tokens, masked):
    """Fails on transformers 5.24, where cached steps attend only to themselves."""
    mask = HeadMask.ablate(tiny.geometry, [(0, 1), (2, 3)]) if masked else None
    _, past = tiny.step(tokens[:, :-1], mask=mask)
    step_logits, _ = tiny.step(tokens[:, -1:], past, mask=mask)
    full = tiny.forward(tokens, mask=mask)
    assert torch.allclose(step_logits[:, -1], full[:, -1], atol=1e-4)


def test_left_padded_batch_matches_single_rows(tiny):
    sequences = [tiny.encode_chat("hi"), tiny.encode_chat("a longer question here")]
    batch, attention = tiny.pad_left(sequences)
    logits = tiny.forward(batch, attention_mask=attention)
    for row, sequence in enumerate(sequences):
        alone = tiny.forward(sequence)
        assert torch.allclose(logits[row, -1], alone[0, -1], atol=1e-4)


def test_chat_encoding_has_a_single_leading_bos(tiny):
    ids = tiny.encode_chat("hello")
    assert ids[0] == tiny.tokenizer.bos_token_id and ids[1] != tiny.tokenizer.bos_token_id
    assert tiny.decode(ids, skip_special_tokens=False).startswith("<|im_start|>user\nhello")


def test_intervene_applies_the_mask_to_forwards_inside_the_block_only(tiny, twin, tokens):
    """Any forward of the bridge inside `intervene` (here a plain `bridge(...)` call, not a lens
    method) is the hand-patched twin's; after the block the model is clean again."""
    layer, head, d_head = 0, 3, tiny.d_head
    o_proj = twin.model.layers[layer].self_attn.o_proj
    with edited_slice(o_proj, head, d_head, lambda part: 0.0 * part, on="input"):
        expected = twin_logits(twin, tokens)
    clean = twin_logits(twin, tokens)
    assert (expected - clean).abs().max() > 1e-3
    seen: list[tuple[int, ...]] = []
    extra = (tiny.hook_name("z", layer), lambda z, hook: seen.append(tuple(z.shape)))
    with tiny.intervene(HeadMask.ablate(tiny.geometry, [(layer, head)]), [extra]), torch.no_grad():
        inside = tiny.bridge(tokens, return_type="logits")
    torch.testing.assert_close(inside, expected, atol=1e-5, rtol=0)
    assert seen == [(1, tokens.shape[1], tiny.n_heads, d_head)]
    torch.testing.assert_close(tiny.forward(tokens), clean, atol=1e-5, rtol=0)


@pytest.mark.parametrize("site", ["head-output", "resid-slice"])
def test_mask_hooks_follow_the_activation_device(tiny, site):
    """In a model split over devices, layer l's activation lives on layer l's device: a hook
    must bring the mask there, not to the lens's device. `meta` stands in for the other device
    (this machine has only the CPU): a mask left on the CPU cannot meet it."""
    z_ref = torch.ones(tiny.n_layers, tiny.n_heads, tiny.d_head) if site == "head-output" else None
    scale = torch.ones(2, tiny.n_layers, tiny.n_heads)
    scale[1, 1, 2] = 0.0
    mask = HeadMask(scale, z_ref=z_ref, site=site)
    [(name, hook)] = tiny.mask_hooks(mask)
    assert name == tiny.site_hook_name(site, 1)
    shape = (2, 5, tiny.n_heads, tiny.d_head) if site == "head-output" else (2, 5, tiny.geometry.d_model)
    for dtype in (torch.float32, torch.bfloat16):
        out = hook(torch.empty(shape, device="meta", dtype=dtype), None)
        assert (out.device.type, out.dtype, tuple(out.shape)) == ("meta", dtype, shape)


def test_tail_inputs_move_to_the_blocks_device():
    """Residuals and recorded block arguments (RoPE's (cos, sin) pair included) go to the device
    of the block that runs them; other arguments pass through."""
    from workbench.engine.tail import moved

    cos_sin = (torch.ones(1, 3, 8), torch.zeros(1, 3, 8))
    moved = {
        key: moved(value, torch.device("meta")) for key, value in {"position_embeddings": cos_sin, "use_cache": False}.items()
    }
    assert [t.device.type for t in moved["position_embeddings"]] == ["meta", "meta"]
    assert moved["use_cache"] is False


def test_mask_rows_must_match_the_batch(tiny, tokens):
    mask = HeadMask.one_head_per_row(tiny.geometry, [(0, 0), (0, 1)])
    with pytest.raises(ValueError, match="2 rows but the batch has 3"):
        tiny.forward(tokens.expand(3, -1), mask=mask)


def test_mask_for_another_geometry_is_rejected(tiny, tokens):
    with pytest.raises(ValueError, match="4 layers x 4 heads but the model has 3 x 4"):
        tiny.forward(tokens, mask=HeadMask(torch.ones(1, 4, 4)))


def test_sequence_longer_than_the_context_is_rejected(tiny):
    with pytest.raises(ValueError, match="exceeds the model context of 256"):
        tiny.forward([5] * 300)


@pytest.mark.slow
def test_default_model_matches_an_independent_hugging_face_forward(default_lens):
    from transformers import AutoModelForCausalLM

    from workbench.engine.models import embedded_default_folder

    reference = AutoModelForCausalLM.from_pretrained(embedded_default_folder(), attn_implementation="eager").eval()
    tokens = default_lens.as_batch(default_lens.encode_chat("What is the capital of France?"))
    difference = (default_lens.forward(tokens) - twin_logits(reference, tokens)).abs().max().item()
    assert difference <= 1e-4


@pytest.mark.slow
def test_default_model_cached_step_with_mask(default_lens):
    tokens = default_lens.as_batch(default_lens.encode_chat("Name three colours."))
    mask = HeadMask.ablate(default_lens.geometry, [(3, 4), (17, 0)])
    _, past = default_lens.step(tokens[:, :-1], mask=mask)
    step_logits, _ = default_lens.step(tokens[:, -1:], past, mask=mask)
    assert torch.allclose(step_logits[:, -1], default_lens.forward(tokens, mask=mask)[:, -1], atol=1e-4)


def test_identity_rows_beside_mean_ablated_rows_are_bit_exact(tiny, tokens):
    """DPS puts a full-model row beside a suppressed row; the full row must not change at all."""
    z_ref = tiny.mean_head_outputs([tiny.encode("reference text")])
    mask = HeadMask.stack(
        [HeadMask(torch.ones(1, tiny.n_layers, tiny.n_heads), z_ref=z_ref), HeadMask.ablate(tiny.geometry, [(1, 2)], z_ref=z_ref)]
    )
    masked = tiny.forward(tokens.expand(2, -1), mask=mask)
    unmasked = tiny.forward(tokens.expand(2, -1))
    assert torch.equal(masked[0], unmasked[0])
    assert not torch.allclose(masked[1], unmasked[1], atol=1e-3)


@pytest.mark.parametrize("chunk_tokens", [1, 20, 10_000])
def test_chunked_prefill_equals_one_forward_and_continues_the_same(tiny, chunk_tokens):
    """Row chunks (down to one row each) give the logits and the cache of one batched prefill."""
    sequences = [tiny.encode_chat(text) for text in ("hi", "a longer question here", "mid one", "x")]
    tokens, attention = tiny.pad_left(sequences)
    mask = HeadMask.stack([HeadMask.identity(tiny.geometry), HeadMask.ablate(tiny.geometry, [(1, 2)])] * 2)
    logits, past = tiny.prefill(tokens, attention_mask=attention, mask=mask, chunk_tokens=chunk_tokens)
    expected_logits, expected_past = tiny.step(tokens, attention_mask=attention, mask=mask, last_only=True)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=0)
    following = torch.tensor([[5], [6], [7], [8]])
    attention = torch.cat([attention, attention.new_ones(4, 1)], dim=1)
    step, _ = tiny.step(following, past, attention_mask=attention, mask=mask)
    expected_step, _ = tiny.step(following, expected_past, attention_mask=attention, mask=mask)
    torch.testing.assert_close(step, expected_step, atol=1e-5, rtol=0)


def test_prefill_hooks_fire_once_per_chunk_in_row_order(tiny):
    tokens, attention = tiny.pad_left([tiny.encode_chat("hi")] * 3)
    seen: list[int] = []
    hook = ("blocks.0.hook_resid_post", lambda resid, hook: seen.append(resid.shape[0]))
    tiny.prefill(tokens, attention_mask=attention, extra_hooks=[hook], chunk_tokens=2 * tokens.shape[1])
    assert seen == [2, 1]


def test_prefill_rejects_a_mask_with_other_rows(tiny, tokens):
    with pytest.raises(InputError, match="2 rows but the batch has 1"):
        tiny.prefill(tokens, attention_mask=torch.ones_like(tokens), mask=HeadMask.identity(tiny.geometry, rows=2))
