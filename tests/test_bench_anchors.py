"""The speed-anchor benchmark's own correctness machinery (benchmarks/bench_anchors.py): its token
comparison, its Hugging Face `generate` and our-loop wrappers against a hand-written greedy loop
of full forwards, and its float32 GGUF writer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from workbench.engine.models import tiny_hf_model, tiny_model

NEW_TOKENS = 12
TEXTS = ["the quick brown fox", "hi", "a somewhat longer prompt, with punctuation!"]


def _load_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_anchors.py"
    spec = importlib.util.spec_from_file_location("bench_anchors", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


def hand_greedy(model, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding written out: one full forward of the whole sequence per token, argmax."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(new_tokens):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.fixture(scope="module")
def plain():
    """An unwrapped tiny Llama and its tokenizer (the lens of `tiny_model()` has the same weights)."""
    return tiny_hf_model()


@pytest.fixture(scope="module")
def prompts(plain):
    _, tokenizer = plain
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]


@pytest.fixture(scope="module")
def expected(plain, prompts):
    model, _ = plain
    return [hand_greedy(model, prompt, NEW_TOKENS) for prompt in prompts]


def test_compare_tokens_flags_a_perturbed_or_shortened_sequence(expected):
    assert bench.compare_tokens(expected, [list(ids) for ids in expected]) == []
    perturbed = [list(ids) for ids in expected]
    perturbed[1][5] = perturbed[1][5] + 1
    assert bench.compare_tokens(perturbed, expected) == [bench.Mismatch(prompt=1, step=5)]
    shortened = [list(ids) for ids in expected]
    shortened[2] = shortened[2][:-1]
    assert bench.compare_tokens(shortened, expected) == [bench.Mismatch(prompt=2, step=NEW_TOKENS - 1)]
    assert bench.common_prefix(perturbed, expected) == f"common prefix 5–{NEW_TOKENS} of {NEW_TOKENS}"


def test_hf_generate_equals_hand_written_greedy_and_ignores_stop_tokens(plain, prompts, expected):
    model, tokenizer = plain
    # Make a token the greedy loop emits early the model's end-of-sequence token: generate must
    # choose it and go on (neither stop there nor forbid it, as min_new_tokens would).
    stop = expected[0][2]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stop
    try:
        batched = bench.hf_generate(model, tokenizer, prompts, NEW_TOKENS)  # left-padded batch
        alone = [bench.hf_generate(model, tokenizer, [prompt], NEW_TOKENS)[0] for prompt in prompts]
    finally:
        model.generation_config.eos_token_id = saved
    assert batched == expected
    assert alone == expected


def test_our_loop_variant_returns_the_hand_written_greedy_tokens(plain, prompts, expected):
    lens = tiny_model()  # same weights as `plain`, wrapped as a lens
    # A token the greedy loop emits early becomes a stop token: the variant must decode past it.
    lens.tokenizer.eos_token = lens.tokenizer.convert_ids_to_tokens(expected[0][2])
    assert expected[0][2] in lens.stop_token_ids
    variant = bench.ours(lens)
    assert variant.run(prompts, NEW_TOKENS) == expected  # one batch, sorted by length inside the loop
    assert variant.run(prompts[1:2], NEW_TOKENS) == expected[1:2]


def test_f32_gguf_copies_metadata_and_dequantizes_every_tensor(tmp_path):
    rng = np.random.default_rng(0)
    source, target = tmp_path / "small.Q4_1.gguf", tmp_path / "small.F32.gguf"
    quantized = gguf.quants.quantize(rng.standard_normal((6, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q4_1)
    norm = rng.standard_normal(64).astype(np.float32)
    writer = gguf.GGUFWriter(source, "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    writer.add_block_count(1)
    writer.add_token_list(["<a>", "b", "c"])
    writer.add_token_types([1, 3, 1])
    writer.add_rope_freq_base(100000.0)
    writer.add_tensor("blk.0.attn_q.weight", quantized, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
    writer.add_tensor("blk.0.attn_norm.weight", norm)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    bench.write_f32_gguf(source, target)

    original, copy = gguf.GGUFReader(source), gguf.GGUFReader(target)
    fields = lambda reader: {k: v.contents() for k, v in reader.fields.items() if not k.startswith("GGUF.")}
    expected_fields = fields(original) | {"general.file_type": int(gguf.LlamaFileType.ALL_F32)}
    assert fields(copy) == expected_fields
    assert [t.name for t in copy.tensors] == [t.name for t in original.tensors]
    for old, new in zip(original.tensors, copy.tensors):
        assert new.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(new.shape) == list(old.shape)
        np.testing.assert_array_equal(new.data, gguf.quants.dequantize(old.data, old.tensor_type))
    np.testing.assert_array_equal(copy.tensors[1].data, norm)
