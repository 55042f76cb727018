"""The validation study's figure: ΔNLL of the reference when a K-head set is ablated together, for
the preference set (and retrieval / induction sets) against the distribution over random K-head
sets, with the profile, without it and their difference, with intervals and permutation p-values.

Inputs are `workbench.experiments.validation`'s tables: the summary (`head_set, condition, mean_delta_nll,
ci_low, ci_high, p_value_vs_random, n_examples, n_random`, and `n_heads`, the K of each set, in
tables written since it was added) and, for the distribution of the random sets, the per-example
deltas (`example_id, head_set, draw, condition, delta_nll`). Each set's p-value is written under
its name on the axis."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.errors import InputError
from workbench.figures.style import head_set_colours, p_text, titled
from workbench.stats import small_sample_caveat

SUMMARY_COLUMNS = ("head_set", "condition", "mean_delta_nll", "ci_low", "ci_high", "p_value_vs_random", "n_examples", "n_random")
DELTA_COLUMNS = ("example_id", "head_set", "draw", "condition", "delta_nll")
CONDITION_TITLES = {
    "profile": "with the profile",
    "no-profile": "without the profile",
    "profile-specific": "profile-specific (with − without)",
}


def _require(table: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise InputError(f"{what} lacks column(s) {', '.join(missing)}")


def random_draw_means(deltas: pd.DataFrame) -> pd.DataFrame:
    """`condition, draw, mean_delta_nll`: each random head set's mean ΔNLL over the examples, per
    condition; `profile-specific` is the per-example difference with − without the profile."""
    _require(deltas, DELTA_COLUMNS, "validation table (per example)")
    random = deltas[deltas["head_set"] == "random"]
    if random.empty:
        raise InputError("validation table (per example) has no random head sets")
    wide = random.pivot_table(index=["example_id", "draw"], columns="condition", values="delta_nll")
    if {"profile", "no-profile"} <= set(wide.columns):
        wide["profile-specific"] = wide["profile"] - wide["no-profile"]
    means = wide.groupby(level="draw").mean()
    return means.reset_index().melt(id_vars="draw", var_name="condition", value_name="mean_delta_nll")


def validation_figure(
    summary: pd.DataFrame,
    *,
    deltas: pd.DataFrame | None = None,
    k: int | None = None,
    label: str = "",
    level: float = 0.95,
    title: str | None = None,
) -> go.Figure:
    """One panel per condition: each head set's mean ΔNLL with its bootstrap interval and its
    p-value against the random sets; the random sets drawn as the distribution of their means
    (a box with every draw, from `deltas`) when the per-example table is given. `k`, the heads
    per set, is read from the table's `n_heads` column when it has one (a different `k` is an
    error), else taken as given."""
    _require(summary, SUMMARY_COLUMNS, "validation table")
    if summary.empty:
        raise InputError("validation table has no rows")
    k = heads_per_set(summary, k)
    conditions = [c for c in CONDITION_TITLES if c in set(summary["condition"])]
    conditions += [c for c in dict.fromkeys(summary["condition"]) if c not in conditions]
    draws = random_draw_means(deltas) if deltas is not None else None
    figure = make_subplots(
        rows=1, cols=len(conditions), subplot_titles=[CONDITION_TITLES.get(c, c) for c in conditions], horizontal_spacing=0.08
    )
    shown: set[str] = set()
    colours = head_set_colours(sorted(set(summary["head_set"]), key=lambda name: (name != "preference", name != "random", name)))
    for column, condition in enumerate(conditions, start=1):
        part = summary[summary["condition"] == condition]
        order = sorted(dict.fromkeys(part["head_set"]), key=lambda name: (name != "preference", name != "random"))
        if draws is not None and "random" in order:
            values = draws.loc[draws["condition"] == condition, "mean_delta_nll"].to_numpy()
            figure.add_trace(
                go.Box(
                    x=["random"] * len(values),
                    y=values,
                    name="random K-head sets (one point per set: its mean over examples)",
                    legendgroup="random-draws",
                    showlegend="random-draws" not in shown,
                    boxpoints="all",
                    jitter=0.5,
                    pointpos=0,
                    fillcolor="rgba(127, 127, 127, 0.15)",
                    line={"color": "rgba(127, 127, 127, 0.8)", "width": 1},
                    marker={"color": "rgba(90, 90, 90, 0.6)", "size": 6},
                    hovertemplate="random set<br>mean ΔNLL %{y:.4f}<extra></extra>",
                ),
                row=1,
                col=column,
            )
            shown.add("random-draws")
        labels = []
        for name in order:
            row = part[part["head_set"] == name].iloc[0]
            p_value = p_text(float(row["p_value_vs_random"]))
            labels.append(name if name == "random" else f"{name}<br><span style='font-size:11px'>{p_value}</span>")
            mean = float(row["mean_delta_nll"])
            figure.add_trace(
                go.Scatter(
                    x=[name],
                    y=[mean],
                    mode="markers",
                    marker={
                        "symbol": "diamond",
                        "size": 13,
                        "color": colours[name],
                        "line": {"width": 1, "color": "white"},
                    },
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [float(row["ci_high"]) - mean],
                        "arrayminus": [mean - float(row["ci_low"])],
                        "thickness": 2,
                        "width": 8,
                    },
                    name=f"{name} (mean over examples ± interval)"
                    if name != "random"
                    else "random sets pooled (mean ± interval)",
                    legendgroup=name,
                    showlegend=name not in shown,
                    hovertemplate=f"{name}<br>mean ΔNLL %{{y:.4f}}<br>{level:.0%} CI [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
                    f"<br>{p_text(float(row['p_value_vs_random']))} vs random<extra></extra>",
                ),
                row=1,
                col=column,
            )
            shown.add(name)
        figure.add_hline(y=0, line={"color": "#444", "width": 1}, row=1, col=column)
        figure.update_xaxes(
            categoryorder="array", categoryarray=order, tickmode="array", tickvals=order, ticktext=labels,
            range=[-0.75, len(order) - 0.25], row=1, col=column,
        )  # fmt: skip
    figure.update_yaxes(title_text="Δ NLL of the reference (nats/token)", row=1, col=1)
    figure.update_layout(boxgap=0.5)
    return titled(
        figure,
        title or f"Ablating the top-K heads together{f': {label}' if label else ''}",
        _subtitle(summary, k, draws is not None, level),
        plot_size=(390 * len(conditions), 420),
        bottom=80,
        top_extra=20,
        legend=True,
        caution=small_sample_caveat(int(summary["n_examples"].min()), noun="held-out example", paired=False),
    )


def heads_per_set(summary: pd.DataFrame, k: int | None = None) -> int | None:
    """K of a validation study: the one value of the table's `n_heads` (when it has the column),
    which `k`, if given, must equal; else `k`."""
    if "n_heads" not in summary.columns:
        return k
    recorded = sorted({int(v) for v in summary["n_heads"].dropna()})
    if len(recorded) != 1:
        raise InputError(f"validation table mixes head sets of {' and '.join(map(str, recorded)) or 'no'} heads (column n_heads)")
    if k is not None and k != recorded[0]:
        raise InputError(f"K = {k} was given, but the validation table's head sets have {recorded[0]} heads (column n_heads)")
    return recorded[0]


def _subtitle(summary: pd.DataFrame, k: int | None, with_draws: bool, level: float) -> list[str]:
    n = sorted({int(v) for v in summary["n_examples"]})
    n_random = sorted({int(v) for v in summary["n_random"]})
    counts = [
        f"n = {' / '.join(map(str, n))} held-out examples",
        f"K = {k} heads per set" if k is not None else "K not recorded",
        f"{' / '.join(map(str, n_random))} random K-head sets",
    ]
    random_note = "box: the random sets' means" if with_draws else "random sets' distribution not recorded (no per-example table)"
    smallest = " / ".join(f"{1 / (1 + r):.2g}" for r in n_random)
    return [
        " · ".join(counts),
        f"diamonds: mean ΔNLL with its {level:.0%} percentile-bootstrap interval over examples; {random_note}",
        "p (under each set's name): one-sided permutation p-value against the random sets, "
        f"(1 + #random sets with mean ≥ the set's) / (1 + #random sets); the smallest attainable is {smallest}",
    ]
