"""`workbench info`: load a model and print its head geometry."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from workbench.commands._shared import DeviceMapOption, DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens


@friendly_errors
def info(
    model: ModelOption = None,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the geometry as JSON.")] = False,
) -> None:
    """Load the model (default: the embedded SmolLM2-135M-Instruct) and print its head geometry."""
    lens = load_lens(model, device, dtype, device_map)
    g = lens.geometry
    facts = {
        "model": lens.name,
        "device": str(lens.device),
        "dtype": str(next(lens.bridge.parameters()).dtype).removeprefix("torch."),
        "n_layers": g.n_layers,
        "n_heads": g.n_heads,
        "n_kv_heads": g.n_kv_heads,
        "d_head": g.d_head,
        "d_model": g.d_model,
        "n_ctx": g.n_ctx,
        "d_vocab": g.d_vocab,
        "chat_template": lens.has_chat_template,
    }
    if as_json:
        print(json.dumps(facts, indent=2))
        return
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")


def register(app: typer.Typer) -> None:
    app.command("info", short_help="Load a model and print its head geometry.")(info)
