"""Conventions shared by every subcommand: the `--model` / `--device` / `--device-map` options and clean errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from workbench.errors import InputError

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Hugging Face name, local folder, .gguf file, or the embedded gemma-3-270m; default: the embedded SmolLM2-135M-Instruct.",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")]
DeviceMapOption = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        help="Spread a model larger than one device: auto, balanced, or a JSON object of module -> device "
        "(e.g. '{\"model.layers.0\": 0, ...}'); replaces --device.",
    ),
]
DtypeOption = Annotated[str | None, typer.Option("--dtype", help="float32 (default), float16 or bfloat16.")]


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Report bad input (`InputError`, missing files) as one line on stderr with exit status 2.

    Anything else is a bug and keeps its traceback. Work already written stays on disk: every
    output of the workbench is written atomically or checkpointed before the error can occur.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (InputError, FileNotFoundError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            print(f"error: {message}", file=sys.stderr)
            raise typer.Exit(code=2) from None

    return wrapper


def quiet_transformers() -> None:
    """Hide transformers' per-load progress bars and info chatter on the command line."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def load_lens(model: str | None, device: str = "auto", dtype: str | None = None, device_map: str | None = None):
    from workbench.models import load_model

    quiet_transformers()
    return load_model(model, device=device, dtype=dtype, device_map=device_map)
