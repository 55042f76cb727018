"""Figures: the data behind each plot, and real HTML/PNG export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.errors import InputError
from workbench.figures import (
    head_heatmap,
    jaccard,
    overlap_heatmap,
    save_figure,
    score_grid,
    sweep_plot,
)


def tidy_scores() -> pd.DataFrame:
    rows = []
    for example in range(3):
        for layer in range(2):
            for head in range(3):
                rows.append({"example_id": str(example), "layer": layer, "head": head, "pcs": example + 10 * layer + head})
    return pd.DataFrame(rows)


def test_score_grid_is_the_mean_per_head():
    grid = score_grid(tidy_scores())
    assert grid.shape == (2, 3)
    assert grid[1, 2] == pytest.approx(np.mean([0, 1, 2]) + 12)
    with pytest.raises(InputError, match="lacks column"):
        score_grid(tidy_scores().drop(columns=["pcs"]))


def test_heatmap_carries_the_grid_highlights_and_intervals():
    grid = score_grid(tidy_scores())
    figure = head_heatmap(grid, title="t", highlight=[(1, 2)], ci_low=grid - 1, ci_high=grid + 1)
    heatmap, markers = figure.data
    assert np.array_equal(np.asarray(heatmap.z), grid)
    assert heatmap.zmid == 0 and heatmap.zmax == pytest.approx(np.abs(grid).max())
    assert list(markers.x) == [2] and list(markers.y) == [1]
    assert "95% CI [12.0000, 14.0000]" in heatmap.hovertext[1][2]


def test_overlap_is_pairwise_jaccard():
    sets = {"a": [(0, 1), (1, 1)], "b": [(0, 1), (2, 2)], "c": [(5, 5)]}
    figure = overlap_heatmap(sets, title="overlap")
    matrix = np.asarray(figure.data[0].z)
    assert matrix[0, 1] == pytest.approx(1 / 3) and matrix[0, 2] == 0 and np.all(np.diag(matrix) == 1)
    assert jaccard(set(), set()) == 1.0
    with pytest.raises(InputError):
        overlap_heatmap({"a": []}, title="x")


def test_sweep_draws_one_line_and_band_per_group():
    frame = pd.DataFrame(
        {
            "gamma": [0, 1, 2, 0, 1, 2],
            "rouge": [0.1, 0.2, 0.15, 0.1, 0.1, 0.1],
            "low": 0.0,
            "high": 0.3,
            "method": ["dps"] * 3 + ["random"] * 3,
        }
    )
    figure = sweep_plot(frame, x="gamma", y="rouge", group="method", low="low", high="high", title="γ sweep")
    lines = [trace for trace in figure.data if trace.mode == "lines+markers"]
    assert [line.name for line in lines] == ["dps", "random"] and len(figure.data) == 4
    assert list(lines[0].y) == [0.1, 0.2, 0.15]


def test_save_writes_html_and_png(tmp_path):
    written = save_figure(head_heatmap(np.eye(3), title="eye"), tmp_path / "eye")
    html, png = written
    assert "plotly" in html.read_text()[:5000].lower()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eye.html", "eye.png"]  # no temporary leftovers


def test_validation_bars_show_each_condition_with_its_interval():
    from workbench.figures import validation_bars

    summary = pd.DataFrame(
        {
            "head_set": ["preference", "random"] * 2,
            "condition": ["profile"] * 2 + ["no-profile"] * 2,
            "mean_delta_nll": [0.5, 0.1, 0.4, 0.1],
            "ci_low": [0.3, 0.0, 0.2, 0.05],
            "ci_high": [0.7, 0.2, 0.6, 0.15],
        }
    )
    figure = validation_bars(summary, title="validation")
    assert [bar.name for bar in figure.data] == ["profile", "no-profile"]
    assert list(figure.data[0].y) == [0.5, 0.1]
    assert list(figure.data[0].error_y.array) == pytest.approx([0.2, 0.1])
    assert list(figure.data[0].error_y.arrayminus) == pytest.approx([0.2, 0.1])
