"""`workbench validate`: the validation study of selected heads on held-out examples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    AblationOption,
    DataOption,
    FormatOption,
    LimitOption,
    ProfileKOption,
    RetrieverOption,
    SeedOption,
    TaskOption,
)
from workbench.errors import InputError


@friendly_errors
def validate(
    heads: Annotated[Path, typer.Option("--heads", help="heads.json from `workbench discover` (or a reference head file).")],
    out: OutOption,
    data: DataOption = None,
    model: ModelOption = None,
    task: TaskOption = None,
    split: Annotated[str, typer.Option("--split", help="Held-out split to validate on.")] = "dev",
    prompt_format: FormatOption = None,
    profile_k: ProfileKOption = None,
    retriever: RetrieverOption = None,
    limit: LimitOption = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Ablate the top-k heads. Default: all with non-zero weight.")
    ] = None,
    n_random: Annotated[int, typer.Option("--n-random", min=1, help="Random head sets drawn as the control.")] = 20,
    match_layers: Annotated[
        bool, typer.Option("--match-layers", help="Random sets take the preference heads' layer distribution.")
    ] = False,
    pattern_heads: Annotated[
        bool, typer.Option("--pattern-heads/--no-pattern-heads", help="Also ablate the top-k retrieval and induction heads.")
    ] = True,
    ablation: AblationOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
    shard: ShardOption = None,
    ray: RayOption = None,
    workers: WorkersOption = None,
    cpus_per_worker: CpusPerWorkerOption = 1,
) -> None:
    """Mask the top-k preference heads together vs random, retrieval and induction heads, with
    and without the profile; writes OUT/validation.parquet (per example) and OUT/validation_summary.csv."""
    from workbench.data.prompts import PromptConfig
    from workbench.data.scoring_examples import check_source, load_scoring_examples
    from workbench.data.sources import load_examples
    from workbench.experiments.cost import validation_plan
    from workbench.heads import HeadWeights
    from workbench.pipeline.stage import data_digest
    from workbench.pipeline.validation import run_validation, validation_stage
    from workbench.typed_config import flat_values

    prompt = PromptConfig(  # PromptConfig checks the choices
        format=prompt_format or "plain",  # type: ignore[arg-type]
        profile_k=5 if profile_k is None else profile_k,
        retriever=retriever or "bm25",  # type: ignore[arg-type]
        seed=seed,
    )
    where = placement(shard, ray, workers, cpus_per_worker)
    task = check_source(data, task)
    chosen = HeadWeights.load_any(heads)  # a malformed head file fails before the model loads
    if top_k is not None and top_k > len(chosen.heads()):
        raise InputError(f"--top-k must lie in 1..{len(chosen.heads())} (the heads with non-zero weight in {heads}), got {top_k}")
    loaded = load_examples(data, task, split) if task is not None else None  # bad data fails before the model loads
    lens = load_lens(model, device, dtype, device_map)
    examples = load_scoring_examples(lens, data, task, split, prompt, limit=limit, loaded=loaded)
    weights = HeadWeights.load_any(heads, geometry=lens.geometry)
    with where.open(lens, worker_loader(model, dtype)) as runners:
        if where.shard is not None:
            from workbench.execution.shards import validate_shard
            from workbench.experiments.validation import head_sets
            from workbench.scores import induction_scores, retrieval_scores

            pattern_grids = (
                {"retrieval": retrieval_scores(lens, seed=seed), "induction": induction_scores(lens, seed=seed)}
                if pattern_heads else {}
            )  # fmt: skip
            sets = head_sets(lens, weights, k=top_k, n_random=n_random, match_layers=match_layers, seed=seed, **pattern_grids)
            options = {"model": lens.name, "heads": weights.weights.tolist(), "split": split}
            validate_shard(lens, out, where.shard, examples, sets, ablation=ablation or "zero", seed=seed, options=options,
                           workers=runners)  # fmt: skip
            print(f"shard {where.shard.label} done; once every shard is done: workbench merge {out}")
            return
        label = str(weights.extra.get("variant") or heads.stem)
        options = {
            "k": top_k, "n_random": n_random, "match_layers": match_layers, "pattern_heads": pattern_heads,
            "ablation": ablation or "zero", "seed": seed, "data": str(data) if data else "demo", "task": task, "split": split,
            "limit": limit, **flat_values(prompt),
        }  # fmt: skip
        stage = validation_stage(lens, out, {label: weights}, options=options, data_hash=data_digest(examples))
        if not stage.check():
            n_sets = 1 + n_random + 2 * pattern_heads  # the preference heads, the random draws, retrieval and induction
            for line in validation_plan(lens, examples, n_sets):
                print(line)
        summary = run_validation(lens, stage, examples, {label: weights}, announce=print, workers=runners)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {out / 'validation.parquet'} and {out / 'validation_summary.csv'}")


def register(app: typer.Typer) -> None:
    app.command("validate", short_help="Test selected heads on held-out examples against control heads.")(validate)
