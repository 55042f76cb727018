"""What every figure shares: the template, fonts, the diverging scale, colours of head sets, and
titles with a subtitle that states what the numbers are (and, on the interactive page only, what
hovering shows: `static_version` is the figure as a PNG or SVG shows it)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

import plotly.graph_objects as go

from workbench.figures.colours import series_colours

TEMPLATE = "plotly_white"
FONT_SIZE = 13
FONT = {"family": "DejaVu Sans, Arial, sans-serif", "size": FONT_SIZE}
DIVERGING = "RdBu_r"  # blue below zero, red above, white at zero
SET_COLOURS = {"preference": "#c0392b", "random": "#7f7f7f", "retrieval": "#2471a3", "induction": "#7d3c98"}
CAUTION_COLOUR = "#a93226"  # the caution line of a subtitle (too few examples)
SUBTITLE_CHAR_PX = 7.6  # about the width of one subtitle character at the shared font size
CHAR_EM = 0.62  # at most about the width of one character of the shared font, in units of its size
LEGEND_GAP_PX = 72  # between the plotting area and a legend below it (room for the x axis title)
STATIC = "static"  # the key in `layout.meta` of the heading a static export shows (no hover hints)


def head_set_colours(names: Sequence[str]) -> dict[str, str]:
    """Colours of head sets: the preference, random, retrieval and induction sets their own, any
    other set one no other has."""
    return series_colours(names, {name: SET_COLOURS[name] for name in names if name in SET_COLOURS})


def text_width(texts: Sequence[str], size: float = FONT_SIZE) -> int:
    """About the width in pixels of the widest of `texts` at font `size`, for the room that must hold them."""
    return int(CHAR_EM * size * max((len(text) for text in texts), default=0)) + 1


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
    caution: str | None = None,
    hover: str = "",
) -> go.Figure:
    """Apply the shared layout: `title`, then `subtitle` lines (what was measured, n, intervals)
    wrapped to the figure's width, then `caution` in red (why the numbers cannot mean much), then
    `hover` (what hovering shows: on the interactive page only, see `static_version`), around a
    plotting area of `plot_size` (width, height) pixels; `left` / `right` / `bottom` margins leave
    room for labels, a colour bar or x labels, `top_extra` for panel titles; `legend` puts the
    legend below the x axis title."""
    width = plot_size[0] + left + right
    lines = [piece for line in ([subtitle] if isinstance(subtitle, str) else subtitle) if line for piece in wrapped(line, width)]
    lines += [f'<span style="color:{CAUTION_COLOUR}">{piece}</span>' for piece in (wrapped(caution, width) if caution else [])]
    legend_height = 0
    if legend:
        legend_height = LEGEND_GAP_PX + 22 * legend_entries(figure)
        figure.update_layout(
            showlegend=True,
            legend={"yanchor": "top", "y": -(bottom - 60 + LEGEND_GAP_PX) / plot_size[1], "xanchor": "left", "x": 0.0},
        )

    def heading(shown: list[str]) -> dict:
        top = 64 + 19 * len(shown) + top_extra
        return {"subtitle": "<br>".join(shown), "top": top, "height": plot_size[1] + top + bottom + legend_height}

    static, interactive = heading(lines), heading(lines + (wrapped(hover, width) if hover else []))
    figure.update_layout(
        title={
            "text": title,
            "subtitle": {"text": interactive["subtitle"]},
            "x": 0.01,
            "xanchor": "left",
            "y": 1.0,
            "yref": "container",
            "yanchor": "top",
            "pad": {"t": 8},
        },
        template=TEMPLATE,
        font=FONT,
        width=width,
        height=interactive["height"],
        margin={"t": interactive["top"], "l": left, "r": right, "b": bottom + legend_height},
        meta={STATIC: static} if hover else None,
    )
    return figure


def static_version(figure: go.Figure) -> go.Figure:
    """The figure as a static export (PNG, SVG) shows it: without the subtitle lines that say what
    hovering shows, and as much less tall. The figure itself is not changed."""
    meta = figure.layout.meta
    static = meta.get(STATIC) if isinstance(meta, dict) else None
    if not static:
        return figure
    copy = go.Figure(figure)
    copy.update_layout(title_subtitle_text=static["subtitle"], margin_t=static["top"], height=static["height"], meta=None)
    return copy


def p_text(p_value: float) -> str:
    """A p-value as a reader expects it: two significant digits, never rounded to 0."""
    if p_value != p_value:  # NaN
        return "p n/a"
    return f"p = {p_value:.2g}" if p_value >= 0.001 else "p < 0.001"
