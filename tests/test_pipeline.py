"""The main job end to end on a tiny model, checking content: the heads are the top-K of the scores,
every number of the report equals its table, a changed option never reuses a stage made with the
old one, and an interrupted run resumes to the same tables."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import workbench.commands.evaluate as evaluate_command
import workbench.pipeline.plan as plan
import workbench.pipeline.run as pipeline
from workbench.cli import app
from workbench.engine.models import tiny_model
from workbench.errors import InputError
from workbench.pipeline.audit import RUN_AUDIT_EXAMPLES, RUN_AUDIT_KINDS
from workbench.pipeline.plan import VARIANTS, RunConfig, run_config
from workbench.pipeline.report import fmt
from workbench.pipeline.run import run_pipeline
from workbench.scores import PCSResult

pytestmark = pytest.mark.integration  # whole jobs end to end

SMALL = {"n_train": 3, "n_dev": 2, "top_k": 2, "n_random": 2, "sweep_k": (1, 2), "profile_k": 1, "max_new_tokens": 3,
         "method": "attribution", "gammas": (3.0,), "figures_png": False}  # fmt: skip


@pytest.fixture(scope="module")
def lens():
    return tiny_model(n_ctx=2048)


@pytest.fixture(scope="module")
def small_run(lens, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    config = run_config("default", **SMALL)
    comparison = run_pipeline(lens, config, out, progress=False, say=lambda _: None)
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
    for name in plan.evaluation_runs(config):
        metrics = json.loads((out / "eval" / name / "metrics.json").read_text())
        assert f"| {name} | rouge-L | {fmt(metrics['metrics']['rouge-L']['value'])} |" in report
    for key, value in json.loads(json.dumps(plan.report_options(config), default=list)).items():
        assert f"`{key}={value}`" in report  # every option that made the numbers


def test_the_audit_section_equals_its_tables(small_run):
    _, out, _ = small_run
    agreement = pd.read_csv(out / "audit" / "audit_agreement.csv")
    shown = next(t for t in markdown_tables((out / "report.md").read_text()) if "kinds" in t.columns)
    assert shown["kinds"].tolist() == [f"{row.kind_a} vs {row.kind_b}" for row in agreement.itertuples()]
    assert shown["Spearman ρ (95% CI)"].tolist() == [
        f"{row.spearman:.2f} [{row.spearman_low:.2f}, {row.spearman_high:.2f}]" for row in agreement.itertuples()
    ]
    record = json.loads((out / "audit" / "audit.json").read_text())
    assert record["settings"]["kinds"] == list(RUN_AUDIT_KINDS) and record["n_examples"] == RUN_AUDIT_EXAMPLES


def test_the_report_describes_the_pcs_method_that_ran(small_run):
    config, out, _ = small_run
    report = (out / "report.md").read_text()
    assert f"PCS method `{config.method}` (every head estimated from one forward and one backward pass" in report
    assert "hybrid:" not in report and "exact PCS for" not in report


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
    changed = run_config("default", **{**SMALL, "top_k": 4, "method": "exact"})
    with pytest.raises(InputError, match=r"other options \(top_k 2 -> 4; method 'attribution' -> 'exact'.*delete"):
        run_pipeline(lens, changed, out, progress=False, say=lambda _: None)
    # without the run-level record, the first stage made otherwise stops the run, naming its option
    record = (out / "run-config.json").read_bytes()
    (out / "run-config.json").unlink()
    try:
        with pytest.raises(
            InputError, match=r"discover-standard was made with other arguments \(method 'attribution' -> 'exact'"
        ):
            run_pipeline(lens, changed, out, progress=False, say=lambda _: None)
    finally:
        (out / "run-config.json").write_bytes(record)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before  # nothing was touched


def test_the_run_computes_at_the_tests_thread_count(small_run):
    """The module's run is made at the thread count its first test chose (conftest sets it before
    any fixture), not at the machine's default."""
    _, out, _ = small_run
    recorded = {json.loads(path.read_text())["threads"][0] for path in (out / "eval").glob("*/metrics.json")}
    assert recorded == {torch.get_num_threads()} == {1}


