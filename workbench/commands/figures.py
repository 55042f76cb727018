"""`workbench figures`: the paper's figures from the files other commands write, one kind per
subcommand, or all that a run folder holds (`figures all`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import OutOption, friendly_errors
from workbench.errors import InputError

app = typer.Typer(
    help="Draw figures (HTML and PNG) from discover / validate / evaluate / demo outputs.",
    short_help="Draw the paper's figures (HTML and PNG) from run folders.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
NameOption = Annotated[str | None, typer.Option("--name", help="File name in OUT without extension. Default: the figure's kind.")]
PngOption = Annotated[bool, typer.Option("--png/--no-png", help="Also export a PNG (needs chromium).")]
TitleOption = Annotated[str | None, typer.Option("--title", help="Figure title. Default: one describing the data.")]
PcsFiles = Annotated[
    list[Path], typer.Argument(help="pcs.parquet files; a heads.json beside one is ringed.", metavar="PCS", show_default=False)
]
TableArgument = Annotated[Path, typer.Argument(help="A CSV or Parquet table.", metavar="TABLE", show_default=False)]
ColoursOption = Annotated[
    Path | None,
    typer.Option("--colours", help="A run folder's colours.json: each run in its colour there (runs it lacks get free ones)."),
]


def _stem(out: Path, name: str | None, kind: str) -> Path:
    name = name or kind
    if not name.strip() or Path(name).name != name:
        raise InputError(f"--name must be a plain file name without folders, got {name!r}")
    return out / name


def _save(figure, out: Path, name: str | None, kind: str, png: bool) -> None:
    from workbench.figures import save_figure

    for path in save_figure(figure, _stem(out, name, kind), png=png):
        print(f"wrote {path}")


def _colours(path: Path | None) -> dict[str, str] | None:
    from workbench.figures import read_colours

    return read_colours(path) if path is not None else None


def _discoveries(paths: list[Path]):
    """Each PCS file with the heads.json beside it, labelled by its variant (unique)."""
    from workbench.figures.runfolder import Discovery, label_discoveries

    discoveries = [Discovery.load(path) for path in paths]
    label_discoveries(discoveries)
    return discoveries


@app.command("heatmap")
@friendly_errors(resumable=False)
def heatmap(
    pcs: Annotated[Path, typer.Option("--pcs", help="pcs.parquet from `workbench discover`.")],
    out: OutOption,
    heads: Annotated[
        Path | None, typer.Option("--heads", help="heads.json whose heads get a ring (same layers x heads as --pcs).")
    ] = None,
    name: NameOption = None,
    title: TitleOption = None,
    png: PngOption = True,
) -> None:
    """Mean PCS per layer x head: selected heads ringed, attribution estimates dotted, intervals on hover."""
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


@app.command("side-by-side")
@friendly_errors(resumable=False)
def side_by_side(
    pcs: PcsFiles, out: OutOption, name: NameOption = None, title: TitleOption = None, png: PngOption = True
) -> None:
    """PCS maps side by side on one colour scale (e.g. standard beside profile-contrast)."""
    from workbench.figures import pcs_side_by_side

    found = _discoveries(pcs)
    figure = pcs_side_by_side({d.label: d.result for d in found}, highlights={d.label: d.selected for d in found}, title=title)
    _save(figure, out, name, "pcs-side-by-side", png)


@app.command("clusters")
@friendly_errors(resumable=False)
def clusters(
    pcs: PcsFiles,
    out: OutOption,
    clusters_file: Annotated[
        Path | None, typer.Option("--clusters", help="clusters.json giving each cluster's number of users.")
    ] = None,
    name: NameOption = None,
    title: TitleOption = None,
    png: PngOption = True,
) -> None:
    """One PCS map per user cluster in a grid (the cluster: metadata `cluster` or a cluster-<id> folder)."""
    from workbench.figures import cluster_heatmaps
    from workbench.figures.runfolder import cluster_sizes

    found = _discoveries(pcs)
    unknown = [d.folder for d in found if d.cluster is None]
    if unknown:
        raise InputError(f"{unknown[0]}: not a cluster's PCS (no cluster in its metadata, folder not named cluster-<id>)")
    if len({d.cluster for d in found}) != len(found):
        raise InputError("two PCS files are for the same cluster")
    sizes = cluster_sizes(clusters_file) if clusters_file is not None else None
    figure = cluster_heatmaps(
        {d.cluster: d.result for d in found}, sizes=sizes, highlights={d.cluster: d.selected for d in found}, title=title
    )
    _save(figure, out, name, "pcs-clusters", png)


@app.command("overlap")
@friendly_errors(resumable=False)
def overlap(
    heads: Annotated[list[Path], typer.Argument(help="Two or more heads.json files.", metavar="HEADS_JSON", show_default=False)],
    out: OutOption,
    name: NameOption = None,
    title: Annotated[str, typer.Option("--title", help="Figure title.")] = "Overlap of the selected head sets",
    png: PngOption = True,
) -> None:
    """Pairwise Jaccard overlap of head sets (variants, clusters, methods, ...), labelled by what each set is."""
    from workbench.figures import head_set_label, overlap_heatmap
    from workbench.heads import HeadWeights

    weights = [HeadWeights.load_any(path) for path in heads]
    labels = [head_set_label(w) for w in weights]
    if len(set(labels)) != len(labels):
        labels = [
            f"{label} ({path.parent.name if path.name == 'heads.json' else path.stem})" for label, path in zip(labels, heads)
        ]
    if len(set(labels)) != len(labels):
        labels = [str(path) for path in heads]
    _save(overlap_heatmap({label: w.heads() for label, w in zip(labels, weights)}, title=title), out, name, "overlap", png)


@app.command("validation")
@friendly_errors(resumable=False)
def validation(
    out: OutOption,
    summary: Annotated[Path | None, typer.Option("--summary", help="validation_summary.csv from `workbench validate`.")] = None,
    deltas: Annotated[
        Path | None,
        typer.Option("--deltas", help="validation.parquet (per example) from `workbench validate`: the random sets' spread."),
    ] = None,
    k: Annotated[
        int | None, typer.Option("--k", help="K, the heads per set, for validation tables that do not record it (n_heads).")
    ] = None,
    heads: Annotated[
        Path | None,
        typer.Option("--heads", help="The heads.json validated: K is its number of heads, when nothing else records K."),
    ] = None,
    label: Annotated[str, typer.Option("--label", help="What the preference heads are (in the title).")] = "",
    name: NameOption = None,
    title: TitleOption = None,
    png: PngOption = True,
) -> None:
    """ΔNLL of the preference set against the distribution over random sets, with and without the profile.
    K comes from the tables (n_heads), else --k, else the fingerprint.json beside them (--top-k), else
    --heads or a heads.json beside them."""
    from workbench.figures import validation_figure
    from workbench.figures.runfolder import HEADS_FILE, read_table, recorded_k
    from workbench.heads import HeadWeights

    if summary is None and deltas is None:
        raise InputError("give --summary (validation_summary.csv), --deltas (validation.parquet) or both")
    expected = "--summary takes validation_summary.csv from `workbench validate`"
    per_example = read_table(deltas, "--deltas takes validation.parquet from `workbench validate`") if deltas else None
    if summary is not None:
        table = read_table(summary, expected)
    else:
        from workbench.experiments.validation import summarize_validation

        table = summarize_validation(per_example)
    folder = summary.parent if summary is not None else deltas.parent  # type: ignore[union-attr]  # one is given (above)
    if k is None and "n_heads" not in table.columns:  # tables written before they recorded K
        heads = heads or (folder / HEADS_FILE if (folder / HEADS_FILE).is_file() else None)
        k = recorded_k(folder) or (len(HeadWeights.load_any(heads).heads()) if heads else None)
    try:
        figure = validation_figure(table, deltas=per_example, k=k, label=label, title=title)
    except InputError as error:  # e.g. columns missing: another kind of table
        source = summary if summary is not None and "per example" not in str(error) else deltas
        raise InputError(f"{source}: {error}; {expected}") from None
    _save(figure, out, name, "validation", png)


@app.command("sweep")
@friendly_errors(resumable=False)
def sweep(
    table: TableArgument,
    out: OutOption,
    x: Annotated[str, typer.Option("--x", help="The swept parameter's column: k or gamma.")] = "k",
    name: NameOption = None,
    colours: ColoursOption = None,
    png: PngOption = True,
) -> None:
    """A metric or ΔNLL against K or γ with intervals, from a sweep table (columns: x, value, low, high,
    [group], [metric]: one figure per metric)."""
    from workbench.figures.runfolder import SWEEPS, by_metric, read_table, slug, sweep_figure

    if x not in SWEEPS:
        raise InputError(f"--x must be one of {', '.join(SWEEPS)}, got {x!r}")
    frame = read_table(table, f"a sweep table with columns {x}, value, low, high")
    known = _colours(colours)
    for metric, part in by_metric(frame):
        try:
            figure = sweep_figure(part, x, metric, colours=known)
        except InputError as error:
            raise InputError(f"{table}: {error}") from None
        suffix = f"-{slug(metric)}" if metric else ""
        _save(figure, out, name and name + suffix, f"sweep-{x}{suffix}", png)


@app.command("comparison")
@friendly_errors(resumable=False)
def comparison(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="comparison.parquet, or two or more evaluation folders (the first is the baseline, e.g. greedy).",
            metavar="SOURCE",
            show_default=False,
        ),
    ],
    out: OutOption,
    name: NameOption = None,
    title: TitleOption = None,
    colours: ColoursOption = None,
    png: PngOption = True,
) -> None:
    """Each run's metric difference to the baseline with paired intervals (e.g. global / hard / soft routing, random heads)."""
    from workbench.figures import paired_bars
    from workbench.figures.runfolder import read_table

    if len(sources) == 1 and sources[0].is_file():
        table = read_table(sources[0], "a comparison table (comparison.parquet)")
    else:
        from workbench.experiments.comparison import compare_runs

        table = compare_runs(sources)
    known = _colours(colours)
    try:
        figure = paired_bars(table, title=title, colours=known)
    except InputError as error:
        raise InputError(f"{sources[0]}: {error}") from None
    _save(figure, out, name, "comparison", png)


