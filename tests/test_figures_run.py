"""The run-folder reader behind `workbench figures all`: it finds each figure's inputs by file name
in the demo's layout and in one folder per stage, passes the right tables to each figure, and
notes (one line each) what it skipped."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.experiments.validation import summarize_validation
from workbench.figures.runfolder import draw_run, read_run
from workbench.heads import HeadWeights
from workbench.scores import PCSResult


def discovery(folder, seed, *, variant="standard", method="hybrid", top_k=3, cluster=None, n=4):
    generator = torch.Generator().manual_seed(seed)
    per_example = torch.randn(n, 3, 4, generator=generator, dtype=torch.float64)
    exact = torch.zeros(3, 4, dtype=torch.bool)
    exact[0, :2] = True
    metadata = {"model": "tiny", "task": "LaMP-4", "method": method, "variant": variant, "ablation": "zero", "seed": 0}
    users = [f"u{seed}-{i % 2}" for i in range(n)]
    result = PCSResult(per_example, exact, [f"{seed}-{i}" for i in range(n)], users, metadata)
    folder.mkdir(parents=True)
    result.save(folder / "pcs.parquet")
    extra = {"cluster_id": cluster} if cluster is not None else {}
    HeadWeights.from_scores(result, top_k=top_k, extra=extra).save(folder / "heads.json")
    return result


def deltas_table(seed: int, n_random: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for example in range(5):
        for condition in ("profile", "no-profile"):
            for head_set, draw in [("preference", 0)] + [("random", d) for d in range(n_random)]:
                rows.append((str(example), "u", head_set, draw, condition, 2.0, 2.5, rng.normal(0.3 if head_set == "preference" else 0, 0.1)))  # fmt: skip
    columns = ["example_id", "user_id", "head_set", "draw", "condition", "nll_clean", "nll_masked", "delta_nll"]
    return pd.DataFrame(rows, columns=columns)


def evaluation(folder, method, scores):
    folder.mkdir(parents=True)
    records = [{"id": str(i), "scores": {"rouge-1": s, "rouge-L": s, "meteor": s / 2}} for i, s in enumerate(scores)]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = {"task": "LaMP-4", "method": method, "n": len(scores),
               "metrics": {"rouge-1": {"value": float(np.mean(scores)), "low": 0.0, "high": 1.0, "confidence": 0.95}}}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def demo_run(root):
    """The layout `workbench demo` writes today."""
    (root / "figures").mkdir(parents=True)
    (root / "run-config.json").write_text(json.dumps({"top_k": 5, "task": "LaMP-4"}))  # a fallback: the head sets have 3
    discovery(root / "discover-profile-contrast", 2, variant="profile-contrast")
    discovery(root / "discover-standard", 1)
    summary = pd.concat(
        [
            summarize_validation(deltas_table(seed)).assign(heads=variant)
            for seed, variant in ((1, "standard"), (2, "profile-contrast"))
        ]
    )
    summary.to_parquet(root / "validation.parquet")
    evaluation(root / "eval" / "greedy", "greedy", [0.1, 0.2, 0.3, 0.2])
    evaluation(root / "eval" / "dps-standard", "dps", [0.2, 0.2, 0.4, 0.3])
    return summary


def test_the_demo_layout_gives_every_figure_it_has_inputs_for(tmp_path):
    summary = demo_run(tmp_path)
    drawn = draw_run(read_run(tmp_path, skip=tmp_path / "figures"))
    assert sorted(drawn.figures) == [
        "comparison",
        "overlap",
        "pcs-profile-contrast",
        "pcs-side-by-side",
        "pcs-standard",
        "validation-profile-contrast",
        "validation-standard",
    ]
    side = drawn.figures["pcs-side-by-side"]
    assert side.layout.annotations[0].text.startswith("<b>standard")  # the paper's PCS first
    assert list(drawn.figures["overlap"].data[0].x) == [
        "standard · hybrid<br>(3 heads)",
        "profile-contrast · hybrid<br>(3 heads)",
    ]
    standard = drawn.figures["validation-standard"]
    words = standard.layout.title.subtitle.text
    assert "K = 3 heads per set" in words and "4 random K-head sets" in words and "not recorded" in words
    shown = [t for t in standard.data if t.type == "scatter" and t.xaxis == "x" and t.x[0] == "preference"]
    expected = summary[(summary.heads == "standard") & (summary.condition == "profile") & (summary.head_set == "preference")]
    assert shown[0].y[0] == pytest.approx(expected.mean_delta_nll.iloc[0])
    (bars,) = [t for t in drawn.figures["comparison"].data if t.name == "rouge-1"]
    assert list(bars.y) == ["dps-standard"] and bars.x[0] == pytest.approx(0.075)  # computed against greedy
    assert any(note.startswith("skipped pcs-clusters") for note in drawn.notes)
    assert any(note.startswith("skipped sweep-gamma") for note in drawn.notes)
    assert any(note.startswith("skipped efficiency") for note in drawn.notes)


def test_stage_folders_clusters_sweeps_and_timings(tmp_path):
    discovery(tmp_path / "discover" / "standard", 1)
    for cluster in range(3):
        discovery(tmp_path / "clusters" / f"cluster-{cluster}", 10 + cluster, n=2 + cluster)
    (tmp_path / "clusters" / "clusters.json").write_text(json.dumps({"labels": [0] * 5 + [1] * 2 + [2]}))
    (tmp_path / "validate").mkdir()
    deltas = deltas_table(3, n_random=6)
    deltas.to_parquet(tmp_path / "validate" / "validation.parquet")
    summarize_validation(deltas, seed=5).to_csv(tmp_path / "validate" / "validation_summary.csv", index=False)
    HeadWeights.load(tmp_path / "discover" / "standard" / "heads.json").save(tmp_path / "validate" / "heads.json")
    pd.DataFrame({"k": [1, 5, 10], "value": [0.1, 0.3, 0.4], "low": [0.0, 0.2, 0.3], "high": [0.2, 0.4, 0.5]}).to_csv(
        tmp_path / "sweep_k.csv", index=False
    )
    pd.DataFrame({"gamma": [0.0, 1.0] * 2, "value": [0.3, 0.32, 0.1, 0.12], "low": 0.0, "high": 0.5,
                  "metric": ["rouge-1"] * 2 + ["meteor"] * 2}).to_parquet(tmp_path / "sweep_gamma.parquet")  # fmt: skip
    for name, method in (("greedy", "greedy"), ("dps", "dps")):
        metrics = evaluation(tmp_path / "eval" / name, method, [0.1, 0.2, 0.3])
        metrics["seconds"] = 6.0 if method == "greedy" else 9.0
        (tmp_path / "eval" / name / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "heads.json").write_text("{not json")
    drawn = draw_run(read_run(tmp_path))

    clusters = drawn.figures["pcs-clusters"]
    titles = [a.text.split("</b>")[0] for a in clusters.layout.annotations]
    assert titles == ["<b>cluster 0 (5 users)", "<b>cluster 1 (2 users)", "<b>cluster 2 (1 user)"]
    validation = drawn.figures["validation"]
    boxes = [t for t in validation.data if t.type == "box"]
    assert len(boxes) == 3 and len(boxes[0].y) == 6  # the distribution over the 6 random sets
    assert "K = 3 heads per set" in validation.layout.title.subtitle.text  # from the heads.json beside it
    written = pd.read_csv(tmp_path / "validate" / "validation_summary.csv").set_index(["condition", "head_set"])
    (preference,) = [t for t in validation.data if t.type == "scatter" and t.xaxis == "x" and t.x[0] == "preference"]
    assert preference.error_y.array[0] == pytest.approx(  # the summary written beside it (seed 5), not a recomputation
        written.loc[("profile", "preference"), "ci_high"] - written.loc[("profile", "preference"), "mean_delta_nll"]
    )
    assert "pcs-side-by-side" not in drawn.figures  # a single discovery that is not a cluster's
    assert list(drawn.figures["sweep-k"].data[1].y) == [0.1, 0.3, 0.4]
    assert {"sweep-gamma-rouge-1", "sweep-gamma-meteor"} <= set(drawn.figures)
    (seconds,) = [t for t in drawn.figures["efficiency"].data if t.type == "bar"]
    assert list(seconds.y) == ["greedy", "dps"] and list(seconds.x) == [2.0, 3.0]  # seconds / n examples, greedy first
    assert [note for note in drawn.notes if "broken" in note] == [
        f"skipped {tmp_path / 'broken' / 'heads.json'}: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    ]
    labels = list(drawn.figures["overlap"].data[0].x)  # same kind of set twice: told apart by folder
    assert labels == [
        "standard · hybrid (discover/standard)<br>(3 heads)",
        "standard · hybrid (validate)<br>(3 heads)",
        *[f"cluster {c} · standard · hybrid<br>(3 heads)" for c in range(3)],  # the cluster from the folder name
    ]


def shown_colours(figure) -> dict[str, str]:
    """Each run's colour as the figure draws it: bars and points by their row, lines by their name."""
    colours: dict[str, set[str]] = {}
    for trace in figure.data:
        if trace.type == "bar" or trace.mode == "markers":  # a bar or a point per run, on its row
            marker = trace.marker.color
            for name, colour in zip(trace.y, [marker] * len(trace.y) if isinstance(marker, str) else marker):
                colours.setdefault(str(name), set()).add(colour)
        elif trace.mode == "lines+markers":  # a line per run
            colours.setdefault(trace.name, set()).add(trace.line.color)
    assert all(len(found) == 1 for found in colours.values()), colours  # one colour per run within the figure
    return {name: found.pop() for name, found in colours.items()}


