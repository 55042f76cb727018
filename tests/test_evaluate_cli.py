"""`workbench evaluate` end to end on the tiny model: nothing is written before every input is known
good (so a failed run never blocks its corrected re-run), the authors' head-file formats, every
decoder option under its own name, presets, and the recorded configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import workbench.commands.evaluate as evaluate_command
from workbench.cli import app
from workbench.heads import HeadWeights


@pytest.fixture
def cli(tiny, monkeypatch):
    monkeypatch.setattr(evaluate_command, "load_lens", lambda *args: tiny)
    runner = CliRunner()
    return lambda *args: runner.invoke(
        app, ["evaluate", "--task", "LaMP-7", "--limit", "2", "--max-new-tokens", "4", *map(str, args)]
    )


@pytest.fixture
def heads_file(tiny, tmp_path) -> Path:
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[1, 2], grid[2, 0] = 1.0, 0.5
    path = tmp_path / "heads.json"
    HeadWeights(grid).save(path)
    return path


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1, result.output


BAD_RUNS = [
    (["--profile-k", "-1"], "--profile-k must be an integer >= 0, got -1"),
    (["--max-prompt-tokens", "5"], "the task input alone needs"),
    (["--method", "dps", "--heads", "BROKEN"], "not valid JSON"),
    (["--method", "dps", "--heads", "SHAPE"], "head weights are for 2 layers x 4 heads"),
    (["--method", "greedy", "--gamma", "2"], "greedy: unknown option 'gamma'"),
    (["--method", "dps", "--heads", "GOOD", "--site", "resid-slice"], "--site must be 'head-output' or 'query-scale'"),
    (["--method", "beam"], "unknown decoder 'beam'"),
]


def test_a_failed_run_writes_nothing_and_its_corrected_rerun_works(cli, heads_file, tmp_path):
    out = tmp_path / "o"
    files = {"BROKEN": tmp_path / "broken.json", "SHAPE": tmp_path / "shape.json", "GOOD": heads_file}
    files["BROKEN"].write_text("{not json")
    HeadWeights(torch.ones(2, 4)).save(files["SHAPE"])
    for bad, message in BAD_RUNS:
        one_line_error(cli("--out", out, *[str(files.get(arg, arg)) for arg in bad]), message)
        assert not out.exists(), bad
    fixed = cli("--out", out, "--profile-k", "1", "--method", "dps", "--heads", heads_file)
    assert fixed.exit_code == 0, fixed.output
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2


def test_a_folder_left_without_predictions_is_taken_over(cli, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"method": "dps", "prompt": {"profile_k": 7}}))
    (out / "predictions.jsonl").write_text("")
    assert cli("--out", out, "--profile-k", "1").exit_code == 0
    refused = cli("--out", out, "--profile-k", "2")  # now it holds predictions made otherwise
    one_line_error(refused, "was made with other arguments (prompt.profile_k 1 -> 2)")


def test_reference_head_files_and_entropy_gamma(cli, tiny, tmp_path):
    top_heads = tmp_path / "Model_LaMP_7_top_heads.json"
    top_heads.write_text(json.dumps({"model": "m", "task": "LaMP_7", "preference_heads": [[1, 2], [2, 0]]}))
    result = cli("--out", tmp_path / "o", "--method", "dps", "--heads", top_heads, "--gamma", "entropy", "--gamma-cap", "3")
    assert result.exit_code == 0, result.output
    decoder = json.loads((tmp_path / "o" / "metrics.json").read_text())["config"]["decoder"]
    assert decoder["gamma"] == "entropy" and decoder["gamma_cap"] == 3.0


def test_the_authors_preset_records_itself_and_yields_to_explicit_options(cli, heads_file, tmp_path):
    result = cli("--out", tmp_path / "o", "--preset", "authors", "--heads", heads_file, "--gamma", "1.5")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["preset"] == "authors" and metrics["method"] == "dps" and metrics["label"] == "dps (authors)"
    config = metrics["config"]
    assert config["decoder"] == {
        "gamma": 1.5, "gamma_cap": None, "entropy_scale": "nats", "combine": "logprobs", "plausibility": None,
        "suppression": "weighted", "site": "query-scale", "prefill": "shared",
    }  # fmt: skip
    assert config["prompt"]["format"] == "chat" and config["prompt"]["max_prompt_tokens"] == 2048
    assert config["max_new_tokens"] == 4  # given explicitly (the preset's is 32)
    assert json.loads((tmp_path / "o" / "config.json").read_text()) == config
    assert "dps (authors)" in result.output and "site=query-scale" in result.output


def test_every_decoder_option_is_reachable(cli, heads_file, tmp_path):
    runs = {
        "dola": ["--method", "dola", "--candidate-layers", "0,1", "--plausibility", "0.2"],
        "decore": ["--method", "decore", "--heads", heads_file, "--gamma", "entropy", "--entropy-scale", "ln-vocab"],
        "random": ["--method", "random-heads", "--heads", heads_file, "--control", "shuffled", "--control-seed", "3"],
        "suppressed": ["--method", "suppressed", "--heads", heads_file, "--suppression", "mean"],
        "cad": ["--method", "cad", "--combine", "logprobs", "--gamma", "0.7"],
    }
    expected = {
        "dola": {"candidate_layers": [0, 1], "plausibility": 0.2},
        "decore": {"gamma": "entropy", "entropy_scale": "ln-vocab", "suppression": "zero", "combine": "logprobs"},
        "random": {"control": "shuffled", "control_seed": 3},
        "suppressed": {"suppression": "mean", "site": "head-output"},
        "cad": {"combine": "logprobs", "gamma": 0.7},
    }
    for name, arguments in runs.items():
        result = cli("--out", tmp_path / name, *arguments)
        assert result.exit_code == 0, result.output
        decoder = json.loads((tmp_path / name / "config.json").read_text())["decoder"]
        assert expected[name].items() <= decoder.items(), (name, decoder)


def test_workbench_decoders_lists_every_option_and_default():
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["decoders"])
    assert result.exit_code == 0, result.output
    for text in ("dps", "random-heads", "suppressed", "cad", "dola", "decore", "--gamma", "--prefill", "--candidate-layers"):
        assert text in result.output
    assert "preset authors" in result.output and "--site query-scale" in result.output
