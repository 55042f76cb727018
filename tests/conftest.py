"""Shared fixtures: tiny random-weight models (milliseconds) and the embedded default model
(loaded once per test session, from the on-disk cache after the first build)."""

from __future__ import annotations

import jaxtyping

# Before anything imports workbench: check every jaxtyping shape annotation at run time.
jaxtyping.install_import_hook("workbench", "shape_checks.check_shapes")

import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.engine.lens import Lens  # noqa: E402
from workbench.engine.models import load_model, tiny_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


UNIT_THREADS = 1  # tiny models: thread start-up dominates their small products, and 1 is steadiest on a busy machine
MODEL_THREADS = 2  # tests marked `slow` run an embedded model; 2 is the CI machine's core count


def thread_count_of(item: pytest.Item) -> int:
    """The torch thread count a test runs at, chosen on purpose: its `threads(n)` marker, else
    `MODEL_THREADS` for `slow` tests and `UNIT_THREADS` for the rest (never the machine's default,
    which `OMP_NUM_THREADS` changes)."""
    marker = item.get_closest_marker("threads")
    if marker is not None:
        return int(marker.args[0])
    return MODEL_THREADS if item.get_closest_marker("slow") is not None else UNIT_THREADS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is in one tier (README, "Tests"): `browser` if it drives Chromium, `integration`
    if it runs an embedded model (`slow`) or a whole job end to end, else `unit`."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "page" in fixtures or "browser" in fixtures:
            item.add_marker(pytest.mark.browser)
        elif item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.integration)
        elif item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Set the test's thread count before any of its fixtures is set up: a module- or
    session-scoped fixture made for this test (a model run, a reference result) then computes at
    the test's thread count too, not at whatever the previous test left."""
    torch.set_num_threads(thread_count_of(item))


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