def compared_run(root, names, seed: int = 0):
    """Evaluation folders (scores of 6 examples, 3 seconds each) and the demo's three comparison tables."""
    from workbench.experiments.comparison import compare_runs

    rng = np.random.default_rng(seed)
    for name in names:
        if not (root / "eval" / name).is_dir():
            metrics = evaluation(root / "eval" / name, name, list(rng.uniform(0, 1, 6)))
            (root / "eval" / name / "metrics.json").write_text(json.dumps({**metrics, "seconds": 18.0}))
    folders = {name: root / "eval" / name for name in names}
    dps = [folders[name] for name in names if name.startswith("dps")]
    with pytest.warns(UserWarning, match="only 6 paired examples"):
        tables = {
            "comparison": compare_runs([folders["greedy"], *(f for n, f in folders.items() if n != "greedy")], resamples=20),
            "comparison/routing": compare_runs([folders["greedy"], *dps[:2], folders["random-heads"]], resamples=20),
            "comparison/vs-random-heads": compare_runs([folders["random-heads"], *dps], resamples=20),
        }
    for folder, table in tables.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        table.to_parquet(root / folder / "comparison.parquet")
    pd.DataFrame({"group": [dps[0].name] * 2, "gamma": [1.0, 3.0], "value": [0.3, 0.2], "low": 0.1, "high": 0.4}).to_csv(
        root / "comparison" / "sweep_gamma.csv", index=False
    )


