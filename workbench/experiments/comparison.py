"""Paired comparison of evaluation runs (`workbench evaluate` output folders), side by side.

Runs are paired by example id: only the examples present in every run are compared, and how many
each run had beyond them is reported (and warned about), never dropped silently. Every metric of
every run is recomputed on those shared examples, so the values side by side are comparable; each
run after the first (the baseline) gets the difference with its bootstrap interval and a paired
permutation p-value (`workbench.stats.paired_comparison`). A warning says when there are too few
shared examples for intervals or p-values to mean anything.

A run's settings (method, preset, decoder options, prompt, ...) are read tolerantly from its
`metrics.json`: whatever of `config`, `method`, `preset` and `decoder` it records, nested values
flattened to dotted keys; the settings in which the runs differ label them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.files import read_json, read_jsonl
from workbench.data.tasks import task_spec
from workbench.engine.numerics import mixed_threads_note
from workbench.errors import InputError
from workbench.experiments.evaluation import METRICS, PREDICTIONS
from workbench.experiments.metrics import aggregate
from workbench.stats import paired_comparison, small_sample_caveat

SETTING_SOURCES = ("method", "preset", "decoder")
UNLABELLED_SETTINGS = (
    "method",
    "preset",
    "decoder.name",
    "decoder.preset",
    "batch_size",
    "resamples",
    "limit",
)  # in the label, or change no prediction
PAIRING_SETTINGS = ("task", "split", "data", "model")  # runs differing here pair unlike examples


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


@dataclass(frozen=True)
class Run:
    """A finished evaluation folder: its `metrics.json` and its predictions by id."""

    folder: Path
    metrics: dict[str, Any]
    predictions: dict[str, dict[str, Any]]

    @property
    def config(self) -> dict[str, Any]:
        config = self.metrics.get("config")
        return config if isinstance(config, dict) else {}

    def setting(self, name: str) -> Any:
        """A top-level setting (task, method, preset, ...) from metrics.json or its config."""
        value = self.metrics.get(name)
        return value if value is not None else self.config.get(name)

    @cached_property
    def settings(self) -> dict[str, Any]:
        """Everything recorded about how the run was made, as flat dotted keys: the config's
        entries, then the top-level method, preset and decoder (which win where both exist)."""
        flat = _flatten(self.config, "")
        for source in SETTING_SOURCES:
            if self.metrics.get(source) is not None:
                flat.update(_flatten(self.metrics[source], source))
        return flat

    @property
    def method(self) -> str:
        decoder = self.setting("decoder")
        name = decoder.get("name") if isinstance(decoder, dict) else decoder
        return str(self.setting("method") or name or "?")

    @property
    def label(self) -> str:
        """`method`, with the preset when one is recorded (e.g. "dps (authors)")."""
        preset = self.setting("preset")
        decoder = self.setting("decoder")
        if preset is None and isinstance(decoder, dict):
            preset = decoder.get("preset")
        return f"{self.method} ({preset})" if preset else self.method


def load_run(folder: str | Path) -> Run:
    """A finished run folder (`workbench evaluate` writes metrics.json last)."""
    folder = Path(folder)
    if not (folder / METRICS).is_file():
        raise InputError(f"{folder}: no {METRICS} (not a finished `workbench evaluate` output folder)")
    metrics = read_json(folder / METRICS)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("task"), str):
        raise InputError(f"{folder / METRICS}: not a `workbench evaluate` metrics file (no task)")
    if not (folder / PREDICTIONS).is_file():
        raise InputError(f"{folder}: no {PREDICTIONS}")
    predictions: dict[str, dict[str, Any]] = {}
    for where, record in read_jsonl(folder / PREDICTIONS):
        if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("scores"), dict):
            raise InputError(f"{where}: not a prediction record with an id and scores")
        predictions.setdefault(str(record["id"]), record)
    if not predictions:
        raise InputError(f"{folder / PREDICTIONS}: no predictions")
    return Run(folder, metrics, predictions)


def shared_ids(runs: Sequence[Run]) -> list[str]:
    """Example ids present in every run, in the baseline's order."""
    common = set.intersection(*(set(run.predictions) for run in runs))
    return [example_id for example_id in runs[0].predictions if example_id in common]


