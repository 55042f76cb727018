"""The fast decoding path (`workbench.engine.fast_path` with `workbench.engine.kv_cache.GrowingKVCache`)
against plain Hugging Face full forwards, for every model family.

The reference is an unwrapped twin of each tiny lens model (same arguments, same seed) whose heads
are suppressed by editing weights (`reference_decoding.patched`: the output projection's columns
of a head times its scale) or whose query norm output is edited by hand; every step is checked
against a full forward of that row's unpadded sequence, without any cache. The sequences run past
the tiny models' sliding window (8 positions) and past the cache's preallocated length.
"""

from __future__ import annotations

import pytest
import torch
from reference_decoding import decode, head_dim, next_logits, patched

from workbench.decoding import DPS, generate
from workbench.engine.adapters import FAMILIES
from workbench.engine.kv_cache import CacheSpec, GrowingKVCache
from workbench.engine.masks import HeadMask
from workbench.engine.models import tiny_hf_model, tiny_model
from workbench.heads import HeadWeights

PROMPTS = ["hello there, how are you", "hi", "a longer prompt with punctuation!"]
FOLLOWERS = "next words, then more of them"
N_LAYERS = 4
# Group 1's suppressed heads (layer, head, scale), all at layer 2 or above: layers 0 and 1 can be shared.
SUPPRESSED = [(2, 1, 0.3), (3, 0, 0.0), (3, 3, 0.5)]
SHARED_BELOW = 2
STEP_ATOL = 1e-4  # fast path against the twin's full forward (float rounding over ~40 positions)
SHARED_ATOL = 1e-5  # shared lower layers against unshared ones, both on the fast path


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def lens(family):
    return tiny_model(family=family, n_layers=N_LAYERS)


@pytest.fixture(scope="module")
def twins(family) -> list[torch.nn.Module]:
    """Group 0: the plain twin; group 1: the twin with `SUPPRESSED` patched into its weights."""
    twin = tiny_hf_model(family=family, n_layers=N_LAYERS)[0]
    scale = torch.ones(N_LAYERS, twin.config.num_attention_heads)
    for layer, head, value in SUPPRESSED:
        scale[layer, head] = value
    return [twin, patched(twin, output_scale=scale)]


def group_mask(lens, rows_per_group: int) -> HeadMask:
    """Identity rows for group 0, `SUPPRESSED` for group 1 (the layout of a DPS batch)."""
    scale = torch.ones(2 * rows_per_group, lens.n_layers, lens.n_heads)
    for layer, head, value in SUPPRESSED:
        scale[rows_per_group:, layer, head] = value
    return HeadMask(scale)


def cached_run(lens, spec_of, steps: int, drop_at: int | None = None):
    """Prefill two groups of the left-padded `PROMPTS` and take `steps` one-token steps on the fast
    path; at `drop_at` prompt 1 finishes and prompts 0 and 2 swap places (rows dropped and
    reordered as the decoding loop does). Yields (logits, prompt of each row, sequences, cache)."""
    sequences = [lens.encode_chat(text) for text in PROMPTS]
    tokens, attention = lens.pad_left(sequences + sequences)
    mask = group_mask(lens, len(PROMPTS))
    spec = spec_of(tokens.shape[1])
    logits, cache = lens.prefill(tokens, attention_mask=attention, mask=mask, cache=spec)
    prompts = list(range(len(PROMPTS)))
    yield logits, prompts, sequences, cache
    followers = lens.encode(FOLLOWERS)
    for step in range(steps):
        if step == drop_at:
            keep = [2, 0]
            n = len(prompts)
            rows = torch.tensor([g * n + i for g in range(2) for i in keep])
            cache = lens.select_cache_rows(cache, rows)
            attention, prompts = attention[rows], [prompts[i] for i in keep]
            mask = group_mask(lens, len(prompts))
        token = followers[step % len(followers)]
        for prompt in prompts:
            sequences[prompt] = [*sequences[prompt], token]
        attention = torch.cat([attention, attention.new_ones(len(attention), 1)], dim=1)
        logits, cache = lens.step(torch.full((len(attention), 1), token), cache, attention_mask=attention, mask=mask)
        yield logits, prompts, sequences, cache


