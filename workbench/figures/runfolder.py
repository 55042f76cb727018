"""Draw every figure a run folder holds (`workbench figures all --run DIR`).

The reader finds its inputs by file name anywhere below the run folder (folders named
`checkpoint` and hidden folders are skipped), so it works on `workbench demo`'s folder, on the
folders of single commands, and on one folder per pipeline stage. These names are the contract a
pipeline follows to get its figures:

| file | holds | figures |
|---|---|---|
| `pcs.parquet` | a PCS result (`PCSResult.save`); a `heads.json` in the same folder is its selection | `pcs-<label>`, `pcs-side-by-side`, `pcs-clusters` |
| `heads.json` | selected head weights (`HeadWeights.save`) | `overlap` (all head sets), rings on the maps |
| `validation.parquet` | per-example ΔNLL (`validation_deltas`), or the summary (`summarize_validation`), either optionally with a `heads` column naming the head file's variant per row | `validation-<label>` |
| `validation_summary.csv` | the summary beside the per-example table (else computed from it, seed 0) | `validation-<label>` |
| `metrics.json` + `predictions.jsonl` | an evaluation folder (`workbench evaluate`); an optional `seconds` entry in metrics.json is its wall time | `comparison` (when no table), `efficiency` |
| `comparison.parquet` | paired comparisons (`workbench.experiments.comparison.paired_table`); several are named by their folders less any named `comparison` | `comparison`, `comparison-<folder>` |
| `clusters.json` | cluster sizes: `{"sizes": [...]}`, `{"labels": [...]}` (one per user) or `{"clusters": [{"id", "size" or "members"}]}` | panel titles of `pcs-clusters` |
| `sweep_k.csv` / `.parquet` | `k, value, low, high` (+ optional `group`, `metric`) | `sweep-k` |
| `sweep_gamma.csv` / `.parquet` | `gamma, value, low, high` (+ optional `group`, `metric`) | `sweep-gamma` |
| `efficiency.csv` / `.parquet` | `method, seconds_per_example` (+ optional `metric, value, low, high`) | `efficiency` |
| `fingerprint.json` beside a validation table | `options.k`: K of that study when its table has no `n_heads` column | `validation-<label>` subtitle |
| `run-config.json` / `fingerprint.json` | a `top_k` entry: K of the validation study when nothing else says it | |
| `colours.json` (at the top of the run) | one colour per run (`workbench.figures.colours`); written by `draw_figures` | every figure that shows runs |

A PCS result is a cluster's when its metadata or its head file's `extra` has `cluster` (or
`cluster_id`), or its folder is named `cluster-<id>` / `cluster_<id>`. Figures whose inputs are
absent are skipped with a one-line note; so is a file that cannot be read (the note names it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from workbench.errors import InputError
from workbench.experiments.comparison import compare_runs, load_run
from workbench.experiments.validation import summarize_validation
from workbench.figures.colours import COLOURS_FILE, read_colours, series_colours
from workbench.figures.efficiency import efficiency_figure
from workbench.figures.heatmaps import cluster_heatmaps, pcs_heatmap, pcs_side_by_side
from workbench.figures.overlap import head_set_label, overlap_heatmap
from workbench.figures.paired import paired_bars, run_name
from workbench.figures.sweeps import sweep_plot
from workbench.figures.validation import DELTA_COLUMNS, SUMMARY_COLUMNS, validation_figure
from workbench.heads import HeadWeights, read_json_object
from workbench.scores.pcs import VARIANTS
from workbench.scores.results import PCSResult

PCS_FILE, HEADS_FILE = "pcs.parquet", "heads.json"
VALIDATION_FILE, VALIDATION_SUMMARY_FILE = "validation.parquet", "validation_summary.csv"
METRICS_FILE, PREDICTIONS_FILE, COMPARISON_FILE = "metrics.json", "predictions.jsonl", "comparison.parquet"
FINGERPRINT_FILE = "fingerprint.json"
CLUSTERS_FILE, RECORD_FILES = "clusters.json", (FINGERPRINT_FILE, "run-config.json")
SWEEPS = {"k": ("sweep_k", "number of heads K"), "gamma": ("sweep_gamma", "γ (contrast strength)")}
SWEEP_STEMS = {stem: parameter for parameter, (stem, _) in SWEEPS.items()}
EFFICIENCY_STEM = "efficiency"
TABLE_SUFFIXES = (".csv", ".parquet")
SKIPPED_FOLDERS = {"checkpoint", "__pycache__"}
CLUSTER_FOLDER = re.compile(r"cluster[-_]?(\d+)$")


@contextmanager
def noted(notes: list[str], what: str | Path) -> Iterator[None]:
    """Turn bad input met inside the block into a note "skipped WHAT: why" (and go on)."""
    try:
        yield
    except InputError as error:
        notes.append(f"skipped {what}: {str(error).removeprefix(f'{what}: ')}")


def read_table(path: Path, expected: str) -> pd.DataFrame:
    """A CSV or Parquet table, or one line naming the file and what was expected."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        raise InputError(f"{path}: not a {kind} table ({str(error).splitlines()[0][:120]}); {expected}") from None


