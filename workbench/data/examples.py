"""The example record every loader produces: one task input of one user, the user's profile and
(when known) the reference output the user wrote."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.data.tasks import Item, task_spec
from workbench.errors import InputError


@dataclass(frozen=True)
class Example:
    """`profile` holds the user's past items as dicts with the task's fields (`text`, `title`,
    ...); `style` names the user's machine-checkable writing style where one is recorded (the
    bundled demo set), so a style-match rate can be reported."""

    example_id: str
    user_id: str
    task: str
    input: str
    profile: tuple[Item, ...]
    output: str | None = None
    style: str | None = None


def check_record(record: Any, source: str, required: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Raise a precise `InputError` unless `record` is an object with `required` fields typed."""
    if not isinstance(record, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(record).__name__}")
    for name, kind in required.items():
        if name not in record:
            raise InputError(f"{source}: missing field {name!r}")
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(record[name], kinds) or isinstance(record[name], bool):
            expected = " or ".join(k.__name__ for k in kinds)
            raise InputError(f"{source}: field {name!r} must be {expected}, got {type(record[name]).__name__}")
    return record


def check_profile(profile: Any, task: str, source: str) -> tuple[Item, ...]:
    """Validate a profile list against the task's item fields; an empty profile is an error."""
    if not isinstance(profile, list):
        raise InputError(f"{source}: field 'profile' must be a list, got {type(profile).__name__}")
    if not profile:
        raise InputError(f"{source}: empty profile (personalization needs at least one profile item)")
    spec = task_spec(task)
    items = []
    for index, item in enumerate(profile):
        where = f"{source}, profile item {index}"
        check_record(item, where, {})
        for name in spec.item_fields:
            if name not in item:
                raise InputError(f"{where}: missing field {name!r} (task {spec.name} items need {', '.join(spec.item_fields)})")
            if not isinstance(item[name], (str, int, float)) or isinstance(item[name], bool):
                raise InputError(f"{where}: field {name!r} must be text, got {type(item[name]).__name__}")
        items.append({key: value for key, value in item.items()})
    return tuple(items)


def as_text(value: Any, source: str, name: str) -> str:
    """Official files store ids as strings; some exports use numbers. Both become text."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{source}: field {name!r} must be a string, got {type(value).__name__}")
    return str(value)
