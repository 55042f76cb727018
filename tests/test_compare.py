"""`workbench compare` and `workbench.experiments.comparison`: pairing by example id with what was dropped
said out loud, exact permutation p-values for small n (checked against scipy), warnings when n is
too small, several runs side by side labelled by their recorded settings, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from workbench.cli import app
from workbench.data.prompts import PromptConfig
from workbench.data.sources import load_examples
from workbench.decoding import CAD
from workbench.errors import InputError
from workbench.experiments.comparison import compare_runs, load_run, paired_table
from workbench.experiments.evaluation import EvalConfig, evaluate

METRICS = ("rouge-1", "rouge-L", "meteor")


def write_run(folder: Path, scores: dict[str, float], *, task: str = "LaMP-7", split: str = "dev", **recorded) -> Path:
    """A run folder as `workbench evaluate` leaves it, with rouge-1 = rouge-L = meteor = the given score."""
    folder.mkdir(parents=True)
    lines = [{"id": i, "prediction": "", "gold": "", "scores": dict.fromkeys(METRICS, value)} for i, value in scores.items()]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = {"task": task, "split": split, "method": recorded.pop("method", "greedy"), **recorded.pop("config", {})}
    metrics = {"task": task, "split": split, "method": config["method"], "n": len(lines), "config": config, **recorded}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def invoke(*args):
    return CliRunner(env={"COLUMNS": "220"}).invoke(app, ["compare", "--resamples", "200", *map(str, args)])


def scipy_exact_p(a, b) -> float:
    statistic = lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis)
    return float(scipy_stats.permutation_test((np.array(a), np.array(b)), statistic, permutation_type="samples",
                                              vectorized=True, n_resamples=np.inf).pvalue)  # fmt: skip


def test_a_run_of_one_prediction_is_paired_on_one_example_and_says_so(tmp_path) -> None:
    """The newcomer's case: 4 predictions against 1 printed n = 1 and exit 0 without a word."""
    full = write_run(tmp_path / "full", {"a": 0.1, "b": 0.5, "c": 0.2, "d": 0.4})
    single = write_run(tmp_path / "single", {"c": 0.9}, method="cad")
    result = invoke(full, single)
    assert result.exit_code == 0, result.output
    assert "paired on the 1 example present in every run" in result.stdout
    assert f"dropped: 3 of 4 from {full}" in result.stdout
    assert "+0.7000 [no interval]" in result.stdout and "p 1" in result.stdout
    warnings = result.stderr.strip().splitlines()
    assert any(f"dropped 3 of 4 from {full}" in line for line in warnings)
    assert any("only 1 paired example" in line and "no interval" in line for line in warnings)
    assert all(line.startswith("warning: ") for line in warnings)


def test_small_n_p_value_is_the_exact_permutation_p_value(tmp_path) -> None:
    """n = 4 reported p = 0.001 (bootstrap); exactly, no two-sided p can fall below 2/2^4."""
    a, b = [0.1, 0.2, 0.3, 0.4], [0.6, 0.8, 0.9, 1.0]
    first = write_run(tmp_path / "a", dict(zip("wxyz", a)))
    second = write_run(tmp_path / "b", dict(zip("wxyz", b)), method="dps")
    with pytest.warns(UserWarning, match="only 4 paired examples"):
        frame = compare_runs([first, second], resamples=200)
    assert (frame["p_value"] == scipy_exact_p(a, b)).all() and frame["p_exact"].all()
    assert (frame["p_value"] >= 0.125).all() and (frame["n"] == 4).all()
    result = invoke(first, second)
    assert result.exit_code == 0 and "p 0.125" in result.stdout
    assert "no two-sided p-value can fall below 0.125" in result.stderr


def test_enough_examples_give_no_warning_and_identical_runs_differ_by_nothing(tmp_path) -> None:
    rng = np.random.default_rng(0)
    scores = {f"e{i}": float(v) for i, v in enumerate(rng.uniform(size=10))}
    first, second = write_run(tmp_path / "a", scores), write_run(tmp_path / "b", scores)
    result = invoke(first, second)
    assert result.exit_code == 0 and result.stderr == ""
    frame = compare_runs([first, second], resamples=200)
    assert (frame["difference"] == 0).all() and (frame["p_value"] == 1.0).all() and (frame["differing"] == 0).all()


