"""LongLaMP rows (`input`, `output`, `profile`, and a user column) as exported from the Hugging Face
dataset to JSONL or Parquet. Parquet stores profiles as arrays of structs; they become lists of dicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.data.examples import Example, as_text, check_profile, check_record
from workbench.data.files import read_jsonl
from workbench.data.tasks import task_spec
from workbench.errors import InputError

USER_COLUMNS = ("user_id", "name", "user")


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pandas as pd
    import pyarrow

    try:
        rows = pd.read_parquet(path).to_dict(orient="records")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (pyarrow.ArrowException, OSError) as error:
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    for index, row in enumerate(rows):
        if "profile" in row and hasattr(row["profile"], "tolist"):
            row["profile"] = [dict(item) for item in row["profile"].tolist()]
        yield f"{path}, row {index}", row


def load_longlamp(path: Path, task: str) -> list[Example]:
    """Examples of a LongLaMP export (`.jsonl` or `.parquet`) for `task` (LongLaMP-2/3/4)."""
    spec = task_spec(task)
    if not spec.name.startswith("LongLaMP"):
        raise InputError(f"{path}: LongLaMP rows need a LongLaMP task, got {spec.name}")
    rows = _parquet_rows(path) if path.suffix == ".parquet" else read_jsonl(path)
    examples = []
    for index, (where, row) in enumerate(rows):
        check_record(row, where, {"input": str, "output": str, "profile": list})
        example_id = as_text(row.get("id", index), where, "id")
        user_column = next((column for column in USER_COLUMNS if row.get(column) is not None), None)
        user_id = as_text(row[user_column], where, user_column) if user_column else example_id
        examples.append(
            Example(example_id, user_id, spec.name, row["input"], check_profile(row["profile"], spec.name, where), row["output"])
        )
    if not examples:
        raise InputError(f"{path}: no rows")
    return examples
