"""`workbench figures` from the files discover, validate, evaluate and demo write, and its one-line
refusals of files of the wrong kind or shape."""

from __future__ import annotations

import json

import pandas as pd
import torch
from typer.testing import CliRunner

from workbench.cli import app
from workbench.experiments.validation import summarize_validation
from workbench.heads import HeadWeights
from workbench.scores import PCSResult


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def pcs_file(path, n_layers=3, n_heads=4, **metadata):
    per_example = torch.arange(2 * n_layers * n_heads, dtype=torch.float64).view(2, n_layers, n_heads)
    result = PCSResult(
        per_example,
        torch.ones(n_layers, n_heads, dtype=torch.bool),
        ["a", "b"],
        ["u", "v"],
        {"variant": "standard", "seed": 0, **metadata},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    result.save(path)
    return result


def page_text(path) -> str:
    """An HTML figure's text with the JSON escapes of < and > undone."""
    return path.read_text().replace("\\u003c", "<").replace("\\u003e", ">")


def validation_deltas() -> pd.DataFrame:
    rows = [
        (str(example), "u", head_set, draw, condition, 2.0, 2.5, 0.1 * draw + (0.4 if head_set == "preference" else 0.0))
        for example in range(3)
        for condition in ("profile", "no-profile")
        for head_set, draw in [("preference", 0), ("random", 0), ("random", 1)]
    ]
    columns = ["example_id", "user_id", "head_set", "draw", "condition", "nll_clean", "nll_masked", "delta_nll"]
    return pd.DataFrame(rows, columns=columns)


def test_heatmap_overlap_and_validation_figures(tmp_path):
    result = pcs_file(tmp_path / "pcs.parquet")
    first, second = tmp_path / "one" / "heads.json", tmp_path / "two" / "heads.json"
    HeadWeights.from_scores(result, top_k=3).save(first)
    HeadWeights.from_scores(result.mean().max() - result.mean(), top_k=3, method="exact").save(second)

    figures = tmp_path / "figures"
    made = run("figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--heads", first, "--out", figures, "--no-png")
    assert made.exit_code == 0, made.output
    assert 'src="plotly.min.js"' in (figures / "heatmap.html").read_text() and (figures / "plotly.min.js").is_file()

    made = run("figures", "overlap", first, second, "--out", figures, "--name", "variants", "--no-png")
    assert made.exit_code == 0, made.output
    page = page_text(figures / "variants.html")
    assert "standard<br>(3 heads)" in page and "exact<br>(3 heads)" in page  # labelled by what each set is

    deltas = validation_deltas()
    deltas.to_parquet(tmp_path / "validation.parquet")
    summarize_validation(deltas).to_csv(tmp_path / "summary.csv", index=False)
    made = run("figures", "validation", "--summary", tmp_path / "summary.csv", "--deltas", tmp_path / "validation.parquet",
               "--k", 3, "--out", figures)  # fmt: skip
    assert made.exit_code == 0, made.output
    assert (figures / "validation.png").read_bytes()[:4] == b"\x89PNG"
    assert "K = 3 heads per set" in page_text(figures / "validation.html")
    made = run("figures", "validation", "--deltas", tmp_path / "validation.parquet", "--out", figures, "--name", "v2", "--no-png")
    assert made.exit_code == 0, made.output  # the summary computed from the per-example table
    assert sorted(p.name for p in figures.iterdir()) == [
        "heatmap.html", "plotly.min.js", "v2.html", "validation.html", "validation.png", "variants.html",
    ]  # fmt: skip


def test_side_by_side_clusters_sweep_comparison_and_efficiency(tmp_path):
    pcs_file(tmp_path / "standard" / "pcs.parquet")
    pcs_file(tmp_path / "contrast" / "pcs.parquet", variant="profile-contrast")
    for cluster in (0, 1):
        pcs_file(tmp_path / f"cluster-{cluster}" / "pcs.parquet")
    (tmp_path / "clusters.json").write_text(json.dumps({"sizes": [30, 12]}))
    sweep = pd.DataFrame({"gamma": [0.0, 1.0, 2.0], "value": [0.3, 0.35, 0.33], "low": 0.2, "high": 0.4})
    sweep.to_csv(tmp_path / "sweep.csv", index=False)
    comparison = pd.DataFrame({"baseline": ["eval/greedy"], "run": ["eval/soft-routed"], "metric": ["rouge-1"], "baseline_value": [0.3],
                               "value": [0.32], "difference": [0.02], "low": [0.0], "high": [0.04], "p_value": [0.2], "n": [16]})  # fmt: skip
    comparison.to_parquet(tmp_path / "comparison.parquet")
    pd.DataFrame({"method": ["greedy", "dps"], "seconds_per_example": [1.0, 1.4]}).to_csv(tmp_path / "cost.csv", index=False)
    out = tmp_path / "figures"
    for args in (
        ("side-by-side", tmp_path / "standard" / "pcs.parquet", tmp_path / "contrast" / "pcs.parquet"),
        ("clusters", tmp_path / "cluster-0" / "pcs.parquet", tmp_path / "cluster-1" / "pcs.parquet", "--clusters", tmp_path / "clusters.json"),
        ("sweep", tmp_path / "sweep.csv", "--x", "gamma"),
        ("comparison", tmp_path / "comparison.parquet"),
        ("efficiency", tmp_path / "cost.csv"),
    ):  # fmt: skip
        made = run("figures", *args, "--out", out, "--no-png")
        assert made.exit_code == 0, made.output
    assert sorted(p.stem for p in out.glob("*.html")) == [
        "comparison",
        "efficiency",
        "pcs-clusters",
        "pcs-side-by-side",
        "sweep-gamma",
    ]
    assert "cluster 1 (12 users)" in page_text(out / "pcs-clusters.html")
    made = run("figures", "clusters", tmp_path / "standard" / "pcs.parquet", "--out", out)
    refused(made, f"{tmp_path / 'standard'}: not a cluster's PCS")


def test_all_draws_a_run_folder_and_notes_what_it_skips(tmp_path):
    run_folder = tmp_path / "run"
    result = pcs_file(run_folder / "discover-standard" / "pcs.parquet", method="exact")
    HeadWeights.from_scores(result, top_k=2).save(run_folder / "discover-standard" / "heads.json")
    contrast = pcs_file(run_folder / "discover-profile-contrast" / "pcs.parquet", variant="profile-contrast")
    HeadWeights.from_scores(contrast, top_k=2).save(run_folder / "discover-profile-contrast" / "heads.json")
    validation_deltas().to_parquet(run_folder / "discover-standard" / "validation.parquet")
    out = run_folder / "figures"
    made = run("figures", "all", "--run", run_folder, "--out", out, "--no-png")
    assert made.exit_code == 0, made.output
    assert sorted(p.name for p in out.iterdir()) == [
        "overlap.html", "pcs-profile-contrast.html", "pcs-side-by-side.html", "pcs-standard.html", "plotly.min.js", "validation.html",
    ]  # fmt: skip
    notes = [line for line in made.stdout.splitlines() if line.startswith("skipped")]
    assert [note.split(":")[0] for note in notes] == [
        "skipped pcs-clusters", "skipped sweep-k", "skipped sweep-gamma", "skipped comparison", "skipped efficiency",
    ]  # fmt: skip
    again = run("figures", "all", "--run", run_folder, "--out", out, "--no-png")  # its own output folder is not read
    assert again.exit_code == 0 and again.stdout == made.stdout, again.output
    refused(run("figures", "all", "--run", tmp_path / "nothing-here", "--out", out), "nothing-here: not a folder")
    (tmp_path / "empty").mkdir()
    refused(run("figures", "all", "--run", tmp_path / "empty", "--out", out), "empty: nothing to draw")


def refused(made, *fragments):
    assert made.exit_code == 2, made.output
    assert made.stderr.startswith("error: ") and made.stderr.count("\n") == 1, made.stderr
    assert all(fragment in made.stderr for fragment in fragments), made.stderr


def test_missing_inputs_are_one_line_errors(tmp_path):
    refused(run("figures", "validation", "--summary", tmp_path / "nope.csv", "--out", tmp_path / "x"), "nope.csv: file not found")
    refused(run("figures", "validation", "--out", tmp_path / "x"), "give --summary")
    refused(run("figures", "sweep", tmp_path / "nope.csv", "--out", tmp_path / "x"), "nope.csv: file not found")


def test_files_of_the_wrong_kind_are_named(tmp_path):
    pcs_file(tmp_path / "pcs.parquet")
    made = run("figures", "validation", "--summary", tmp_path / "pcs.parquet", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'pcs.parquet'}: validation table lacks column(s) head_set", "validation_summary.csv")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    made = run("figures", "validation", "--summary", tmp_path / "binary.csv", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'binary.csv'}: not a CSV table", "validation_summary.csv")
    pd.DataFrame({"layer": [0], "head": [1]}).to_csv(tmp_path / "other.csv", index=False)
    made = run("figures", "validation", "--summary", tmp_path / "other.csv", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'other.csv'}: validation table lacks column(s)")
    made = run("figures", "heatmap", "--pcs", tmp_path / "other.csv", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'other.csv'}: not a Parquet file")
    made = run("figures", "overlap", tmp_path / "pcs.parquet", tmp_path / "pcs.parquet", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'pcs.parquet'}: not valid JSON")
    made = run("figures", "sweep", tmp_path / "other.csv", "--x", "gamma", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'other.csv'}: sweep table lacks column(s)")
    made = run("figures", "efficiency", tmp_path / "other.csv", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'other.csv'}: efficiency table lacks column(s) method, seconds_per_example")
    made = run("figures", "comparison", tmp_path / "other.csv", "--out", tmp_path / "x")
    refused(made, f"{tmp_path / 'other.csv'}: comparison table lacks column(s)")
    assert not (tmp_path / "x").exists()


