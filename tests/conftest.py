"""Shared fixtures: tiny random-weight models (milliseconds) and the embedded default model
(loaded once per test session, from the on-disk cache after the first build)."""

from __future__ import annotations

import pytest
import torch

from workbench.lens import Lens
from workbench.models import load_model, tiny_model


@pytest.fixture(scope="session", autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def tiny() -> Lens:
    """3 layers, 4 query heads, 2 key-value heads, d_head 8, character tokenizer."""
    return tiny_model()


@pytest.fixture(scope="session")
def default_lens() -> Lens:
    """The embedded SmolLM2-135M-Instruct (30 layers, 9 query heads, 3 key-value heads)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    return load_model(device="cpu")
