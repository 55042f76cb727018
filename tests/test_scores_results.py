from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.errors import InputError
from workbench.scores import PCSResult


@pytest.fixture
def result():
    generator = torch.Generator().manual_seed(1)
    per_example = torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)
    exact = torch.zeros(3, 4, dtype=torch.bool)
    exact[1, 2] = True
    return PCSResult(per_example, exact, [f"e{i}" for i in range(5)], ["u0", "u1", "u0", "u2", "u1"], {"seed": 7, "model": "m"})


def test_summaries_match_hand_computation(result):
    values = result.per_example.numpy()
    np.testing.assert_allclose(result.mean().numpy(), values.mean(axis=0))
    np.testing.assert_allclose(result.stderr().numpy(), values.std(axis=0, ddof=1) / np.sqrt(5))
    low, high = result.bootstrap_ci(n_resamples=500)
    assert (low <= result.mean()).all() and (result.mean() <= high).all() and (low < high).all()
    again = result.bootstrap_ci(n_resamples=500)
    torch.testing.assert_close(low, again[0])  # seeded by the run's seed
    draws = np.random.default_rng(7).integers(0, 5, size=(500, 5))  # the shared resampling scheme
    means = values[draws].mean(axis=1)
    np.testing.assert_allclose(high.numpy(), np.quantile(means, 0.975, axis=0))
    with pytest.raises(InputError, match="confidence level"):
        result.bootstrap_ci(level=1.5)


def test_frame_is_tidy(result):
    frame = result.to_frame()
    row = frame[(frame["example_id"] == "e3") & (frame["layer"] == 1) & (frame["head"] == 2)].iloc[0]
    assert row.pcs == result.per_example[3, 1, 2].item() and row.user_id == "u2" and row.exact
    assert frame["exact"].sum() == 5


def test_parquet_round_trip(result, tmp_path):
    result.save(tmp_path / "pcs.parquet")
    loaded = PCSResult.load(tmp_path / "pcs.parquet")
    assert torch.equal(loaded.per_example, result.per_example)
    assert torch.equal(loaded.exact, result.exact)
    assert loaded.example_ids == result.example_ids and loaded.user_ids == result.user_ids
    assert loaded.metadata == result.metadata


def test_loading_other_files_fails_clearly(tmp_path):
    (tmp_path / "x.parquet").write_text("nope")
    with pytest.raises(InputError, match="not a Parquet file"):
        PCSResult.load(tmp_path / "x.parquet")
    with pytest.raises(InputError, match="file not found"):
        PCSResult.load(tmp_path / "missing.parquet")
