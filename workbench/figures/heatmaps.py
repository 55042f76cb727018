"""Layer × head maps of head scores: one map, maps side by side (paper PCS beside profile-contrast
PCS) and one map per user cluster, always on one diverging scale centred at 0, every layer and
head labelled, the selected heads ringed and, where a hybrid result mixes exact ablations with
attribution estimates, the estimated cells dotted."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from jaxtyping import Bool, Float
from plotly.subplots import make_subplots

from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.figures.style import DIVERGING, titled
from workbench.scores.results import PCSResult

Grid = Float[np.ndarray, "layer head"]
Flags = Bool[np.ndarray, "layer head"]
PCS_LABEL = "PCS (Δ NLL, nats/token)"
INTERVAL = "95% percentile-bootstrap interval over examples"
SELECTED = "selected heads (ringed)"
RING = {"symbol": "circle-open", "size": 15, "color": "black", "line": {"width": 2.5}}  # the marker of a selected head
ESTIMATED = "attribution estimate (dotted); undotted cells: exact ablation"
HOVER = f"hover: mean over examples and its {INTERVAL}"  # on the interactive page only


def score_grid(frame: pd.DataFrame, value: str = "pcs") -> Grid:
    """The mean of `value` per (layer, head) of a tidy score table, as a [layer, head] array."""
    missing = {"layer", "head", value} - set(frame.columns)
    if missing:
        raise InputError(f"score table lacks column(s) {', '.join(sorted(missing))}")
    means = frame.groupby(["layer", "head"])[value].mean()
    grid = np.full((int(frame["layer"].max()) + 1, int(frame["head"].max()) + 1), np.nan)
    for (layer, head), mean in means.items():
        grid[int(layer), int(head)] = mean
    return grid


@dataclass(frozen=True)
class HeatmapPanel:
    """One layer × head map: its values, what to mark and the interval shown on hover.
    `estimated[l, h]` is True where the value is an attribution estimate, not an exact ablation."""

    grid: Grid
    title: str = ""
    highlight: Sequence[Head] = ()
    ci_low: Grid | None = None
    ci_high: Grid | None = None
    estimated: Flags | None = None

    @classmethod
    def of_scores(cls, result: PCSResult, *, title: str = "", highlight: Sequence[Head] = ()) -> HeatmapPanel:
        """A PCS result's mean per head, its seeded bootstrap interval and its exact/estimated flags."""
        low, high = result.bootstrap_ci()
        return cls(result.mean().numpy(), title, tuple(highlight), low.numpy(), high.numpy(), (~result.exact).numpy())


def describe_scores(result: PCSResult) -> dict[str, str]:
    """How a PCS result was made, one short phrase per aspect (method, variant, ablation, n, model, data)."""
    meta = result.metadata
    n_exact, total = int(result.exact.sum()), result.exact.numel()
    method = str(meta.get("method") or ("exact" if n_exact == total else "attribution" if n_exact == 0 else "hybrid"))
    if method == "hybrid":
        method_phrase = f"hybrid PCS: {n_exact} of {total} heads exact ablations, the rest attribution estimates"
    elif method == "exact":
        method_phrase = "exact PCS (every head ablated)"
    elif method == "attribution":
        method_phrase = "attribution PCS (first-order estimates)"
    else:
        method_phrase = f"{method} PCS"
    certificate, racing = meta.get("certificate"), meta.get("racing")
    if certificate and certificate["threshold"] is not None:
        method_phrase += (f"; certified: ≤ {certificate['bound']:.2f} of the other heads above the top-{certificate['top_k']}'s "
                          f"K-th ({certificate['confidence']:.0%}, {len(certificate['sample'])} sampled)")  # fmt: skip
    if racing:
        method_phrase += f"; raced: {racing['head_examples']} of {racing['head_examples_without_racing']} head-examples scored"
    users = len(set(result.user_ids))
    data = " ".join(str(meta[key]) for key in ("task", "split") if meta.get(key))
    described = {
        "method": method_phrase,
        "variant": f"{meta['variant']} variant" if meta.get("variant") else "",
        "ablation": f"{meta['ablation']} ablation" if meta.get("ablation") else "",
        "n": f"n = {result.n_examples} examples from {users} user{'s' if users != 1 else ''}",
        "model": str(meta.get("model") or ""),
        "data": data,
    }
    return {key: value for key, value in described.items() if value}