def test_heads_of_another_model_are_refused_naming_both_shapes(tmp_path):
    """A heads.json of a 12-head model over a 9-head grid drew markers outside the grid."""
    pcs_file(tmp_path / "pcs.parquet", n_layers=3, n_heads=9)
    HeadWeights.from_scores(torch.rand(3, 12), top_k=4).save(tmp_path / "heads.json")
    made = run(
        "figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--heads", tmp_path / "heads.json", "--out", tmp_path / "x"
    )
    refused(made, "is for 3 layers x 12 heads", "has 3 x 9")
    made = run("figures", "side-by-side", tmp_path / "pcs.parquet", "--out", tmp_path / "x")  # heads.json beside it
    refused(made, "is for 3 x 12 heads", "has 3 x 9")
    # the authors' list of heads (no recorded shape): a head beyond the grid is named
    (tmp_path / "top_heads.json").write_text(json.dumps({"preference_heads": [[0, 1], [2, 11]]}))
    made = run(
        "figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--heads", tmp_path / "top_heads.json", "--out", tmp_path / "x"
    )
    refused(made, "head (2, 11) lies outside the 3 layers x 9 heads")
    assert not (tmp_path / "x").exists()
    made = run("figures", "heatmap", "--pcs", tmp_path / "pcs.parquet", "--out", tmp_path / "x", "--name", "../up", "--no-png")
    refused(made, "--name must be a plain file name")


