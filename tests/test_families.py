"""Every supported model family against plain Hugging Face, on tiny random models built in code.

For each family the lens wraps one model and an unwrapped twin (same arguments, same seed, built
separately: the bridge wraps its model in place) is the reference. Interventions on the twin are
written by hand on the output projection's input (or the query, or the projection's output). The
sliding window of the tiny configs (8 positions) is shorter than every test sequence, so sliding
layers, their KV caches and their masks in the tail runner all matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from workbench.decoding import DPS, generate
from workbench.engine.adapters import FAMILIES
from workbench.engine.masks import HeadMask
from workbench.engine.models import tiny_hf_model, tiny_model
from workbench.heads import HeadWeights

TEXT = "The quick brown fox jumps over the lazy dog, twice."
PROMPTS = ["hello there, how are you", "hi", "a longer prompt with punctuation!"]
ATOL = 2e-5
WINDOW_FAMILIES = ("mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")
# The end-of-sequence and end-of-turn tokens of each family's (tiny) chat format.
STOP_TOKENS = {
    "llama": {"<|im_end|>"},
    "mistral": {"</s>"},
    "qwen2": {"<|im_end|>", "<|endoftext|>"},
    "qwen3": {"<|im_end|>", "<|endoftext|>"},
    "gemma2": {"<eos>", "<end_of_turn>"},
    "gemma3": {"<eos>", "<end_of_turn>"},
    "phi3": {"<|endoftext|>", "<|end|>"},
}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def lens(family):
    return tiny_model(family=family)


@pytest.fixture(scope="module")
def twin(family) -> torch.nn.Module:
    return tiny_hf_model(family=family)[0]


@pytest.fixture(scope="module")
def tokens(lens) -> torch.Tensor:
    return lens.as_batch(lens.encode(TEXT, add_bos=True))


def hf_logits(model: torch.nn.Module, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens, attention_mask=attention_mask).logits


def attention(twin: torch.nn.Module, layer: int) -> torch.nn.Module:
    return twin.model.layers[layer].self_attn


@contextmanager
def edited(module: torch.nn.Module, edit: Callable[[torch.Tensor], torch.Tensor], *, on: str) -> Iterator[None]:
    """Rewrite a module's first input (`on="input"`) or its output while the block runs."""
    if on == "input":
        handle = module.register_forward_pre_hook(lambda m, args: (edit(args[0].clone()),) + args[1:])
    else:
        handle = module.register_forward_hook(lambda m, args, output: edit(output.clone()))
    try:
        yield
    finally:
        handle.remove()


def scale_slice(start: int, stop: int, scale: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def edit(features: torch.Tensor) -> torch.Tensor:
        features[..., start:stop] *= scale
        return features

    return edit


@contextmanager
def heads_zeroed(twin: torch.nn.Module, heads: list[tuple[int, int]], d_head: int) -> Iterator[None]:
    """Zero the output-projection input columns of `heads` in the twin's weights."""
    saved = {}
    with torch.no_grad():
        for layer, head in heads:
            o_proj = attention(twin, layer).o_proj
            saved.setdefault(layer, o_proj.weight.clone())
            o_proj.weight[:, head * d_head : (head + 1) * d_head] = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, weight in saved.items():
                attention(twin, layer).o_proj.weight.copy_(weight)


@pytest.fixture(scope="module")
def head_ablated(lens, twin, tokens) -> dict[tuple[int, int], torch.Tensor]:
    """The twin's logits with each head zeroed by hand, one forward per head."""
    expected = {}
    for head in lens.geometry.all_heads():
        with heads_zeroed(twin, [head], lens.d_head):
            expected[head] = hf_logits(twin, tokens)
    return expected


# --- the plain forward -----------------------------------------------------------------------


def test_bridge_logits_equal_hugging_face(lens, twin, tokens):
    torch.testing.assert_close(lens.forward(tokens), hf_logits(twin, tokens), atol=ATOL, rtol=0)
    batch, mask = lens.pad_left([lens.encode(text, add_bos=True) for text in PROMPTS])
    torch.testing.assert_close(lens.forward(batch, attention_mask=mask), hf_logits(twin, batch, mask), atol=ATOL, rtol=0)


@pytest.mark.parametrize("family_with_window", WINDOW_FAMILIES)
def test_the_test_sequences_reach_past_the_sliding_window(family_with_window):
    """A twin whose window covers the whole sequence computes something else: the window is in play."""
    windowed = tiny_hf_model(family=family_with_window)
    wide, _ = tiny_hf_model(family=family_with_window, sliding_window=256)
    model, tokenizer = windowed
    tokens = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    assert (hf_logits(model, tokens) - hf_logits(wide, tokens)).abs().max() > 1e-3


# --- head ablation ---------------------------------------------------------------------------


def test_zero_ablation_equals_zeroed_output_projection_columns(lens, twin, tokens, head_ablated):
    clean = hf_logits(twin, tokens)
    for head, expected in head_ablated.items():
        assert (expected - clean).abs().max() > 1e-3, "the ablation must change the logits for the test to mean anything"
        actual = lens.forward(tokens, mask=HeadMask.ablate(lens.geometry, [head]))
        torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0, msg=f"head {head}")


