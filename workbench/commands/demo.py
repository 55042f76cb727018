"""`workbench demo`: the main job — the whole method on the demo set, stage by stage (`workbench.pipeline.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import DeviceMapOption, DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens


@friendly_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder (resumes what it finds there).")] = Path("runs/demo"),
    preset: Annotated[
        str, typer.Option("--preset", help="default (a few minutes on 2 CPU cores) or full (the paper-sized run).")
    ] = "default",
    model: ModelOption = None,
    task: Annotated[str | None, typer.Option("--task", help="Demo task: LaMP-4 (headlines) or LaMP-7 (paraphrases).")] = None,
    n_train: Annotated[int | None, typer.Option("--n-train", help="Train examples for head discovery.")] = None,
    n_dev: Annotated[int | None, typer.Option("--n-dev", help="Held-out dev examples for validation and decoding.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Preference heads to select.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="PCS method: exact, attribution or hybrid.")] = None,
    n_random: Annotated[int | None, typer.Option("--n-random", help="Random head sets in the validation study.")] = None,
    gamma: Annotated[float | None, typer.Option("--gamma", help="DPS contrast strength γ (>= 0).")] = None,
    n_clusters: Annotated[
        int | None, typer.Option("--n-clusters", help="Clusters of the train users (per-cluster heads, routed DPS).")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Soft routing's temperature on cosine similarities (> 0).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of every random draw: retrieval, random head sets, bootstrap and permutations."),
    ] = None,
    png: Annotated[bool, typer.Option("--png/--no-png", help="Also export the figures as PNG (needs chromium).")] = True,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Run the whole method on the bundled demo set (embedded model by default) and write report.md.

    Every stage writes its own folder with a fingerprint of what made it; re-running resumes, and
    a folder made with other options is refused with one line."""
    from workbench.pipeline.demo import run_demo
    from workbench.pipeline.plan import DemoData, demo_config

    config = demo_config(preset, task=task, n_train=n_train, n_dev=n_dev, top_k=top_k, method=method, n_random=n_random,
                         gamma=gamma, n_clusters=n_clusters, routing_temperature=temperature, seed=seed,
                         figures_png=png)  # fmt: skip
    data = DemoData.load(config)  # bad data fails here, before the model loads
    lens = load_lens(model, device, dtype, device_map)
    comparison = run_demo(lens, config, out, data=data)
    shown = comparison.assign(run=comparison["run"].map(lambda folder: Path(folder).name))
    columns = ["run", "metric", "value", "difference", "low", "high", "p_value"]
    print(shown[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out / 'report.md'} (figures in {out / 'figures'})")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