def test_validation_shows_the_k_that_validate_recorded(tmp_path):
    """The figure said "K not recorded" for a study whose head file had K; the tables now carry it."""
    validate = tmp_path / "validate"
    validate.mkdir()
    recorded = validation_deltas().assign(n_heads=3)  # what `workbench validate` writes now
    recorded.to_parquet(validate / "validation.parquet")
    summarize_validation(recorded).to_csv(validate / "validation_summary.csv", index=False)
    out = tmp_path / "figures"
    made = run("figures", "validation", "--summary", validate / "validation_summary.csv", "--deltas", validate / "validation.parquet",
               "--out", out, "--no-png")  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "K = 3 heads per set" in page_text(out / "validation.html")
    assert "only 3 held-out examples: bootstrap intervals are too narrow below 10" in page_text(out / "validation.html")
    refused(run("figures", "validation", "--deltas", validate / "validation.parquet", "--k", 4, "--out", out),
            "K = 4 was given, but the validation table's head sets have 3 heads")  # fmt: skip

    older = tmp_path / "older"  # tables written before they carried K: the stage's fingerprint, else the heads validated
    older.mkdir()
    validation_deltas().to_parquet(older / "validation.parquet")
    (older / "fingerprint.json").write_text(json.dumps({"stage": "validate", "options": {"k": 2, "n_random": 2}}))
    made = run("figures", "validation", "--deltas", older / "validation.parquet", "--out", out, "--name", "older", "--no-png")
    assert made.exit_code == 0 and "K = 2 heads per set" in page_text(out / "older.html"), made.output
    (older / "fingerprint.json").write_text(json.dumps({"stage": "validate", "options": {"k": None, "n_random": 2}}))
    HeadWeights.from_scores(torch.rand(3, 4), top_k=4).save(tmp_path / "discover" / "heads.json")
    made = run("figures", "validation", "--deltas", older / "validation.parquet", "--heads", tmp_path / "discover" / "heads.json",
               "--out", out, "--name", "heads", "--no-png")  # fmt: skip
    assert made.exit_code == 0 and "K = 4 heads per set" in page_text(out / "heads.html"), made.output
    made = run("figures", "validation", "--deltas", older / "validation.parquet", "--out", out, "--name", "unknown", "--no-png")
    assert made.exit_code == 0 and "K not recorded" in page_text(out / "unknown.html"), made.output