def cluster_sizes(path: Path) -> dict[int, int]:
    """Users per cluster from a clusters.json (see the module docstring for the accepted forms)."""
    record = read_json_object(path)
    try:
        if "sizes" in record:
            return {index: int(size) for index, size in enumerate(record["sizes"])}
        if "labels" in record:
            labels = pd.Series([int(label) for label in record["labels"]])
            return {int(cluster): int(size) for cluster, size in labels.value_counts().sort_index().items()}
        if "clusters" in record:
            return {
                int(entry["id"]): int(entry["size"]) if "size" in entry else len(entry["members"]) for entry in record["clusters"]
            }
    except (TypeError, ValueError, KeyError) as error:
        raise InputError(f"{path}: malformed cluster record ({error!r})") from None
    raise InputError(f"{path}: no sizes, labels or clusters entry")


@dataclass
class Discovery:
    """A PCS result, the head set selected from it (if its folder has one) and its cluster (if any)."""

    folder: Path
    result: PCSResult
    heads: HeadWeights | None
    cluster: int | None
    label: str = ""

    @classmethod
    def load(cls, pcs_path: Path) -> Discovery:
        result = PCSResult.load(pcs_path)
        heads_path = pcs_path.parent / HEADS_FILE
        heads = HeadWeights.load_any(heads_path) if heads_path.is_file() else None
        if heads is not None and heads.shape != tuple(result.per_example.shape[1:]):
            raise InputError(f"{heads_path} is for {heads.shape[0]} x {heads.shape[1]} heads, but {pcs_path} has "
                             f"{result.per_example.shape[1]} x {result.per_example.shape[2]}")  # fmt: skip
        return cls(pcs_path.parent, result, heads, _cluster_of(pcs_path.parent, result.metadata, heads.extra if heads else {}))

    @property
    def variant(self) -> str:
        return str(self.result.metadata.get("variant") or "pcs")

    @property
    def selected(self) -> list[tuple[int, int]]:
        return self.heads.heads() if self.heads is not None else []


def _cluster_of(folder: Path, *records: dict[str, Any]) -> int | None:
    """The cluster a result or head set is for: a `cluster` / `cluster_id` entry, else its folder's name."""
    for record in records:
        for key in ("cluster", "cluster_id"):
            if record.get(key) is not None:
                return int(record[key])
    match = CLUSTER_FOLDER.search(folder.name)
    return int(match.group(1)) if match else None


