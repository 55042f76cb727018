"""`workbench figures`: the paper's figures from the files other commands write."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import friendly_errors
from workbench.errors import InputError

app = typer.Typer(help="Draw figures (HTML and PNG) from discover / validate outputs.", no_args_is_help=True)
OutOption = Annotated[Path, typer.Option("--out", help="Output path without extension (writes .html and .png).")]
PngOption = Annotated[bool, typer.Option("--png/--no-png", help="Also export a PNG (needs chromium).")]


@app.command("heatmap")
@friendly_errors
def heatmap(
    pcs: Annotated[Path, typer.Option("--pcs", help="pcs.parquet from `workbench discover`.")],
    out: OutOption,
    heads: Annotated[Path | None, typer.Option("--heads", help="heads.json whose heads get a marker.")] = None,
    title: Annotated[str | None, typer.Option("--title")] = None,
    png: PngOption = True,
) -> None:
    """Mean PCS per layer x head with bootstrap intervals in the hover text."""
    from workbench.figures import pcs_heatmap, save_figure
    from workbench.heads import HeadWeights
    from workbench.scores import PCSResult

    marked = HeadWeights.load_any(heads).heads() if heads else []
    for path in save_figure(pcs_heatmap(PCSResult.load(pcs), highlight=marked, title=title), out, png=png):
        print(f"wrote {path}")


@app.command("overlap")
@friendly_errors
def overlap(
    heads: Annotated[list[Path], typer.Argument(help="Two or more heads.json files.")],
    out: OutOption,
    title: Annotated[str, typer.Option("--title")] = "overlap of selected heads",
    png: PngOption = True,
) -> None:
    """Pairwise Jaccard overlap of head sets (clusters, seeds, variants, ...)."""
    from workbench.figures import overlap_heatmap, save_figure
    from workbench.heads import HeadWeights

    names = [path.parent.name if path.name == "heads.json" else path.stem for path in heads]
    if len(set(names)) != len(names):
        names = [str(path) for path in heads]
    sets = {name: HeadWeights.load_any(path).heads() for name, path in zip(names, heads)}
    for path in save_figure(overlap_heatmap(sets, title=title), out, png=png):
        print(f"wrote {path}")


@app.command("validation")
@friendly_errors
def validation(
    summary: Annotated[Path, typer.Option("--summary", help="validation_summary.csv from `workbench validate`.")],
    out: OutOption,
    title: Annotated[str, typer.Option("--title")] = "ablating head sets on held-out examples",
    png: PngOption = True,
) -> None:
    """Mean ΔNLL per head set and condition with bootstrap intervals."""
    import pandas as pd

    from workbench.figures import save_figure, validation_bars

    if not summary.is_file():
        raise InputError(f"{summary}: file not found")
    for path in save_figure(validation_bars(pd.read_csv(summary), title=title), out, png=png):
        print(f"wrote {path}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="figures")
