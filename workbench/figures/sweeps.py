"""Parameter sweeps: a metric (or ΔNLL) against the number of heads K or the contrast strength γ,
one line per group (method, head set, ...), each with its confidence band."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from workbench.errors import InputError
from workbench.figures.colours import ColourMap, series_colours
from workbench.figures.style import titled


def _band_colour(colour: str) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, 0.18)"


def sweep_plot(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    group: str | None = None,
    low: str | None = None,
    high: str | None = None,
    title: str,
    x_title: str | None = None,
    y_title: str | None = None,
    subtitle: Sequence[str] | str = (),
    colours: ColourMap | None = None,
) -> go.Figure:
    """`y` against `x`, one line per value of `group`, with a shaded band between the `low` and
    `high` columns when both are given. `colours` maps group names (runs, head sets) to colours;
    groups it lacks get free ones."""
    needed = {x, y} | {c for c in (group, low, high) if c}
    missing = needed - set(frame.columns)
    if missing:
        raise InputError(f"sweep table lacks column(s) {', '.join(sorted(missing))}")
    if frame.empty:
        raise InputError("sweep table has no rows")
    figure = go.Figure()
    groups = list(frame.groupby(group, sort=False)) if group else [(y, frame)]
    colours = series_colours([str(name) for name, _ in groups], colours)
    for name, part in groups:
        part = part.sort_values(x)
        colour = colours[str(name)]
        if low and high:
            figure.add_trace(
                go.Scatter(
                    x=list(part[x]) + list(part[x])[::-1],
                    y=list(part[high]) + list(part[low])[::-1],
                    mode="lines",
                    fill="toself",
                    fillcolor=_band_colour(colour),
                    line={"width": 0},
                    showlegend=False,
                    hoverinfo="skip",
                    name=f"{name} interval",
                    legendgroup=str(name),
                )
            )
        figure.add_trace(
            go.Scatter(
                x=part[x],
                y=part[y],
                mode="lines+markers",
                name=str(name),
                legendgroup=str(name),
                line={"color": colour, "width": 2},
                marker={"size": 7},
            )
        )
    figure.update_xaxes(title_text=x_title or x)
    figure.update_yaxes(title_text=y_title or y)
    return titled(figure, title, subtitle, plot_size=(560, 340), legend=True)
