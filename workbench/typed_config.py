"""Typed configurations: frozen dataclasses whose fields are checked by their types.

`@typed_config` makes a class a frozen pydantic dataclass. Every field is validated against its
annotation when an instance is made: `Literal` choices, numeric bounds (`Annotated[float,
Ge(0)]`), finiteness (NaN and infinities are refused everywhere), nested configs. A failure
becomes one `InputError` line naming the owner, the option, what it accepts and what it got, e.g.
`dps: combine must be 'logits' or 'logprobs', got 'probs'`; no option needs a hand-written check.

A field whose type is itself a typed config is an *option group*. Its fields may be passed flat
(`DPS(heads, gamma=2.0)` sets `contrast.gamma`, starting from the owner's default group), so an
option is declared once, in its group, and reached under one name from Python, every command
line and every record. `options(cls)` lists the flat options with their types, defaults and help
texts; `flat_values(config)` gives an instance's values under the same names.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeGuard, TypeVar, get_args, get_origin

import annotated_types
import pydantic
from pydantic import ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonDict

from workbench.errors import InputError

T = TypeVar("T")
CONFIG = ConfigDict(arbitrary_types_allowed=True, extra="forbid", allow_inf_nan=False)
PYTHON_ONLY: JsonDict = {"python_only": True}  # `Field(json_schema_extra=PYTHON_ONLY)`: no command-line form (tensors, objects)

NonNegative = Annotated[float, annotated_types.Ge(0)]
Positive = Annotated[float, annotated_types.Gt(0)]
Fraction = Annotated[float, annotated_types.Gt(0), annotated_types.Le(1)]
PositiveInt = Annotated[int, annotated_types.Ge(1)]
NonNegativeInt = Annotated[int, annotated_types.Ge(0)]


@typing.dataclass_transform(frozen_default=True, field_specifiers=(pydantic.Field, dataclasses.field))
def typed_config(cls: type[T]) -> type[T]:
    """Make `cls` a frozen, type-checked dataclass whose option groups also take flat keywords."""
    made: Any = pydantic.dataclasses.dataclass(frozen=True, config=CONFIG)(cls)
    validated_init = made.__init__

    @functools.wraps(validated_init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            validated_init(self, *args, **_fold_groups(made, args, kwargs))
        except ValidationError as error:
            raise InputError(_one_line(made, error)) from None

    made.__init__ = __init__
    return made


def is_typed_config(value: Any) -> TypeGuard[type]:
    return isinstance(value, type) and hasattr(value, "__pydantic_fields__") and dataclasses.is_dataclass(value)


def owner_name(cls: type) -> str:
    """How errors name a config: its `name` (decoders) or its class name."""
    name = getattr(cls, "name", None)
    return name if isinstance(name, str) else cls.__name__


# --- flat options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One leaf option of a config, under its flat name; `path` leads to it through groups."""

    name: str
    path: tuple[str, ...]
    annotation: Any
    default: Any
    help: str
    python_only: bool

    @property
    def accepts(self) -> str:
        return describe(self.annotation)

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The allowed values when the option is a choice among literals (None aside)."""
        members = [a for a in union_members(self.annotation) if a is not type(None)]
        if len(members) == 1 and get_origin(strip_annotated(members[0])) is Literal:
            return get_args(strip_annotated(members[0]))
        return None

    @property
    def optional(self) -> bool:
        return type(None) in union_members(self.annotation)


def options(cls: type) -> list[Option]:
    """The leaf options of `cls`, groups flattened, with the defaults an instance gets."""
    found: list[Option] = []
    for name, info in _fields(cls).items():
        default = _default(info)
        if is_typed_config(info.annotation):
            group_default = default if default is not dataclasses.MISSING else None
            for option in options(info.annotation):
                leaf_default = option.default if group_default is None else getattr(group_default, option.name)
                found.append(dataclasses.replace(option, path=(name, *option.path), default=leaf_default))
        else:
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            found.append(
                Option(name, (name,), _annotation(info), default, info.description or "", bool(extra.get("python_only")))
            )
    return found


def flat_values(config: Any) -> dict[str, Any]:
    """The values of every command-line option of `config`, under their flat names (JSON-ready)."""
    values = {}
    for option in options(type(config)):
        if option.python_only:
            continue
        value = config
        for step in option.path:
            value = getattr(value, step)
        values[option.name] = list(value) if isinstance(value, tuple) else value
    return values


def describe(annotation: Any) -> str:
    """What an annotation accepts, in words: "'logits' or 'logprobs'", "a number >= 0 or None"."""
    members = union_members(annotation)
    if len(members) > 1:
        parts: list[str] = []
        for member in members:
            literal = strip_annotated(member)
            parts += [repr(v) for v in get_args(literal)] if get_origin(literal) is Literal else [describe(member)]
        return _either(parts)
    base, bounds = strip_annotated(annotation), _bounds(annotation)
    if base is type(None) or base is None:
        return "None"
    if get_origin(base) is Literal:
        return _either([repr(value) for value in get_args(base)])
    if base is bool:
        return "true or false"
    if base in (int, float):
        noun = "an integer" if base is int else "a number"
        return f"{noun} {bounds}".strip()
    if get_origin(base) in (list, tuple):
        (item, *_) = get_args(base) or (Any,)
        return f"a list, each {describe(item)}"
    if base is str:
        return "text"
    return f"a {getattr(base, '__name__', str(base))}"


# --- internals -------------------------------------------------------------------------------


def _either(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"


def _fields(cls: type) -> dict[str, FieldInfo]:
    return cls.__pydantic_fields__  # type: ignore[attr-defined]


def _annotation(info: FieldInfo) -> Any:
    """A field's annotation with the constraints pydantic moved into its metadata."""
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return dataclasses.MISSING if info.is_required() else info.default


