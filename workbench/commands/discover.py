"""`workbench discover`: score every head (PCS) on a data file and select the preference heads.

Writes `OUT/pcs.parquet` (per-example scores), `OUT/heads.json` (the selected head weights) and
keeps per-example checkpoints in `OUT/checkpoint/`, so an interrupted run resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.commands._shared import DeviceOption, DtypeOption, ModelOption, friendly_errors, load_lens
from workbench.errors import InputError

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="A JSONL of {id, user_id, prompt, target} records (no --task), or with --task a LaMP folder, "
        "a LongLaMP export or a generic JSONL; default: the bundled demo set.",
    ),
]
TaskOption = Annotated[
    str | None,
    typer.Option("--task", help="LaMP-1 ... LaMP-7 (not 6), LongLaMP-2 ... 4, or generic; the demo set has LaMP-4 and LaMP-7."),
]
FormatOption = Annotated[str, typer.Option("--format", help="Prompt format for task data: plain (few-shot) or chat.")]
ShotsOption = Annotated[int, typer.Option("--k", help="Profile items retrieved into each prompt (task data).")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of random draws and bootstrap intervals.")]
AblationOption = Annotated[
    str, typer.Option("--ablation", help="zero, mean or resid-slice (the authors' residual-slice zeroing).")
]
OutOption = Annotated[Path, typer.Option("--out", help="Output folder.")]


def check_source(data: Path | None, task: str | None) -> None:
    """Fail on a bad --data / --task pair before any model is loaded."""
    from workbench.data.tasks import task_spec

    if task is not None:
        task_spec(task)
    elif data is None or data.is_dir() or data.suffix != ".jsonl":
        raise InputError("--task is needed unless --data is a JSONL of {id, user_id, prompt, target} records")


LimitOption = Annotated[int | None, typer.Option("--limit", help="Use only the first N examples.")]


def load_examples(
    lens,
    data: Path | None,
    task: str | None,
    split: str,
    prompt_format: str = "plain",
    k: int = 5,
    seed: int = 0,
    limit: int | None = None,
):
    """Tokenized (prompt, reference) pairs with their no-profile and swapped-profile controls.
    Swap partners are drawn among all examples of the split, before `limit` applies."""
    from workbench.data.prompt_jsonl import load_prompt_jsonl
    from workbench.data.prompts import PromptConfig, tokenized_examples
    from workbench.data.sources import load_examples as load_task_examples

    check_source(data, task)
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if task is None:
        return load_prompt_jsonl(data, lens)[:limit]
    examples = load_task_examples(data, task, split)
    chosen = {example.example_id for example in examples[:limit]}
    tokenized = tokenized_examples(lens, examples, PromptConfig(format=prompt_format, k=k, seed=seed), progress=True)
    return [example for example in tokenized if example.example_id in chosen]


@friendly_errors
def discover(
    out: OutOption,
    data: DataOption = None,
    model: ModelOption = None,
    task: TaskOption = None,
    split: Annotated[str, typer.Option("--split", help="Split to discover on (recorded with the heads).")] = "train",
    prompt_format: FormatOption = "plain",
    k: ShotsOption = 5,
    limit: LimitOption = None,
    method: Annotated[str, typer.Option("--method", help="exact, attribution or hybrid.")] = "exact",
    variant: Annotated[str, typer.Option("--variant", help="standard, profile-contrast or swap-contrast.")] = "standard",
    ablation: AblationOption = "zero",
    top_k: Annotated[int, typer.Option("--top-k", help="Number of preference heads to select.")] = 10,
    top_m: Annotated[int | None, typer.Option("--top-m", help="Hybrid: heads re-scored exactly (default 3 x top-k).")] = None,
    min_pcs: Annotated[float, typer.Option("--min-pcs", help="Selected heads need at least this PCS.")] = 0.0,
    norm: Annotated[str, typer.Option("--norm", help="Weight normalisation: max, sum or none.")] = "max",
    max_rows: Annotated[int, typer.Option("--max-rows", help="Ablated heads per batch (memory bound).")] = 64,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = None,
) -> None:
    """Score every attention head's Preference Contribution Score and select the top-K heads."""
    from workbench.heads import HeadWeights
    from workbench.scores import score_heads

    check_source(data, task)
    lens = load_lens(model, device, dtype)
    examples = load_examples(lens, data, task, split, prompt_format, k, seed, limit)
    if not 1 <= top_k <= lens.geometry.n_total_heads:
        raise InputError(f"--top-k must lie in 1..{lens.geometry.n_total_heads} (the model's number of heads), got {top_k}")
    result = score_heads(
        lens,
        examples,
        method=method,
        variant=variant,
        ablation=ablation,
        checkpoint=out / "checkpoint",
        top_m=top_m,
        top_k=top_k,
        max_rows=max_rows,
        seed=seed,
        task=task or data.stem,  # type: ignore[union-attr]
    )
    result.metadata["split"] = split
    result.save(out / "pcs.parquet")
    weights = HeadWeights.from_scores(
        result, top_k=top_k, min_score=min_pcs, norm=norm, extra={"split": split, "data": str(data) if data else "demo"}
    )
    weights.save(out / "heads.json")
    print(
        f"scored {lens.geometry.n_total_heads} heads on {result.n_examples} examples ({method}, {variant}, {ablation} ablation)"
    )
    mean = result.mean()
    for layer, head in weights.heads():
        print(f"  layer {layer:>2} head {head:>2}  pcs {mean[layer, head]:+.4f}  weight {weights.weights[layer, head]:.3f}")
    print(f"wrote {out / 'pcs.parquet'} and {out / 'heads.json'}")


def register(app: typer.Typer) -> None:
    app.command("discover")(discover)
