"""`workbench steer`: one prompt continued three ways, side by side: the full model (greedy), the
model with its preference heads suppressed (generic, greedy) and DPS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import DeviceMapOption, DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens
from workbench.errors import InputError


def parse_gamma(value: str) -> float | str:
    """A number >= 0 or 'adaptive' (the decoder checks the range)."""
    if value == "adaptive":
        return value
    try:
        return float(value)
    except ValueError:
        raise InputError(f"--gamma must be a number >= 0 or 'adaptive', got {value!r}") from None


@friendly_errors
def steer(
    heads: Annotated[Path, typer.Option("--heads", help="heads.json from `workbench discover` (or a reference head file).")],
    prompt: Annotated[str, typer.Option("--prompt", help="The user turn; it is wrapped in the model's chat template.")],
    gamma: Annotated[
        str, typer.Option("--gamma", help="DPS strength γ >= 0, or 'adaptive' (entropy of the full model).")
    ] = "1.0",
    system: Annotated[str | None, typer.Option("--system", help="An optional system message.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Tokens to generate per continuation.")] = 64,
    combine: Annotated[
        str, typer.Option("--combine", help="Contrast 'logits' (the paper) or 'logprobs' (the authors' code).")
    ] = "logits",
    plausibility: Annotated[
        float | None, typer.Option("--plausibility", help="Keep only tokens with p >= β·max p of the full model.")
    ] = None,
    suppression: Annotated[str, typer.Option("--suppression", help="weighted (1 - w), zero or mean.")] = "weighted",
    model: ModelOption = None,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Print the personalized (greedy), generic (heads suppressed) and DPS continuations of --prompt."""
    from rich.console import Console
    from rich.table import Table

    from workbench.decoding import DPS, Greedy, Suppressed, generate
    from workbench.decoding.contrast import ContrastRule
    from workbench.decoding.dps import SUPPRESSIONS
    from workbench.heads import HeadWeights

    if not heads.is_file():
        raise InputError(f"{heads}: file not found")
    if not prompt.strip():
        raise InputError("--prompt is empty")
    if suppression not in SUPPRESSIONS:
        raise InputError(f"--suppression must be one of {', '.join(SUPPRESSIONS)}, got {suppression!r}")
    rule = ContrastRule(parse_gamma(gamma), combine=combine, plausibility=plausibility, owner="steer")  # fail before loading
    lens = load_lens(model, device, dtype, device_map)
    weights = HeadWeights.load_any(heads, geometry=lens.geometry)
    if not lens.has_chat_template:
        raise InputError(f"model {lens.name!r} has no chat template to wrap --prompt in")
    ids = [lens.encode_chat(prompt, system)]
    decoders = {
        "personalized (greedy)": Greedy(),
        "generic (heads suppressed)": Suppressed(weights, suppression=suppression),
        f"DPS (γ = {rule.gamma})": DPS(
            weights, gamma=rule.gamma, combine=rule.combine, plausibility=rule.plausibility, suppression=suppression
        ),
    }
    table = Table(title=f"{lens.name}: {len(weights.heads())} heads from {heads.name}", show_lines=True)
    texts = []
    for title, decoder in decoders.items():
        table.add_column(title, overflow="fold", ratio=1)
        texts.append(generate(lens, ids, decoder=decoder, max_new_tokens=max_new_tokens)[0].text.strip())
    table.add_row(*texts)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("steer")(steer)
