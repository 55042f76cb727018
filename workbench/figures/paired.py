"""Paired comparisons of decoding runs as bars: each run's metric difference to the baseline run
(greedy) on the same examples, with its paired bootstrap interval and permutation p-value. This is
the routing comparison (global, hard-routed, soft-routed and random heads against greedy) as well
as any other set of runs that `workbench.experiments.comparison.paired_table` compared: one panel per metric,
one row per run (`workbench.figures.rows`), each panel's p-values in a column beside it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from workbench.errors import InputError
from workbench.figures.colours import ColourMap, series_colours
from workbench.figures.rows import ROW_PX, row_notes, row_panels
from workbench.figures.style import p_text, text_width, titled
from workbench.stats import small_sample_caveat

COLUMNS = ("baseline", "run", "metric", "baseline_value", "value", "difference", "low", "high", "p_value", "n")


def run_name(folder: str) -> str:
    """A run's name: its folder's name (the pipeline names folders by what the run is)."""
    return Path(str(folder)).name or str(folder)


def paired_bars(table: pd.DataFrame, *, title: str | None = None, colours: ColourMap | None = None) -> go.Figure:
    """One panel per metric, one row per run: a bar with the difference to the baseline, error bars
    from the paired bootstrap interval, the p-value beside the panel. `colours` maps run names to
    colours (e.g. the run folder's, so a run has one colour in every figure); runs it lacks get
    free ones."""
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise InputError(f"comparison table lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise InputError("comparison table has no rows")
    metrics = list(dict.fromkeys(table["metric"]))
    baseline = run_name(table["baseline"].iloc[0])
    runs = list(dict.fromkeys(run_name(run) for run in table["run"]))
    colours = series_colours(runs, colours)
    figure, plot_w, note_px = row_panels(metrics, runs, [p_text(float(p)) for p in table["p_value"]])
    for column, metric in enumerate(metrics, start=1):
        part = table[table["metric"] == metric]
        names = [run_name(run) for run in part["run"]]
        figure.add_trace(
            go.Bar(
                y=names,
                x=part["difference"],
                orientation="h",
                marker_color=[colours[name] for name in names],
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": part["high"] - part["difference"],
                    "arrayminus": part["difference"] - part["low"],
                    "thickness": 1.5,
                    "color": "#2c3e50",
                },
                customdata=part[["value", "baseline_value", "low", "high", "p_value"]].to_numpy(),
                hovertemplate=f"%{{y}}: {metric} %{{customdata[0]:.4f}} vs {baseline} %{{customdata[1]:.4f}}"
                "<br>difference %{x:+.4f} [%{customdata[2]:+.4f}, %{customdata[3]:+.4f}]"
                "<br>p = %{customdata[4]:.3g}<extra></extra>",
                showlegend=False,
                name=metric,
            ),
            row=1,
            col=column,
        )
        row_notes(figure, column, names, [p_text(float(p)) for p in part["p_value"]])
        figure.add_vline(x=0, line={"color": "#444", "width": 1}, row=1, col=column)
        figure.update_xaxes(title_text=f"difference to {baseline}", row=1, col=column)
    n = sorted({int(v) for v in table["n"]})
    confidence = float(table["confidence"].iloc[0]) if "confidence" in table.columns else 0.95
    subtitle = [
        f"n = {' / '.join(map(str, n))} paired examples (the same examples for every run) · baseline: {baseline}",
        f"bars: difference with its {confidence:.0%} paired bootstrap interval; p: two-sided paired permutation test",
    ]
    return titled(
        figure,
        title or f"Decoding runs against {baseline}",
        subtitle,
        plot_size=(plot_w, max(ROW_PX * len(runs), 150)),
        left=text_width(runs) + 24,
        right=note_px + 10,
        bottom=70,
        top_extra=24,
        caution=small_sample_caveat(min(n)),
    )