def test_single_figures_take_a_run_folders_colours(tmp_path):
    comparison = pd.DataFrame({"baseline": ["eval/greedy"] * 2, "run": ["eval/cad", "eval/dps"], "metric": ["rouge-1"] * 2,
                               "baseline_value": 0.3, "value": [0.32, 0.31], "difference": [0.02, 0.01], "low": 0.0, "high": 0.04,
                               "p_value": 0.2, "n": 16})  # fmt: skip
    comparison.to_parquet(tmp_path / "comparison.parquet")
    (tmp_path / "colours.json").write_text(json.dumps({"dps": "#123456", "cad": "#ABCDEF"}))
    made = run("figures", "comparison", tmp_path / "comparison.parquet", "--colours", tmp_path / "colours.json", "--out",
               tmp_path / "out", "--no-png")  # fmt: skip
    assert made.exit_code == 0, made.output
    assert '"marker":{"color":["#abcdef","#123456"]}' in page_text(tmp_path / "out" / "comparison.html")
    (tmp_path / "colours.json").write_text(json.dumps({"dps": "#123456", "cad": "#123456"}))
    refused(run("figures", "comparison", tmp_path / "comparison.parquet", "--colours", tmp_path / "colours.json", "--out",
                tmp_path / "out"), "'dps', 'cad' share the colour #123456")  # fmt: skip
    (tmp_path / "colours.json").write_text(json.dumps({"dps": "blue"}))
    pd.DataFrame({"method": ["cad", "dps"], "seconds_per_example": [1.0, 1.4]}).to_csv(tmp_path / "cost.csv", index=False)
    refused(run("figures", "efficiency", tmp_path / "cost.csv", "--colours", tmp_path / "colours.json", "--out",
                tmp_path / "out"), "colours.json: the colour of 'dps' must be written #rrggbb, got 'blue'")  # fmt: skip