def test_one_head_per_row_equals_one_forward_per_head(lens, tokens, head_ablated):
    heads = lens.geometry.all_heads()
    batched = lens.forward(tokens.expand(len(heads), -1), mask=HeadMask.one_head_per_row(lens.geometry, heads))
    for row, head in enumerate(heads):
        torch.testing.assert_close(batched[row : row + 1], head_ablated[head], atol=ATOL, rtol=0, msg=f"head {head}")


def test_query_scale_equals_scaling_the_query_the_attention_uses(lens, twin, tokens, family):
    """After the query norm where the family has one (a norm would undo a scale before it)."""
    layer, head, scale, d_head = 1, 2, 0.5, lens.d_head
    module = attention(twin, layer)
    if hasattr(module, "q_norm"):  # HF's Qwen3 norms [batch, pos, head, d_head], Gemma-3 [batch, head, pos, d_head]
        target, on = module.q_norm, "output"

        def edit(q: torch.Tensor) -> torch.Tensor:
            if family == "gemma3":
                q[:, head] *= scale
            else:
                q[:, :, head] *= scale
            return q
    else:  # queries are the first outputs of q_proj or of a fused qkv_proj
        target = getattr(module, "q_proj", None) or module.qkv_proj
        on, edit = "output", scale_slice(head * d_head, (head + 1) * d_head, scale)
    with edited(target, edit, on=on):
        expected = hf_logits(twin, tokens)
    mask = HeadMask(torch.ones(1, lens.n_layers, lens.n_heads), site="query-scale")
    mask.scale[0, layer, head] = scale
    assert (expected - hf_logits(twin, tokens)).abs().max() > 1e-3
    torch.testing.assert_close(lens.forward(tokens, mask=mask), expected, atol=ATOL, rtol=0)


def test_resid_slice_equals_zeroing_the_output_projection_output(lens, twin, tokens):
    layer, head = 2, 1
    width = lens.geometry.d_model // lens.n_heads
    with edited(attention(twin, layer).o_proj, scale_slice(head * width, (head + 1) * width, 0.0), on="output"):
        expected = hf_logits(twin, tokens)
    mask = HeadMask.ablate(lens.geometry, [(layer, head)], site="resid-slice")
    torch.testing.assert_close(lens.forward(tokens, mask=mask), expected, atol=ATOL, rtol=0)


# --- the tail runner -------------------------------------------------------------------------


def test_tail_runner_equals_the_full_forward(lens, twin, tokens, head_ablated):
    context = lens.tail_context(tokens)
    for start in range(lens.n_layers):
        torch.testing.assert_close(lens.run_tail(context, start), hf_logits(twin, tokens), atol=ATOL, rtol=0)
        later = [head for head in lens.geometry.all_heads() if head[0] >= start]
        tail = lens.run_tail(context, start, rows=len(later), mask=HeadMask.one_head_per_row(lens.geometry, later))
        for row, head in enumerate(later):
            torch.testing.assert_close(tail[row : row + 1], head_ablated[head], atol=ATOL, rtol=0, msg=f"{start} {head}")


def test_tail_runner_on_a_left_padded_batch(lens, twin):
    batch, mask = lens.pad_left([lens.encode(text, add_bos=True) for text in PROMPTS])
    context = lens.tail_context(batch, attention_mask=mask)
    expected = hf_logits(twin, batch, mask)
    for start in range(lens.n_layers):
        torch.testing.assert_close(lens.run_tail(context, start), expected, atol=ATOL, rtol=0)


# --- KV-cached steps -------------------------------------------------------------------------