def head_heatmap(
    grid: Grid,
    *,
    title: str,
    value_label: str = PCS_LABEL,
    highlight: Sequence[Head] = (),
    ci_low: Grid | None = None,
    ci_high: Grid | None = None,
    estimated: Flags | None = None,
    subtitle: Sequence[str] | str = (),
) -> go.Figure:
    """One layer × head map (layer 0 at the bottom); see `heatmap_panels`."""
    panel = HeatmapPanel(np.asarray(grid, dtype=float), "", tuple(highlight), ci_low, ci_high, estimated)
    return heatmap_panels([panel], title=title, subtitle=subtitle, value_label=value_label)


def pcs_heatmap(result: PCSResult, *, highlight: Sequence[Head] = (), title: str | None = None) -> go.Figure:
    """A PCS result's mean per head; the subtitle names how it was made, the hover gives the interval."""
    described = describe_scores(result)
    title = title or f"Preference contribution score of every head ({result.metadata.get('variant') or 'PCS'})"
    return heatmap_panels(
        [HeatmapPanel.of_scores(result, highlight=highlight)], title=title, subtitle=" · ".join(described.values()), hover=HOVER
    )


def pcs_side_by_side(
    results: Mapping[str, PCSResult], *, highlights: Mapping[str, Sequence[Head]] | None = None, title: str | None = None
) -> go.Figure:
    """PCS maps side by side on one scale (e.g. the paper's standard PCS beside profile-contrast PCS)."""
    return _score_panels(
        results, highlights, title=title or "Preference contribution scores side by side (one colour scale)", columns=None
    )


