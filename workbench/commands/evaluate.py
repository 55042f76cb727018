"""`workbench evaluate`: generate, score, write a resumable run folder (`workbench compare` reads it)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import DeviceMapOption, DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens


@friendly_errors
def evaluate(
    out: Annotated[Path, typer.Option("--out", help="Output folder (predictions.jsonl, metrics.json); rerunning resumes.")],
    model: ModelOption = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="LaMP folder ({split}_questions.json + {split}_outputs.json, or {split}/ holding them), LongLaMP .parquet/.jsonl or generic JSONL; default: the bundled demo set.",
        ),
    ] = None,
    task: Annotated[str, typer.Option("--task", help="LaMP-1/2/3/4/5/7, LongLaMP-2/3/4 or generic.")] = "LaMP-4",
    split: Annotated[str, typer.Option("--split", help="Split to evaluate (train or dev).")] = "dev",
    method: Annotated[str, typer.Option("--method", help="greedy, dps, cad, dola, decore or random-heads.")] = "greedy",
    heads: Annotated[
        Path | None, typer.Option("--heads", help="Head-weights JSON (dps; retrieval heads for decore; budget for random-heads).")
    ] = None,
    gamma: Annotated[float, typer.Option("--gamma", help="DPS contrast strength γ.")] = 1.0,
    alpha: Annotated[float, typer.Option("--alpha", help="CAD / DeCoRe contrast strength α.")] = 0.5,
    prompt_format: Annotated[
        str, typer.Option("--format", help="plain (few-shot completion) or chat (chat template).")
    ] = "plain",
    k: Annotated[int, typer.Option("--k", help="Profile items per prompt.")] = 5,
    retriever: Annotated[str, typer.Option("--retriever", help="bm25, first or random.")] = "bm25",
    max_prompt_tokens: Annotated[
        int | None, typer.Option("--max-prompt-tokens", help="Prompt token cap (default: the model context less the answer).")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", help="Answer length cap (default: the task's).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N examples.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts decoded together.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of retrieval draws, random heads and bootstrap intervals.")] = 0,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Generate with one method on one split, score with the task's metrics, and write OUT."""
    from workbench.data.prompts import PromptConfig
    from workbench.data.sources import load_examples
    from workbench.runs import EvalConfig
    from workbench.runs import evaluate as run_evaluation

    prompt = PromptConfig(format=prompt_format, k=k, retriever=retriever, seed=seed, max_prompt_tokens=max_prompt_tokens)  # type: ignore[arg-type]
    examples = load_examples(data, task, split)  # bad data fails before the model loads
    lens = load_lens(model, device, dtype, device_map)
    config = EvalConfig(
        task=task, split=split, method=method, model=lens.name, data=str(data) if data else "demo",
        heads=str(heads) if heads else None, gamma=gamma, alpha=alpha, max_new_tokens=max_new_tokens,
        prompt=prompt, batch_size=batch_size, seed=seed, limit=limit,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_evaluation(lens, examples, config, out)
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    typer.echo(f"{result['task']} {result['split']} {result['method']}  n={result['n']}")
    for name, interval in result["metrics"].items():
        typer.echo(f"  {name:<15} {interval['value']:.4f}  [{interval['low']:.4f}, {interval['high']:.4f}]")
    typer.echo(f"wrote {out / 'predictions.jsonl'} and {out / 'metrics.json'}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
