"""Shared fixtures: tiny random-weight models (milliseconds) and the embedded default model
(loaded once per test session, from the on-disk cache after the first build)."""

from __future__ import annotations

import jaxtyping

# Before anything imports workbench: check every jaxtyping shape annotation at run time.
jaxtyping.install_import_hook("workbench", "shape_checks.check_shapes")

import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.lens import Lens  # noqa: E402
from workbench.models import load_model, tiny_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _threads(request):
    """Tiny-model tests run on one thread (thread start-up dominates their small matrix products,
    and on a busy 2-core machine two threads are many times slower); tests marked `slow`, which run
    the real model, keep torch's default."""
    threads = torch.get_num_threads()
    if request.node.get_closest_marker("slow") is None:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture(scope="session")
def gemma_lens() -> Lens:
    """The embedded Gemma-3-270m base model (18 layers, 4 query heads, 1 key-value head, d_head
    256, a 262,144-token vocabulary). Its first use converts the GGUF (minutes), later ones load
    the cached float32 copy."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    return load_model("gemma-3-270m", device="cpu")
