"""`workbench decoders`: every registered decoder with its options and defaults, and the presets."""

from __future__ import annotations

import typer


def decoders() -> None:
    """List every decoder's options and defaults, and the presets."""
    from rich.console import Console
    from rich.table import Table

    from workbench.commands._decoder_options import cli_flag, surface
    from workbench.presets import PRESETS

    console = Console()
    for name, decoder in surface().items():
        needs = [
            what
            for what, needed in (("--heads", decoder["uses_heads"]), ("prompts without the profile", decoder["contrast_prompts"]))
            if needed
        ]
        table = Table(
            title=f"{name}: {decoder['summary']}" + (f" Needs {' and '.join(needs)}." if needs else ""), title_justify="left"
        )
        for column in ("option", "accepts", "default", "what it does"):
            table.add_column(column, overflow="fold")
        for option in decoder["options"]:
            table.add_row(cli_flag(option["name"]), option["accepts"], option["default"], option["help"])
        if not decoder["options"]:
            table.add_row("(none)", "", "", "")
        console.print(table)
    for preset in PRESETS.values():
        console.print(f"preset {preset.name}: {preset.summary}")
        for command, values in (("discover", preset.discover), ("evaluate", preset.evaluate)):
            shown = {**{k: v for k, v in values.items() if k != "decoder"}, **values.get("decoder", {})}
            console.print(f"  {command}: " + ", ".join(f"{cli_flag(k)} {v}" for k, v in shown.items()), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("decoders")(decoders)
