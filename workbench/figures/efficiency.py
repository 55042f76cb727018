"""Cost of the methods: seconds per example for each method and, when the table has metric values,
each metric against that cost (with its interval), so the price of a gain is visible.

Input: a table with `method, seconds_per_example` and optionally `metric, value, low, high`
(one row per method and metric)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import InputError
from workbench.figures.style import set_colour, titled


def efficiency_figure(
    table: pd.DataFrame,
    *,
    title: str = "Cost of each method",
    subtitle: str = "bars: wall-clock seconds per example, with the ratio to the first method · points: each metric "
    "with its interval against that cost",
) -> go.Figure:
    """A bar of seconds per example per method (with its ratio to the first method), then one
    panel per metric: the metric against seconds per example."""
    missing = [column for column in ("method", "seconds_per_example") if column not in table.columns]
    if missing:
        raise InputError(f"efficiency table lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise InputError("efficiency table has no rows")
    costs = table.drop_duplicates("method")
    methods = list(costs["method"])
    seconds = costs["seconds_per_example"].astype(float).to_numpy()
    has_metrics = {"metric", "value"} <= set(table.columns)
    metrics = list(dict.fromkeys(table["metric"])) if has_metrics else []
    figure = make_subplots(
        rows=1,
        cols=1 + len(metrics),
        subplot_titles=["seconds per example", *[f"{metric} against cost" for metric in metrics]],
        horizontal_spacing=0.12,
    )
    colours = {method: set_colour(method, index) for index, method in enumerate(methods)}
    figure.add_trace(
        go.Bar(
            x=methods,
            y=seconds,
            marker_color=[colours[m] for m in methods],
            text=[f"{s / seconds[0]:.2f}× {methods[0]}" if seconds[0] > 0 else "" for s in seconds],
            textposition="outside",
            showlegend=False,
            name="seconds per example",
        ),
        row=1,
        col=1,
    )
    for column, metric in enumerate(metrics, start=2):
        part = table[table["metric"] == metric]
        intervals = {"low", "high"} <= set(part.columns)
        for method, row in zip(part["method"], part.itertuples()):
            value = float(row.value)
            figure.add_trace(
                go.Scatter(
                    x=[float(row.seconds_per_example)],
                    y=[value],
                    mode="markers+text",
                    text=[method],
                    textposition="top center",
                    marker={"size": 11, "color": colours.get(method, set_colour(method))},
                    error_y=_interval(value, row) if intervals else None,
                    showlegend=False,
                    name=method,
                ),
                row=1,
                col=column,
            )
        figure.update_xaxes(title_text="seconds per example", rangemode="tozero", row=1, col=column)
        figure.update_yaxes(title_text=metric, row=1, col=column)
    figure.update_yaxes(title_text="seconds per example", rangemode="tozero", row=1, col=1)
    figure.update_xaxes(tickangle=-30, row=1, col=1)
    return titled(figure, title, subtitle, plot_size=(320 * (1 + len(metrics)), 360), bottom=110)


def _interval(value: float, row) -> dict:
    return {"type": "data", "symmetric": False, "array": [float(row.high) - value], "arrayminus": [value - float(row.low)]}
