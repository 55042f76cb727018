"""Paired comparisons of decoding runs as bars: each run's metric difference to the baseline run
(greedy) on the same examples, with its paired bootstrap interval and permutation p-value. This is
the routing comparison (global, hard-routed, soft-routed and random heads against greedy) as well
as any other set of runs that `workbench.experiments.comparison.paired_table` compared."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import InputError
from workbench.figures.style import p_text, set_colour, titled

COLUMNS = ("baseline", "run", "metric", "baseline_value", "value", "difference", "low", "high", "p_value", "n")


def run_name(folder: str) -> str:
    """A run's name: its folder's name (the pipeline names folders by what the run is)."""
    return Path(str(folder)).name or str(folder)


def paired_bars(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """One panel per metric: a bar per run with the difference to the baseline, error bars from
    the paired bootstrap interval, the p-value above each bar."""
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise InputError(f"comparison table lacks column(s) {', '.join(missing)}")
    if table.empty:
        raise InputError("comparison table has no rows")
    metrics = list(dict.fromkeys(table["metric"]))
    baseline = run_name(table["baseline"].iloc[0])
    figure = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics, horizontal_spacing=0.1)
    for column, metric in enumerate(metrics, start=1):
        part = table[table["metric"] == metric]
        names = [run_name(run) for run in part["run"]]
        figure.add_trace(
            go.Bar(
                x=names,
                y=part["difference"],
                marker_color=[set_colour(name, index) for index, name in enumerate(names)],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": part["high"] - part["difference"],
                    "arrayminus": part["difference"] - part["low"],
                    "thickness": 1.5,
                },
                customdata=part[["value", "baseline_value", "low", "high", "p_value"]].to_numpy(),
                hovertemplate=f"%{{x}}: {metric} %{{customdata[0]:.4f}} vs {baseline} %{{customdata[1]:.4f}}"
                "<br>difference %{y:+.4f} [%{customdata[2]:+.4f}, %{customdata[3]:+.4f}]"
                "<br>p = %{customdata[4]:.3g}<extra></extra>",
                showlegend=False,
                name=metric,
            ),
            row=1,
            col=column,
        )
        for name, high, low, p_value in zip(names, part["high"], part["low"], part["p_value"]):
            top = max(float(high), float(low), 0.0) if pd.notna(high) else 0.0
            figure.add_annotation(
                x=name, y=top, text=p_text(float(p_value)), showarrow=False, yshift=12, font={"size": 11}, row=1, col=column
            )
        figure.add_hline(y=0, line={"color": "#444", "width": 1}, row=1, col=column)
        figure.update_xaxes(tickangle=-30, row=1, col=column)
    figure.update_yaxes(title_text=f"difference to {baseline}", row=1, col=1)
    n = sorted({int(v) for v in table["n"]})
    confidence = float(table["confidence"].iloc[0]) if "confidence" in table.columns else 0.95
    subtitle = [
        f"n = {' / '.join(map(str, n))} paired examples (the same examples for every run) · baseline: {baseline}",
        f"bars: difference with its {confidence:.0%} paired bootstrap interval; p: two-sided paired permutation test",
    ]
    width = max(260, 70 * len(set(table["run"]))) * len(metrics)
    return titled(figure, title or f"Decoding runs against {baseline}", subtitle, plot_size=(width, 380), bottom=140)
