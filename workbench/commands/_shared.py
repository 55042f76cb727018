"""Conventions shared by every subcommand: the `--model` / `--device` / `--device-map` / `--dtype` /
`--out` options, checked while the command line is parsed (so bad values fail before any work), and
clean errors: bad input and interruptions end with one line on stderr, never a traceback."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from workbench.errors import InputError

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)
# a path the user named is missing, is in the way or cannot be written: their input, not a bug
PATH_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
# click's exception classes and context: recent typer releases vendor click, so take them from typer's modules
click_errors = importlib.import_module(typer.BadParameter.__module__)
click_globals = importlib.import_module(typer.BadParameter.__module__.rsplit(".", 1)[0] + ".globals")


def _checked_device(value: str) -> str:
    """`auto`, `cpu`, `cuda`, `cuda:N` (an existing GPU) or `mps` where available."""
    import torch

    from workbench.engine.models import resolve_device

    try:
        device = resolve_device(value)
    except RuntimeError:
        raise typer.BadParameter(f"unknown device {value!r}; use cpu, cuda, cuda:N or auto") from None
    except InputError as error:
        raise typer.BadParameter(str(error)) from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise typer.BadParameter(f"there is no {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise typer.BadParameter(f"device {value!r} is not available on this machine; use cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise typer.BadParameter(f"device {value!r} is not supported; use cpu, cuda, cuda:N or auto")
    return value


def _checked_dtype(value: str | None) -> str | None:
    from workbench.engine.models import resolve_dtype

    try:
        resolve_dtype(value)
    except InputError as error:
        raise typer.BadParameter(str(error)) from None
    return value


def _checked_out_folder(value: Path | None) -> Path | None:
    """An output folder that exists or can be made: not an existing file, under a writable folder."""
    if value is None:
        return value
    if value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} is an existing file, not a folder")
    ancestor = value
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise typer.BadParameter(f"{ancestor} is a file, so {value} cannot be a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"cannot write in {ancestor}")
    return value


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Hugging Face name, local folder, .gguf file, or the embedded gemma-3-270m. Default: the embedded SmolLM2-135M-Instruct.",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.", callback=_checked_device)]
DeviceMapOption = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        help="Spread a model larger than one device: auto, balanced, or a JSON object of module -> device "
        "(e.g. '{\"model.layers.0\": 0, ...}'); replaces --device.",
    ),
]
DtypeOption = Annotated[
    str | None, typer.Option("--dtype", help="float32, float16 or bfloat16. Default: float32.", callback=_checked_dtype)
]
OutOption = Annotated[
    Path,
    typer.Option("--out", help="Output folder (made if missing).", callback=_checked_out_folder),
]


def friendly_errors(command: Callable[..., Any] | None = None, *, resumable: bool | None = None) -> Any:
    """Report bad input (`InputError`, `PATH_ERRORS`) as one line on stderr with exit status 2,
    and an interruption (Ctrl-C) as one line saying what was kept, with exit status 130.

    `resumable` says whether a rerun resumes from what the command wrote to its `--out` folder
    (default: whether it has an `out` parameter). Anything else is a bug and keeps its traceback.
    Work already written stays on disk: every output of the workbench is written atomically or
    checkpointed before the error can occur. Use as `@friendly_errors` or
    `@friendly_errors(resumable=False)`.
    """
    if command is None:
        return functools.partial(friendly_errors, resumable=resumable)
    has_out = "out" in inspect.signature(command).parameters
    resumes = has_out if resumable is None else resumable

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (InputError, *PATH_ERRORS) as error:
            if isinstance(error, OSError) and error.filename is not None:
                message = f"{error.filename}: {error.strerror}"
            else:
                message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"error: {flag_named(message)}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            out = kwargs.get("out")
            if resumes and out is not None:
                print(f"interrupted; finished examples are saved in {out}; re-run the same command to resume", file=sys.stderr)
            else:
                print("interrupted; no half-written file was left; re-run the command to start again", file=sys.stderr)
            raise typer.Exit(code=INTERRUPTED) from None

    return wrapper


def flag_named(message: str) -> str:
    """A line about one option, named as the running command's flag: a typed config's
    `discover: top_k must be an integer >= 1 or None, got 0` -> `--top-k must be an integer >= 1,
    got 0`, and `unknown preset 'x'; ...` -> `--preset: unknown preset 'x'; ...`; other messages
    as they are."""
    context = click_globals.get_current_context(silent=True)
    must = re.fullmatch(r"(?:[\w-]+: )?(?:[\w ]+ )?(\w+) (must .*)", message)  # "routing temperature must ..." too
    unknown = re.match(r"unknown (?:[\w ]+ )?(\w+) '", message)
    if context is None or (must or unknown) is None:
        return message
    flags = {}
    for param in context.command.params:
        if getattr(param, "param_type_name", "") == "option":
            flags[param.name] = flags[param.opts[0].lstrip("-").replace("-", "_")] = param.opts[0]
    if must is not None and must.group(1) in flags:
        return f"{flags[must.group(1)]} {must.group(2).replace(' or None, got', ', got')}"
    if unknown is not None and unknown.group(1) in flags:
        return f"{flags[unknown.group(1)]}: {message}"
    return message


def one_line(error: Any) -> str:
    """A click usage or type error (a `ClickException` of Typer's vendored click) as one line,
    e.g. `--top-k: 'x' is not a valid integer`."""
    if isinstance(error, click_errors.BadParameter) and not isinstance(error, click_errors.MissingParameter):
        message = error.message
        cause = error.__cause__
        if cause is not None and hasattr(cause, "errors") and cause.errors():  # pydantic's validation error
            detail = cause.errors()[0]
            expected = str(detail.get("msg", "")).split(",")[0]
            if expected.startswith("Input should be "):
                expected = "is not " + expected.removeprefix("Input should be ")
            message = f"{detail.get('input')!r} {expected}"
        if error.param is not None:
            option = getattr(error.param, "param_type_name", "") == "option"
            name = " / ".join(error.param.opts) if option else error.param.human_readable_name
            message = f"{name}: {message}"
    else:
        message = error.format_message()
    message = " ".join(message.split()).rstrip(".")
    return message[0].lower() + message[1:] if message[1:2].islower() else message


OPTIONAL_VALUES = {"--ray": "local"}  # options whose value may be left out: `--ray` alone is `--ray local`


def with_optional_values(args: list[str]) -> list[str]:
    """`args` with the value of an `OPTIONAL_VALUES` option filled in where it was left out."""
    filled = []
    for position, arg in enumerate(args):
        filled.append(arg)
        if arg in OPTIONAL_VALUES and (position + 1 == len(args) or args[position + 1].startswith("-")):
            filled.append(OPTIONAL_VALUES[arg])
    return filled


class OneLineErrors(typer.core.TyperGroup):
    """The root command group: usage and type errors become one line on stderr (exit status 2)
    instead of a boxed message. (Typer ends a Ctrl-C outside a command with status 130; inside
    one, `friendly_errors` says what was kept.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            defaults_in_help(command)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:  # fmt: skip
        given = with_optional_values(list(sys.argv[1:] if args is None else args))
        if not standalone_mode:
            return super().main(given, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            result = super().main(given, prog_name, complete_var, False, windows_expand_args, **extra)
        except click_errors.ClickException as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # `workbench` alone: the help text
                error.show()
            else:
                print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(error.exit_code)
        except typer.Abort:
            print("aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def defaults_in_help(command: Any) -> None:
    """Show every default one way: a closing "Default: X." sentence of the option's help (typer's
    own `[default: X]` is turned into it; options whose default is None say theirs in their text)."""
    for sub in getattr(command, "commands", {}).values():
        defaults_in_help(sub)
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or param.required or param.name == "help":
            continue
        if not param.show_default or param.default is None or (param.is_flag and not param.secondary_opts):
            continue
        shown = (param.opts[0] if param.default else param.secondary_opts[0]) if param.is_flag else param.default
        param.help = f"{(param.help or '').rstrip()} Default: {shown}."
        param.show_default = False


def quiet_transformers() -> None:
    """Hide transformers' per-load progress bars and info chatter on the command line."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def load_lens(model: str | None, device: str = "auto", dtype: str | None = None, device_map: str | None = None):
    from workbench.engine.models import load_model

    quiet_transformers()
    return load_model(model, device=device, dtype=dtype, device_map=device_map)
