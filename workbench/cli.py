"""The `workbench` command. Each module in `workbench.commands` registers its own subcommands,
so every area of the workbench owns its command-line surface in one place."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import workbench.commands
from workbench.commands._shared import OneLineErrors

app = typer.Typer(
    cls=OneLineErrors,
    help="Preference-heads workbench: find the attention heads that carry a user's preferences, and steer with them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Preference-heads workbench."""


for module_info in sorted(pkgutil.iter_modules(workbench.commands.__path__), key=lambda m: m.name):
    if module_info.name.startswith("_"):
        continue
    importlib.import_module(f"workbench.commands.{module_info.name}").register(app)


if __name__ == "__main__":
    app()