def test_an_interrupted_run_resumed_at_another_thread_count_gives_the_same_tables(lens, small_run, tmp_path, monkeypatch):
    """Interrupted at 2 threads in its third decoding run, resumed at the test's 1 thread: the finished
    stages are reused, scores and validation are bit-equal to the uninterrupted run's (they do not
    depend on the thread count), and the report names both thread counts its predictions were decoded at."""
    config, out, comparison = small_run
    calls = []
    real = pipeline.run_evaluation

    def interrupted(*args, **kwargs):
        calls.append(args[1].folder.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_evaluation", interrupted)
    torch.set_num_threads(2)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(lens, config, tmp_path, progress=False, say=lambda _: None)
    torch.set_num_threads(1)
    finished = {name: (tmp_path / "eval" / name / "metrics.json").stat().st_mtime_ns for name in calls[:2]}
    monkeypatch.setattr(pipeline, "run_evaluation", real)
    resumed = run_pipeline(lens, config, tmp_path, progress=False, say=lambda _: None)
    assert {name: (tmp_path / "eval" / name / "metrics.json").stat().st_mtime_ns for name in calls[:2]} == finished  # reused
    columns = ["metric", "baseline_value", "value", "difference", "low", "high", "p_value"]
    pd.testing.assert_frame_equal(resumed[columns], comparison[columns])
    for name in ("validation/validation_summary.csv", "discover-standard/heads.json", "discover-standard/pcs.parquet"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    assert "predictions were decoded at 1, 2 torch thread(s)" in (tmp_path / "report.md").read_text()


def test_report_clusters_and_routing_numbers_equal_their_files(small_run):
    """The clusters table against clusters.json and each cluster's heads.json, the routing table
    against each routed run's routing.json, whose diagnostics are recomputed by hand from the
    route weights and the cluster head maps."""
    config, out, comparison = small_run
    tables = markdown_tables((out / "report.md").read_text())
    clusters = json.loads((out / "clusters" / "clusters.json").read_text())
    assert len(clusters["clusters"]) == config.n_clusters
    maps = [np.array(json.loads((out / "discover-clusters" / f"cluster-{c}" / "heads.json").read_text())["weights"])
            for c in range(config.n_clusters)]  # fmt: skip
    global_heads = np.array(json.loads((out / "discover-standard" / "heads.json").read_text())["weights"]) > 0
    shown = next(t for t in tables if "shared with global" in t.columns)
    for entry, cluster_map, row in zip(clusters["clusters"], maps, shown.to_dict(orient="records")):
        assert (row["users"], row["examples"]) == (str(len(entry["user_ids"])), str(len(entry["example_ids"])))
        assert sorted(row["heads"].split()) == sorted(f"L{layer}H{head}" for layer, head in zip(*np.nonzero(cluster_map > 0)))
        assert row["shared with global"] == str(int(((cluster_map > 0) & global_heads).sum()))
    routing = next(t for t in tables if "mean cosine to global" in t.columns)
    columns = {"mean entropy": "mean_entropy", "ln K": "uniform_entropy", "mean top weight": "mean_top_weight",
               "mean cosine to global": "mean_cosine_to_global", "min cosine to global": "min_cosine_to_global",
               "mean heads > 0.5": "mean_heads_over_half"}  # fmt: skip
    assert routing["run"].tolist() == list(plan.ROUTED)
    for name, row in zip(plan.ROUTED, routing.to_dict(orient="records")):
        summary = json.loads((out / "eval" / name / "routing.json").read_text())["summary"]
        assert {column: row[column] for column in columns} == {column: fmt(summary[key]) for column, key in columns.items()}
        assert summary["mode"] == plan.ROUTED[name] and summary["n_new_users"] == summary["n_users"]  # dev users: new
        weights = pd.read_parquet(out / "eval" / name / "routing_weights.parquet")
        entropies, cosines, over_half = [], [], []
        mean_map = np.mean(maps, axis=0).ravel()
        for _, part in weights.groupby("user_id", sort=False):
            r = part.sort_values("cluster")["weight"].to_numpy()
            mixed = sum(w * m for w, m in zip(r, maps)).ravel()
            entropies.append(-sum(p * math.log(p) for p in r if p > 0))
            cosines.append(mixed @ mean_map / (np.linalg.norm(mixed) * np.linalg.norm(mean_map)))
            over_half.append(int((mixed > 0.5).sum()))
        assert row["mean entropy"] == fmt(float(np.mean(entropies))) and row["ln K"] == fmt(math.log(config.n_clusters))
        assert row["mean cosine to global"] == fmt(float(np.mean(cosines)))
        assert row["mean heads > 0.5"] == fmt(float(np.mean(over_half)))
    routed = next(t for t in tables if "baseline value" in t.columns and set(t["run"]) == set(plan.ROUTING_RUNS))
    expected = comparison[comparison["run"].map(lambda run: Path(run).name).isin(plan.ROUTING_RUNS)]
    assert len(routed) == len(expected) == len(plan.ROUTING_RUNS) * comparison["metric"].nunique()
    for row, line in zip(expected.itertuples(), routed.itertuples()):
        assert (line.run, line.metric, line.difference, line.low, line.high) == (
            Path(row.run).name, row.metric, *(fmt(v) for v in (row.difference, row.low, row.high)))  # fmt: skip


def test_routed_dps_of_the_demo_equals_the_evaluate_command_by_hand(lens, small_run, tmp_path, monkeypatch):
    config, out, _ = small_run
    monkeypatch.setattr(evaluate_command, "load_lens", lambda *args: lens)
    by_hand = tmp_path / "soft"
    result = CliRunner().invoke(app, [str(a) for a in (
        "evaluate", "--task", config.task, "--split", "dev", "--limit", config.n_dev, "--max-new-tokens", config.max_new_tokens,
        "--profile-k", config.profile_k, "--seed", config.seed, "--method", "dps", "--gamma", config.gamma,
        "--clusters", out / "clusters" / "clusters.json", "--cluster-heads", out / "discover-clusters",
        "--routing", "soft", "--temperature", config.routing_temperature, "--out", by_hand)])  # fmt: skip
    assert result.exit_code == 0, result.output
    demo = out / "eval" / "dps-routed-soft"
    predictions = [[json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()] for folder in
                   (demo, by_hand)]  # fmt: skip
    made = [[(p["id"], p["user_id"], p["prediction"], p["scores"]) for p in run] for run in predictions]
    assert made[0] == made[1] and len(made[0]) == config.n_dev
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (demo, by_hand)]
    assert metrics[0]["metrics"] == metrics[1]["metrics"] and metrics[0]["routing"] == metrics[1]["routing"]
    pd.testing.assert_frame_equal(pd.read_parquet(demo / "routing_weights.parquet"),
                                  pd.read_parquet(by_hand / "routing_weights.parquet"))  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "run_level", "stage_level"),
    [
        ("n_clusters", 1, "n_clusters 2 -> 1", r"clusters was made with other arguments \(k 2 -> 1"),
        ("routing_temperature", 0.2, "routing_temperature 0.05 -> 0.2",
         r"clusters was made with other arguments \(temperature 0.05 -> 0.2"),
    ],
)  # fmt: skip
def test_a_changed_cluster_option_stops_with_one_line_naming_it(lens, small_run, option, value, run_level, stage_level):
    _, out, _ = small_run
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    changed = run_config("default", **{**SMALL, option: value})
    with pytest.raises(InputError, match=re.escape(run_level)) as refused:
        run_pipeline(lens, changed, out, progress=False, say=lambda _: None)
    assert "\n" not in str(refused.value)
    record = (out / "run-config.json").read_bytes()
    (out / "run-config.json").unlink()
    try:
        with pytest.raises(InputError, match=stage_level):
            run_pipeline(lens, changed, out, progress=False, say=lambda _: None)
    finally:
        (out / "run-config.json").write_bytes(record)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_train": 0}, "n_train must be at least 1"),
        ({"n_clusters": 9}, "n_clusters must be at most n_train"),
        ({"routing_temperature": 0.0}, "routing temperature must be"),
        ({"gamma": -1.0}, "gamma must be"),
        ({"gammas": (0.5, math.nan)}, "gamma must be"),
        ({"method": "magic"}, "unknown PCS method"),
        ({"task": "LaMP-1"}, "demo set has tasks"),
        ({"sweep_k": (0,)}, "sweep_k"),
        ({"miss_rate": 1.0}, "miss_rate must lie strictly between 0 and 1, got 1.0"),
        ({"confidence": 0.0}, "confidence must lie strictly between 0 and 1"),
        ({"method": "exact", "racing": True}, "not the exact method"),
    ],
)
def test_bad_demo_settings_fail_before_any_work(options, message):
    with pytest.raises(InputError, match=message):
        RunConfig(**options)


