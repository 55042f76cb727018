"""The official LaMP files: `{split}_questions.json` (a list of `{id, input, profile}`, plus
`user_id` in the time-based split) and `{split}_outputs.json` (`{task, golds: [{id, output}]}`).

Known quirks handled: ids written as numbers in some re-exports become strings; a byte-order mark
is tolerated; the malformed LaMP-2 dev input `110` (no `description:`) is kept with a warning and
retrieves with its whole input; LaMP-6 is refused with the reason (licensed corpus).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from workbench.data.examples import Example, as_text, check_profile, check_record
from workbench.data.files import read_json
from workbench.data.styles import parse_style
from workbench.data.tasks import UNSUPPORTED, task_spec
from workbench.errors import InputError

AVOCADO_FILE = re.compile(r"^\d+-\d+-EM\.txt$")
INPUT_MARKERS = {"LaMP-2": "description:", "LaMP-3": "review:", "LaMP-4": "article:", "LaMP-5": "paper:"}


def lamp_files(folder: Path, split: str) -> tuple[Path, Path | None]:
    """The questions and (if present) outputs file of `split` in `folder` or `folder/split/`."""
    for where in (folder, folder / split):
        questions = where / f"{split}_questions.json"
        if questions.is_file():
            outputs = where / f"{split}_outputs.json"
            return questions, outputs if outputs.is_file() else None
    present = sorted({path.name.removesuffix("_questions.json") for path in [*folder.glob("*_questions.json"),
                                                                              *folder.glob("*/*_questions.json")]})  # fmt: skip
    hint = (
        f"; it has the {' and '.join(present)} split{'s' if len(present) > 1 else ''} (--split {present[0]})" if present else ""
    )
    raise InputError(f"{folder}: no {split}_questions.json here or in {folder / split}{hint}")


def folder_task(folder: Path) -> str | None:
    """The task an official LaMP folder names in its outputs files (`"task": "LaMP_4"`), if any."""
    for path in sorted([*folder.glob("*_outputs.json"), *folder.glob("*/*_outputs.json")]):
        record = read_json(path) if path.is_file() else None
        task = record.get("task") if isinstance(record, dict) else None
        if isinstance(task, str) and task.strip():
            return task
    return None


def read_golds(path: Path) -> tuple[str, dict[str, str]]:
    """`(task, {id: output})` of an official outputs file."""
    record = check_record(read_json(path), str(path), {"task": str, "golds": list})
    golds: dict[str, str] = {}
    for index, gold in enumerate(record["golds"]):
        where = f"{path}, gold {index}"
        check_record(gold, where, {"id": (str, int), "output": str})
        gold_id = as_text(gold["id"], where, "id")
        if gold_id in golds:
            raise InputError(f"{where}: duplicate id {gold_id!r}")
        golds[gold_id] = gold["output"]
    return record["task"], golds


def load_lamp(
    questions: Path,
    outputs: Path | None = None,
    task: str | None = None,
    styles: dict[str, str] | None = None,
) -> list[Example]:
    """Examples of an official LaMP questions file, with golds from its outputs file if given.

    `task` defaults to the outputs file's `task`; when both are given they must agree. `styles`
    maps user ids to style names (the bundled demo set records them).
    """
    file_task, golds = read_golds(outputs) if outputs is not None else (None, None)
    if file_task is not None and file_task.replace("_", "-") in UNSUPPORTED:
        task_spec(file_task)  # raises with the reason
    if task is None and file_task is None:
        raise InputError(f"{questions}: no outputs file to read the task from; name the task (e.g. LaMP-4)")
    spec = task_spec(task or file_task)  # type: ignore[arg-type]
    if file_task is not None and task_spec(file_task).name != spec.name:
        raise InputError(f"{outputs}: file is for task {file_task!r}, but task {spec.name} was requested")

    records = read_json(questions)
    if not isinstance(records, list):
        raise InputError(f"{questions}: expected a JSON list of questions, got {type(records).__name__}")
    examples, seen = [], set()
    for index, record in enumerate(records):
        where = f"{questions}, record {index}"
        check_record(record, where, {"id": (str, int), "input": str, "profile": list})
        example_id = as_text(record["id"], where, "id")
        where = f"{where} (id {example_id!r})"
        if example_id in seen:
            raise InputError(f"{where}: duplicate id")
        seen.add(example_id)
        if AVOCADO_FILE.match(record["input"].strip()):
            raise InputError(f"{where}: input is an Avocado file name; {UNSUPPORTED['LaMP-6']}")
        _check_input_marker(spec.name, record["input"], where)
        user_id = as_text(record.get("user_id", example_id), where, "user_id")
        examples.append(
            Example(
                example_id=example_id,
                user_id=user_id,
                task=spec.name,
                input=record["input"],
                profile=check_profile(record["profile"], spec.name, where),
                output=None if golds is None else golds.get(example_id),
                style=(styles or {}).get(user_id),
            )
        )
    if golds is not None:
        _check_same_ids(questions, outputs, seen, set(golds))  # type: ignore[arg-type]
    return examples


def _check_input_marker(task: str, text: str, where: str) -> None:
    marker = INPUT_MARKERS.get(task)
    if marker and marker not in text:
        warnings.warn(f"{where}: input lacks {marker!r} (a known LaMP quirk); retrieving with the whole input", stacklevel=3)


def _check_same_ids(questions: Path, outputs: Path, question_ids: set[str], gold_ids: set[str]) -> None:
    for missing, what, there, partner in (
        (question_ids - gold_ids, "question id(s) have no gold", outputs, questions),
        (gold_ids - question_ids, "gold id(s) have no question", questions, outputs),
    ):
        if missing:
            shown = ", ".join(repr(i) for i in sorted(missing)[:3])
            raise InputError(f"{there}: {len(missing)} {what} here, ids of {partner.name} (e.g. {shown})")


def read_styles(path: Path) -> dict[str, str]:
    """A `{user_id: style}` JSON object (the bundled demo set's `styles.json`), every style checked
    here (`workbench.data.styles`), so that a file of another format fails before any model work,
    not when the first batch of generations is scored."""

    record: Any = read_json(path)
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        raise InputError(f"{path}: expected a JSON object mapping user ids to style names")
    for user, style in record.items():
        try:
            parse_style(style)
        except InputError as error:
            raise InputError(f"{path}: user {user!r}: {error}") from None
    return record