def check_against_twins(twins, logits, prompts, sequences) -> None:
    n = len(prompts)
    for group, twin in enumerate(twins):
        for position, prompt in enumerate(prompts):
            expected = next_logits(twin, sequences[prompt])
            actual = logits[group * n + position, -1]
            torch.testing.assert_close(actual, expected, atol=STEP_ATOL, rtol=0, msg=f"group {group} prompt {prompt}")


def test_growing_cache_with_shared_lower_layers_equals_full_forwards(lens, twins):
    """Two groups sharing layers 0-1, a cache preallocated for 3 positions beyond the prompt that
    has to grow, rows dropped and reordered after 4 steps: every step equals the patched twin."""
    steps = 12
    shared = cached_run(lens, lambda width: CacheSpec(width + 3, groups=2, shared_below=SHARED_BELOW), steps, drop_at=4)
    unshared = cached_run(lens, lambda width: CacheSpec(width + 3), steps, drop_at=4)
    for (logits, prompts, sequences, cache), (plain_logits, *_) in zip(shared, unshared):
        check_against_twins(twins, logits, prompts, sequences)
        torch.testing.assert_close(logits, plain_logits, atol=SHARED_ATOL, rtol=0)
        assert cache.shared_below == SHARED_BELOW and cache.keys[0].shape[0] == len(prompts)
    assert cache.keys[0].shape[2] > len(lens.encode_chat(PROMPTS[2])) + 3, "the cache must have grown"
    assert min(len(sequences[prompt]) for prompt in prompts) > 2 * 8, "the steps must run past the sliding window"


def test_shared_lower_layers_refuse_rows_that_differ_there(lens):
    """Sharing layers 0-1 is refused when the groups' tokens differ, when their head masks differ
    below layer 2, or when an extra hook acts below it; a mask that differs from layer 2 up is fine."""
    sequences = [lens.encode_chat(text) for text in PROMPTS]
    tokens, attention = lens.pad_left(sequences + sequences)
    spec = CacheSpec(tokens.shape[1] + 1, groups=2, shared_below=SHARED_BELOW)
    n = len(PROMPTS)
    lens.prefill(tokens, attention_mask=attention, mask=group_mask(lens, n), cache=spec)
    other = tokens.clone()
    other[n, -1] = (other[n, -1] + 1) % lens.geometry.d_vocab
    low = group_mask(lens, n).scale.clone()
    low[n:, SHARED_BELOW - 1, 0] = 0.0
    hook = (lens.hook_name("z", SHARED_BELOW - 1), lambda z, hook: None)
    for refused in (
        {"tokens": other},
        {"mask": HeadMask(low)},
        {"extra_hooks": [hook]},
    ):
        arguments = {"tokens": tokens, "mask": group_mask(lens, n), **refused}
        with pytest.raises(ValueError, match=f"share layers below {SHARED_BELOW}"):
            lens.prefill(arguments.pop("tokens"), attention_mask=attention, cache=spec, **arguments)


def test_the_suppressed_heads_change_what_the_shared_rows_compute(lens, twins):
    """The reference pairs differ, so the test above would notice groups computed alike."""
    sequence = lens.encode_chat(PROMPTS[0])
    assert (next_logits(twins[0], sequence) - next_logits(twins[1], sequence)).abs().max() > 1e-3


