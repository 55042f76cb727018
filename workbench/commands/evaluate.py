"""`workbench evaluate`: generate, score, write a resumable run folder (`workbench compare` reads it)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from workbench.commands._decoder_options import surface, with_decoder_options
from workbench.commands._placement_options import (
    CpusPerWorkerOption,
    RayOption,
    ShardOption,
    WorkersOption,
    placement,
    worker_loader,
)
from workbench.commands._shared import (
    DeviceMapOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    OutOption,
    friendly_errors,
    load_lens,
)
from workbench.commands.discover import (
    DataOption,
    FormatOption,
    MaxPromptTokensOption,
    PresetOption,
    ProfileKOption,
    RetrieverOption,
    SeedOption,
    TaskOption,
)


@friendly_errors
@with_decoder_options()
def evaluate(
    out: OutOption,
    model: ModelOption = None,
    data: DataOption = None,
    task: TaskOption = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate (train or dev).")] = "dev",
    method: Annotated[
        str | None,
        typer.Option(
            "--method", help=f"Decoder: {', '.join(surface())}; `workbench decoders` lists their options. Default: greedy."
        ),
    ] = None,
    heads: Annotated[
        Path | None,
        typer.Option(
            "--heads",
            help="Head weights (workbench or the authors' format): the preference heads of dps / suppressed, the "
            "budget of random-heads, the retrieval heads of decore (`workbench discover --score retrieval`).",
        ),
    ] = None,
    clusters: Annotated[
        Path | None,
        typer.Option("--clusters", help="clusters.json (`workbench cluster`): route every user to its clusters' heads."),
    ] = None,
    cluster_heads: Annotated[
        Path | None, typer.Option("--cluster-heads", help="The output folder of `workbench discover --clusters`.")
    ] = None,
    routing: Annotated[
        str | None,
        typer.Option("--routing", help="hard: the most similar cluster's heads; soft: a softmax mix of them. Default: soft."),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Soft routing's temperature on cosine similarities. Default: 0.05.")
    ] = None,
    preset: PresetOption = None,
    prompt_format: FormatOption = None,
    profile_k: ProfileKOption = None,
    retriever: RetrieverOption = None,
    max_prompt_tokens: MaxPromptTokensOption = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", help="Answer length cap. Default: the task's.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N examples.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Prompts decoded together.")] = 8,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
    shard: ShardOption = None,
    ray: RayOption = None,
    workers: WorkersOption = None,
    cpus_per_worker: CpusPerWorkerOption = 1,
    decoder_options: dict[str, Any] | None = None,
) -> None:
    """Generate with one decoder on one split, score with the task's metrics, and write OUT.

    A --preset fills in the options not given (explicit options win); the run records the preset
    and every resulting option."""
    import dataclasses

    from workbench.data.sources import load_examples, resolve_task
    from workbench.experiments.evaluation import eval_config
    from workbench.heads import HeadWeights
    from workbench.pipeline.evaluation import evaluation_stage, run_evaluation
    from workbench.users.routing import routing_config

    task = resolve_task(data, task)
    prompt_options = {
        "format": prompt_format,
        "profile_k": profile_k,
        "retriever": retriever,
        "max_prompt_tokens": max_prompt_tokens,
    }
    config = eval_config(
        task=task, split=split, model=model or "default", method=method, preset=preset, decoder_options=decoder_options,
        prompt_options=prompt_options, heads=str(heads) if heads else None, data=str(data) if data else "demo",
        max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, limit=limit,
        routing=routing_config(clusters, cluster_heads, routing, temperature),
    )  # fmt: skip
    if heads is not None:
        HeadWeights.load_any(heads)  # a malformed file fails before the model loads
    where = placement(shard, ray, workers, cpus_per_worker)
    examples = load_examples(data, task, split)
    lens = load_lens(model, device, dtype, device_map)
    config = dataclasses.replace(config, model=lens.name)
    with warnings.catch_warnings(record=True) as caught, where.open(lens, worker_loader(model, dtype)) as runners:
        warnings.simplefilter("always")
        if where.shard is not None:
            from workbench.execution.shards import evaluate_shard

            result = evaluate_shard(lens, out, where.shard, examples, config, workers=runners)
            out = where.shard.folder(out)
        else:
            stage = evaluation_stage(lens, out, config, examples)
            result = run_evaluation(lens, stage, examples, config, announce=typer.echo, workers=runners)
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    typer.echo(f"{result['task']} {result['split']} {result['label']}  n={result['n']}")
    options = ", ".join(f"{name}={value}" for name, value in result["config"]["decoder"].items())
    typer.echo(f"  decoder options: {options or 'none'}")
    for name, interval in result["metrics"].items():
        typer.echo(f"  {name:<15} {interval['value']:.4f}  [{interval['low']:.4f}, {interval['high']:.4f}]")
    typer.echo(f"wrote {out / 'predictions.jsonl'} and {out / 'metrics.json'}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
