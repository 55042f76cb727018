"""A generic JSONL of examples, one object a line:
`{"id", "user_id", "input", "output", "profile": [{"input"?, "output"}], "style"?}`.

It lets any personalization data set in (input, reference) form use the workbench; profile items
are the user's past (input, output) pairs, `input` optional.
"""

from __future__ import annotations

from pathlib import Path

from workbench.data.examples import Example, as_text, check_profile, check_record
from workbench.data.files import read_jsonl
from workbench.data.styles import parse_style
from workbench.errors import InputError


def load_generic(path: Path) -> list[Example]:
    examples, seen = [], set()
    for where, record in read_jsonl(path):
        check_record(record, where, {"id": (str, int), "user_id": (str, int), "input": str, "output": str, "profile": list})
        example_id = as_text(record["id"], where, "id")
        if example_id in seen:
            raise InputError(f"{where}: duplicate id {example_id!r}")
        seen.add(example_id)
        style = record.get("style")
        if style is not None:
            if not isinstance(style, str):
                raise InputError(f"{where}: field 'style' must be a string")
            parse_style(style)
        examples.append(
            Example(
                example_id=example_id,
                user_id=as_text(record["user_id"], where, "user_id"),
                task="generic",
                input=record["input"],
                profile=check_profile(record["profile"], "generic", where),
                output=record["output"],
                style=style,
            )
        )
    if not examples:
        raise InputError(f"{path}: no examples")
    return examples
