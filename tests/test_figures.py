"""Figures: the data each plot carries equals its input (traces, axes, annotations read back),
every head and layer is labelled, what a number is (method, n, K, intervals, p) is stated, and
export writes one shared plotly.js per folder plus PNGs of the figure's own size."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pandas as pd
import pytest
import torch
from plotly.offline import get_plotlyjs

from workbench.errors import InputError
from workbench.experiments.validation import summarize_validation
from workbench.figures import (
    StaticPngRenderer,
    cluster_heatmaps,
    efficiency_figure,
    head_heatmap,
    head_set_label,
    jaccard,
    overlap_heatmap,
    paired_bars,
    pcs_heatmap,
    pcs_side_by_side,
    random_draw_means,
    read_colours,
    save_figure,
    save_figures,
    score_grid,
    series_colours,
    static_version,
    sweep_plot,
    validation_figure,
)
from workbench.figures.colours import FIXED, PALETTE
from workbench.heads import HeadWeights
from workbench.scores import PCSResult


def tidy_scores() -> pd.DataFrame:
    rows = []
    for example in range(3):
        for layer in range(2):
            for head in range(3):
                rows.append({"example_id": str(example), "layer": layer, "head": head, "pcs": example + 10 * layer + head})
    return pd.DataFrame(rows)


def pcs_result(seed: int, *, n_layers=4, n_heads=5, n=6, exact=None, **metadata) -> PCSResult:
    generator = torch.Generator().manual_seed(seed)
    per_example = torch.randn(n, n_layers, n_heads, generator=generator, dtype=torch.float64)
    flags = torch.ones(n_layers, n_heads, dtype=torch.bool) if exact is None else exact
    meta = {"model": "tiny-llama", "task": "LaMP-4", "method": "exact", "variant": "standard", "ablation": "zero", "seed": 0}
    users = [f"u{i % 4}" for i in range(n)]
    return PCSResult(per_example, flags, [str(i) for i in range(n)], users, {**meta, **metadata})


def text_of(figure) -> str:
    """Everything a reader sees as words: title, subtitle, panel titles and annotations."""
    layout = figure.layout
    parts = [layout.title.text or "", layout.title.subtitle.text or ""]
    parts += [annotation.text for annotation in layout.annotations]
    return "\n".join(parts)


def traces(figure, kind: str, name: str | None = None) -> list:
    return [t for t in figure.data if t.type == kind and (name is None or (t.name or "").startswith(name))]


def test_score_grid_is_the_mean_per_head():
    grid = score_grid(tidy_scores())
    assert grid.shape == (2, 3)
    assert grid[1, 2] == pytest.approx(np.mean([0, 1, 2]) + 12)
    with pytest.raises(InputError, match="lacks column"):
        score_grid(tidy_scores().drop(columns=["pcs"]))


def test_heatmap_labels_every_layer_and_head():
    """The map labelled only heads 0, 2, 4, 6, 8 (plotly's automatic ticks)."""
    figure = head_heatmap(np.zeros((12, 9)), title="t")
    assert list(figure.layout.xaxis.tickvals) == list(range(9)) and figure.layout.xaxis.tickmode == "array"
    assert list(figure.layout.yaxis.tickvals) == list(range(12)) and figure.layout.yaxis.tickmode == "array"


def test_heatmap_carries_the_grid_rings_and_intervals_on_a_scale_centred_at_zero():
    grid = score_grid(tidy_scores()) - 5  # values of both signs
    figure = head_heatmap(grid, title="t", highlight=[(1, 2), (0, 1)], ci_low=grid - 1, ci_high=grid + 1)
    heatmap, rings = figure.data
    assert np.array_equal(np.asarray(heatmap.z), grid)
    scale = figure.layout.coloraxis
    assert heatmap.coloraxis == "coloraxis" and scale.cmin == -scale.cmax == pytest.approx(-np.abs(grid).max())
    assert list(rings.x) == [2, 1] and list(rings.y) == [1, 0]  # x is the head, y the layer
    assert rings.showlegend and figure.layout.showlegend and "selected" in rings.name  # the rings are explained
    assert "95% CI [7.0000, 9.0000]" in heatmap.hovertext[1][2] and "selected (rank 1)" in heatmap.hovertext[1][2]
    assert "selected" not in heatmap.hovertext[0][0]
    with pytest.raises(InputError, match="outside"):
        head_heatmap(grid, title="t", highlight=[(2, 0)])


def test_hybrid_maps_dot_the_estimated_cells_and_name_the_method():
    exact = torch.zeros(4, 5, dtype=torch.bool)
    exact[3, 1] = exact[0, 4] = exact[2, 2] = True
    result = pcs_result(0, exact=exact, method="hybrid", variant="profile-contrast", ablation="mean")
    figure = pcs_heatmap(result, highlight=[(3, 1)])
    heatmap, _, dots = figure.data
    assert np.allclose(np.asarray(heatmap.z), result.mean().numpy())
    dotted = set(zip(dots.y, dots.x))
    assert dotted == {(layer, head) for layer in range(4) for head in range(5)} - {(3, 1), (0, 4), (2, 2)}
    assert dots.showlegend and "attribution estimate" in dots.name and "exact" in dots.name
    assert "exact ablation" in heatmap.hovertext[0][4] and "attribution estimate" in heatmap.hovertext[0][0]
    words = text_of(figure)
    for fragment in ("hybrid PCS: 3 of 20 heads exact", "profile-contrast", "mean ablation", "n = 6 examples", "tiny-llama"):
        assert fragment in words, (fragment, words)
    # a map of one method only has no dots: its title says what every cell is
    assert len(pcs_heatmap(pcs_result(0)).data) == 1 and "exact PCS" in text_of(pcs_heatmap(pcs_result(0)))


def test_heatmap_hover_gives_each_heads_own_bootstrap_interval():
    result = pcs_result(3)
    low, high = result.bootstrap_ci()
    hover = pcs_heatmap(result).data[0].hovertext
    for layer, head in [(0, 0), (3, 4), (2, 1)]:
        assert f"95% CI [{low[layer, head]:.4f}, {high[layer, head]:.4f}]" in hover[layer][head]
    assert low[0, 0] != low[3, 4]


def test_side_by_side_maps_share_one_scale_and_keep_their_own_rings():
    standard, contrast = pcs_result(1), pcs_result(2, variant="profile-contrast")
    contrast.per_example *= 3
    figure = pcs_side_by_side(
        {"standard": standard, "profile-contrast": contrast}, highlights={"standard": [(0, 0)], "profile-contrast": [(3, 4)]}
    )
    maps = traces(figure, "heatmap")
    assert [np.asarray(m.z).tolist() for m in maps] == [standard.mean().tolist(), contrast.mean().tolist()]
    assert {m.coloraxis for m in maps} == {"coloraxis"} and [m.xaxis for m in maps] == ["x", "x2"]
    largest = max(standard.mean().abs().max(), contrast.mean().abs().max())
    assert figure.layout.coloraxis.cmax == pytest.approx(float(largest)) == -figure.layout.coloraxis.cmin
    rings = traces(figure, "scatter", "selected")
    assert [(r.xaxis, list(r.y), list(r.x)) for r in rings] == [("x", [0], [0]), ("x2", [3], [4])]
    assert [r.showlegend for r in rings] == [True, False]  # one legend entry for both panels
    assert list(figure.layout.xaxis2.tickvals) == list(range(5))
    panel_titles = [a.text for a in figure.layout.annotations]
    assert panel_titles[0].startswith("<b>standard") and panel_titles[1].startswith("<b>profile-contrast")
    with pytest.raises(InputError, match="different shapes"):
        pcs_side_by_side({"a": standard, "b": pcs_result(0, n_layers=3)})


def test_cluster_grid_has_a_panel_per_cluster_with_its_size():
    results = {cluster: pcs_result(cluster, n=3 + cluster) for cluster in range(5)}
    figure = cluster_heatmaps(results, sizes={0: 40, 1: 12, 2: 7, 3: 1}, highlights={2: [(1, 1)]})
    maps = traces(figure, "heatmap")
    assert [np.asarray(m.z).tolist() for m in maps] == [r.mean().tolist() for r in results.values()]
    assert {m.coloraxis for m in maps} == {"coloraxis"}
    limit = max(float(r.mean().abs().max()) for r in results.values())
    assert figure.layout.coloraxis.cmax == pytest.approx(limit)
    titles = [a.text for a in figure.layout.annotations]
    assert [t.split("</b>")[0] for t in titles] == [
        "<b>cluster 0 (40 users)",
        "<b>cluster 1 (12 users)",
        "<b>cluster 2 (7 users)",
        "<b>cluster 3 (1 user)",
        "<b>cluster 4 (4 users)",  # no size given: the distinct users scored
    ]
    assert "n = 3 examples" in titles[0] and "n = 7 examples" in titles[4]  # what differs is in the panel title
    assert maps[4].xaxis == "x5" and figure.layout.xaxis5.domain[0] < 0.1  # four panels a row, the fifth below
    (rings,) = traces(figure, "scatter", "selected")
    assert rings.xaxis == "x3" and list(rings.y) == [1] and list(rings.x) == [1]


def test_overlap_is_pairwise_jaccard_labelled_with_set_sizes():
    sets = {"a": [(0, 1), (1, 1)], "b": [(0, 1), (2, 2)], "c": [(5, 5)]}
    figure = overlap_heatmap(sets, title="overlap")
    heatmap = figure.data[0]
    matrix = np.asarray(heatmap.z)
    assert matrix[0, 1] == pytest.approx(1 / 3) and matrix[0, 2] == 0 and np.all(np.diag(matrix) == 1)
    assert list(heatmap.x) == ["a<br>(2 heads)", "b<br>(2 heads)", "c<br>(1 head)"] == list(heatmap.y)
    assert heatmap.text[0][1] == "0.33<br>1 shared"
    assert "mean over pairs 0.111" in text_of(figure)
    assert jaccard(set(), set()) == 1.0
    with pytest.raises(InputError):
        overlap_heatmap({"a": []}, title="x")


def test_head_sets_are_labelled_by_what_they_are():
    result = pcs_result(0, method="hybrid", variant="profile-contrast")
    assert head_set_label(HeadWeights.from_scores(result, top_k=3)) == "profile-contrast · hybrid"
    clustered = HeadWeights.from_scores(result, top_k=3, extra={"cluster_id": 2})
    assert head_set_label(clustered) == "cluster 2 · profile-contrast · hybrid"


def validation_tables():
    """Per-example deltas of 4 examples: the preference set, 3 random draws, one retrieval set."""
    rng = np.random.default_rng(0)
    rows = []
    for example in range(4):
        for condition, shift in (("profile", 0.3), ("no-profile", 0.1)):
            sets = [("preference", 0, 0.5 + shift)] + [("random", d, 0.05 * d) for d in range(3)] + [("retrieval", 0, 0.2)]
            for head_set, draw, centre in sets:
                rows.append((str(example), "u", head_set, draw, condition, 2.0, 0.0, centre + rng.normal(0, 0.05)))
    columns = ["example_id", "user_id", "head_set", "draw", "condition", "nll_clean", "nll_masked", "delta_nll"]
    deltas = pd.DataFrame(rows, columns=columns)
    return summarize_validation(deltas), deltas


def test_random_draw_means_are_each_random_sets_mean_over_examples():
    _, deltas = validation_tables()
    means = random_draw_means(deltas).set_index(["condition", "draw"])["mean_delta_nll"]
    for draw in range(3):
        with_profile = deltas[(deltas.head_set == "random") & (deltas.draw == draw) & (deltas.condition == "profile")]
        without = deltas[(deltas.head_set == "random") & (deltas.draw == draw) & (deltas.condition == "no-profile")]
        assert means["profile", draw] == pytest.approx(with_profile.delta_nll.mean())
        assert means["no-profile", draw] == pytest.approx(without.delta_nll.mean())
        assert means["profile-specific", draw] == pytest.approx(with_profile.delta_nll.mean() - without.delta_nll.mean())


def test_validation_figure_shows_the_random_distribution_n_k_p_and_the_interval_type():
    summary, deltas = validation_tables()
    figure = validation_figure(summary, deltas=deltas, k=7, label="standard heads")
    boxes = traces(figure, "box")
    assert len(boxes) == 3  # one distribution of the random sets per condition
    draws = random_draw_means(deltas)
    for box, condition in zip(boxes, ["profile", "no-profile", "profile-specific"]):
        assert sorted(box.y) == pytest.approx(sorted(draws[draws.condition == condition].mean_delta_nll))
    for condition, axis in (("profile", "x"), ("no-profile", "x2"), ("profile-specific", "x3")):
        part = summary[summary.condition == condition].set_index("head_set")
        shown = {t.x[0]: t for t in traces(figure, "scatter") if t.xaxis == axis}
        assert set(shown) == {"preference", "random", "retrieval"}
        for name, trace in shown.items():
            assert trace.y[0] == pytest.approx(part.loc[name, "mean_delta_nll"])
            assert trace.error_y.array[0] == pytest.approx(part.loc[name, "ci_high"] - part.loc[name, "mean_delta_nll"])
            assert trace.error_y.arrayminus[0] == pytest.approx(part.loc[name, "mean_delta_nll"] - part.loc[name, "ci_low"])
        axis_layout = figure.layout[axis.replace("x", "xaxis")]
        p_values = {
            name: label.split("<br>")[-1] for name, label in zip(axis_layout.tickvals, axis_layout.ticktext) if name != "random"
        }
        assert p_values == {
            name: f"<span style='font-size:11px'>p = {part.loc[name, 'p_value_vs_random']:.2g}</span>"
            for name in ("preference", "retrieval")
        }
    words = text_of(figure)
    for fragment in ("n = 4 held-out examples", "K = 7 heads per set", "3 random K-head sets", "95% percentile-bootstrap",
                     "one-sided permutation p-value", "with the profile", "without the profile", "profile-specific"):  # fmt: skip
        assert fragment in words, (fragment, words)
    # without the per-example table there is no distribution to draw, and the figure says so
    plain = validation_figure(summary)
    assert not traces(plain, "box") and "not recorded" in text_of(plain) and "K not recorded" in text_of(plain)
    with pytest.raises(InputError, match="p_value_vs_random"):
        validation_figure(summary.drop(columns=["p_value_vs_random"]))


def test_sweep_draws_one_line_and_band_per_group():
    frame = pd.DataFrame(
        {
            "gamma": [2, 0, 1, 0, 1, 2],
            "rouge": [0.15, 0.1, 0.2, 0.1, 0.1, 0.1],
            "low": [0.1, 0.0, 0.15, 0.05, 0.05, 0.05],
            "high": [0.2, 0.2, 0.25, 0.15, 0.15, 0.15],
            "method": ["dps"] * 3 + ["random"] * 3,
        }
    )
    figure = sweep_plot(frame, x="gamma", y="rouge", group="method", low="low", high="high", title="γ sweep", x_title="γ")
    lines = [trace for trace in figure.data if trace.mode == "lines+markers"]
    bands = [trace for trace in figure.data if trace.fill == "toself"]
    assert [line.name for line in lines] == ["dps", "random"] and len(bands) == 2
    assert list(lines[0].x) == [0, 1, 2] and list(lines[0].y) == [0.1, 0.2, 0.15]  # sorted by γ
    assert list(bands[0].x) == [0, 1, 2, 2, 1, 0] and list(bands[0].y) == [0.2, 0.25, 0.2, 0.1, 0.15, 0.0]
    assert figure.layout.xaxis.title.text == "γ"


def comparison_table() -> pd.DataFrame:
    rows = []
    for run, (difference, p_value) in {"global": (0.02, 0.3), "hard-routed": (0.05, 0.01), "random-heads": (-0.01, 0.8)}.items():
        for metric, scale in (("rouge-1", 1.0), ("meteor", 0.5)):
            d = difference * scale
            rows.append({"baseline": "runs/eval/greedy", "run": f"runs/eval/{run}", "metric": metric, "baseline_value": 0.3,
                         "value": 0.3 + d, "difference": d, "low": d - 0.02, "high": d + 0.03, "confidence": 0.95,
                         "p_value": p_value, "n": 16})  # fmt: skip
    return pd.DataFrame(rows)


def test_paired_bars_show_each_runs_difference_interval_and_p():
    table = comparison_table()
    figure = paired_bars(table)
    bars = traces(figure, "bar")
    assert [bar.name for bar in bars] == ["rouge-1", "meteor"]
    for bar, metric, axis in zip(bars, ["rouge-1", "meteor"], ["x", "x2"]):
        part = table[table.metric == metric]
        assert list(bar.y) == ["global", "hard-routed", "random-heads"] and bar.orientation == "h"
        assert list(bar.x) == pytest.approx(list(part.difference))
        assert list(bar.error_x.array) == pytest.approx([0.03] * 3) and list(bar.error_x.arrayminus) == pytest.approx([0.02] * 3)
        p_texts = {a.y: a.text for a in figure.layout.annotations if a.xref == f"{axis} domain"}
        assert p_texts == {"global": "p = 0.3", "hard-routed": "p = 0.01", "random-heads": "p = 0.8"}
    words = text_of(figure)
    assert "n = 16 paired examples" in words and "95% paired bootstrap" in words and "greedy" in words


def test_efficiency_shows_seconds_and_each_metric_on_the_methods_rows():
    table = pd.DataFrame(
        {
            "method": ["greedy", "greedy", "dps", "dps"],
            "seconds_per_example": [2.0, 2.0, 3.0, 3.0],
            "metric": ["rouge-1", "meteor"] * 2,
            "value": [0.30, 0.20, 0.33, 0.21],
            "low": [0.25, 0.15, 0.28, 0.16],
            "high": [0.35, 0.25, 0.38, 0.26],
        }
    )
    figure = efficiency_figure(table)
    (bar,) = traces(figure, "bar")
    assert list(bar.y) == ["greedy", "dps"] and list(bar.x) == [2.0, 3.0]
    assert {a.y: a.text for a in figure.layout.annotations if a.xref == "x domain"} == {"greedy": "1.00×", "dps": "1.50×"}
    assert "the ratio to greedy" in text_of(figure)
    points = {(t.xaxis, method): (x, high, low) for t in traces(figure, "scatter")
              for method, x, high, low in zip(t.y, t.x, t.error_x.array, t.error_x.arrayminus)}  # fmt: skip
    assert points[("x2", "dps")] == pytest.approx((0.33, 0.05, 0.05)) and points[("x3", "greedy")] == pytest.approx(
        (0.20, 0.05, 0.05)
    )
    with pytest.raises(InputError, match="seconds_per_example"):
        efficiency_figure(table.drop(columns=["seconds_per_example"]))


def png_size(path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_save_shares_one_plotly_js_per_folder_and_exports_pngs_of_the_figures_size(tmp_path):
    figures = {tmp_path / "eye": head_heatmap(np.eye(3), title="eye"), tmp_path / "wide": head_heatmap(np.eye(3, 12), title="w")}
    written = save_figures(figures)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eye.html", "eye.png", "plotly.min.js", "wide.html", "wide.png"]
    assert (tmp_path / "plotly.min.js").read_text() == get_plotlyjs()
    for stem, figure in figures.items():
        page = stem.with_suffix(".html").read_text()
        assert '<script charset="utf-8" src="plotly.min.js"></script>' in page and len(page) < 200_000
        assert png_size(stem.with_suffix(".png")) == (2 * figure.layout.width, 2 * figure.layout.height)
    assert len(written) == 5
    shared = (tmp_path / "plotly.min.js").stat().st_mtime_ns
    save_figure(figures[tmp_path / "eye"], tmp_path / "again", png=False)
    assert (tmp_path / "plotly.min.js").stat().st_mtime_ns == shared  # written once, not per figure
    assert not list(tmp_path.glob(".*"))  # no temporary leftovers


def png_bytes_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


def test_static_exports_are_drawn_without_the_hover_hint(tmp_path):
    """The PNG of `save_figures` and of a notebook both show `static_version`: one subtitle line less."""
    figure = pcs_heatmap(pcs_result(0))
    static = static_version(figure)
    assert static.layout.height == figure.layout.height - 19
    (png,) = StaticPngRenderer(scale=1).to_mimebundle(figure.to_dict()).values()
    assert png_bytes_size(base64.b64decode(png)) == (figure.layout.width, static.layout.height)
    save_figure(figure, tmp_path / "pcs")
    assert png_size(tmp_path / "pcs.png") == (2 * figure.layout.width, 2 * static.layout.height)
    assert "hover: mean over examples" in (tmp_path / "pcs.html").read_text()


def test_series_colours_keep_known_ones_and_never_repeat():
    colours = series_colours(["greedy", "cad", "random-heads", "dps"])
    assert colours == {"greedy": FIXED["greedy"], "cad": PALETTE[0], "random-heads": FIXED["random-heads"], "dps": PALETTE[1]}
    many = series_colours([f"run-{i}" for i in range(60)])
    assert len(set(many.values())) == 60 and all(len(c) == 7 and c.startswith("#") for c in many.values())
    assert not set(many.values()) & set(FIXED.values())  # the baseline's and the control's colours stay theirs
    kept = series_colours(["new", "cad"], {"cad": PALETTE[1], "other": FIXED["greedy"]})
    assert kept["cad"] == PALETTE[1] and kept["new"] == PALETTE[0]  # known colours kept, a new name the first free one
    assert series_colours(["greedy"], {"other": FIXED["greedy"]})["greedy"] not in (FIXED["greedy"],)  # its colour was taken


def test_colour_files_are_checked(tmp_path):
    path = tmp_path / "colours.json"
    path.write_text('{"cad": "#ABCDEF", "dps": "#0072b2"}')
    assert read_colours(path) == {"cad": "#abcdef", "dps": "#0072b2"}
    for text, message in (('{"cad": "red"}', "colour of 'cad' must be written #rrggbb"), ("[1]", "expected a JSON object"),
                          ('{"a": "#000000", "b": "#000000"}', "'a', 'b' share the colour #000000")):  # fmt: skip
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            read_colours(path)


@pytest.mark.parametrize("n", [9, 10])
def test_both_figures_warn_below_the_same_number_of_examples_in_one_wording(n):
    table = comparison_table().assign(n=n)
    summary, _ = validation_tables()
    paired, validation = text_of(paired_bars(table)), text_of(validation_figure(summary.assign(n_examples=n)))
    if n < 10:
        assert f"only {n} paired examples: bootstrap intervals are too narrow below 10" in paired
        assert (
            f"only {n} held-out examples: bootstrap intervals are too narrow below 10; read the differences as descriptive"
            in validation
        )
    else:
        assert "only" not in paired and "only" not in validation


def test_validation_figure_takes_k_from_its_table():
    summary, _ = validation_tables()
    assert "K = 5 heads per set" in text_of(validation_figure(summary.assign(n_heads=5)))
    with pytest.raises(InputError, match="K = 4 was given, but the validation table's head sets have 5 heads"):
        validation_figure(summary.assign(n_heads=5), k=4)
