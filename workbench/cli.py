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
    rich_markup_mode=None,  # plain help: flags without a `<bool>` type column, options and commands one per line
    help="Preference-heads workbench: find the attention heads that carry a user's preferences, and steer with them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Preference-heads workbench."""


# One-line summaries for the command list of `workbench --help`, for commands whose module does
# not declare its own `short_help` (click would otherwise cut the docstring mid-sentence).
SUMMARIES = {
    "demo": "`run` on the bundled demo set (the same as `run` without --data).",
    "run": "The whole method on a data set, from scores to report.",
    "discover": "Score every head (PCS) and select the preference heads.",
    "evaluate": "Generate on a split, score, and write a resumable run folder.",
    "steer": "Continue a prompt three ways: greedy, heads suppressed, DPS.",
}

for module_info in sorted(pkgutil.iter_modules(workbench.commands.__path__), key=lambda m: m.name):
    if module_info.name.startswith("_"):
        continue
    importlib.import_module(f"workbench.commands.{module_info.name}").register(app)
app.registered_commands.sort(key=lambda command: command.name or "")  # `workbench --help` lists them A to Z
for command in app.registered_commands:
    if command.short_help is None:
        command.short_help = SUMMARIES.get(command.name or "")

if __name__ == "__main__":
    app()
