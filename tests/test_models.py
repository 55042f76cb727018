"""Model loading: the embedded default, its on-disk cache, named models, tiny test models."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

from workbench.engine import models
from workbench.engine.lens import Lens
from workbench.engine.masks import HeadMask
from workbench.errors import InputError, ModelLoadError


def test_tiny_model_is_deterministic_and_has_grouped_query_attention():
    first, second = models.tiny_model(seed=3), models.tiny_model(seed=3)
    assert (first.n_layers, first.n_heads, first.n_kv_heads, first.d_head) == (3, 4, 2, 8)
    tokens = first.encode("abc")
    assert torch.equal(first.forward(tokens), second.forward(tokens))
    assert not torch.equal(first.forward(tokens), models.tiny_model(seed=4).forward(tokens))


def test_manifest_detects_partial_and_corrupt_caches(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x" * 10)
    assert not models._manifest_matches(tmp_path)  # no manifest: a build that never finished
    (tmp_path / models.MANIFEST).write_text(json.dumps({"sizes": {"weights.bin": 10}}))
    assert models._manifest_matches(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"x" * 4)  # truncated file
    assert not models._manifest_matches(tmp_path)
    (tmp_path / models.MANIFEST).write_text("{not json")
    assert not models._manifest_matches(tmp_path)


def test_a_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    """The conversion step is replaced by a tiny model: what is tested is the cache logic."""
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(models, "_load_gguf", lambda folder, file, dtype: models.tiny_hf_model())
    folder = models.embedded_default_folder()
    assert models._manifest_matches(folder)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    assert not models._manifest_matches(folder)
    rebuilt = models.embedded_default_folder()
    assert models._manifest_matches(rebuilt)
    assert sorted(p.name for p in tmp_path.joinpath("models").iterdir()) == [rebuilt.name]  # no leftovers
    lens = models.load_model(device="cpu")
    assert lens.n_layers == 3


def test_unknown_model_offline_names_the_embedded_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_hub_reachable", lambda: False)
    with pytest.raises(ModelLoadError, match="embedded default SmolLM2-135M-Instruct"):
        models.load_model("no-such-org/no-such-model", device="cpu")


def test_missing_gguf_file_and_bad_dtype_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="GGUF file not found"):
        models.load_model(tmp_path / "missing.gguf")
    with pytest.raises(InputError, match="unknown dtype 'float8'"):
        models.load_model(dtype="float8")


def one_line_error(call, match: str) -> str:
    with pytest.raises(InputError, match=match) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message.strip(), message
    return message


def refuse_loading(*args, **kwargs):
    raise AssertionError("weights loaded before the model family was checked")


def test_a_gguf_file_of_an_unsupported_architecture_is_refused_before_loading(tmp_path, monkeypatch):
    from gguf import GGUFWriter

    monkeypatch.setattr(models, "_load_gguf", refuse_loading)
    path = tmp_path / "tiny-gpt2.gguf"
    writer = GGUFWriter(path, "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = one_line_error(lambda: models.load_model(path), "GGUF architecture 'gpt2' is not supported")
    assert "llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3" in message


def test_a_file_that_is_not_a_model_says_what_is_wrong_with_it(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    one_line_error(lambda: models.load_model(text), "notes.txt is a file but not a GGUF file")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip, not GGUF")
    one_line_error(lambda: models.load_model(fake), "fake.gguf is not a GGUF file")


def test_a_folder_of_an_unsupported_family_is_refused_before_loading(tmp_path, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    monkeypatch.setattr(models, "_from_pretrained", refuse_loading)
    _, tokenizer = models.tiny_hf_model()
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    message = one_line_error(lambda: models.load_model(tmp_path, device="cpu"), "unsupported model family GPT2LMHeadModel")
    assert message.endswith("supported families: llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3")
    one_line_error(lambda: models.tiny_model(family="gpt2"), "unknown model family 'gpt2'; supported families: llama")


@pytest.mark.parametrize(
    ("device_map", "match"),
    [
        ('{"model.layers.0": "cuda:3"}', "device map puts 'model.layers.0' on cuda:3 but this machine has no CUDA device"),
        ('{"model.layers.0": 3}', "device map puts 'model.layers.0' on cuda:3 but this machine has no CUDA device"),
        ('{"model.layers.0": "tpu"}', "'model.layers.0' -> 'tpu' is not a device"),
        ('{"model.layers.0": "disk"}', "offloading to disk is not supported"),
        ("everywhere", "device map must be one of auto, balanced"),
        ("[1, 2]", "must be a non-empty JSON object"),
    ],
)
def test_bad_device_maps_are_one_line_errors(device_map, match):
    one_line_error(lambda: models.load_model(device_map=device_map), match)


def test_a_device_and_a_device_map_exclude_each_other():
    one_line_error(lambda: models.load_model(device="cpu", device_map="auto"), "give a device .* or a device map, not both")


def test_the_command_line_reports_a_missing_device_in_one_line():
    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, ["info", "--device-map", '{"model.embed_tokens": "cuda:3"}'])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == "error: device map puts 'model.embed_tokens' on cuda:3 but this machine has no CUDA device; use 'cpu' or 'auto'"
    )


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gemma3")
    hf_model, tokenizer = models.tiny_hf_model(family="gemma3")
    hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, hf_model


MODULES = [
    "model.embed_tokens",
    "model.rotary_emb",
    "model.layers.0",
    "model.layers.1",
    "model.layers.2",
    "model.norm",
    "lm_head",
]


def check_matches_the_reference(lens, reference) -> None:
    """Forward, a masked tail run and a masked cached step against the unwrapped model."""
    tokens = lens.as_batch(lens.encode("a sequence longer than the window", add_bos=True))
    with torch.no_grad():
        assert torch.allclose(lens.forward(tokens), reference(tokens).logits, atol=1e-5)
    mask = HeadMask.ablate(lens.geometry, [(1, 2)])
    context = lens.tail_context(tokens)
    assert torch.allclose(lens.run_tail(context, 1, mask=mask), lens.forward(tokens, mask=mask), atol=1e-5)
    _, past = lens.step(tokens[:, :-1], mask=mask)
    step, _ = lens.step(tokens[:, -1:], past, mask=mask)
    assert torch.allclose(step[:, -1], lens.forward(tokens, mask=mask)[:, -1], atol=1e-4)


@pytest.mark.parametrize("device_map", [{module: "cpu" for module in MODULES}, "auto"])
def test_a_device_map_reaches_the_hugging_face_loader(saved_tiny, monkeypatch, device_map):
    """This machine has one device, so every module lands on the CPU (and Hugging Face then
    skips its device hooks): checked is that the map reaches the loader unchanged and that
    the model it returns is used where it was placed."""
    folder, reference = saved_tiny
    seen = {}
    load = models.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return load(*args, **kwargs)

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", spy)
    lens = models.load_model(folder, device_map=json.dumps(device_map) if isinstance(device_map, dict) else device_map)
    assert seen["device_map"] == device_map
    check_matches_the_reference(lens, reference)


def test_the_lens_works_on_a_model_dispatched_with_device_hooks(saved_tiny):
    """The model as a device map leaves it on several devices: every module wrapped in
    accelerate's device-alignment hooks (forced here, on the one device this machine has)."""
    from accelerate import dispatch_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, reference = saved_tiny
    hf_model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    dispatch_model(hf_model, device_map={module: "cpu" for module in MODULES}, force_hooks=True)
    assert hasattr(hf_model.model.layers[1], "_hf_hook")
    lens = Lens.from_hf(hf_model, AutoTokenizer.from_pretrained(folder), name="dispatched")
    check_matches_the_reference(lens, reference)