def test_cached_steps_with_a_mask_equal_full_forwards_past_the_window(lens, twin):
    """Chunked prefill (joined caches), steps, then rows dropped and reordered: every step's
    logits equal the hand-patched twin's full forward of that row's unpadded sequence."""
    heads = [(0, 1), (2, 3)]
    mask = HeadMask.ablate(lens.geometry, heads)
    sequences = [lens.encode_chat(text) for text in PROMPTS]
    tokens, attention_mask = lens.pad_left(sequences)
    logits, past = lens.prefill(tokens, attention_mask=attention_mask, mask=mask, chunk_tokens=tokens.shape[1])
    followers = lens.encode("next words")

    def check(step_logits: torch.Tensor, rows: list[int]) -> None:
        with heads_zeroed(twin, heads, lens.d_head):
            for position, row in enumerate(rows):
                expected = hf_logits(twin, torch.tensor([sequences[row]]))[0, -1]
                torch.testing.assert_close(step_logits[position, -1], expected, atol=1e-4, rtol=0, msg=f"row {row}")

    rows = [0, 1, 2]
    check(logits, rows)
    for step, token in enumerate(followers):
        if step == 3:  # row 1 finishes; the others swap places
            keep = [2, 0]
            past = lens.select_cache_rows(past, torch.tensor(keep))
            attention_mask = attention_mask[keep]
            rows = [rows[i] for i in keep]
        for row in rows:
            sequences[row] = [*sequences[row], token]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
        logits, past = lens.step(torch.full((len(rows), 1), token), past, attention_mask=attention_mask, mask=mask)
        check(logits, rows)
    assert min(len(sequences[row]) for row in rows) > 2 * 8, "the steps must run past the sliding window"


# --- decoding --------------------------------------------------------------------------------


def test_dps_with_gamma_zero_is_greedy_and_greedy_is_the_twins_argmax(lens, twin):
    prompts = [lens.encode_chat(text) for text in PROMPTS]
    steps = 6
    greedy = generate(lens, prompts, max_new_tokens=steps, stop_at_eos=False)
    weights = torch.zeros(lens.n_layers, lens.n_heads)
    weights[0, 1], weights[2, 0] = 1.0, 0.5
    dps = generate(lens, prompts, decoder=DPS(HeadWeights(weights), gamma=0.0), max_new_tokens=steps, stop_at_eos=False)
    assert [g.token_ids for g in dps] == [g.token_ids for g in greedy]
    for prompt, generation in zip(prompts, greedy):
        sequence = list(prompt)
        for _ in range(steps):
            sequence.append(int(hf_logits(twin, torch.tensor([sequence]))[0, -1].argmax()))
        assert generation.token_ids == sequence[len(prompt) :]


# --- tokens and templates --------------------------------------------------------------------


def test_stop_tokens_are_the_familys_end_of_sequence_and_end_of_turn(lens, family):
    expected = {lens.tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS[family]}
    assert lens.stop_token_ids == expected


def test_plain_text_bos_follows_the_family(lens, family):
    ids = lens.encode("plain text", add_bos=bool(getattr(lens.tokenizer, "add_bos_token", False)))
    bos = lens.tokenizer.convert_tokens_to_ids({"mistral": "<s>", "gemma2": "<bos>", "gemma3": "<bos>"}.get(family, "<unk>"))
    if family in ("mistral", "gemma2", "gemma3"):  # trained with BOS: plain text gets one
        assert ids[0] == bos and ids[1] != bos
    if family in ("qwen2", "qwen3"):  # no BOS token at all, even when one is asked for
        assert lens.encode("plain text", add_bos=True) == lens.encode("plain text")


def test_chat_template_takes_a_system_prompt(lens, family):
    text = lens.chat_text("the question", system="the rules")
    assert "the rules" in text and text.index("the rules") < text.index("the question")
    if family.startswith("gemma"):  # no system role: the system text opens the user turn
        assert "<start_of_turn>user\nthe rules\n\nthe question<end_of_turn>" in text
    if family == "qwen3":  # thinking switched off: an empty reasoning block, then the answer
        assert text.endswith("<think>\n\n</think>\n\n")


def test_every_hook_kind_fires_with_its_shape(lens, tokens):
    from workbench.engine.adapters import HOOKS, OPTIONAL_HOOKS

    g, pos = lens.geometry, tokens.shape[1]
    shapes = {
        "z": (1, pos, g.n_heads, g.d_head),
        "q": (1, pos, g.n_heads, g.d_head),
        "q_normed": (1, g.n_heads, pos, g.d_head),
        "k": (1, pos, g.n_kv_heads, g.d_head),
        "v": (1, pos, g.n_kv_heads, g.d_head),
        "pattern": (1, g.n_heads, pos, pos),
        "attn_scores": (1, g.n_heads, pos, pos),
    }
    kinds = [kind for kind in HOOKS if kind not in OPTIONAL_HOOKS or kind == lens.adapter.query_hook]
    seen = {}

    def record(kind):
        return lambda activation, hook: seen.__setitem__(kind, tuple(activation.shape))

    with lens.intervene(None, [(lens.hook_name(kind, 1), record(kind)) for kind in kinds]):
        lens.bridge(tokens, return_type=None)
    for kind in kinds:
        assert seen[kind] == shapes.get(kind, (1, pos, g.d_model)), kind
