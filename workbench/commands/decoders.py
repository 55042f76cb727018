"""`workbench decoders`: every registered decoder with its options and defaults, and the presets."""

from __future__ import annotations

import typer


def decoders() -> None:
    """List every decoder's options and defaults, and the presets."""
    from rich.console import Console
    from rich.table import Table

    from workbench.commands._decoder_options import cli_flag
    from workbench.decoding.registry import DECODERS, decoder_options, uses_heads
    from workbench.presets import PRESETS

    console = Console()
    for name, cls in DECODERS.items():
        needs = [
            what
            for what, needed in (("--heads", uses_heads(name)), ("prompts without the profile", cls.contrast_prompts))
            if needed
        ]
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        table = Table(title=f"{name}: {summary}" + (f" Needs {' and '.join(needs)}." if needs else ""), title_justify="left")
        for column in ("option", "accepts", "default", "what it does"):
            table.add_column(column, overflow="fold")
        for option in decoder_options(name):
            default = "none" if option.default is None else str(option.default)
            table.add_row(cli_flag(option.name), option.accepts, default, option.help)
        if not decoder_options(name):
            table.add_row("(none)", "", "", "")
        console.print(table)
    for preset in PRESETS.values():
        console.print(f"preset {preset.name}: {preset.summary}")
        for command, values in (("discover", preset.discover), ("evaluate", preset.evaluate)):
            shown = {**{k: v for k, v in values.items() if k != "decoder"}, **values.get("decoder", {})}
            console.print(f"  {command}: " + ", ".join(f"{cli_flag(k)} {v}" for k, v in shown.items()), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("decoders")(decoders)
