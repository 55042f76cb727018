"""The main job end to end on a tiny model (a long context, so the few-shot demo prompts fit)."""

from __future__ import annotations

import pandas as pd
import pytest

from workbench.errors import InputError
from workbench.models import tiny_model
from workbench.pipeline import VARIANTS, DemoConfig, run_demo


@pytest.fixture(scope="module")
def long_tiny():
    return tiny_model(n_ctx=8192)


def test_demo_runs_every_stage_and_resumes(long_tiny, tmp_path):
    config = DemoConfig(n_train=2, n_dev=2, top_k=2, n_random=2, method="hybrid", figures_png=False)
    comparison = run_demo(long_tiny, config, tmp_path, progress=False)
    for variant in VARIANTS:
        assert (tmp_path / f"discover-{variant}" / "pcs.parquet").is_file()
        assert (tmp_path / "figures" / f"pcs-{variant}.html").is_file()
    validation = pd.read_parquet(tmp_path / "validation.parquet")
    assert set(validation["heads"]) == set(VARIANTS)
    assert set(validation["condition"]) == {"profile", "no-profile", "profile-specific"}
    assert set(comparison["method"]) == {"dps", "random-heads", "cad"}
    assert (comparison["n"] == 2).all()
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "## Validation" in summary and "dps-profile-contrast" in summary

    again = run_demo(long_tiny, config, tmp_path, progress=False)  # everything is reused
    pd.testing.assert_frame_equal(again, comparison)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_train": 0}, "n_train must be at least 1"),
        ({"gamma": -1.0}, "gamma must be"),
        ({"method": "magic"}, "unknown PCS method"),
        ({"task": "LaMP-1"}, "demo set has tasks"),
    ],
)
def test_bad_demo_settings_fail_before_any_work(options, message):
    with pytest.raises(InputError, match=message):
        DemoConfig(**options)
