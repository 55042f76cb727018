"""One entry point for every data source: `load_examples(data, task, split)`.

`data` is a LaMP folder (holding `{split}_questions.json` / `{split}_outputs.json`, or `{split}/`
subfolders with them, as the official download unpacks), a LongLaMP export (`.parquet` /
`.jsonl` for a LongLaMP task), a generic JSONL, or None for the bundled demo set.
"""

from __future__ import annotations

from pathlib import Path

from workbench.data.examples import Example
from workbench.data.generic import load_generic
from workbench.data.lamp import folder_task, lamp_files, load_lamp, read_styles
from workbench.data.longlamp import load_longlamp
from workbench.data.tasks import task_spec
from workbench.errors import InputError

DEMO_FOLDER = Path(__file__).parent / "demo"
DEMO_TASKS = ("LaMP-4", "LaMP-7")
DEMO_TASK = "LaMP-4"  # what a command reads when given neither --data nor --task: the demo set's headlines
STYLES_FILE = "styles.json"


def resolve_task(data: str | Path | None, task: str | None) -> str:
    """The task given; else the one a LaMP folder's outputs file names (`"task": "LaMP_4"`); else,
    without data, the demo set's `DEMO_TASK`."""
    if task is not None:
        return task_spec(task).name
    if data is None:
        return DEMO_TASK
    named = folder_task(Path(data)) if Path(data).is_dir() else None
    if named is None:
        raise InputError(f"--task is needed: {data} does not name its task (a LaMP folder's outputs file does, "
                         'e.g. "task": "LaMP_4")')  # fmt: skip
    return task_spec(named).name


def demo_folder(task: str) -> Path:
    """The bundled demo set of `task` (LaMP-4-like headlines or LaMP-7-like paraphrases)."""
    name = task_spec(task).name
    if name not in DEMO_TASKS:
        raise InputError(f"the bundled demo set has tasks {', '.join(DEMO_TASKS)}, not {name}; pass --data")
    return DEMO_FOLDER / name


def load_examples(data: str | Path | None, task: str, split: str = "dev", *, need_gold: bool = True) -> list[Example]:
    """The examples of `split`. Evaluation and head discovery both need each example's gold
    output, so a LaMP folder without `{split}_outputs.json` is refused here, naming the file,
    unless `need_gold=False` (examples then have `output=None`)."""
    spec = task_spec(task)
    path = demo_folder(spec.name) if data is None else Path(data)
    if path.is_dir():
        for candidate in (path / f"{split}.parquet", path / f"{split}.jsonl"):
            if candidate.is_file() and spec.name.startswith("LongLaMP"):
                return load_longlamp(candidate, spec.name)
        questions, outputs = lamp_files(path, split)
        if outputs is None and need_gold:
            raise InputError(
                f"{questions.parent}: no {split}_outputs.json (the gold outputs); evaluation and head discovery need it"
            )
        styles_file = next((f for f in (path / STYLES_FILE, path.parent / STYLES_FILE) if f.is_file()), None)
        styles = read_styles(styles_file) if styles_file else None
        return load_lamp(questions, outputs, spec.name, styles)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if spec.name.startswith("LongLaMP"):
        return load_longlamp(path, spec.name)
    if spec.name == "generic":
        return load_generic(path)
    raise InputError(f"{path}: a single file is read as LongLaMP rows or a generic JSONL; task {spec.name} needs a LaMP folder")
