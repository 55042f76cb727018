"""Figures of the ablation audit (`workbench audit`): how far the ablation kinds agree on which
heads matter (a kinds × kinds matrix) and each kind's head map, side by side on one scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.figures.heatmaps import HeatmapPanel, heatmap_panels
from workbench.figures.style import DIVERGING, titled

DELTA_LABEL = "Δ NLL (nats/token)"


def agreement_figure(agreement: pd.DataFrame, *, title: str = "Do the ablation kinds agree on which heads matter?") -> go.Figure:
    """Every pair of kinds: the Spearman correlation of the heads' mean Δ NLL (colour) with its
    interval, and how many of their top-K heads they share, from `audit_agreement.csv`."""
    if agreement.empty:
        raise InputError("the agreement table is empty: an audit compares at least two kinds")
    kinds = list(dict.fromkeys([*agreement["kind_a"], *agreement["kind_b"]]))
    index = {kind: i for i, kind in enumerate(kinds)}
    size = len(kinds)
    matrix = np.eye(size)
    text = [["" for _ in kinds] for _ in kinds]
    k, n = int(agreement["k"].iloc[0]), int(agreement["n"].iloc[0])
    for i in range(size):
        text[i][i] = f"1<br>{k}/{k}"
    for row in agreement.itertuples():
        i, j = index[row.kind_a], index[row.kind_b]
        matrix[i, j] = matrix[j, i] = row.spearman
        cell = f"{row.spearman:.2f}<br>[{row.spearman_low:.2f}, {row.spearman_high:.2f}]<br>{row.shared_top_k}/{k}"
        text[i][j] = text[j][i] = cell
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=kinds,
            y=kinds,
            zmin=-1,
            zmax=1,
            colorscale=DIVERGING,
            colorbar={"title": {"text": "Spearman ρ", "side": "right"}, "thickness": 16},
            text=text,
            texttemplate="%{text}",
            textfont={"size": 12},
            hoverinfo="skip",
        )
    )
    cell_px = 118
    label_px = int(7.5 * max(len(kind) for kind in kinds)) + 30
    figure.update_yaxes(autorange="reversed", automargin=False)
    figure.update_xaxes(tickangle=-30, automargin=False)
    subtitle = [
        f"cell: Spearman ρ of the {n} examples' mean Δ NLL per head, its 95% bootstrap interval over examples, "
        f"and the heads the two top-{k} sets share"
    ]
    return titled(figure, title, subtitle, plot_size=(cell_px * size, cell_px * size), left=label_px, right=120,
                  bottom=int(label_px * 0.6) + 40)  # fmt: skip


def kind_maps(
    grids: Mapping[str, np.ndarray],
    *,
    highlights: Mapping[str, Sequence[Head]] | None = None,
    n: int,
    title: str = "Each head's Δ NLL under each ablation kind (one colour scale)",
    columns: int | None = None,
) -> go.Figure:
    """One layer × head map per ablation kind (mean over `n` examples), its top-K ringed."""
    panels = [HeatmapPanel(np.asarray(grid, dtype=float), f"<b>{kind}</b>", tuple((highlights or {}).get(kind, ())))
              for kind, grid in grids.items()]  # fmt: skip
    subtitle = f"mean over {n} examples with the profile; ringed: each kind's top heads; grey: heads not scored"
    return heatmap_panels(panels, title=title, subtitle=subtitle, value_label=DELTA_LABEL, columns=columns or min(len(panels), 3))
