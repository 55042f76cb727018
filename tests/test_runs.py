"""The evaluation runner: outputs, resumption without duplicates or losses, the discovery-split
warning, paired comparison, and the CLI's error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import workbench.decoding
from workbench.cli import app
from workbench.data.prompts import PromptConfig
from workbench.data.sources import load_examples
from workbench.data.tasks import task_spec
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.metrics import score_example
from workbench.runs import EvalConfig, compare_runs, evaluate, read_predictions


@pytest.fixture(scope="module")
def examples():
    """Demo paraphrase examples (short enough for the tiny model's 256-character context)."""
    return load_examples(None, "LaMP-7", "dev")[:5]


def config(**changes) -> EvalConfig:
    base = dict(task="LaMP-7", split="dev", method="greedy", model="tiny", max_new_tokens=6, batch_size=2,
                prompt=PromptConfig(profile_k=2), resamples=50)  # fmt: skip
    return EvalConfig(**{**base, **changes})


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_outputs_and_scores(tiny, examples, tmp_path: Path) -> None:
    result = evaluate(tiny, examples, config(), tmp_path, progress=False)
    records = lines(tmp_path)
    assert [r["id"] for r in records] == [e.example_id for e in examples]
    spec = task_spec("LaMP-7")
    for record, example in zip(records, examples):
        assert record["gold"] == example.output and record["style"] == example.style
        assert record["scores"] == score_example(spec, record["prediction"], example.output, example.style)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert stored["n"] == 5 and stored["seed"] == 0 and stored["config"]["method"] == "greedy"
    assert set(stored["metrics"]) == {"rouge-1", "rouge-L", "meteor", "style_match"}
    rouge = stored["metrics"]["rouge-1"]
    assert rouge["value"] == pytest.approx(sum(r["scores"]["rouge-1"] for r in records) / 5)
    assert rouge["low"] <= rouge["value"] <= rouge["high"]
    assert "torch" in stored["versions"] and stored["evaluated_on_discovery_split"] is False


def test_interrupted_run_resumes_without_duplicates_or_losses(tiny, examples, tmp_path: Path, monkeypatch) -> None:
    reference = tmp_path / "reference"
    evaluate(tiny, examples, config(), reference, progress=False)
    real_generate, calls = workbench.decoding.generate, []

    def dies_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_generate(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(workbench.decoding, "generate", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny, examples, config(), out, progress=False)
    assert len(lines(out)) == 2 and not (out / "metrics.json").exists()
    with open(out / "predictions.jsonl", "a") as handle:  # a torn write of a third line
        handle.write('{"id": "7')
    monkeypatch.setattr(workbench.decoding, "generate", real_generate)
    evaluate(tiny, examples, config(batch_size=3), out, progress=False)
    assert lines(out) == lines(reference)
    # a duplicated line (e.g. a copy-paste) is dropped on the next resume
    text = (out / "predictions.jsonl").read_text()
    (out / "predictions.jsonl").write_text(text + text.splitlines()[0] + "\n")
    assert list(read_predictions(out / "predictions.jsonl")) == [e.example_id for e in examples]
    assert lines(out) == lines(reference)


def test_resuming_with_another_configuration_is_refused(tiny, examples, tmp_path: Path) -> None:
    evaluate(tiny, examples[:2], config(), tmp_path, progress=False)
    with pytest.raises(InputError, match="holds a run with method='greedy', not 'cad'"):
        evaluate(tiny, examples[:2], config(method="cad"), tmp_path, progress=False)


def test_steering_methods_and_discovery_split_warning(tiny, examples, tmp_path: Path) -> None:
    grid = torch.zeros(tiny.n_layers, tiny.n_heads)
    grid[1, 2], grid[2, 0] = 1.0, 0.5
    heads = tmp_path / "heads.json"
    HeadWeights(grid, extra={"split": "dev", "data": "demo"}).save(heads)
    with pytest.warns(UserWarning, match="discovered on the 'dev' split"):
        result = evaluate(tiny, examples[:2], config(method="dps", heads=str(heads), gamma=2.0), tmp_path / "dps", progress=False)
    assert result["evaluated_on_discovery_split"] and "discovered" in result["warnings"][0]
    greedy = evaluate(tiny, examples[:2], config(), tmp_path / "greedy", progress=False)
    other_split = evaluate(tiny, examples[:2], config(method="random-heads", heads=str(heads), split="train"),
                           tmp_path / "random", progress=False)  # fmt: skip
    assert not other_split["evaluated_on_discovery_split"]
    cad = evaluate(tiny, examples[:2], config(method="cad"), tmp_path / "cad", progress=False)
    for run in (result, greedy, other_split, cad):
        assert run["n"] == 2
    with pytest.raises(InputError, match="needs --heads"):
        config(method="dps")
    with pytest.raises(InputError, match="gamma must be a finite number >= 0"):
        config(method="dps", heads=str(heads), gamma=-1.0)


def test_compare_pairs_runs_on_shared_examples(tiny, examples, tmp_path: Path) -> None:
    evaluate(tiny, examples, config(), tmp_path / "a", progress=False)
    evaluate(tiny, examples, config(), tmp_path / "b", progress=False)
    evaluate(tiny, examples[:3], config(method="cad"), tmp_path / "c", progress=False)
    frame = compare_runs([tmp_path / "a", tmp_path / "b", tmp_path / "c"], resamples=100)
    same = frame[frame["method"] == "greedy"]
    assert set(same["metric"]) == {"rouge-1", "rouge-L", "meteor", "style_match"}
    assert (same["difference"] == 0).all() and (same["p_value"] == 1.0).all()
    assert (frame[frame["method"] == "cad"]["n"] == 3).all()
    with pytest.raises(InputError, match="at least two"):
        compare_runs([tmp_path / "a"])
    printed = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--resamples", "50"]
    )
    assert printed.exit_code == 0 and "n=3" in printed.output
    assert all(metric in printed.output for metric in ("rouge-1", "rouge-L", "meteor", "style_match"))


def test_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2 and "no metrics.json" in result.output
    result = runner.invoke(app, ["evaluate", "--out", str(tmp_path), "--task", "LaMP-6", "--model", "none/such"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
