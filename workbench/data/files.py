"""Reading user-supplied data files with errors that name the file, line and problem."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import InputError


def read_text(path: Path) -> str:
    """UTF-8 text (a leading byte-order mark is tolerated); anything else is an `InputError`."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: {json_problem(error)}") from None


def json_problem(error: json.JSONDecodeError) -> str:
    """Where and what, whole: json's messages end in "... at" and leave the place to a suffix."""
    what = error.msg.removesuffix(" at")
    ends = error.msg.startswith("Unterminated") or error.pos >= len(error.doc.rstrip()) - 1
    cut = " (is the file cut short?)" if ends else ""
    return f"malformed JSON: {what[0].lower()}{what[1:]} at line {error.lineno}, column {error.colno}{cut}"


def read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """`(where, record)` for every non-blank line; `where` names the file and line for errors."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: {json_problem(error)}") from None
