"""`workbench select`: the top-K heads of an existing scan, chosen again without scoring, against a
selection made by hand from the Parquet file (issue 22.4)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from workbench.cli import app
from workbench.scores import PCSResult

pytestmark = pytest.mark.unit


def invoke(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, [str(a) for a in args])


def scan(path, exact):
    """A 3 x 4 scan of 5 examples with seeded scores, `exact` marking the heads scored exactly."""
    generator = torch.Generator().manual_seed(3)
    result = PCSResult(torch.randn(5, 3, 4, generator=generator, dtype=torch.float64) + 0.3, exact,
                       [f"e{i}" for i in range(5)], [f"u{i % 2}" for i in range(5)],
                       {"method": "hybrid", "model": "tiny", "options": {"norm": "max", "min_pcs": 0.0, "task": "LaMP-4"}})  # fmt: skip
    result.save(path)
    return path


def by_hand(path, k, verified_only):
    frame = pd.read_parquet(path)
    if verified_only:
        frame = frame[frame["exact"]]
    means = frame.groupby(["layer", "head"])["pcs"].mean().reset_index()
    top = means.assign(order=-means["pcs"]).sort_values(["order", "layer", "head"]).head(k)
    top = top[top["pcs"] >= 0]
    return {(int(r.layer), int(r.head)): r.pcs / top["pcs"].max() for r in top.itertuples()}


def chosen(folder):
    record = json.loads((folder / "heads.json").read_text())
    grid = record["weights"]
    return record, {(layer, head): w for layer, row in enumerate(grid) for head, w in enumerate(row) if w > 0}


def test_a_hybrid_scan_selects_among_its_verified_heads(tmp_path) -> None:
    exact = torch.zeros(3, 4, dtype=torch.bool)
    exact[[0, 1, 1, 2, 2, 2], [3, 0, 2, 1, 2, 3]] = True
    path = scan(tmp_path / "pcs.parquet", exact)
    result = invoke("select", "--scores", path, "--top-k", 3, "--out", tmp_path / "k3")
    assert result.exit_code == 0, result.output
    record, weights = chosen(tmp_path / "k3")
    expected = by_hand(path, 3, verified_only=True)
    assert weights.keys() == expected.keys() and all(exact[head] for head in weights)
    assert all(abs(weights[head] - expected[head]) < 1e-6 for head in weights)
    assert record["extra"]["selected_from"] == str(path) and record["extra"]["top_k"] == 3
    assert record["extra"]["verified_only"] is True and record["method"] == "hybrid"


def test_an_exact_scan_selects_among_all_heads_and_defaults_beside_the_scores(tmp_path) -> None:
    path = scan(tmp_path / "pcs.parquet", torch.ones(3, 4, dtype=torch.bool))
    assert invoke("select", "--scores", path, "--top-k", 5).exit_code == 0
    _, weights = chosen(tmp_path / "top-5")
    expected = by_hand(path, 5, verified_only=False)
    assert weights.keys() == expected.keys()
    assert all(abs(weights[head] - expected[head]) < 1e-6 for head in weights)


def test_a_k_beyond_the_verified_heads_is_refused_in_one_line(tmp_path) -> None:
    exact = torch.zeros(3, 4, dtype=torch.bool)
    exact[0, :2] = True
    path = scan(tmp_path / "pcs.parquet", exact)
    result = invoke("select", "--scores", path, "--top-k", 3, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --top-k must lie in 1..2 (the heads the hybrid scan scored exactly), got 3")
    assert not (tmp_path / "o").exists()
    missing = invoke("select", "--scores", tmp_path / "none.parquet", "--top-k", 1)
    assert missing.stderr.strip() == f"error: --scores: {tmp_path / 'none.parquet'}: file not found"
