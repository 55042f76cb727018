"""`workbench figures` from the files discover and validate write."""

from __future__ import annotations

import pandas as pd
import torch
from typer.testing import CliRunner

from workbench.cli import app
from workbench.heads import HeadWeights
from workbench.scores import PCSResult


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_heatmap_overlap_and_validation_figures(tmp_path):
    per_example = torch.arange(2 * 3 * 4, dtype=torch.float64).view(2, 3, 4)
    result = PCSResult(
        per_example, torch.ones(3, 4, dtype=torch.bool), ["a", "b"], ["u", "v"], {"variant": "standard", "seed": 0}
    )
    result.save(tmp_path / "pcs.parquet")
    first, second = tmp_path / "one" / "heads.json", tmp_path / "two" / "heads.json"
    HeadWeights.from_scores(result, top_k=3).save(first)
    HeadWeights.from_scores(-result.mean(), top_k=3).save(second)

    made = run("figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--heads", first, "--out", tmp_path / "map", "--no-png")
    assert made.exit_code == 0, made.output
    assert "plotly" in (tmp_path / "map.html").read_text()[:5000].lower()

    made = run("figures", "overlap", first, second, "--out", tmp_path / "overlap", "--no-png")
    assert made.exit_code == 0, made.output
    assert (tmp_path / "overlap.html").is_file()

    summary = pd.DataFrame(
        {"head_set": ["preference"], "condition": ["profile"], "mean_delta_nll": [0.5], "ci_low": [0.1], "ci_high": [0.9]}
    )
    summary.to_csv(tmp_path / "summary.csv", index=False)
    made = run("figures", "validation", "--summary", tmp_path / "summary.csv", "--out", tmp_path / "validation")
    assert made.exit_code == 0, made.output
    assert (tmp_path / "validation.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_inputs_are_one_line_errors(tmp_path):
    made = run("figures", "validation", "--summary", tmp_path / "nope.csv", "--out", tmp_path / "x")
    assert made.exit_code == 2 and "nope.csv: file not found" in made.output
