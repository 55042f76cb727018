"""`workbench figures`: the paper's figures from the files other commands write."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import OutOption, friendly_errors
from workbench.errors import InputError

app = typer.Typer(
    help="Draw figures (HTML and PNG) from discover / validate outputs.", no_args_is_help=True, rich_markup_mode=None
)
NameOption = Annotated[str | None, typer.Option("--name", help="File name in OUT without extension; default: the figure's kind.")]
PngOption = Annotated[bool, typer.Option("--png/--no-png", help="Also export a PNG (needs chromium).")]
TitleOption = Annotated[str | None, typer.Option("--title", help="Figure title; default: one describing the data.")]


def _stem(out: Path, name: str | None, kind: str) -> Path:
    name = name or kind
    if not name.strip() or Path(name).name != name:
        raise InputError(f"--name must be a plain file name without folders, got {name!r}")
    return out / name


def _save(figure, out: Path, name: str | None, kind: str, png: bool) -> None:
    from workbench.figures import save_figure

    for path in save_figure(figure, _stem(out, name, kind), png=png):
        print(f"wrote {path}")


@app.command("heatmap")
@friendly_errors(resumable=False)
def heatmap(
    pcs: Annotated[Path, typer.Option("--pcs", help="pcs.parquet from `workbench discover`.")],
    out: OutOption,
    heads: Annotated[
        Path | None, typer.Option("--heads", help="heads.json whose heads get a marker (same layers x heads as --pcs).")
    ] = None,
    name: NameOption = None,
    title: TitleOption = None,
    png: PngOption = True,
) -> None:
    """Mean PCS per layer x head with bootstrap intervals in the hover text."""
    from workbench.figures import pcs_heatmap
    from workbench.heads import HeadWeights
    from workbench.scores import PCSResult

    result = PCSResult.load(pcs)
    marked = []
    if heads is not None:
        weights = HeadWeights.load_any(heads)
        grid = tuple(result.per_example.shape[1:])
        if weights.method != "reference" and weights.shape != grid:  # the authors' files may not record their shape
            raise InputError(f"{heads} is for {weights.shape[0]} layers x {weights.shape[1]} heads, but {pcs} has "
                             f"{grid[0]} x {grid[1]}: they come from different models")  # fmt: skip
        outside = [head for head in weights.heads() if not (head[0] < grid[0] and head[1] < grid[1])]
        if outside:
            raise InputError(f"{heads}: head {outside[0]} lies outside the {grid[0]} layers x {grid[1]} heads of {pcs}: "
                             "they come from different models")  # fmt: skip
        marked = weights.heads()
    _save(pcs_heatmap(result, highlight=marked, title=title), out, name, "heatmap", png)


@app.command("overlap")
@friendly_errors(resumable=False)
def overlap(
    heads: Annotated[list[Path], typer.Argument(help="Two or more heads.json files.", metavar="HEADS_JSON", show_default=False)],
    out: OutOption,
    name: NameOption = None,
    title: Annotated[str, typer.Option("--title", help="Figure title.")] = "overlap of selected heads",
    png: PngOption = True,
) -> None:
    """Pairwise Jaccard overlap of head sets (clusters, seeds, variants, ...)."""
    from workbench.figures import overlap_heatmap
    from workbench.heads import HeadWeights

    names = [path.parent.name if path.name == "heads.json" else path.stem for path in heads]
    if len(set(names)) != len(names):
        names = [str(path) for path in heads]
    sets = {label: HeadWeights.load_any(path).heads() for label, path in zip(names, heads)}
    _save(overlap_heatmap(sets, title=title), out, name, "overlap", png)


@app.command("validation")
@friendly_errors(resumable=False)
def validation(
    summary: Annotated[Path, typer.Option("--summary", help="validation_summary.csv from `workbench validate`.")],
    out: OutOption,
    name: NameOption = None,
    title: Annotated[str, typer.Option("--title", help="Figure title.")] = "ablating head sets on held-out examples",
    png: PngOption = True,
) -> None:
    """Mean ΔNLL per head set and condition with bootstrap intervals."""
    from workbench.figures import validation_bars

    expected = "--summary takes validation_summary.csv from `workbench validate`"
    table = _read_csv(summary, expected)
    try:
        figure = validation_bars(table, title=title)
    except InputError as error:  # e.g. columns missing: another kind of table
        raise InputError(f"{summary}: {error}; {expected}") from None
    _save(figure, out, name, "validation", png)


def _read_csv(path: Path, expected: str):
    """A CSV table, or one line naming the file and what was expected."""
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        raise InputError(f"{path}: not a CSV table; {expected}") from None


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="figures")
