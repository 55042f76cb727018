"""The static exports read cleanly: no label covers another or a tick label, none is cut by the
canvas or its plotting area, and none mentions hovering. Each figure is drawn from inputs shaped
like the default demo's (seven decoding runs with close differences and p-values, eight methods
of nearly equal cost, 30 layers x 9 heads, long head-set labels), exported to SVG by kaleido and
measured in chromium (`text_boxes`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from text_boxes import collisions, escapes, measure, overlap_depth, static_svgs

from workbench.experiments.validation import summarize_validation
from workbench.figures import (
    cluster_heatmaps,
    efficiency_figure,
    overlap_heatmap,
    paired_bars,
    pcs_heatmap,
    pcs_side_by_side,
    static_version,
    sweep_plot,
    validation_figure,
)
from workbench.scores import PCSResult

RUNS = ["greedy-no-profile", "cad", "dps-standard", "dps-profile-contrast", "random-heads", "dps-routed-hard", "dps-routed-soft"]
METRICS = ["rouge-1", "rouge-L", "meteor", "style_match"]


def comparison(baseline: str, runs: list[str], seed: int) -> pd.DataFrame:
    """Differences of similar size run to run (neighbouring bars of one height) and p-values of 3-4 characters."""
    rng = np.random.default_rng(seed)
    rows = []
    for metric in METRICS:
        for run in runs:
            difference = rng.normal(0.0, 0.1)
            rows.append({"baseline": f"eval/{baseline}", "run": f"eval/{run}", "metric": metric, "baseline_value": 0.5,
                         "value": 0.5 + difference, "difference": difference, "low": difference - rng.uniform(0.05, 0.3),
                         "high": difference + rng.uniform(0.05, 0.3), "p_value": rng.choice([0.067, 0.12, 0.22, 0.098, 1.0]),
                         "n": 12, "confidence": 0.95})  # fmt: skip
    return pd.DataFrame(rows)


def efficiency() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for method in ["greedy", *RUNS]:
        seconds = 0.6 if method == "greedy" else rng.uniform(1.0, 1.1)
        for metric in METRICS:
            value = rng.uniform(0.5, 0.6)
            rows.append({"method": method, "seconds_per_example": seconds, "metric": metric, "value": value,
                         "low": value - 0.15, "high": value + 0.15})  # fmt: skip
    return pd.DataFrame(rows)


def validation() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo's shape: the preference set far above the random sets, the profile-specific
    difference small and partly negative."""
    rng = np.random.default_rng(2)
    rows = []
    centres = [("preference", 0, 5.0), *[("random", d, 0.2) for d in range(20)], ("retrieval", 0, 0.6), ("induction", 0, 1.0)]
    for example in range(12):
        for condition, shift in (("profile", 0.3), ("no-profile", 0.0)):
            for head_set, draw, centre in centres:
                rows.append((str(example), "u", head_set, draw, 5, condition, 2.0, 0.0, centre + shift + rng.normal(0, 0.6)))
    columns = ["example_id", "user_id", "head_set", "draw", "n_heads", "condition", "nll_clean", "nll_masked", "delta_nll"]
    deltas = pd.DataFrame(rows, columns=columns)
    return summarize_validation(deltas, n_resamples=200), deltas


def pcs(seed: int, variant: str = "standard") -> PCSResult:
    generator = torch.Generator().manual_seed(seed)
    exact = torch.zeros(30, 9, dtype=torch.bool)
    exact[10:20] = True
    meta = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "task": "LaMP-4", "split": "train", "method": "hybrid",
            "variant": variant, "ablation": "zero"}  # fmt: skip
    return PCSResult(torch.randn(8, 30, 9, generator=generator, dtype=torch.float64) * 0.2, exact, [str(i) for i in range(8)],
                     [f"u{i % 3}" for i in range(8)], meta)  # fmt: skip


def demo_like_figures():
    summary, deltas = validation()
    standard, contrast = pcs(0), pcs(1, "profile-contrast")
    top = [(14, 1), (1, 4), (1, 3), (20, 1), (20, 5)]
    sets = {f"cluster {c} · standard · hybrid": top[c:] + top[:c] for c in range(3)}
    sets.update({"standard · hybrid": top, "profile-contrast · hybrid": [(14, 1), (14, 3), (1, 7), (20, 5), (13, 3)]})
    sweep = pd.DataFrame({"group": ["standard"] * 4 + ["profile-contrast"] * 4, "k": [1, 2, 3, 5] * 2,
                          "value": [1.1, 1.8, 2.4, 5.0, 0.7, 0.9, 1.7, 2.2]}).assign(low=lambda t: t.value - 0.3,
                                                                                     high=lambda t: t.value + 0.3)  # fmt: skip
    return {
        "comparison": paired_bars(comparison("greedy", RUNS, 0)),
        "comparison-vs-random-heads": paired_bars(comparison("random-heads", [r for r in RUNS if r.startswith("dps")], 1)),
        "efficiency": efficiency_figure(efficiency()),
        "validation": validation_figure(summary, deltas=deltas, label="standard"),
        "pcs": pcs_heatmap(standard, highlight=top),
        "pcs-side-by-side": pcs_side_by_side({"standard": standard, "profile-contrast": contrast}),
        "pcs-clusters": cluster_heatmaps({0: standard, 1: contrast, 2: pcs(3)}, highlights={0: top}),
        "overlap": overlap_heatmap(sets, title="Overlap of the selected head sets"),
        "sweep": sweep_plot(sweep, x="k", y="value", group="group", low="low", high="high", title="Δ NLL against K"),
    }


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    figures = demo_like_figures()
    return dict(zip(figures, measure(static_svgs(list(figures.values()), tmp_path_factory.mktemp("svg")))))


def test_the_measure_of_overlap_is_that_of_the_rectangles_drawn():
    square = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
    assert overlap_depth(square, tuple((x + 7, y + 2) for x, y in square)) == pytest.approx(3.0)
    assert overlap_depth(square, tuple((x + 12, y) for x, y in square)) == pytest.approx(-2.0)
    # a diamond whose enclosing box covers the square's corner, while the diamond itself stays clear of it
    diamond = ((16.0, 12.0), (22.0, 18.0), (16.0, 24.0), (10.0, 18.0))
    assert overlap_depth(square, diamond) < 0 < overlap_depth(square, ((9.0, 9.0), (22.0, 9.0), (22.0, 24.0), (9.0, 24.0)))


@pytest.mark.parametrize(
    "name",
    ["comparison", "comparison-vs-random-heads", "efficiency", "validation", "pcs", "pcs-side-by-side", "pcs-clusters",
     "overlap", "sweep"],
)  # fmt: skip
def test_no_label_covers_another_or_leaves_its_place(drawn, name):
    drawing = drawn[name]
    assert len(drawing.texts) > 10  # ticks, titles and labels were found
    assert collisions(drawing) == []
    assert escapes(drawing) == []
    assert not [text for text in drawing.texts if "hover" in text.text.lower()]


def test_the_interactive_page_keeps_its_hover_hint_and_the_static_copy_drops_it_in_place():
    figure = pcs_heatmap(pcs(0))
    static = static_version(figure)
    assert "hover: mean over examples" in figure.layout.title.subtitle.text
    assert "hover" not in static.layout.title.subtitle.text.lower()
    dropped = figure.layout.height - static.layout.height
    assert dropped == 19 and figure.layout.margin.t - static.layout.margin.t == dropped  # one line less, same plotting area
    assert "hover" in figure.layout.title.subtitle.text  # the figure itself is unchanged
