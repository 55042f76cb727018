"""What every figure shares: the template, fonts, the diverging scale, colours of head sets, and
titles with a subtitle that states what the numbers are."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

import plotly.graph_objects as go

TEMPLATE = "plotly_white"
FONT = {"family": "DejaVu Sans, Arial, sans-serif", "size": 13}
DIVERGING = "RdBu_r"  # blue below zero, red above, white at zero
SET_COLOURS = {"preference": "#c0392b", "random": "#7f7f7f", "retrieval": "#2471a3", "induction": "#7d3c98", "greedy": "#34495e"}
OTHER_COLOURS = ("#d68910", "#17a589", "#5d6d7e", "#a04000", "#1abc9c")
SUBTITLE_CHAR_PX = 7.6  # about the width of one subtitle character at the shared font size
LEGEND_GAP_PX = 72  # between the plotting area and a legend below it (room for the x axis title)


def set_colour(name: str, index: int = 0) -> str:
    """The colour of a head set (or run) by name (random-* controls grey); others cycle through a fixed palette."""
    if name.startswith("random"):
        return SET_COLOURS["random"]
    return SET_COLOURS.get(name, OTHER_COLOURS[index % len(OTHER_COLOURS)])


def wrapped(line: str, width_px: int) -> list[str]:
    """`line` broken into lines that fit `width_px`: at its " · " and "; " joints where possible,
    else between words."""
    limit = max(20, int(width_px / SUBTITLE_CHAR_PX))
    tokens = re.split(r"( · |; )", line)
    lines = [tokens[0]]
    for joint, piece in zip(tokens[1::2], tokens[2::2]):
        if len(lines[-1]) + len(joint) + len(piece) <= limit:
            lines[-1] += joint + piece
        else:
            lines[-1] += joint.rstrip(" ·")
            lines.append(piece)
    return [short for long in lines for short in textwrap.wrap(long, limit, break_on_hyphens=False)]


def legend_entries(figure: go.Figure) -> int:
    """How many entries the figure's legend lists (heatmaps are never listed unless asked)."""
    return sum(
        1
        for trace in figure.data
        if trace.showlegend is True or (trace.showlegend is None and trace.type != "heatmap" and trace.name)
    )


def titled(
    figure: go.Figure,
    title: str,
    subtitle: Sequence[str] | str = (),
    *,
    plot_size: tuple[int, int],
    left: int = 80,
    right: int = 30,
    bottom: int = 60,
    top_extra: int = 0,
    legend: bool = False,
) -> go.Figure:
    """Apply the shared layout: `title`, then `subtitle` lines (what was measured, n, intervals)
    wrapped to the figure's width, around a plotting area of `plot_size` (width, height) pixels;
    `left` / `right` / `bottom` margins leave room for labels, a colour bar or x labels, `top_extra` for panel
    titles; `legend` puts the legend below the x axis title."""
    width = plot_size[0] + left + right
    lines = [piece for line in ([subtitle] if isinstance(subtitle, str) else subtitle) if line for piece in wrapped(line, width)]
    top = 64 + 19 * len(lines) + top_extra
    legend_height = 0
    if legend:
        legend_height = LEGEND_GAP_PX + 22 * legend_entries(figure)
        figure.update_layout(
            showlegend=True,
            legend={"yanchor": "top", "y": -(bottom - 60 + LEGEND_GAP_PX) / plot_size[1], "xanchor": "left", "x": 0.0},
        )
    figure.update_layout(
        title={
            "text": title,
            "subtitle": {"text": "<br>".join(lines)},
            "x": 0.01,
            "xanchor": "left",
            "y": 0.995,
            "yanchor": "top",
        },
        template=TEMPLATE,
        font=FONT,
        width=width,
        height=plot_size[1] + top + bottom + legend_height,
        margin={"t": top, "l": left, "r": right, "b": bottom + legend_height},
    )
    return figure


def p_text(p_value: float) -> str:
    """A p-value as a reader expects it: two significant digits, never rounded to 0."""
    if p_value != p_value:  # NaN
        return "p n/a"
    return f"p = {p_value:.2g}" if p_value >= 0.001 else "p < 0.001"