@dataclass
class RunContents:
    """What `read_run` found, and one line for every file it could not use."""

    root: Path
    discoveries: list[Discovery] = field(default_factory=list)
    head_files: dict[Path, HeadWeights] = field(default_factory=dict)
    validations: list[tuple[Path, pd.DataFrame, pd.DataFrame | None]] = field(default_factory=list)  # (file, summary, deltas)
    evaluations: list[Path] = field(default_factory=list)
    comparisons: list[tuple[Path, pd.DataFrame]] = field(default_factory=list)
    cluster_sizes: dict[int, int] = field(default_factory=dict)
    sweeps: dict[str, tuple[Path, pd.DataFrame]] = field(default_factory=dict)
    efficiency: tuple[Path, pd.DataFrame] | None = None
    top_k: int | None = None
    colours: dict[str, str] = field(default_factory=dict)  # the recorded map, extended by the runs it lacks
    notes: list[str] = field(default_factory=list)

    def series(self) -> list[str]:
        """The names of the runs (and sweep groups) the figures show: those of the comparison
        tables (in their order), then of the evaluation folders, the cost table, the sweeps."""
        names = [run_name(run) for _, table in self.comparisons for column in ("run", "baseline") if column in table
                 for run in table[column]]  # fmt: skip
        names += [folder.name for folder in self.evaluations]
        if self.efficiency is not None and "method" in self.efficiency[1]:
            names += [str(method) for method in self.efficiency[1]["method"]]
        names += [str(group) for _, table in self.sweeps.values() if "group" in table for group in table["group"]]
        return names


def _walk(root: Path, skip: Path | None) -> Iterator[Path]:
    for folder, folders, files in os.walk(root):
        here = Path(folder)
        folders[:] = sorted(
            name
            for name in folders
            if name not in SKIPPED_FOLDERS and not name.startswith(".") and (skip is None or (here / name).resolve() != skip)
        )
        for name in sorted(files):
            yield here / name


def read_run(root: str | Path, *, skip: str | Path | None = None) -> RunContents:
    """Everything below `root` that a figure can use (see the module docstring); `skip` is a
    folder not to look into (the figures' own output folder)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (--run takes the folder a run wrote)")
    run = RunContents(root)
    files = list(_walk(root, Path(skip).resolve() if skip is not None else None))

    for path in files:
        name = path.name
        with noted(run.notes, path):
            if name == PCS_FILE:
                run.discoveries.append(Discovery.load(path))
            elif name == HEADS_FILE:
                run.head_files[path] = HeadWeights.load_any(path)
            elif name == VALIDATION_FILE or (name == VALIDATION_SUMMARY_FILE and not (path.parent / VALIDATION_FILE).is_file()):
                run.validations.append(_validation_tables(path))
            elif name == METRICS_FILE and (path.parent / PREDICTIONS_FILE).is_file():
                run.evaluations.append(path.parent)
            elif name == COMPARISON_FILE:
                run.comparisons.append((path, read_table(path, "a paired comparison table")))
            elif name == CLUSTERS_FILE:
                run.cluster_sizes.update(cluster_sizes(path))
            elif name in RECORD_FILES:
                top_k = read_json_object(path).get("top_k")
                run.top_k = top_k if isinstance(top_k, int) and run.top_k is None else run.top_k
            elif path.suffix in TABLE_SUFFIXES and path.stem in SWEEP_STEMS:
                run.sweeps[SWEEP_STEMS[path.stem]] = (path, read_table(path, f"a sweep table ({path.stem})"))
            elif path.suffix in TABLE_SUFFIXES and path.stem == EFFICIENCY_STEM:
                run.efficiency = (path, read_table(path, "an efficiency table"))
    run.discoveries.sort(key=lambda d: (d.cluster is not None, d.cluster or 0, _variant_rank(d.variant), str(d.folder)))
    label_discoveries([d for d in run.discoveries if d.cluster is None])
    for discovery in run.discoveries:
        discovery.label = discovery.label or f"cluster {discovery.cluster} · {discovery.variant}"
    run.head_files = dict(sorted(run.head_files.items(), key=lambda item: _head_file_rank(*item)))
    recorded = root / COLOURS_FILE
    run.colours = series_colours(run.series(), read_colours(recorded) if recorded.is_file() else {})
    return run


def _variant_rank(variant: str) -> int:
    """The paper's PCS first, then the contrast variants, then anything else."""
    return list(VARIANTS).index(variant) if variant in VARIANTS else len(VARIANTS)