def cluster_heatmaps(
    results: Mapping[Any, PCSResult],
    *,
    sizes: Mapping[Any, int] | None = None,
    highlights: Mapping[Any, Sequence[Head]] | None = None,
    columns: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """One PCS map per user cluster in a grid on one scale; each panel names its cluster's size
    (users in the cluster from `sizes`, else the distinct users scored)."""
    labelled = {}
    for cluster, result in results.items():
        size = (sizes or {}).get(cluster, len(set(result.user_ids)))
        labelled[f"cluster {cluster} ({size} user{'s' if size != 1 else ''})"] = result
    marks = {label: (highlights or {}).get(cluster, ()) for label, cluster in zip(labelled, results)}
    columns = columns or min(len(labelled), 4)
    return _score_panels(labelled, marks, title=title or f"PCS per user cluster ({len(labelled)} clusters)", columns=columns)


def _score_panels(
    results: Mapping[str, PCSResult], highlights: Mapping[str, Sequence[Head]] | None, *, title: str, columns: int | None
) -> go.Figure:
    """Labelled PCS results as panels: what all share goes in the subtitle, what differs in the panel titles."""
    if not results:
        raise InputError("no PCS results to draw")
    described = [describe_scores(result) for result in results.values()]
    shared = {key: value for key, value in described[0].items() if all(d.get(key) == value for d in described)}
    panels = []
    for (label, result), description in zip(results.items(), described):
        variant = str(result.metadata.get("variant") or "")
        own = [v for k, v in description.items() if k not in shared and not (k == "variant" and variant and variant in label)]
        heading = f"<b>{label}</b>" + (f"<br><sup>{' · '.join(own)}</sup>" if own else "")
        panels.append(HeatmapPanel.of_scores(result, title=heading, highlight=(highlights or {}).get(label, ())))
    return heatmap_panels(panels, title=title, subtitle=" · ".join(shared.values()), columns=columns, hover=HOVER)


def heatmap_panels(
    panels: Sequence[HeatmapPanel],
    *,
    title: str,
    subtitle: Sequence[str] | str = (),
    value_label: str = PCS_LABEL,
    columns: int | None = None,
    hover: str = "",
) -> go.Figure:
    """Maps of one model's heads in a grid of panels sharing one colour scale, symmetric about 0
    (blue: negative, red: positive); `hover` says what hovering shows (on the interactive page
    only). Traces per panel: the heatmap, then the ringed selected heads (when any), then dots on
    attribution-estimated cells (when a map mixes them with exact ones)."""
    if not panels:
        raise InputError("no head maps to draw")
    grids = [np.asarray(panel.grid, dtype=float) for panel in panels]
    if any(grid.ndim != 2 for grid in grids):
        raise InputError(f"a head heatmap needs a [layer, head] grid, got shape {next(g.shape for g in grids if g.ndim != 2)}")
    shape = grids[0].shape
    if any(grid.shape != shape for grid in grids):
        raise InputError(f"head maps of different shapes ({sorted({g.shape for g in grids})}) cannot share one scale")
    n_layers, n_heads = shape
    for panel in panels:
        outside = [head for head in panel.highlight if not (0 <= head[0] < n_layers and 0 <= head[1] < n_heads)]
        if outside:
            raise InputError(f"head {tuple(outside[0])} lies outside the {n_layers} layers x {n_heads} heads of the map")
    finite = np.abs(np.concatenate([grid[np.isfinite(grid)] for grid in grids]))
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0

    columns = min(columns or len(panels), len(panels))
    rows = math.ceil(len(panels) / columns)
    cell_w, cell_h = (34 if n_heads <= 16 else 22), (20 if n_layers <= 40 else 13)
    panel_w, panel_h = max(n_heads * cell_w, 200), max(n_layers * cell_h, 200)
    titled_panels = any(panel.title for panel in panels)
    gap_w, gap_h = 70, 90 if titled_panels else 50
    plot_w, plot_h = max(columns * panel_w + (columns - 1) * gap_w, 420), rows * panel_h + (rows - 1) * gap_h
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[panel.title for panel in panels] if titled_panels else None,
        horizontal_spacing=gap_w / plot_w if columns > 1 else 0.0,
        vertical_spacing=gap_h / plot_h if rows > 1 else 0.0,
    )
    shown: set[str] = set()
    for index, (panel, grid) in enumerate(zip(panels, grids)):
        row, col = index // columns + 1, index % columns + 1
        figure.add_trace(
            go.Heatmap(
                z=grid,
                x=list(range(n_heads)),
                y=list(range(n_layers)),
                coloraxis="coloraxis",
                hovertext=_hover(panel, grid, value_label),
                hoverinfo="text",
                xgap=1,
                ygap=1,
                name=panel.title or title,
            ),
            row=row,
            col=col,
        )
        if panel.highlight:
            figure.add_trace(
                go.Scatter(
                    x=[head for _, head in panel.highlight],
                    y=[layer for layer, _ in panel.highlight],
                    mode="markers",
                    marker=RING,
                    name=SELECTED,
                    legendgroup="selected",
                    showlegend="selected" not in shown,
                    hoverinfo="skip",
                ),
                row=row,
                col=col,
            )
            shown.add("selected")
        estimated = None if panel.estimated is None else np.asarray(panel.estimated, dtype=bool)
        if estimated is not None and estimated.any() and not estimated.all():
            layers, heads = np.nonzero(estimated)
            figure.add_trace(
                go.Scatter(
                    x=heads.tolist(),
                    y=layers.tolist(),
                    mode="markers",
                    marker={"symbol": "circle", "size": 4, "color": "rgba(20, 20, 20, 0.55)"},
                    name=ESTIMATED,
                    legendgroup="estimated",
                    showlegend="estimated" not in shown,
                    hoverinfo="skip",
                ),
                row=row,
                col=col,
            )
            shown.add("estimated")
    tick_font = {"size": 11 if max(n_layers, n_heads) <= 40 else 8}
    figure.update_xaxes(
        tickmode="array", tickvals=list(range(n_heads)), title_text="head", tickfont=tick_font, range=[-0.5, n_heads - 0.5]
    )
    figure.update_yaxes(
        tickmode="array", tickvals=list(range(n_layers)), title_text="layer", tickfont=tick_font, range=[-0.5, n_layers - 0.5]
    )
    figure.update_layout(
        coloraxis={
            "colorscale": DIVERGING,
            "cmin": -limit,
            "cmax": limit,
            "colorbar": {"title": {"text": value_label, "side": "right"}, "thickness": 16},
        },
        showlegend=bool(shown),
        plot_bgcolor="#e8e8e8",  # NaN cells (nothing measured) show grey, not the white of 0
    )
    top_extra = 40 if titled_panels else 0  # the first row's panel titles sit above the plotting area
    titled(figure, title, subtitle, plot_size=(plot_w, plot_h), right=150, top_extra=top_extra, legend=bool(shown), hover=hover)
    return figure


def _hover(panel: HeatmapPanel, grid: Grid, value_label: str) -> list[list[str]]:
    rank = {tuple(head): index + 1 for index, head in enumerate(panel.highlight)}
    text = []
    for layer in range(grid.shape[0]):
        row = []
        for head in range(grid.shape[1]):
            lines = [f"layer {layer}, head {head}", f"{value_label}: {grid[layer, head]:.4f}"]
            if panel.ci_low is not None and panel.ci_high is not None:
                lines.append(f"95% CI [{panel.ci_low[layer, head]:.4f}, {panel.ci_high[layer, head]:.4f}]")
            if panel.estimated is not None:
                lines.append("attribution estimate" if panel.estimated[layer, head] else "exact ablation")
            if (layer, head) in rank:
                lines.append(f"selected (rank {rank[layer, head]})")
            row.append("<br>".join(lines))
        text.append(row)
    return text
