"""`workbench run` (and `workbench demo`, the same on the bundled demo set): the main job, the whole
method stage by stage on one data set (`workbench.pipeline.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import DeviceMapOption, DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens


@friendly_errors
def run(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="A LaMP folder, a LongLaMP export or a generic JSONL. Default: the bundled demo set."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (resumes what it finds there). Default: runs/<data name>.")
    ] = None,
    preset: Annotated[
        str, typer.Option("--preset", help="default: a few minutes on 2 CPU cores; full: the paper-sized run.")
    ] = "default",
    model: ModelOption = None,
    task: Annotated[
        str | None, typer.Option("--task", help="The data's task, e.g. LaMP-4 (the demo set has LaMP-4 and LaMP-7).")
    ] = None,
    train_split: Annotated[str | None, typer.Option("--train-split", help="The data's split to find heads on.")] = None,
    dev_split: Annotated[
        str | None, typer.Option("--dev-split", help="The data's split of other users, for validation and decoding.")
    ] = None,
    dev_share: Annotated[
        float | None,
        typer.Option("--dev-share", help="With one split only: the share of its users cut (seeded) into dev."),
    ] = None,
    n_train: Annotated[int | None, typer.Option("--n-train", help="Train examples for head discovery.")] = None,
    n_dev: Annotated[int | None, typer.Option("--n-dev", help="Held-out dev examples for validation and decoding.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Preference heads to select.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="PCS method: exact, attribution or hybrid.")] = None,
    miss_rate: Annotated[
        float | None, typer.Option("--miss-rate", help="Hybrid: certify the candidates to this miss-rate bound (`discover`).")
    ] = None,
    racing: Annotated[
        bool | None, typer.Option("--racing/--no-racing", help="Hybrid: race the exact phase (`discover --racing`).")
    ] = None,
    confidence: Annotated[
        float | None, typer.Option("--confidence", help="Confidence of --miss-rate and --racing. Default: 0.95.")
    ] = None,
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
    """Run the whole method on one data set (the bundled demo set by default; embedded model by
    default) and write report.md: profile effect, discovery, clusters, validation, decoding with
    its controls, paired comparisons, figures.

    Every stage writes its own folder with a fingerprint of what made it; re-running resumes, and
    a folder made with other options is refused with one line."""
    from workbench.data.sources import resolve_task
    from workbench.pipeline.plan import RunData, run_config
    from workbench.pipeline.run import run_pipeline

    task = task if data is None else resolve_task(data, task)  # a LaMP folder names its task
    config = run_config(preset, data=None if data is None else str(data.resolve()), task=task, train_split=train_split,
                        dev_split=dev_split, dev_share=dev_share, n_train=n_train, n_dev=n_dev, top_k=top_k, method=method,
                        miss_rate=miss_rate, racing=racing, confidence=confidence, n_random=n_random, gamma=gamma, n_clusters=n_clusters, routing_temperature=temperature, seed=seed,
                        figures_png=png)  # fmt: skip
    loaded = RunData.load(config)  # bad data fails here, before the model loads
    if loaded.split_note:
        print(f"note: {loaded.split_note}")
    out = out if out is not None else Path("runs") / ("demo" if data is None else data.resolve().name)
    lens = load_lens(model, device, dtype, device_map)
    comparison = run_pipeline(lens, config, out, data=loaded)
    shown = comparison.assign(run=comparison["run"].map(lambda folder: Path(folder).name))
    columns = ["run", "metric", "value", "difference", "low", "high", "p_value"]
    print(shown[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out / 'report.md'} (figures in {out / 'figures'})")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("demo", help="The main job on the bundled demo set: `workbench run` without --data.")(run)