def test_query_scale_on_the_fast_path_equals_scaling_the_query_the_attention_uses(lens, family):
    """After the family's query norm where it has one (Qwen3 norms [batch, pos, head, d_head],
    Gemma-3 [batch, head, pos, d_head]), else the query projection's head slice."""
    layer, head, scale = 1, 2, 0.5
    twin = tiny_hf_model(family=family, n_layers=N_LAYERS)[0]
    attention = twin.model.layers[layer].self_attn
    d_head = head_dim(twin)
    if hasattr(attention, "q_norm"):
        target = attention.q_norm

        def edit(module, args, q):
            q = q.clone()
            if family == "gemma3":
                q[:, head] *= scale
            else:
                q[:, :, head] *= scale
            return q
    else:
        target = getattr(attention, "q_proj", None) or attention.qkv_proj

        def edit(module, args, q):
            q = q.clone()
            q[..., head * d_head : (head + 1) * d_head] *= scale
            return q

    sequence = lens.encode_chat(PROMPTS[0])
    mask = HeadMask(torch.ones(1, lens.n_layers, lens.n_heads), site="query-scale")
    mask.scale[0, layer, head] = scale
    logits, cache = lens.prefill(
        torch.tensor([sequence[:-6]]),
        attention_mask=torch.ones(1, len(sequence) - 6, dtype=torch.long),
        mask=mask,
        cache=CacheSpec(len(sequence)),
    )
    for end in range(len(sequence) - 5, len(sequence) + 1):
        logits, cache = lens.step(torch.tensor([sequence[end - 1 : end]]), cache, mask=mask)
    handle = target.register_forward_hook(edit)
    try:
        expected = next_logits(twin, sequence)
    finally:
        handle.remove()
    assert (expected - next_logits(twin, sequence)).abs().max() > 1e-3
    torch.testing.assert_close(logits[0, -1], expected, atol=STEP_ATOL, rtol=0)


def test_dps_generation_shares_the_layers_below_its_heads_and_decodes_like_the_twins(lens, twins, monkeypatch):
    """`generate` with DPS (γ = 1) runs its two rows shared below the lowest suppressed head and
    picks, at every step, the argmax of 2·full − masked from the two twins' full forwards."""
    weights = torch.zeros(lens.n_layers, lens.n_heads)
    for layer, head, value in SUPPRESSED:
        weights[layer, head] = 1 - value
    prompts = [lens.encode_chat(text) for text in PROMPTS]
    caches = []
    prefill = lens.prefill

    def recording(*args, **kwargs):
        logits, cache = prefill(*args, **kwargs)
        caches.append(cache)
        return logits, cache

    monkeypatch.setattr(lens, "prefill", recording)
    steps = 10
    generations = generate(lens, prompts, decoder=DPS(HeadWeights(weights), gamma=1.0), max_new_tokens=steps, stop_at_eos=False)
    assert isinstance(caches[0], GrowingKVCache) and caches[0].shared_below == SHARED_BELOW
    full, masked = twins

    def score(sequence):
        return 2 * next_logits(full, sequence) - next_logits(masked, sequence)

    for prompt, generation in zip(prompts, generations):
        assert generation.token_ids == decode(prompt, score, set(), steps=steps)


@pytest.mark.slow
def test_dps_on_the_default_model_decodes_like_the_plain_hugging_face_model(default_lens):
    """The embedded model: DPS (γ = 1, heads in layers 15 and up, so the rows share layers 0-14)
    on the fast path picks, at every step, the argmax of 2·full − masked computed by full
    forwards of the plain Hugging Face model and a weight-patched copy of it."""
    from transformers import AutoModelForCausalLM

    from workbench.engine.models import embedded_default_folder

    plain = AutoModelForCausalLM.from_pretrained(embedded_default_folder(), dtype=torch.float32).eval()
    weights = torch.zeros(default_lens.n_layers, default_lens.n_heads)
    weights[15, 2], weights[20, 0], weights[27, 5] = 1.0, 0.7, 1.0
    masked = patched(plain, output_scale=1 - weights)
    prompts = [default_lens.encode_chat(text) for text in ("What is the capital of France?", "Say hi.")]
    steps = 6
    generations = generate(
        default_lens, prompts, decoder=DPS(HeadWeights(weights), gamma=1.0), max_new_tokens=steps, stop_at_eos=False
    )

    def score(sequence):
        return 2 * next_logits(plain, sequence) - next_logits(masked, sequence)

    for prompt, generation in zip(prompts, generations):
        assert generation.token_ids == decode(prompt, score, set(), steps=steps)
