"""Cost of the methods: seconds per example for each method and, when the table has metric values,
each metric with its interval on the same rows, so the price of a gain is read across a row.

Input: a table with `method, seconds_per_example` and optionally `metric, value, low, high`
(one row per method and metric)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.errors import InputError
from workbench.figures.colours import ColourMap, series_colours
from workbench.figures.rows import ROW_PX, row_notes, row_panels
from workbench.figures.style import text_width, titled


def efficiency_figure(
    table: pd.DataFrame,
    *,
    title: str = "Cost of each method",
    subtitle: str = "bars: wall-clock seconds per example",
    colours: ColourMap | None = None,
) -> go.Figure:
    """One row per method: a bar of its seconds per example with the ratio to the first method
    beside it, then one panel per metric with the method's value and interval. `colours` maps
    method (run) names to colours; methods it lacks get free ones."""
    missing = [column for column in ("method", "seconds_per_example") if column not in table.columns]
    if missing:
        raise InputError(f"efficiency table lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise InputError("efficiency table has no rows")
    costs = table.drop_duplicates("method")
    methods = [str(method) for method in costs["method"]]
    seconds = costs["seconds_per_example"].astype(float).to_numpy()
    metrics = list(dict.fromkeys(table["metric"])) if {"metric", "value"} <= set(table.columns) else []
    colours = series_colours(methods, colours)
    ratios = [f"{s / seconds[0]:.2f}×" if seconds[0] > 0 else "" for s in seconds]
    figure, plot_w, note_px = row_panels(["seconds per example", *metrics], methods, ratios)
    figure.add_trace(
        go.Bar(
            y=methods,
            x=seconds,
            orientation="h",
            marker_color=[colours[m] for m in methods],
            hovertemplate="%{y}: %{x:.3f} s per example<extra></extra>",
            showlegend=False,
            name="seconds per example",
        ),
        row=1,
        col=1,
    )
    row_notes(figure, 1, methods, ratios)
    figure.update_xaxes(title_text="seconds", rangemode="tozero", row=1, col=1)
    for column, metric in enumerate(metrics, start=2):
        part = table[table["metric"] == metric]
        intervals = {"low", "high"} <= set(part.columns)
        values = part["value"].astype(float)
        figure.add_trace(
            go.Scatter(
                y=[str(m) for m in part["method"]],
                x=values,
                mode="markers",
                marker={"size": 11, "color": [colours[str(m)] for m in part["method"]]},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": part["high"].astype(float) - values,
                    "arrayminus": values - part["low"].astype(float),
                    "color": "#2c3e50",
                }
                if intervals
                else None,
                hovertemplate=f"%{{y}}: {metric} %{{x:.4f}}<extra></extra>",
                showlegend=False,
                name=metric,
            ),
            row=1,
            col=column,
        )
    return titled(
        figure,
        title,
        [subtitle, f"beside the bars: the ratio to {methods[0]}"
         + (" · points: each metric with its interval, on the method's row" if metrics else "")],
        plot_size=(plot_w, max(ROW_PX * len(methods), 150)),
        left=text_width(methods) + 24,
        right=note_px + 10,
        bottom=70,
        top_extra=24,
    )  # fmt: skip