def _head_file_rank(path: Path, weights: HeadWeights) -> tuple:
    cluster = _cluster_of(path.parent, weights.extra)
    return cluster is not None, cluster or 0, _variant_rank(str(weights.extra.get("variant") or "")), str(path)


def _validation_tables(path: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame | None]:
    """(file, summary, per-example deltas or None) from a validation.parquet or validation_summary.csv."""

    table = read_table(path, "a validation table")
    if set(DELTA_COLUMNS) <= set(table.columns):
        beside = path.parent / VALIDATION_SUMMARY_FILE
        summary = read_table(beside, "a validation summary") if beside.is_file() else None
        if summary is None:
            groups = table.groupby("heads", sort=False) if "heads" in table.columns else [(None, table)]
            summary = pd.concat(
                [summarize_validation(part).assign(**({"heads": name} if name is not None else {})) for name, part in groups],
                ignore_index=True,
            )
        return path, summary, table
    if set(SUMMARY_COLUMNS) <= set(table.columns):
        return path, table, None
    raise InputError(f"{path}: neither a per-example validation table nor a validation summary")


def label_discoveries(discoveries: list[Discovery]) -> None:
    """Short unique labels: the variant, then with the method, then with the folder."""
    for describe in (
        lambda d: d.variant,
        lambda d: f"{d.variant} ({d.result.metadata.get('method') or '?'})",
        lambda d: f"{d.variant} ({d.folder.name})",
        lambda d: str(d.folder),
    ):
        labels = [describe(d) for d in discoveries]
        if len(set(labels)) == len(labels):
            break
    for discovery, label in zip(discoveries, labels):
        discovery.label = label


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "figure"


@dataclass
class Drawn:
    """The figures drawn from a run, by file stem, and a note for each one skipped."""

    figures: dict[str, go.Figure]
    notes: list[str]


