"""`workbench demo`: the main job — discovery, validation, decoding and figures on the demo set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import DeviceMapOption, DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens


@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder (resumes what it finds there).")] = Path("runs/demo"),
    model: ModelOption = None,
    task: Annotated[str, typer.Option("--task", help="Demo task: LaMP-4 (headlines) or LaMP-7 (paraphrases).")] = "LaMP-4",
    n_train: Annotated[int, typer.Option("--n-train", help="Train examples for head discovery.")] = 16,
    n_dev: Annotated[int, typer.Option("--n-dev", help="Held-out dev examples for validation and decoding.")] = 16,
    top_k: Annotated[int, typer.Option("--top-k", help="Preference heads to select.")] = 10,
    method: Annotated[str, typer.Option("--method", help="PCS method: exact, attribution or hybrid.")] = "hybrid",
    n_random: Annotated[int, typer.Option("--n-random", help="Random head sets in the validation study.")] = 20,
    gamma: Annotated[float, typer.Option("--gamma", help="DPS contrast strength γ (>= 0).")] = 1.0,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of every random draw: retrieval, random head sets, bootstrap and permutations.")
    ] = 0,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Run the whole method on the bundled demo set (embedded model by default) and summarise it."""
    from workbench.pipeline import DemoConfig, run_demo

    config = DemoConfig(
        task=task, n_train=n_train, n_dev=n_dev, top_k=top_k, method=method, n_random=n_random, gamma=gamma, seed=seed
    )
    lens = load_lens(model, device, dtype, device_map)
    run_demo(lens, config, out)
    print((out / "SUMMARY.md").read_text())
    print(f"wrote {out} (figures in {out / 'figures'})")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
