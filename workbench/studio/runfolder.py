"""A tolerant reader of run folders: which head maps and head sets a folder holds, and which task
data made them.

A run folder is whatever `workbench discover` or `workbench demo` wrote (and, later, one folder
per pipeline stage with a `fingerprint.json`). The reader does not depend on the layout: it finds
every `pcs.parquet` and `heads.json` below the root (recursively, checkpoints skipped) and reads
the task, data, split and prompt format from the first place that records them: a
`fingerprint.json`'s options, a `run-config.json`, the PCS files' metadata or the head files'
`extra`. A run on the demo set records `demo` (or no data); a run on other data records its path,
which must still be there (as recorded, or relative to the run folder): a run is never shown with
another set's examples. `--data` / `--task` (`task_source`'s arguments) override the record.
What is not recorded falls back to the bundled demo set's defaults.

Files are addressed by their path relative to the root, and only files the scan found can be
opened: a name that leads outside the folder (`..`, an absolute path, a symbolic link pointing
out) is refused, so the browser can read nothing but the run's own files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.scores.results import PCSResult

SCORE_FILE = "pcs.parquet"
HEADS_FILE = "heads.json"
FINGERPRINT_FILE = "fingerprint.json"
RECORD_FILES = (FINGERPRINT_FILE, "run-config.json")
SKIPPED_FOLDERS = {"checkpoint", ".git", "__pycache__"}
MAX_FILES = 200  # a run folder with more score files than this is not a run folder
DEFAULT_TASK = "LaMP-4"
DEMO_DATA = ("demo", "None")  # what runs on the bundled demo set record as their data
USER_CUT = re.compile(r"^(?P<split>.+) \((train|dev) users\)$")  # `workbench run`'s label of a split cut by user


@dataclass(frozen=True)
class TaskSource:
    """Where a run's examples come from and how its prompts were built. `data` None is the demo set;
    `notes` says what had to be assumed."""

    task: str = DEFAULT_TASK
    data: str | None = None
    split: str = "dev"
    prompt_format: str = "plain"
    k: int = 5
    seed: int = 0
    max_prompt_tokens: int | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoreEntry:
    path: str  # relative to the run folder, with forward slashes
    label: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class HeadsEntry:
    path: str
    label: str
    n_heads: int


class RunFolder:
    """The score maps and head sets below `root` (None: an empty run, the demo set's defaults)."""

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root).resolve()
        if self.root is not None and not self.root.is_dir():
            raise InputError(f"{root}: not a folder (--run takes the folder a discover or demo run wrote)")
        self._files = {} if self.root is None else {_relative(path, self.root): path for path in self._scan()}
        self._results: dict[str, PCSResult] = {}
        self._records = [self._read_record(name) for name in self._files if Path(name).name in RECORD_FILES]
        self.scores = [self._score_entry(name) for name in self._files if Path(name).name == SCORE_FILE]
        self.head_sets = [self._heads_entry(name) for name in self._files if Path(name).name == HEADS_FILE]

    # --- files ---------------------------------------------------------------------------

    def _scan(self) -> Iterator[Path]:
        found = 0
        # Shallow files first: a run's own results before those of its sub-stages.
        for path in sorted(_walk(self.root), key=lambda p: (len(p.parts), p)):  # type: ignore[arg-type]
            if path.name in (SCORE_FILE, HEADS_FILE, *RECORD_FILES):
                found += 1
                if found > MAX_FILES:
                    raise InputError(f"{self.root}: more than {MAX_FILES} run files below it; pass the run's own folder")
                yield path

    def resolve(self, name: str) -> Path:
        """The file `name` (relative to the root) if the scan found it; anything else is refused."""
        if not isinstance(name, str) or not name or self.root is None:
            raise InputError("no such run file")
        candidate = Path(name)
        if candidate.is_absolute() or ".." in candidate.parts:
            raise InputError(f"{name!r}: only files inside the run folder can be opened")
        path = self._files.get(candidate.as_posix())
        if path is None:
            raise InputError(f"{name!r}: not a score or head file of this run")
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise InputError(f"{name!r}: points outside the run folder")
        return resolved

    def load_scores(self, name: str) -> PCSResult:
        """The PCS file `name` (read once, then kept)."""
        path = self.resolve(name)
        if name not in self._results:
            self._results[name] = PCSResult.load(path)
        return self._results[name]

    def load_heads(self, name: str) -> HeadWeights:
        return HeadWeights.load_any(self.resolve(name))

    # --- what the run recorded ---------------------------------------------------------------

    def _read_record(self, name: str) -> dict[str, Any]:
        try:
            record = json.loads(self.resolve(name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        if not isinstance(record, dict):
            return {}
        if Path(name).name == FINGERPRINT_FILE:  # the stage's options; its top-level `data` is a content hash
            options = record.get("options")
            return options if isinstance(options, dict) else {}
        return record

    def _score_entry(self, name: str) -> ScoreEntry:
        try:
            metadata = self.load_scores(name).metadata
        except InputError as error:
            return ScoreEntry(name, f"{name} (unreadable: {error})", {})
        parts = [metadata.get("variant") or "standard", "PCS"]
        details = [str(metadata[key]) for key in ("method", "task", "split") if metadata.get(key)]
        if metadata.get("n_examples"):
            details.append(f"{metadata['n_examples']} examples")
        return ScoreEntry(name, f"{' '.join(parts)} ({', '.join(details)})", metadata)

    def _heads_entry(self, name: str) -> HeadsEntry:
        try:
            weights = self.load_heads(name)
        except InputError as error:
            return HeadsEntry(name, f"{name} (unreadable: {error})", 0)
        variant = weights.extra.get("variant") or weights.method or "heads"
        return HeadsEntry(name, f"top-{len(weights.heads())} {variant} — {name}", len(weights.heads()))

    def _head_records(self) -> Iterator[dict[str, Any]]:
        for entry in self.head_sets:
            try:
                weights = self.load_heads(entry.path)
            except InputError:
                continue
            yield {"task": weights.task, "model": weights.model, **weights.extra}

    def task_source(self, data: str | Path | None = None, task: str | None = None) -> TaskSource:
        """The task data of the run, from the first record that names each field; `data` and
        `task` (the command's `--data` / `--task`) replace what the run recorded."""
        records: list[dict[str, Any]] = [*self._records, *(entry.metadata for entry in self.scores), *self._head_records()]
        notes = []
        if task is None:
            task = _first(records, ("task",))
        if task is None:
            task = DEFAULT_TASK
            if self.root is not None:
                notes.append(f"the run records no task; showing the demo set's {DEFAULT_TASK}")
        if data is not None:
            if not Path(data).exists():
                raise InputError(f"--data {data}: no such file or folder")
            located: str | None = str(Path(data).resolve())
        else:
            recorded = _first(records, ("data",))
            located = None if recorded is None or str(recorded) in DEMO_DATA else self._locate(str(recorded))
            if recorded is None and self.root is not None:
                notes.append("the run records no data; showing the bundled demo set (--data names the run's own)")
        split = str(_first(records, ("split",)) or "dev")
        cut = USER_CUT.match(split)
        if cut:
            split = cut["split"]
            notes.append(f"the run cut the {split!r} split by user; every user of it is listed here")
        prompt_format = _first(records, ("prompt_format", "format"))
        if prompt_format not in ("plain", "chat", "history"):
            prompt_format = "plain"
            if self.root is not None:
                notes.append("the run records no prompt format; assuming plain")
        return TaskSource(
            task=str(task),
            data=located,
            split=split,
            prompt_format=prompt_format,
            k=_as_int(_first(records, ("k", "profile_k")), 5) or 5,
            seed=_as_int(_first(records, ("seed",)), 0) or 0,
            max_prompt_tokens=_as_int(_first(records, ("max_prompt_tokens",)), None),
            notes=tuple(notes),
        )

    def _locate(self, data: str) -> str:
        """A recorded data path as given (absolute, or relative to where the run was made) or
        relative to the run folder; refused when it is in neither place."""
        for candidate in (Path(data), *(() if self.root is None else (self.root / data,))):
            if candidate.exists():
                return str(candidate.resolve())
        raise InputError(
            f"the run's data {data} is not here (looked for it as recorded and below {self.root}); "
            "pass --data with the folder the run was made on (and --task)"
        )


def _walk(root: Path) -> Iterator[Path]:
    """Files below `root`, not following symbolic links to folders and skipping checkpoints."""
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            if child.name not in SKIPPED_FOLDERS:
                yield from _walk(child)
        elif child.is_file():
            yield child


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _first(records: Iterable[dict[str, Any]], keys: tuple[str, ...]) -> Any:
    """The first value under any of `keys` in the records, looking into nested objects too."""
    for record in records:
        value = _find(record, keys)
        if value not in (None, ""):
            return value
    return None


def _find(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if record.get(key) not in (None, ""):
            return record[key]
    for value in record.values():
        if isinstance(value, dict):
            found = _find(value, keys)
            if found is not None:
                return found
    return None


def _as_int(value: Any, default: int | None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