def draw_run(run: RunContents) -> Drawn:
    """Every figure `run` has the inputs for (see the module docstring)."""
    figures: dict[str, go.Figure] = {}
    notes = list(run.notes)
    plain = [d for d in run.discoveries if d.cluster is None]
    clustered = sorted(((d.cluster, d) for d in run.discoveries if d.cluster is not None), key=lambda pair: pair[0])
    for discovery in plain:
        with noted(notes, f"pcs-{slug(discovery.label)}"):
            figures[f"pcs-{slug(discovery.label)}"] = pcs_heatmap(discovery.result, highlight=discovery.selected)
    if len(plain) < 2:
        notes.append("skipped pcs-side-by-side: needs two PCS results (pcs.parquet) that are not per-cluster")
    with noted(notes, "pcs-side-by-side"):
        if len(plain) >= 2:
            highlights = {d.label: d.selected for d in plain}
            figures["pcs-side-by-side"] = pcs_side_by_side({d.label: d.result for d in plain}, highlights=highlights)
    if not clustered:
        notes.append("skipped pcs-clusters: no per-cluster PCS result (cluster-<id>/pcs.parquet)")
    with noted(notes, "pcs-clusters"):
        if clustered:
            figures["pcs-clusters"] = cluster_heatmaps(
                {cluster: d.result for cluster, d in clustered},
                sizes=run.cluster_sizes or None,
                highlights={cluster: d.selected for cluster, d in clustered},
            )

    head_sets = _labelled_head_sets(run)
    if len(head_sets) < 2:
        notes.append("skipped overlap: needs two head sets (heads.json)")
    with noted(notes, "overlap"):
        if len(head_sets) >= 2:
            figures["overlap"] = overlap_heatmap(head_sets, title="Overlap of the selected head sets")

    if not run.validations:
        notes.append(f"skipped validation: no {VALIDATION_FILE} or {VALIDATION_SUMMARY_FILE}")
    for path, summary, deltas in run.validations:
        for name, part, part_deltas in _split_by_heads(summary, deltas):
            label = name or _relative(run.root, path.parent)
            stem = "validation" if len(run.validations) == 1 and name is None else f"validation-{slug(label)}"
            k = None if "n_heads" in part.columns else _validation_k(run, path, name)  # the table's own K comes first
            with noted(notes, stem):
                figures[stem] = validation_figure(part, deltas=part_deltas, k=k, label=label)

    for parameter, (stem, _) in SWEEPS.items():
        if parameter not in run.sweeps:
            notes.append(f"skipped sweep-{parameter}: no {stem}.csv or {stem}.parquet")
            continue
        parts = list(by_metric(run.sweeps[parameter][1]))
        for metric, part in parts:
            name = f"sweep-{parameter}" + (f"-{slug(metric)}" if len(parts) > 1 else "")
            with noted(notes, name):
                figures[name] = sweep_figure(part, parameter, metric, colours=run.colours)

    comparisons = run.comparisons or _computed_comparison(run, notes)
    stems = comparison_stems(run.root, [path for path, _ in comparisons])
    for (_, table), stem in zip(comparisons, stems):
        with noted(notes, stem):
            figures[stem] = paired_bars(table, colours=run.colours)
    efficiency = run.efficiency[1] if run.efficiency else _timed_evaluations(run)
    if efficiency is None:
        notes.append(f"skipped efficiency: no {EFFICIENCY_STEM}.csv/.parquet and no evaluation recording its seconds")
    with noted(notes, "efficiency"):
        if efficiency is not None:
            figures["efficiency"] = efficiency_figure(
                efficiency, subtitle="seconds per example as recorded by each run", colours=run.colours
            )
    return Drawn(figures, notes)


def comparison_stems(root: Path, paths: list[Path]) -> list[str]:
    """`comparison`, then `comparison-<folder>` named by the table's folders below `root` less any
    named `comparison` (`comparison/routing/comparison.parquet`: `comparison-routing`); the whole
    path when that leaves two alike."""

    def stem(path: Path, keep_all: bool) -> str:
        parts = [part for part in path.parent.relative_to(root).parts if keep_all or part != "comparison"]
        return "-".join(["comparison", *(slug(part) for part in parts)])

    if len(paths) == 1:
        return ["comparison"]
    if not all(path.is_relative_to(root) for path in paths):
        return [f"comparison-{slug(str(path.parent))}" for path in paths]
    stems = [stem(path, keep_all=False) for path in paths]
    return stems if len(set(stems)) == len(stems) else [stem(path, keep_all=True) for path in paths]


