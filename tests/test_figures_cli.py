"""`workbench figures` from the files discover and validate write, and its one-line refusals of
files of the wrong kind or shape."""

from __future__ import annotations

import json

import pandas as pd
import torch
from typer.testing import CliRunner

from workbench.cli import app
from workbench.heads import HeadWeights
from workbench.scores import PCSResult


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def pcs_file(path, n_layers=3, n_heads=4):
    per_example = torch.arange(2 * n_layers * n_heads, dtype=torch.float64).view(2, n_layers, n_heads)
    result = PCSResult(
        per_example, torch.ones(n_layers, n_heads, dtype=torch.bool), ["a", "b"], ["u", "v"], {"variant": "standard", "seed": 0}
    )
    result.save(path)
    return result


def test_heatmap_overlap_and_validation_figures(tmp_path):
    result = pcs_file(tmp_path / "pcs.parquet")
    first, second = tmp_path / "one" / "heads.json", tmp_path / "two" / "heads.json"
    HeadWeights.from_scores(result, top_k=3).save(first)
    HeadWeights.from_scores(-result.mean(), top_k=3).save(second)

    figures = tmp_path / "figures"
    made = run("figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--heads", first, "--out", figures, "--no-png")
    assert made.exit_code == 0, made.output
    assert "plotly" in (figures / "heatmap.html").read_text()[:5000].lower()

    made = run("figures", "overlap", first, second, "--out", figures, "--name", "variants", "--no-png")
    assert made.exit_code == 0, made.output
    assert (figures / "variants.html").is_file()

    summary = pd.DataFrame(
        {"head_set": ["preference"], "condition": ["profile"], "mean_delta_nll": [0.5], "ci_low": [0.1], "ci_high": [0.9]}
    )
    summary.to_csv(tmp_path / "summary.csv", index=False)
    made = run("figures", "validation", "--summary", tmp_path / "summary.csv", "--out", figures)
    assert made.exit_code == 0, made.output
    assert (figures / "validation.png").read_bytes()[:4] == b"\x89PNG"


def refused(made, *fragments):
    assert made.exit_code == 2, made.output
    assert made.stderr.startswith("error: ") and made.stderr.count("\n") == 1, made.stderr
    assert all(fragment in made.stderr for fragment in fragments), made.stderr


def test_missing_inputs_are_one_line_errors(tmp_path):
    refused(run("figures", "validation", "--summary", tmp_path / "nope.csv", "--out", tmp_path / "x"), "nope.csv: file not found")


def test_files_of_the_wrong_kind_are_named(tmp_path):
    pcs_file(tmp_path / "pcs.parquet")
    made = run("figures", "validation", "--summary", tmp_path / "pcs.parquet", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'pcs.parquet'}: not a CSV table", "validation_summary.csv")
    pd.DataFrame({"layer": [0], "head": [1]}).to_csv(tmp_path / "other.csv", index=False)
    made = run("figures", "validation", "--summary", tmp_path / "other.csv", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'other.csv'}: validation table lacks column(s)")
    made = run("figures", "heatmap", "--pcs", tmp_path / "other.csv", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'other.csv'}: not a Parquet file")
    made = run("figures", "overlap", tmp_path / "pcs.parquet", tmp_path / "pcs.parquet", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'pcs.parquet'}: not valid JSON")
    assert not (tmp_path / "x").exists()


def test_heads_of_another_model_are_refused_naming_both_shapes(tmp_path):
    """A heads.json of a 12-head model over a 9-head grid drew markers outside the grid."""
    pcs_file(tmp_path / "pcs.parquet", n_layers=3, n_heads=9)
    HeadWeights.from_scores(torch.rand(3, 12), top_k=4).save(tmp_path / "heads.json")
    made = run(
        "figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--heads", tmp_path / "heads.json", "--out", tmp_path / "x"
    )
    refused(made, "is for 3 layers x 12 heads", "has 3 x 9")
    # the authors' list of heads (no recorded shape): a head beyond the grid is named
    (tmp_path / "top_heads.json").write_text(json.dumps({"preference_heads": [[0, 1], [2, 11]]}))
    made = run(
        "figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--heads", tmp_path / "top_heads.json", "--out", tmp_path / "x"
    )
    refused(made, "head (2, 11) lies outside the 3 layers x 9 heads")
    assert not (tmp_path / "x").exists()
    made = run("figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--out", tmp_path / "x", "--name", "../up", "--no-png")
    refused(made, "--name must be a plain file name")
