"""Model loading: the embedded default, its on-disk cache, named models, tiny test models."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from workbench import models
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


def test_local_folder_loads_through_the_ordinary_path(tmp_path):
    hf_model, tokenizer = models.tiny_hf_model(n_layers=2)
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    lens = models.load_model(tmp_path, device="cpu")
    assert lens.n_layers == 2
    tokens = lens.encode("hello")
    with torch.no_grad():
        assert torch.allclose(lens.forward(tokens), hf_model(torch.tensor([tokens])).logits, atol=1e-5)


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
