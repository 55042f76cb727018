"""The studio's figures (plotly, no web framework): the clickable head map, the NLL bars and the
per-token damage, plus the colour scale of the damage shown on the reference text."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from workbench.figures import head_heatmap
from workbench.figures.heatmaps import RING
from workbench.studio.session import NLLReport

CLEAN_COLOUR, ABLATED_COLOUR = "#4c78a8", "#e45756"
SELECTION_UID = "selected-heads"  # the map trace whose points the page moves to the selected heads


def head_map(grid: np.ndarray, *, title: str) -> go.Figure:
    """The layer × head heatmap plus an empty trace (uid `SELECTION_UID`) where the page rings the
    selected heads; clicking a cell or a ring gives the head as `x` and the layer as `y`."""
    figure = head_heatmap(grid, title=title)
    figure.add_trace(
        go.Scatter(
            x=[],
            y=[],
            uid=SELECTION_UID,
            mode="markers",
            marker=RING,
            name="selected heads",
            showlegend=False,
            hoverinfo="skip",
        )
    )
    figure.update_layout(
        clickmode="event", margin={"t": 60, "l": 60, "r": 20, "b": 60}, uirevision="head-map", width=None, autosize=True
    )
    figure.update_xaxes(dtick=1)
    figure.update_yaxes(dtick=1 if grid.shape[0] <= 32 else 2)
    return figure


def nll_figure(report: NLLReport, *, title: str) -> go.Figure:
    """Mean reference NLL per condition, clean beside ablated."""
    names = [condition.name for condition in report.conditions]
    figure = go.Figure(
        [
            go.Bar(name="clean", x=names, y=[c.clean for c in report.conditions], marker_color=CLEAN_COLOUR),
            go.Bar(
                name=f"{report.n_heads} heads ablated ({report.ablation})",
                x=names,
                y=[c.ablated for c in report.conditions],
                marker_color=ABLATED_COLOUR,
                text=[f"Δ {c.delta:+.3f}" for c in report.conditions],
                textposition="outside",
            ),
        ]
    )
    figure.update_layout(
        title=title,
        barmode="group",
        yaxis_title="reference NLL (nats/token)",
        template="plotly_white",
        width=560,
        height=360,
        legend={"orientation": "h", "y": -0.15},
    )
    return figure


def per_token_figure(report: NLLReport, *, title: str) -> go.Figure:
    """Each reference token's NLL rise under the first condition (the chosen profile state)."""
    condition = report.conditions[0]
    delta = condition.ablated_tokens - condition.clean_tokens
    labels = [f"{index}:{token!r}" for index, token in enumerate(report.tokens)]
    figure = go.Figure(go.Bar(x=labels, y=delta, marker_color=[damage_colour(value, _limit(delta)) for value in delta]))
    figure.update_layout(
        title=title,
        yaxis_title="Δ NLL (nats)",
        template="plotly_white",
        width=max(560, 18 * len(labels) + 160),
        height=360,
        xaxis={"tickangle": -60},
    )
    return figure


def _limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def damage_scale(values: np.ndarray) -> float:
    """The value that gets the strongest colour: the largest absolute change (at least 0.5 nats,
    so that noise on an almost unchanged reference stays pale)."""
    return max(0.5, _limit(np.asarray(values, dtype=float)))


def damage_colour(value: float, limit: float) -> str:
    """Red for a token made less likely (damage), blue for more likely, white for no change."""
    strength = 0.0 if not np.isfinite(value) else min(1.0, abs(value) / limit)
    red, green, blue = (228, 87, 86) if value > 0 else (76, 120, 168)
    mix = lambda channel: round(255 + (channel - 255) * strength)
    return f"rgb({mix(red)}, {mix(green)}, {mix(blue)})"