def union_members(annotation: Any) -> list[Any]:
    stripped = strip_annotated(annotation)
    if get_origin(stripped) in (typing.Union, types.UnionType):
        return [member for arg in get_args(stripped) for member in union_members(arg)]
    return [annotation]


def strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _bounds(annotation: Any) -> str:
    words = {
        annotated_types.Ge: ("ge", ">="),
        annotated_types.Gt: ("gt", ">"),
        annotated_types.Le: ("le", "<="),
        annotated_types.Lt: ("lt", "<"),
    }
    metadata = []
    while get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        metadata += more
    parts = []
    for item in metadata:
        for kind, (attribute, word) in words.items():
            if isinstance(item, kind):
                parts.append(f"{word} {getattr(item, attribute)}")
    return " and ".join(parts)


def _fold_groups(cls: type, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Move flat keywords of option groups into their group (built from the owner's default)."""
    fields = _fields(cls)
    positional = set(list(fields)[: len(args)])
    kwargs = dict(kwargs)
    for name, info in fields.items():
        if not is_typed_config(info.annotation):
            continue
        group_fields = set(_fields(info.annotation))
        flat = {key: kwargs.pop(key) for key in list(kwargs) if key in group_fields and key not in fields}
        if not flat:
            continue
        if name in positional:
            raise InputError(f"{owner_name(cls)}: give {name} either whole or as options, not both")
        base = kwargs.get(name, _default(info))
        try:
            kwargs[name] = info.annotation(**flat) if base is dataclasses.MISSING else dataclasses.replace(base, **flat)
        except InputError as error:  # name the owner, not the group
            raise InputError(f"{owner_name(cls)}: {str(error).partition(': ')[2]}") from None
    return kwargs


def _leaf(cls: type, loc: tuple[Any, ...]) -> tuple[str, Any] | None:
    """The flat name and annotation of the field an error location points at."""
    current: Any = cls
    found = None
    for part in loc:
        fields = _fields(current) if is_typed_config(current) else {}
        if part not in fields:
            break
        found = (part, _annotation(fields[part]))
        current = fields[part].annotation
    return found


def _one_line(cls: type, error: ValidationError) -> str:
    owner = owner_name(cls)
    first = error.errors()[0]
    loc = tuple(first.get("loc", ()))
    if first["type"] == "unexpected_keyword_argument":
        names = ", ".join(option.name for option in options(cls)) or "none"
        return f"{owner}: unknown option {loc[-1]!r} (its options: {names})"
    if first["type"] == "missing_argument":
        return f"{owner}: missing option {loc[-1]!r}"
    if first["type"] in ("value_error", "assertion_error") and "error" in first.get("ctx", {}):
        return f"{owner}: {first['ctx']['error']}"
    leaf = _leaf(cls, loc)
    if leaf is None:
        return f"{owner}: {first['msg']}"
    name, annotation = leaf
    return f"{owner}: {name} must be {describe(annotation)}, got {_shown(first.get('input'))}"


def _shown(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
