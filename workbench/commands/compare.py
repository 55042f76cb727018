"""`workbench compare`: evaluation runs side by side, each paired against the first."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import friendly_errors


@friendly_errors
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Output folders of `workbench evaluate`; the first is the baseline.", metavar="FOLDER", show_default=False
        ),
    ],
    resamples: Annotated[int, typer.Option("--resamples", min=1, help="Bootstrap resamples for the intervals.")] = 1000,
    permutations: Annotated[
        int,
        typer.Option(
            "--permutations",
            min=1,
            help="Permutation-test budget: exact when 2^m swap patterns fit in it (m: examples whose scores differ), "
            "else this many seeded random swaps.",
        ),
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap draws and random swaps.")] = 0,
) -> None:
    """Metrics of several runs side by side on the examples they share, each run's difference from
    the first with a bootstrap interval and a paired permutation p-value."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from workbench.experiments.comparison import differing_settings, load_run, paired_table

    loaded = [load_run(folder) for folder in runs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = paired_table(loaded, resamples=resamples, permutations=permutations, seed=seed)
    n = int(frame["n"].iloc[0])
    base = loaded[0]
    console = Console(highlight=False)
    console.print(escape(f"{base.setting('task')} ({base.setting('split') or '?'} split): {len(loaded)} runs paired on the "
                         f"{n} example{'s' if n != 1 else ''} present in every run"))  # fmt: skip
    dropped = [len(run.predictions) - n for run in loaded]
    console.print(
        escape(
            "dropped: "
            + (", ".join(f"{d} of {len(r.predictions)} from {r.folder}" for r, d in zip(loaded, dropped) if d) or "none")
        )
    )
    keys = differing_settings(loaded)
    table = Table(show_lines=True)
    table.add_column("metric")
    for index, run in enumerate(loaded):
        settings = " ".join(f"{key}={run.settings[key]}" for key in keys if key in run.settings)
        role = "baseline" if index == 0 else f"run {index + 1}"
        table.add_column(
            escape(f"{role}: {run.folder.name}\n{run.label}" + (f"\n{settings}" if settings else "")), overflow="fold"
        )
    for metric, part in frame.groupby("metric", sort=False):
        cells = [f"{part['baseline_value'].iloc[0]:.4f}"]
        for run in loaded[1:]:
            row = part[part["run"] == str(run.folder)].iloc[0]
            cells.append(f"{row.value:.4f}\n{row.difference:+.4f} {_interval(row.low, row.high)}\np {row.p_value:.3g}")
        table.add_row(escape(str(metric)), *map(escape, cells))
    console.print(table)
    exact = frame["p_exact"].all()
    console.print(
        escape(f"values on the paired examples; differences from the baseline with {frame['confidence'].iloc[0]:.0%} percentile "
        f"bootstrap intervals ({resamples} resamples, seed {seed}); p: two-sided paired permutation test, "
        + ("exact (every swap of the examples whose scores differ)" if exact else
           f"exact where 2^m <= {permutations}, else {permutations} seeded random swaps (resolution {1 / (permutations + 1):.1g})"))
    )  # fmt: skip
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)


def _interval(low: float, high: float) -> str:
    return "[no interval]" if low != low else f"[{low:+.4f}, {high:+.4f}]"  # NaN: fewer than two examples


def register(app: typer.Typer) -> None:
    app.command("compare", short_help="Compare evaluation runs side by side, paired by example.")(compare)
