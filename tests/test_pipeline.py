"""The main job end to end on a tiny model, checking content: the heads are the top-K of the scores,
every number of the report equals its table, a changed option never reuses a stage made with the
old one, and an interrupted run resumes to the same tables."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

import workbench.pipeline as pipeline
from workbench.errors import InputError
from workbench.models import tiny_model
from workbench.pipeline import VARIANTS, DemoConfig, demo_config, run_demo
from workbench.scores import PCSResult
from workbench.stages.report import fmt

SMALL = {"n_train": 3, "n_dev": 2, "top_k": 2, "n_random": 2, "sweep_k": (1, 2), "profile_k": 1, "max_new_tokens": 3,
         "method": "attribution", "gammas": (3.0,), "figures_png": False}  # fmt: skip


@pytest.fixture(scope="module")
def lens():
    return tiny_model(n_ctx=2048)


@pytest.fixture(scope="module")
def small_run(lens, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = demo_config("default", **SMALL)
    comparison = run_demo(lens, config, out, progress=False, say=lambda _: None)
    return config, out, comparison


def markdown_tables(text: str) -> list[pd.DataFrame]:
    """Every Markdown table of a report, as strings."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip("|").split("|")])
        elif block:
            tables.append(pd.DataFrame(block[2:], columns=block[0]))
            block = []
    return tables


def top_k_by_hand(pcs: pd.DataFrame, k: int) -> list[tuple[int, int]]:
    means = pcs.groupby(["layer", "head"])["pcs"].mean().reset_index()
    ordered = means.assign(neg=-means["pcs"]).sort_values(["neg", "layer", "head"])
    return [(int(r.layer), int(r.head)) for r in ordered.head(k).itertuples() if r.pcs > 0]


def test_heads_are_the_top_k_of_the_scores(small_run):
    config, out, _ = small_run
    for variant in VARIANTS:
        pcs = pd.read_parquet(out / f"discover-{variant}" / "pcs.parquet")
        heads = json.loads((out / f"discover-{variant}" / "heads.json").read_text())
        chosen = [(layer, head) for layer, row in enumerate(heads["weights"]) for head, w in enumerate(row) if w > 0]
        assert sorted(chosen) == sorted(top_k_by_hand(pcs, config.top_k))
        assert PCSResult.load(out / f"discover-{variant}" / "pcs.parquet").metadata["variant"] == variant


def test_every_number_of_the_report_equals_its_table(small_run):
    config, out, comparison = small_run
    report = (out / "report.md").read_text()
    tables = markdown_tables(report)
    summary = pd.read_csv(out / "validation" / "validation_summary.csv")
    shown = next(t for t in tables if "mean_delta_nll" in t.columns)
    assert len(shown) == len(summary)
    for row, line in zip(summary.itertuples(), shown.itertuples()):
        assert (line.heads, line.head_set, line.condition) == (row.heads, row.head_set, row.condition)
        for column in ("mean_delta_nll", "ci_low", "ci_high", "p_value_vs_random"):
            assert getattr(line, column) == fmt(getattr(row, column))
    paired = next(t for t in tables if "baseline value" in t.columns)
    assert len(paired) == len(comparison)
    for row, line in zip(comparison.itertuples(), paired.itertuples()):
        assert line.run == Path(row.run).name and line.metric == row.metric
        assert (line.difference, line.low, line.high, line.p) == tuple(fmt(v) for v in (row.difference, row.low, row.high,
                                                                                          row.p_value))  # fmt: skip
    effect = pd.read_parquet(out / "profile-effect" / "profile_effect.parquet")
    profile_rows = next(t for t in tables if "own minus this" in t.columns)
    assert profile_rows["mean NLL"].tolist() == [fmt(effect[c].mean()) for c in
                                                 ("nll_with_profile", "nll_without_profile", "nll_swapped_profile")]  # fmt: skip
    assert profile_rows["own minus this"].iloc[1] == fmt((effect["nll_with_profile"] - effect["nll_without_profile"]).mean())
    sweep = pd.read_csv(out / "validation" / "sweep_k.csv")
    shown_sweep = next(t for t in tables if list(t.columns) == ["group", "k", "value", "low", "high"])
    assert shown_sweep["value"].tolist() == [fmt(v) for v in sweep["value"]]
    for name in pipeline.evaluation_runs(config):
        metrics = json.loads((out / "eval" / name / "metrics.json").read_text())
        assert f"| {name} | rouge-L | {fmt(metrics['metrics']['rouge-L']['value'])} |" in report
    for key, value in json.loads(json.dumps(pipeline.report_options(config), default=list)).items():
        assert f"`{key}={value}`" in report  # every option that made the numbers