def test_each_run_keeps_one_colour_in_every_figure_and_across_redraws(tmp_path):
    from workbench.figures.colours import COLOURS_FILE
    from workbench.pipeline.figures import draw_figures

    run, out = tmp_path / "run", tmp_path / "figures"
    names = ["greedy", "greedy-no-profile", "cad", "dps-standard", "dps-profile-contrast", "random-heads", "dps-routed-hard",
             "dps-routed-soft"]  # fmt: skip
    compared_run(run, names)

    def colours_drawn() -> dict[str, dict[str, str]]:
        drawn = draw_run(read_run(run, skip=out))
        return {stem: shown_colours(figure) for stem, figure in drawn.figures.items()
                if stem.startswith(("comparison", "efficiency", "sweep"))}  # fmt: skip

    written = draw_figures(run, out, png=False, say=lambda _: None)
    assert run / COLOURS_FILE in written
    recorded = json.loads((run / COLOURS_FILE).read_text())
    figures = colours_drawn()
    assert set(figures) == {"comparison", "comparison-routing", "comparison-vs-random-heads", "efficiency", "sweep-gamma"}
    for stem, colours in figures.items():
        assert len(set(colours.values())) == len(colours), stem  # distinct runs, distinct colours
        assert colours == {name: recorded[name] for name in colours}, stem  # the recorded colour, in every figure
    assert set(figures["efficiency"]) == set(names) and recorded["greedy"] != recorded["greedy-no-profile"]

    before = (run / COLOURS_FILE).stat().st_mtime_ns
    assert run / COLOURS_FILE not in draw_figures(run, out, png=False, say=lambda _: None)  # drawn again: nothing to record
    assert (run / COLOURS_FILE).stat().st_mtime_ns == before and colours_drawn() == figures

    compared_run(run, ["greedy", "beam", *names[1:]], seed=1)  # a run added, first in every table and in name order
    draw_figures(run, out, png=False, say=lambda _: None)
    extended = json.loads((run / COLOURS_FILE).read_text())
    assert {name: extended[name] for name in recorded} == recorded  # every run keeps its colour
    assert extended["beam"] not in recorded.values()
    assert shown_colours(draw_run(read_run(run, skip=out)).figures["comparison"])["beam"] == extended["beam"]

    (run / COLOURS_FILE).write_text(json.dumps({**extended, "cad": "#000000"}))  # a colour chosen by hand
    assert shown_colours(draw_run(read_run(run, skip=out)).figures["efficiency"])["cad"] == "#000000"
