"""Command-line options built from the decoder registry.

`with_decoder_options(methods)` adds one option per decoder option of the given decoders to a
command (the union; the same names as in Python and in records, `--gamma-cap` for `gamma_cap`),
shown in their own help panel with what they accept and each decoder's default. Values are
checked by the decoder's typed config (`--gamma 1.5` or `--gamma entropy`; `--combine probs`
gets one line naming the option and its choices).
The command receives the options that were given as `decoder_options`; a decoder then rejects
any option it does not have, naming its options.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from workbench.decoding.registry import DECODERS, decoder_options
from workbench.typed_config import Option, strip_annotated, union_members

PANEL = "Decoder options (see `workbench decoders`)"


def cli_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cli_type(option: Option) -> Any:
    """The type typer parses: a plain number, or text that the decoder's typed config parses (a
    choice too: so a bad value gets the config's one-line message, not a usage screen)."""
    bases = {strip_annotated(member) for member in union_members(option.annotation) if member is not type(None)}
    if bases in ({float}, {int}):
        return bases.pop() | None
    return str | None


def _help(option: Option, owners: list[tuple[str, Option]]) -> str:
    """The option's help, what it accepts (unless typer shows the choices) and each decoder's default."""
    by_default: dict[str, list[str]] = {}
    for method, owned in owners:
        shown = (
            "none" if owned.default is None else str(list(owned.default) if isinstance(owned.default, tuple) else owned.default)
        )
        by_default.setdefault(shown, []).append(method)
    defaults = "; ".join(f"{value} ({', '.join(methods)})" for value, methods in by_default.items())
    return f"{option.help} Accepts {option.accepts}. Default: {defaults}."


def option_parameters(methods: Sequence[str]) -> list[inspect.Parameter]:
    union: dict[str, list[tuple[str, Option]]] = {}
    for method in methods:
        for option in decoder_options(method):
            union.setdefault(option.name, []).append((method, option))
    parameters = []
    for name, owners in union.items():
        option = owners[0][1]
        typer_option = typer.Option(
            cli_flag(name), help=_help(option, owners), rich_help_panel=PANEL, show_default=False, case_sensitive=True
        )
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[_cli_type(option), typer_option]
            )
        )
    return parameters


def with_decoder_options(methods: Sequence[str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of `methods` (default: every registered decoder) to a command that takes
    `decoder_options: dict[str, Any]`."""
    extra = option_parameters(list(DECODERS) if methods is None else methods)
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
