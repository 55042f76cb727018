"""Plotly figures of the paper's kinds: per-layer x head score heatmaps, head-set overlaps and
parameter sweeps with confidence bands. Each takes plain tensors / DataFrames and returns a
`plotly.graph_objects.Figure`; `save_figure` exports HTML and PNG atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench import io
from workbench.errors import InputError
from workbench.masks import Head


def score_grid(frame: pd.DataFrame, value: str = "pcs") -> np.ndarray:
    """The mean of `value` per (layer, head) of a tidy score table, as a [layer, head] array."""
    missing = {"layer", "head", value} - set(frame.columns)
    if missing:
        raise InputError(f"score table lacks column(s) {', '.join(sorted(missing))}")
    means = frame.groupby(["layer", "head"])[value].mean()
    grid = np.full((int(frame["layer"].max()) + 1, int(frame["head"].max()) + 1), np.nan)
    for (layer, head), mean in means.items():
        grid[int(layer), int(head)] = mean
    return grid


def head_heatmap(
    grid: np.ndarray,
    *,
    title: str,
    value_label: str = "PCS (Δ NLL, nats/token)",
    highlight: Sequence[Head] = (),
    ci_low: np.ndarray | None = None,
    ci_high: np.ndarray | None = None,
) -> go.Figure:
    """Layers on the y axis (0 at the bottom), heads on x, a diverging scale centred on 0.
    `highlight` heads get a marker; the hover text shows the confidence interval when given."""
    grid = np.asarray(grid, dtype=float)
    if grid.ndim != 2:
        raise InputError(f"a head heatmap needs a [layer, head] grid, got shape {grid.shape}")
    limit = float(np.nanmax(np.abs(grid))) or 1.0
    hover = [
        [f"layer {layer}, head {head}<br>{value_label}: {grid[layer, head]:.4f}" for head in range(grid.shape[1])]
        for layer in range(grid.shape[0])
    ]
    if ci_low is not None and ci_high is not None:
        for layer in range(grid.shape[0]):
            for head in range(grid.shape[1]):
                hover[layer][head] += f"<br>95% CI [{ci_low[layer, head]:.4f}, {ci_high[layer, head]:.4f}]"
    figure = go.Figure(
        go.Heatmap(
            z=grid,
            x=list(range(grid.shape[1])),
            y=list(range(grid.shape[0])),
            colorscale="RdBu_r",
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": value_label},
            hovertext=hover,
            hoverinfo="text",
        )
    )
    if highlight:
        figure.add_trace(
            go.Scatter(
                x=[head for _, head in highlight],
                y=[layer for layer, _ in highlight],
                mode="markers",
                marker={"symbol": "circle-open", "size": 12, "color": "black", "line": {"width": 2}},
                name=f"selected ({len(highlight)})",
                hoverinfo="skip",
            )
        )
    figure.update_layout(
        title=title,
        xaxis_title="head",
        yaxis_title="layer",
        width=max(420, 60 * grid.shape[1] + 220),
        height=max(420, 22 * grid.shape[0] + 160),
        legend={"orientation": "h", "y": -0.12},
        template="plotly_white",
    )
    return figure


def pcs_heatmap(result, *, highlight: Sequence[Head] = (), title: str | None = None) -> go.Figure:
    """A `PCSResult`'s mean score per head, its seeded bootstrap interval in the hover text."""
    meta = result.metadata
    low, high = (bound.numpy() for bound in result.bootstrap_ci(seed=meta.get("seed") or 0))
    default = f"{meta.get('variant') or ''} PCS<br><sup>{meta.get('task') or ''}, {result.n_examples} examples, {meta.get('model') or ''}</sup>"
    return head_heatmap(result.mean().numpy(), title=title or default, highlight=highlight, ci_low=low, ci_high=high)


def jaccard(first: set[Head], second: set[Head]) -> float:
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def overlap_heatmap(head_sets: Mapping[str, Sequence[Head]], *, title: str) -> go.Figure:
    """Pairwise Jaccard overlap of named head sets (e.g. clusters, seeds, variants)."""
    names = list(head_sets)
    if len(names) < 2:
        raise InputError("an overlap figure needs at least two head sets")
    sets = [set(map(tuple, head_sets[name])) for name in names]
    matrix = np.array([[jaccard(a, b) for b in sets] for a in sets])
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=names,
            y=names,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar={"title": "Jaccard"},
            text=np.round(matrix, 2),
            texttemplate="%{text}",
        )
    )
    off_diagonal = [matrix[i, j] for i, j in combinations(range(len(names)), 2)]
    figure.update_layout(
        title=f"{title}<br><sup>mean off-diagonal Jaccard {np.mean(off_diagonal):.3f}</sup>",
        template="plotly_white",
        width=max(480, 50 * len(names) + 260),
        height=max(440, 50 * len(names) + 200),
    )
    return figure


def sweep_plot(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    group: str | None = None,
    low: str | None = None,
    high: str | None = None,
    title: str,
) -> go.Figure:
    """A metric against a parameter (γ, number of heads, ...), one line per `group`, with a
    shaded confidence band when `low` / `high` columns are given."""
    needed = {x, y} | {c for c in (group, low, high) if c}
    missing = needed - set(frame.columns)
    if missing:
        raise InputError(f"sweep table lacks column(s) {', '.join(sorted(missing))}")
    figure = go.Figure()
    groups = frame.groupby(group, sort=False) if group else [(y, frame)]
    for name, part in groups:
        part = part.sort_values(x)
        if low and high:
            figure.add_trace(
                go.Scatter(
                    x=list(part[x]) + list(part[x])[::-1],
                    y=list(part[high]) + list(part[low])[::-1],
                    fill="toself",
                    opacity=0.2,
                    line={"width": 0},
                    showlegend=False,
                    hoverinfo="skip",
                    name=f"{name} CI",
                )
            )
        figure.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers", name=str(name)))
    figure.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white", width=640, height=420)
    return figure


def save_figure(figure: go.Figure, stem: str | Path, *, png: bool = True) -> list[Path]:
    """Write `stem.html` (self-contained) and, unless `png=False`, `stem.png`; both atomically."""
    stem = Path(stem)
    written = [stem.with_suffix(".html")]
    with io.atomic_path(written[0]) as temporary:
        figure.write_html(temporary, include_plotlyjs=True, full_html=True)
    if png:
        written.append(stem.with_suffix(".png"))
        with io.atomic_path(written[1]) as temporary:
            figure.write_image(temporary, format="png", scale=2)
    return written


def validation_bars(summary: pd.DataFrame, *, title: str) -> go.Figure:
    """The validation study: mean ΔNLL per head set, one bar group per condition (profile,
    no-profile, profile-specific), with the bootstrap interval as error bars."""
    needed = {"head_set", "condition", "mean_delta_nll", "ci_low", "ci_high"}
    missing = needed - set(summary.columns)
    if missing:
        raise InputError(f"validation table lacks column(s) {', '.join(sorted(missing))}")
    figure = go.Figure()
    for condition, part in summary.groupby("condition", sort=False):
        figure.add_trace(
            go.Bar(
                x=part["head_set"],
                y=part["mean_delta_nll"],
                name=str(condition),
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": part["ci_high"] - part["mean_delta_nll"],
                    "arrayminus": part["mean_delta_nll"] - part["ci_low"],
                },
            )
        )
    figure.update_layout(
        title=title,
        barmode="group",
        xaxis_title="ablated head set",
        yaxis_title="Δ NLL of the reference (nats/token)",
        template="plotly_white",
        width=720,
        height=440,
    )
    return figure