def test_presets_and_too_many_examples_are_checked_before_the_model():
    with pytest.raises(InputError, match="unknown preset 'huge'"):
        run_config("huge")
    assert run_config("full").n_dev > run_config("default").n_dev
    with pytest.raises(InputError, match=re.escape("the dev examples of LaMP-4 are 33, not 99 (lower --n-dev)")):
        plan.RunData.load(run_config("default", n_dev=99))
    with pytest.raises(InputError, match=re.escape("cannot make 2 clusters of the 1 users of the first 2 train examples")):
        plan.RunData.load(run_config("default", n_train=2))


def test_figures_have_clean_names_and_a_png_change_reuses_every_stage(lens, small_run):
    """Runs last (it adds PNGs to the shared run): the figure stems name what they show once, the
    per-cluster maps and the routing bars are drawn from the run's files, and turning PNG export
    on draws the missing PNGs instead of refusing the figures folder."""
    from workbench.figures.runfolder import draw_run, read_run

    config, out, _ = small_run
    stems = {path.stem for path in (out / "figures").glob("*.html")}
    assert {"pcs-standard", "pcs-side-by-side", "pcs-clusters", "overlap", "sweep-k", "comparison", "comparison-routing",
            "comparison-vs-random-heads", "efficiency"} <= stems  # fmt: skip
    assert not [stem for stem in stems if "comparison-comparison" in stem or stem.startswith("sweep-k-")]
    drawn = draw_run(read_run(out, skip=out / "figures")).figures
    for cluster, trace in enumerate(t for t in drawn["pcs-clusters"].data if t.type == "heatmap"):
        pcs = pd.read_parquet(out / "discover-clusters" / f"cluster-{cluster}" / "pcs.parquet")
        means = pcs.groupby(["layer", "head"])["pcs"].mean().unstack().to_numpy()
        assert np.allclose(np.array(trace.z, dtype=float), means)
    assert sorted(drawn["comparison-routing"].data[0].y) == sorted(plan.ROUTING_RUNS)
    assert set(plan.ROUTING_RUNS) <= set(json.loads((out / "colours.json").read_text()))  # the run's colours, recorded
    labels = drawn["overlap"].data[0].x
    assert sum("cluster" in label for label in labels) == config.n_clusters
    assert not list((out / "figures").glob("*.png"))
    stages = {path: path.stat().st_mtime_ns for path in out.rglob("fingerprint.json")}
    run_pipeline(lens, dataclasses.replace(config, figures_png=True), out, progress=False, say=lambda _: None)
    assert {path.stem for path in (out / "figures").glob("*.png")} == stems
    assert {path: path.stat().st_mtime_ns for path in out.rglob("fingerprint.json")} == stages  # every stage reused