def test_several_runs_side_by_side_with_their_recorded_settings(tmp_path) -> None:
    scores = {f"e{i}": i / 20 for i in range(6)}
    ours = write_run(tmp_path / "ours", scores)
    authors = write_run(tmp_path / "authors", {k: v + 0.1 for k, v in scores.items()}, method="dps", preset="authors",
                        decoder={"name": "dps", "gamma": 1.0, "combine": "logprobs"})  # fmt: skip
    dps = write_run(tmp_path / "dps", {k: v + 0.05 for k, v in scores.items()}, method="dps",
                    decoder={"name": "dps", "gamma": 1.0, "combine": "logits"})  # fmt: skip
    result = invoke(ours, authors, dps)
    assert result.exit_code == 0, result.output
    header = result.stdout[: result.stdout.index("rouge-1")]
    assert "dps (authors)" in header and "decoder.combine=logprobs" in header and "decoder.combine=logits" in header
    assert "decoder.gamma" not in header  # the same in every run that records it: not a label
    runs = [load_run(folder) for folder in (ours, authors, dps)]
    frame = paired_table(runs, resamples=200)
    assert list(frame["label"].unique()) == ["dps (authors)", "dps"]
    assert frame.groupby("run")["difference"].first().round(6).to_dict() == {str(authors): 0.1, str(dps): 0.05}


def test_runs_made_on_other_splits_are_flagged(tmp_path) -> None:
    first = write_run(tmp_path / "a", {f"e{i}": i / 10 for i in range(10)})
    second = write_run(tmp_path / "b", {f"e{i}": i / 9 for i in range(10)}, split="train")
    result = invoke(first, second)
    assert result.exit_code == 0 and "warning: the runs differ in split" in result.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: [tmp, tmp], "no metrics.json"),
        (lambda tmp: [write_run(tmp / "a", {"x": 1.0})], "at least two"),
        (lambda tmp: [write_run(tmp / "a", {"x": 1.0}), write_run(tmp / "b", {"y": 1.0})], "share no example ids"),
        (lambda tmp: [write_run(tmp / "a", {"x": 1.0}), write_run(tmp / "b", {"x": 1.0}, task="LaMP-4")], "different tasks"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, make, message) -> None:
    result = invoke(*make(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_a_prediction_without_scores_is_named(tmp_path) -> None:
    first = write_run(tmp_path / "a", {"x": 1.0})
    second = write_run(tmp_path / "b", {"x": 1.0})
    (second / "predictions.jsonl").write_text('{"id": "x", "prediction": "hi"}\n')
    with pytest.raises(InputError, match=r"predictions.jsonl, line 1: not a prediction record"):
        compare_runs([first, second])


def test_compare_reads_what_evaluate_writes(tiny, tmp_path) -> None:
    examples = load_examples(None, "LaMP-7", "dev")[:3]
    config = dict(
        task="LaMP-7", split="dev", model="tiny", max_new_tokens=4, batch_size=5, prompt=PromptConfig(profile_k=1), resamples=20
    )
    evaluate(tiny, examples, EvalConfig(**config), tmp_path / "greedy", progress=False)
    evaluate(tiny, examples[:2], EvalConfig(decoder=CAD(), **config), tmp_path / "cad", progress=False)
    with pytest.warns(UserWarning) as caught:
        frame = compare_runs([tmp_path / "greedy", tmp_path / "cad"], resamples=50)
    assert "dropped 1 of 3" in str(caught[0].message) and "only 2 paired examples" in str(caught[1].message)
    assert set(frame["metric"]) == {"rouge-1", "rouge-L", "meteor", "style_match"}
    assert (frame["n"] == 2).all() and (frame["dropped"] == 0).all() and (frame["baseline_dropped"] == 1).all()
    assert (frame["method"] == "cad").all()