def _relative(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix() or root.name
    except ValueError:
        return str(path)


def _labelled_head_sets(run: RunContents) -> dict[str, list[tuple[int, int]]]:
    """Every head file's heads, labelled by what the set is; sets that would share a label get their folder too."""
    labels = {path: head_set_label(w, cluster=_cluster_of(path.parent, w.extra)) for path, w in run.head_files.items()}
    counts = pd.Series(list(labels.values())).value_counts()
    return {
        (label if counts[label] == 1 else f"{label} ({_relative(run.root, path.parent)})"): run.head_files[path].heads()
        for path, label in labels.items()
    }


def _split_by_heads(summary: pd.DataFrame, deltas: pd.DataFrame | None):
    """(name, summary part, deltas part): one study per value of a `heads` column, else the whole."""
    if "heads" not in summary.columns:
        yield None, summary, deltas
        return
    for name, part in summary.groupby("heads", sort=False):
        in_deltas = deltas if deltas is None or "heads" not in deltas.columns else deltas[deltas["heads"] == name]
        yield str(name), part, in_deltas


def _validation_k(run: RunContents, path: Path, heads_name: str | None) -> int | None:
    """K of a validation study whose table does not record it: the `k` its folder's fingerprint
    records, else the size of the head set it names (or that sits beside it), else the run's top_k."""
    k = recorded_k(path.parent)
    if k is not None:
        return k
    if heads_name is not None:
        for discovery in run.discoveries:
            if heads_name in (discovery.label, discovery.variant) and discovery.heads is not None:
                return len(discovery.selected)
    beside = run.head_files.get(path.parent / HEADS_FILE)
    if beside is not None:
        return len(beside.heads())
    return run.top_k


def recorded_k(folder: Path) -> int | None:
    """The K (`--top-k`) that the validation stage's fingerprint in `folder` records, if any."""
    fingerprint = folder / FINGERPRINT_FILE
    options = read_json_object(fingerprint).get("options") if fingerprint.is_file() else None
    k = options.get("k") if isinstance(options, dict) else None
    return k if isinstance(k, int) else None


def by_metric(table: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(metric, rows) for each metric of a table with a `metric` column, else ("", the table)."""
    if "metric" in table.columns and table["metric"].nunique() > 1:
        yield from ((str(metric), part) for metric, part in table.groupby("metric", sort=False))
    else:
        yield (str(table["metric"].iloc[0]) if "metric" in table.columns and len(table) else ""), table


def sweep_figure(table: pd.DataFrame, parameter: str, metric: str, *, colours: dict[str, str] | None = None) -> go.Figure:
    """A sweep table (`parameter`, `value` or `mean_delta_nll`, `low`/`high` or `ci_low`/`ci_high`,
    optional `group`) as lines with interval bands, each group in its colour of `colours`."""
    value = "value" if "value" in table.columns else "mean_delta_nll"
    low, high = ("low", "high") if "low" in table.columns else ("ci_low", "ci_high")
    axis = SWEEPS[parameter][1]
    return sweep_plot(
        table,
        x=parameter,
        y=value,
        group="group" if "group" in table.columns else None,
        low=low,
        high=high,
        title=f"{metric or value} against {axis}",
        x_title=axis,
        y_title=metric or value,
        subtitle="bands: the intervals recorded in the sweep table",
        colours=colours,
    )


def _computed_comparison(run: RunContents, notes: list[str]) -> list[tuple[Path, pd.DataFrame]]:
    """Without a comparison table: every evaluation against the greedy one, paired by example."""

    if len(run.evaluations) < 2:
        notes.append(f"skipped comparison: no {COMPARISON_FILE} and fewer than two evaluation folders")
        return []
    try:
        runs = [load_run(folder) for folder in run.evaluations]
    except InputError as error:
        notes.append(f"skipped comparison: {error}")
        return []
    greedy = [r for r in runs if r.method == "greedy"]
    if not greedy:
        notes.append("skipped comparison: no comparison table and no greedy evaluation to compare against")
        return []
    folders = [greedy[0].folder] + [r.folder for r in runs if r is not greedy[0]]
    return [(run.root / COMPARISON_FILE, compare_runs(folders))]


def _timed_evaluations(run: RunContents) -> pd.DataFrame | None:
    """`method, seconds_per_example, metric, value, low, high` from evaluations whose metrics.json records `seconds`."""
    rows = []
    for folder in sorted(run.evaluations, key=lambda folder: folder.name != "greedy"):
        try:
            metrics = read_json_object(folder / METRICS_FILE)
        except InputError:
            continue
        seconds, n = metrics.get("seconds"), metrics.get("n")
        if not isinstance(seconds, (int, float)) or not isinstance(n, int) or n < 1:
            continue
        for metric, interval in (metrics.get("metrics") or {}).items():
            if isinstance(interval, dict) and "value" in interval:
                rows.append({"method": folder.name, "seconds_per_example": seconds / n, "metric": metric,
                             "value": interval["value"], "low": interval.get("low"), "high": interval.get("high")})  # fmt: skip
    return pd.DataFrame(rows) if rows else None