@app.command("efficiency")
@friendly_errors(resumable=False)
def efficiency(
    table: TableArgument, out: OutOption, name: NameOption = None, colours: ColoursOption = None, png: PngOption = True
) -> None:
    """Seconds per example per method, and each metric against that cost (columns: method, seconds_per_example, [metric, value, low, high])."""
    from workbench.figures import efficiency_figure
    from workbench.figures.runfolder import read_table

    frame, known = read_table(table, "an efficiency table"), _colours(colours)
    try:
        figure = efficiency_figure(frame, colours=known)
    except InputError as error:
        raise InputError(f"{table}: {error}") from None
    _save(figure, out, name, "efficiency", png)


@app.command("all")
@friendly_errors(resumable=False)
def draw_all(
    run: Annotated[Path, typer.Option("--run", help="A run folder (workbench demo, or one folder per stage).")],
    out: OutOption,
    png: PngOption = True,
) -> None:
    """Every figure the run folder has the inputs for, found by file name (pcs.parquet, heads.json,
    validation.parquet, validation_summary.csv, evaluation folders, comparison.parquet, clusters.json,
    sweep_k / sweep_gamma / efficiency tables; see figures/README.md); one line says why each other figure is skipped."""
    from workbench.pipeline.figures import draw_figures

    for path in draw_figures(run, out, png=png):
        print(f"wrote {path}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="figures")
