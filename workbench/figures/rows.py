"""Panels side by side that share one row per run (or method): each run's name written once,
level, at the left; each panel followed by a column of per-row notes (p-values, ratios), one per
row, so that no label meets another however close the values are. Paired comparisons and the cost
figure use it."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.figures.style import text_width

ROW_PX, PANEL_PX, GAP_PX = 30, 230, 24  # a row's height, a panel's plotting width, the space after a note column
NOTE_FONT = 11  # the per-row notes beside a panel


def row_panels(titles: Sequence[str], rows: Sequence[str], notes: Sequence[str]) -> tuple[go.Figure, int, int]:
    """Panels side by side sharing one row per name of `rows` (the first on top), each followed by
    room for a column of per-row notes as wide as the widest of `notes` (the last panel's in the
    right margin); returns the figure, the width of its plotting area and the notes' width."""
    note_px = text_width(notes, NOTE_FONT) + 12
    plot_w = len(titles) * PANEL_PX + (len(titles) - 1) * (note_px + GAP_PX)
    spacing = (note_px + GAP_PX) / plot_w if len(titles) > 1 else 0.0
    figure = make_subplots(rows=1, cols=len(titles), subplot_titles=list(titles), shared_yaxes=True, horizontal_spacing=spacing)
    figure.update_yaxes(categoryorder="array", categoryarray=list(rows)[::-1])
    return figure, plot_w, note_px


def row_notes(figure: go.Figure, column: int, rows: Sequence[str], notes: Sequence[str]) -> None:
    """`notes[i]` in the column right of panel `column`, level with row `rows[i]`."""
    for row, note in zip(rows, notes):
        figure.add_annotation(
            x=1, xref="x domain", xanchor="left", xshift=6, y=row, text=note, showarrow=False, font={"size": NOTE_FONT},
            row=1, col=column,
        )  # fmt: skip