def differing_settings(runs: Sequence[Run]) -> list[str]:
    """The settings keys with more than one value among the runs that record them (a key only some
    runs record, with one value, is an addition to the record, not a difference)."""
    keys = sorted({key for run in runs for key in run.settings} - set(UNLABELLED_SETTINGS))
    return [key for key in keys if len({repr(run.settings[key]) for run in runs if key in run.settings}) > 1]


def paired_table(
    runs: Sequence[Run], *, resamples: int = 1000, permutations: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """One row per (run, metric) for every run after the first (the baseline), on the examples
    shared by all runs: both values, the difference with its interval and p-value, how many
    examples were paired (`n`) and how many this run and the baseline had beyond them (`dropped`,
    `baseline_dropped`). Warns (`UserWarning`) about dropped examples, too few examples and runs
    that differ in task data or split."""
    if len(runs) < 2:
        raise InputError("compare needs at least two evaluation folders (the first is the baseline)")
    tasks = {str(run.setting("task")) for run in runs}
    if len(tasks) != 1:
        raise InputError(f"the runs are for different tasks ({', '.join(sorted(tasks))}); compare runs of one task")
    spec = task_spec(tasks.pop())
    shared = shared_ids(runs)
    if not shared:
        raise InputError("the runs share no example ids (were they made on the same data and split?)")
    dropped = [len(run.predictions) - len(shared) for run in runs]
    if any(dropped):
        lost = ", ".join(f"{d} of {len(r.predictions)} from {r.folder}" for r, d in zip(runs, dropped) if d)
        warnings.warn(f"compared only the {_examples(len(shared))} present in every run; dropped {lost}", stacklevel=2)
    for key in PAIRING_SETTINGS:
        values = {repr(run.setting(key)) for run in runs}
        if len(values) > 1:
            warnings.warn(f"the runs differ in {key} ({', '.join(sorted(values))}): paired differences mix them", stacklevel=2)
    caveat = small_sample_caveat(len(shared))
    if caveat:
        warnings.warn(caveat, stacklevel=2)
    mixed = mixed_threads_note([line.get("threads") for run in runs for line in run.predictions.values()], "the comparison")
    if mixed:
        warnings.warn(mixed, stacklevel=2)

    base_rows = [runs[0].predictions[i]["scores"] for i in shared]
    base_metrics = aggregate(spec, base_rows)
    table = []
    for run, run_dropped in zip(runs[1:], dropped[1:]):
        rows = [run.predictions[i]["scores"] for i in shared]
        run_metrics = aggregate(spec, rows)
        names = [name for name in base_metrics if name in run_metrics]
        pooled = base_rows + rows

        def difference(rows_a: np.ndarray, rows_b: np.ndarray, pooled=pooled, names=names) -> np.ndarray:
            a = aggregate(spec, [pooled[i] for i in rows_a])
            b = aggregate(spec, [pooled[i] for i in rows_b])
            return np.array([b[name] - a[name] for name in names])

        differing = np.array([base != row for base, row in zip(base_rows, rows)])
        comparisons = paired_comparison(len(shared), difference, differing=differing, resamples=resamples,
                                        permutations=permutations, confidence=confidence, seed=seed)  # fmt: skip
        for name, comparison in zip(names, comparisons):
            table.append({
                "baseline": str(runs[0].folder), "run": str(run.folder), "method": run.method, "label": run.label,
                "metric": name, "baseline_value": base_metrics[name], "value": run_metrics[name],
                **comparison.as_dict(), "dropped": run_dropped, "baseline_dropped": dropped[0],
            })  # fmt: skip
    return pd.DataFrame(table)


def _examples(n: int) -> str:
    return f"{n} example{'s' if n != 1 else ''}"


def compare_runs(
    folders: Sequence[str | Path], *, resamples: int = 1000, permutations: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """`paired_table` of the run folders, the first being the baseline."""
    if len(folders) < 2:
        raise InputError("compare needs at least two evaluation folders (the first is the baseline)")
    return paired_table([load_run(folder) for folder in folders], resamples=resamples, permutations=permutations,
                        confidence=confidence, seed=seed)  # fmt: skip
