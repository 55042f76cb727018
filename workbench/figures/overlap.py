"""How much selected head sets agree: pairwise Jaccard overlap of top-K sets across variants,
clusters, methods or seeds, each set labelled by what it is and how many heads it has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import plotly.graph_objects as go

from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.figures.style import titled
from workbench.heads import HeadWeights


def jaccard(first: set[Head], second: set[Head]) -> float:
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def head_set_label(weights: HeadWeights, *, cluster: int | None = None) -> str:
    """What a head set is, from what its file records: cluster (or `cluster`, when known from
    elsewhere), PCS variant, method (e.g. "cluster 2 · profile-contrast · hybrid")."""
    extra = weights.extra
    cluster = extra.get("cluster", extra.get("cluster_id")) if cluster is None else cluster
    parts = [
        f"cluster {cluster}" if cluster is not None else "",
        str(extra.get("variant") or ""),
        weights.method,
    ]
    return " · ".join(part for part in parts if part) or "head set"


def overlap_heatmap(head_sets: Mapping[str, Sequence[Head]], *, title: str) -> go.Figure:
    """Pairwise Jaccard overlap |A ∩ B| / |A ∪ B| of named head sets; each cell also gives the
    number of shared heads, each label the set's size."""
    names = list(head_sets)
    if len(names) < 2:
        raise InputError("an overlap figure needs at least two head sets")
    sets = [{(int(layer), int(head)) for layer, head in head_sets[name]} for name in names]
    labels = [f"{name}<br>({len(heads)} head{'s' if len(heads) != 1 else ''})" for name, heads in zip(names, sets)]
    matrix = np.array([[jaccard(a, b) for b in sets] for a in sets])
    shared = [[len(a & b) for b in sets] for a in sets]
    text = [[f"{matrix[i, j]:.2f}<br>{shared[i][j]} shared" for j in range(len(sets))] for i in range(len(sets))]
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar={"title": {"text": "Jaccard", "side": "right"}, "thickness": 16},
            text=text,
            texttemplate="%{text}",
            textfont={"size": 13},
            hovertemplate="%{y}<br>%{x}<br>Jaccard %{z:.3f}<extra></extra>",
        )
    )
    off_diagonal = [matrix[i, j] for i, j in combinations(range(len(names)), 2)]
    size = max(110 * len(names), 260)
    label_px = int(7.5 * max(len(name) for name in names)) + 30
    figure.update_yaxes(autorange="reversed", automargin=False)
    figure.update_xaxes(tickangle=-30, automargin=False)
    subtitle = [f"Jaccard = shared heads / heads in either set · mean over pairs {np.mean(off_diagonal):.3f}"]
    return titled(figure, title, subtitle, plot_size=(size, size), left=label_px, right=120, bottom=int(label_px * 0.6) + 40)