@pytest.mark.slow
def test_embedded_default_geometry(default_lens):
    g = default_lens.geometry
    assert (g.n_layers, g.n_heads, g.n_kv_heads, g.d_head, g.d_model) == (30, 9, 3, 64, 576)
    assert default_lens.has_chat_template
    assert default_lens.tokenizer.eos_token_id in default_lens.stop_token_ids


@pytest.mark.slow
def test_embedded_default_loads_without_network(monkeypatch):
    """Any socket use while loading the (already cached) default model fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access while loading the embedded model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    lens = models.load_model(device="cpu")
    assert lens.n_heads == 9


@pytest.mark.slow
def test_gemma_3_270m_loads_with_its_geometry_and_token_policy(gemma_lens):
    g = gemma_lens.geometry
    assert (g.n_layers, g.n_heads, g.n_kv_heads, g.d_head, g.d_model, g.d_vocab) == (18, 4, 1, 256, 640, 262144)
    assert gemma_lens.adapter.family == "gemma3" and not gemma_lens.has_chat_template
    tokenizer = gemma_lens.tokenizer
    assert gemma_lens.encode("The capital of France is", add_bos=tokenizer.add_bos_token)[0] == tokenizer.bos_token_id
    assert {tokenizer.convert_tokens_to_ids(t) for t in ("<eos>", "<end_of_turn>")} <= gemma_lens.stop_token_ids


@pytest.mark.slow
def test_gemma_3_270m_matches_hand_patched_hugging_face(gemma_lens):
    """Zeroing a head of a sliding-window layer and of a full-attention layer at hook_z equals
    zeroing those output-projection columns of an independently loaded copy; a masked cached
    step equals the last position of that copy's full forward."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(
        models.embedded_folder(models.EMBEDDED["gemma-3-270m"]), attn_implementation="eager"
    ).eval()
    tokens = gemma_lens.as_batch(gemma_lens.encode("The capital of France is Paris, and the capital of Italy is", add_bos=True))
    heads, d_head = [(3, 1), (5, 2)], gemma_lens.d_head  # layer 3 slides, layer 5 attends to everything
    with torch.no_grad():
        clean = reference(tokens).logits
        for layer, head in heads:
            reference.model.layers[layer].self_attn.o_proj.weight[:, head * d_head : (head + 1) * d_head] = 0.0
        expected = reference(tokens).logits
    assert (expected - clean).abs().max() > 1e-2
    mask = HeadMask.ablate(gemma_lens.geometry, heads)
    torch.testing.assert_close(gemma_lens.forward(tokens), clean, atol=1e-4, rtol=0)
    torch.testing.assert_close(gemma_lens.forward(tokens, mask=mask), expected, atol=1e-4, rtol=0)
    _, past = gemma_lens.step(tokens[:, :-1], mask=mask)
    step, _ = gemma_lens.step(tokens[:, -1:], past, mask=mask)
    torch.testing.assert_close(step[:, -1], expected[:, -1], atol=1e-4, rtol=0)