def test_sweep_k_of_k_equals_the_validation_of_the_top_k(small_run):
    config, out, _ = small_run
    sweep = pd.read_csv(out / "validation" / "sweep_k.csv").set_index(["group", "k"])
    summary = pd.read_csv(out / "validation" / "validation_summary.csv")
    for variant in VARIANTS:
        row = summary[(summary.heads == variant) & (summary.head_set == "preference") & (summary.condition == "profile")]
        assert sweep.loc[(variant, config.top_k), "value"] == pytest.approx(row["mean_delta_nll"].item())


def test_the_gamma_sweep_holds_each_runs_metrics(small_run):
    config, out, _ = small_run
    sweep = pd.read_csv(out / "comparison" / "sweep_gamma.csv")
    assert sorted(set(sweep["gamma"])) == sorted({config.gamma, *config.gammas})
    for gamma, name in ((config.gamma, "dps-profile-contrast"), (3.0, "dps-profile-contrast-gamma-3")):
        metrics = json.loads((out / "eval" / name / "metrics.json").read_text())["metrics"]
        rows = sweep[sweep["gamma"] == gamma].set_index("metric")
        assert {m: rows.loc[m, "value"] for m in metrics} == pytest.approx({m: v["value"] for m, v in metrics.items()})
        assert json.loads((out / "eval" / name / "config.json").read_text())["decoder"]["gamma"] == gamma
    shown = next(t for t in markdown_tables((out / "report.md").read_text()) if list(t.columns)[:2] == ["gamma", "metric"])
    assert shown["value"].tolist() == [fmt(v) for v in sweep["value"]]


def test_a_changed_option_never_reuses_the_old_stages(lens, small_run):
    """The story of the issue: --top-k 2 --method attribution, then --top-k 4 --method exact into
    the same folder must not keep the old heads under the new configuration."""
    _, out, _ = small_run
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    changed = demo_config("default", **{**SMALL, "top_k": 4, "method": "exact"})
    with pytest.raises(InputError, match=r"other options \(top_k 2 -> 4; method 'attribution' -> 'exact'.*delete"):
        run_demo(lens, changed, out, progress=False, say=lambda _: None)
    # without the run-level record, the first stage made otherwise stops the run, naming its option
    record = (out / "demo-config.json").read_bytes()
    (out / "demo-config.json").unlink()
    try:
        with pytest.raises(
            InputError, match=r"discover-standard was made with other arguments \(method 'attribution' -> 'exact'"
        ):
            run_demo(lens, changed, out, progress=False, say=lambda _: None)
    finally:
        (out / "demo-config.json").write_bytes(record)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before  # nothing was touched


def test_an_interrupted_run_resumes_to_the_same_tables(lens, small_run, tmp_path, monkeypatch):
    config, out, comparison = small_run
    calls = []
    real = pipeline.run_evaluation

    def interrupted(*args, **kwargs):
        calls.append(args[1].folder.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_evaluation", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_demo(lens, config, tmp_path, progress=False, say=lambda _: None)
    finished = {name: (tmp_path / "eval" / name / "metrics.json").stat().st_mtime_ns for name in calls[:2]}
    monkeypatch.setattr(pipeline, "run_evaluation", real)
    resumed = run_demo(lens, config, tmp_path, progress=False, say=lambda _: None)
    assert {name: (tmp_path / "eval" / name / "metrics.json").stat().st_mtime_ns for name in calls[:2]} == finished  # reused
    columns = ["metric", "baseline_value", "value", "difference", "low", "high", "p_value"]
    pd.testing.assert_frame_equal(resumed[columns], comparison[columns])
    for name in ("validation/validation_summary.csv", "discover-standard/heads.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_train": 0}, "n_train must be at least 1"),
        ({"gamma": -1.0}, "gamma must be"),
        ({"gammas": (0.5, math.nan)}, "gamma must be"),
        ({"method": "magic"}, "unknown PCS method"),
        ({"task": "LaMP-1"}, "demo set has tasks"),
        ({"sweep_k": (0,)}, "sweep_k"),
    ],
)
def test_bad_demo_settings_fail_before_any_work(options, message):
    with pytest.raises(InputError, match=message):
        DemoConfig(**options)


def test_presets_and_too_many_examples_are_checked_before_the_model():
    with pytest.raises(InputError, match="unknown demo preset 'huge'"):
        demo_config("huge")
    assert demo_config("full").n_dev > demo_config("default").n_dev
    with pytest.raises(InputError, match=re.escape("dev split of LaMP-4 has 33 examples, not 99")):
        pipeline.DemoData.load(demo_config("default", n_dev=99))
