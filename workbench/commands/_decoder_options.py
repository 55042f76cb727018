"""Command-line options built from the decoder registry.

`with_decoder_options(methods)` adds one option per decoder option of the given decoders to a
command (the union; the same names as in Python and in records, `--gamma-cap` for `gamma_cap`),
shown in their own help panel with what they accept and each decoder's default. Values are
checked by the decoder's typed config (`--gamma 1.5` or `--gamma entropy`; `--combine probs`
gets one line naming the option and its choices).
The command receives the options that were given as `decoder_options`; a decoder then rejects
any option it does not have, naming its options.

The decoder classes need torch, which takes longer to import than `--help` may take, so the
command line reads the registry's options from `decoder_options.json` beside this file: a
snapshot of `registry_surface()` stamped with a digest of the sources it was made from. When those
sources differ from the stamp (an edited decoder), the live registry is read instead, so the
snapshot can only make the command line faster, never wrong. Refresh it with
`python -m workbench.commands._decoder_options` (a test says when it is stale).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

import workbench

PANEL = "Decoder options (see `workbench decoders`)"
SNAPSHOT = Path(__file__).with_name("decoder_options.json")
PACKAGE = Path(workbench.__file__).parent
SOURCES = ("decoding/*.py", "typed_config.py")  # what the registry's options are made from


def cli_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def sources_digest() -> str:
    digest = hashlib.sha256()
    for pattern in SOURCES:
        for path in sorted(PACKAGE.glob(pattern)):
            digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def registry_surface() -> dict[str, Any]:
    """Every decoder's summary, needs and command-line options (JSON-ready), from the registry."""
    from workbench.decoding.registry import DECODERS, decoder_options, uses_heads
    from workbench.typed_config import strip_annotated, union_members

    def kind(annotation: Any) -> str:
        """The type typer parses: a plain number, or text that the decoder's typed config parses
        (a choice too: so a bad value gets the config's one-line message, not a usage screen)."""
        bases = {strip_annotated(member) for member in union_members(annotation) if member is not type(None)}
        return bases.pop().__name__ if bases in ({float}, {int}) else "str"

    def shown(default: Any) -> str:
        return "none" if default is None else str(list(default) if isinstance(default, tuple) else default)

    return {
        name: {
            "summary": " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split()),
            "uses_heads": uses_heads(name),
            "contrast_prompts": cls.contrast_prompts,
            "options": [
                {"name": o.name, "type": kind(o.annotation), "accepts": o.accepts, "default": shown(o.default), "help": o.help}
                for o in decoder_options(name)
            ],
        }
        for name, cls in DECODERS.items()
    }


@functools.cache
def surface() -> dict[str, Any]:
    """`registry_surface()`, from the snapshot while it matches the sources."""
    if SNAPSHOT.is_file():
        snapshot = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
        if snapshot.get("sources") == sources_digest():
            return snapshot["decoders"]
    return registry_surface()


def write_snapshot() -> None:
    text = json.dumps({"sources": sources_digest(), "decoders": registry_surface()}, indent=1, ensure_ascii=False)
    SNAPSHOT.write_text(text + "\n", encoding="utf-8")


def _help(option: dict[str, Any], owners: list[tuple[str, dict[str, Any]]]) -> str:
    """The option's help, what it accepts and each decoder's default."""
    by_default: dict[str, list[str]] = {}
    for method, owned in owners:
        by_default.setdefault(owned["default"], []).append(method)
    defaults = "; ".join(f"{value} ({', '.join(methods)})" for value, methods in by_default.items())
    return f"{option['help']} Accepts {option['accepts']}. Default: {defaults}."


def option_parameters(methods: Sequence[str]) -> list[inspect.Parameter]:
    union: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for method in methods:
        for option in surface()[method]["options"]:
            union.setdefault(option["name"], []).append((method, option))
    parameters = []
    for name, owners in union.items():
        option = owners[0][1]
        typer_option = typer.Option(
            cli_flag(name), help=_help(option, owners), rich_help_panel=PANEL, show_default=False, case_sensitive=True
        )
        parse_as = {"int": int, "float": float}.get(option["type"], str)
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[parse_as | None, typer_option]
            )
        )
    return parameters


def with_decoder_options(methods: Sequence[str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of `methods` (default: every registered decoder) to a command that takes
    `decoder_options: dict[str, Any]`."""
    extra = option_parameters(list(surface()) if methods is None else methods)
    names = [parameter.name for parameter in extra]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [parameter for name, parameter in signature.parameters.items() if name != "decoder_options"]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names if name in kwargs}
            return command(*args, decoder_options={k: v for k, v in given.items() if v is not None}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + extra)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "decoder_options"}
        return wrapper

    return decorate


if __name__ == "__main__":
    write_snapshot()
    print(f"wrote {SNAPSHOT}")
