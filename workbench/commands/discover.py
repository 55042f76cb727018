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

# The benchmark names the data loaders will accept; a JSONL file needs no task.
KNOWN_TASKS = tuple(f"LaMP-{i}" for i in range(1, 8)) + tuple(f"LongLaMP-{i}" for i in range(1, 5))

DataOption = Annotated[Path, typer.Option("--data", help="JSONL file of {id, user_id, prompt, target} records.")]
TaskOption = Annotated[str | None, typer.Option("--task", help="Task label (LaMP-1 ... LaMP-7, LongLaMP-1 ... LongLaMP-4); not needed for JSONL.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of random draws and bootstrap intervals.")]
AblationOption = Annotated[str, typer.Option("--ablation", help="zero, mean or resid-slice (the authors' residual-slice zeroing).")]
OutOption = Annotated[Path, typer.Option("--out", help="Output folder.")]


def load_examples(lens, data: Path, task: str | None):
    """Tokenized examples from `--data`; only the JSONL prompt format for now."""
    from workbench.data.prompt_jsonl import load_prompt_jsonl

    if task is not None and task not in KNOWN_TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(KNOWN_TASKS)}")
    if data.is_dir():
        raise InputError(f"{data}: LaMP folders: not supported yet; give a JSONL file of {{id, user_id, prompt, target}} records")
    if data.suffix != ".jsonl":
        raise InputError(f"{data}: only JSONL files of {{id, user_id, prompt, target}} records are supported yet")
    return load_prompt_jsonl(data, lens)


@friendly_errors
def discover(
    data: DataOption,
    out: OutOption,
    model: ModelOption = None,
    task: TaskOption = None,
    split: Annotated[str, typer.Option("--split", help="Split label recorded with the results.")] = "train",
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

    lens = load_lens(model, device, dtype)
    examples = load_examples(lens, data, task)
    if not 1 <= top_k <= lens.geometry.n_total_heads:
        raise InputError(f"--top-k must lie in 1..{lens.geometry.n_total_heads} (the model's number of heads), got {top_k}")
    result = score_heads(
        lens,
        examples,
        method=method,
        variant=variant,
        ablation=ablation,
        checkpoint=out / "checkpoint",
        top_m=3 * top_k if top_m is None else top_m,
        max_rows=max_rows,
        seed=seed,
        task=task or data.stem,
    )
    result.metadata["split"] = split
    result.save(out / "pcs.parquet")
    weights = HeadWeights.from_scores(result, top_k=top_k, min_score=min_pcs, norm=norm, extra={"split": split, "data": str(data)})
    weights.save(out / "heads.json")
    print(f"scored {lens.geometry.n_total_heads} heads on {result.n_examples} examples ({method}, {variant}, {ablation} ablation)")
    mean = result.mean()
    for layer, head in weights.heads():
        print(f"  layer {layer:>2} head {head:>2}  pcs {mean[layer, head]:+.4f}  weight {weights.weights[layer, head]:.3f}")
    print(f"wrote {out / 'pcs.parquet'} and {out / 'heads.json'}")


def register(app: typer.Typer) -> None:
    app.command("discover")(discover)
