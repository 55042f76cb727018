"""`workbench discover`: score every head and select the top heads.

`--score pcs` (default) scores the Preference Contribution Score on a data file and writes
`OUT/pcs.parquet` (per-example scores) and `OUT/heads.json` (the selected head weights), with
per-example checkpoints in `OUT/checkpoint/`, so an interrupted run resumes. `--score retrieval`
and `--score induction` need no data: they score every head on synthetic sequences and write
the top heads to `OUT/heads.json` (DeCoRe's retrieval heads, controls for validation).
With `--clusters clusters.json` (`workbench cluster`), PCS is scored on each cluster's member
examples: `OUT/cluster-<id>/` gets each cluster's `pcs.parquet` and `heads.json`, and
`OUT/cluster_heads.json` indexes them (what `workbench evaluate --cluster-heads OUT` reads).
PCS scans, global or per cluster, run on Ray workers (`--ray`) or in shards (`--shard I/N`, then
`workbench merge OUT`).

The data options here are shared by `validate`, `evaluate` and `steer`, under the same names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
from workbench.errors import InputError
from workbench.presets import PRESETS

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="A JSONL of {id, user_id, prompt, target} records (no --task), or with --task a LaMP folder, "
        "a LongLaMP export or a generic JSONL. Default: the bundled demo set.",
    ),
]
TaskOption = Annotated[
    str | None,
    typer.Option(
        "--task",
        help="LaMP-1 ... LaMP-7 (not 6), LongLaMP-2 ... 4, or generic. Default: the task a LaMP folder's outputs file "
        "names; LaMP-4 of the demo set without --data.",
    ),
]
FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="Prompt format: plain (few-shot), chat (chat template) or history (the authors' detection prompt). Default: plain.",
    ),
]
ProfileKOption = Annotated[int | None, typer.Option("--profile-k", help="Profile items retrieved into each prompt. Default: 5.")]
RetrieverOption = Annotated[
    str | None, typer.Option("--retriever", help="How profile items are chosen: bm25, first or random (seeded). Default: bm25.")
]
MaxPromptTokensOption = Annotated[
    int | None, typer.Option("--max-prompt-tokens", help="Prompt token cap. Default: the model context less the answer.")
]
PresetOption = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="Start from a published procedure's option values; options given explicitly win. "
        + " ".join(f"{preset.name}: {preset.summary}" for preset in PRESETS.values())
        + " (`workbench decoders` lists the values.)",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of random draws and bootstrap intervals.")]
AblationOption = Annotated[
    str | None,
    typer.Option(
        "--ablation", help="zero, mean or resid-slice (the authors' residual-slice zeroing; not a head ablation). Default: zero."
    ),
]
LimitOption = Annotated[
    int | None,
    typer.Option(
        "--limit", min=1, help="Use only the first N examples (discover --clusters: N taken in turn from each cluster)."
    ),
]
METHOD_HELP = (
    "hybrid: attribution for every head, then exact PCS for 3 x --top-k candidates (about 5 s per "
    "128-token example on the default model, 2 idle CPU cores; its candidates held 0.9-1.0 of the exact top heads in "
    "our checks). attribution: one forward and backward per example (about 1 s; an estimate, Spearman 0.88 against "
    "exact). exact: every head ablated (about 30 s per example on 2 idle cores, many minutes under load). Default: hybrid."
)
ESTIMATOR_HELP = (
    "What attribution and the hybrid's candidates score heads by (docs/estimators.md): attribution (one forward "
    "and backward), graddrop (AtP*'s GradDrop magnitude for the hybrid's screen), target-exact (exact at the "
    "scored positions), ig (integrated gradients along each head's path, --ig-steps; costlier than exact, a check) or "
    "eap-ig (one path shared by all heads). Default: attribution."
)


@friendly_errors
def discover(
    out: OutOption,
    data: DataOption = None,
    model: ModelOption = None,
    task: TaskOption = None,
    split: Annotated[str, typer.Option("--split", help="Split to discover on (recorded with the heads).")] = "train",
    preset: PresetOption = None,
    score: Annotated[
        str | None,
        typer.Option("--score", help="pcs (needs data), or retrieval / induction heads on synthetic sequences. Default: pcs."),
    ] = None,
    prompt_format: FormatOption = None,
    profile_k: ProfileKOption = None,
    retriever: RetrieverOption = None,
    limit: LimitOption = None,
    sample: Annotated[
        int | None,
        typer.Option("--sample", min=1, help="Score N examples drawn at random (seeded by --seed) from the first --limit."),
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help=METHOD_HELP)] = None,
    variant: Annotated[
        str | None, typer.Option("--variant", help="standard, profile-contrast or swap-contrast. Default: standard.")
    ] = None,
    ablation: AblationOption = None,
    estimator: Annotated[str | None, typer.Option("--estimator", help=ESTIMATOR_HELP)] = None,
    ig_steps: Annotated[
        int | None, typer.Option("--ig-steps", min=1, help="Points on the path of the ig and eap-ig estimators. Default: 2.")
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Number of heads to select. Default: 10.")] = None,
    top_percent: Annotated[
        float | None, typer.Option("--top-percent", help="Select this fraction of all heads instead (the authors': 0.04).")
    ] = None,
    top_m: Annotated[
        int | None, typer.Option("--top-m", min=1, help="Hybrid: heads re-scored exactly. Default: 3 x the selection.")
    ] = None,
    min_pcs: Annotated[
        float | None, typer.Option("--min-pcs", help="Selected heads need at least this score. Default: 0.")
    ] = None,
    norm: Annotated[str | None, typer.Option("--norm", help="Weight normalisation: max, sum or none. Default: max.")] = None,
    miss_rate: Annotated[
        float | None,
        typer.Option(
            "--miss-rate",
            help="Hybrid: also score a seeded sample of the other heads exactly and add candidates "
            "until the share of non-candidates above the K-th candidate is bounded by this (one-sided "
            "Clopper-Pearson at --confidence; e.g. 0.05).",
        ),
    ] = None,
    racing: Annotated[
        bool | None,
        typer.Option(
            "--racing/--no-racing",
            help="Hybrid: score candidates example by example and stop a head once its "
            "place relative to the top K is settled at --confidence (t intervals).",
        ),
    ] = None,
    confidence: Annotated[
        float | None, typer.Option("--confidence", help="Confidence of --miss-rate's bound and of --racing. Default: 0.95.")
    ] = None,
    max_rows: Annotated[int, typer.Option("--max-rows", min=1, help="Ablated heads per batch (memory bound).")] = 64,
    clusters: Annotated[
        Path | None,
        typer.Option("--clusters", help="clusters.json (`workbench cluster`): heads per cluster, from its member examples."),
    ] = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    device_map: DeviceMapOption = None,
    dtype: DtypeOption = None,
    shard: ShardOption = None,
    ray: RayOption = None,
    workers: WorkersOption = None,
    cpus_per_worker: CpusPerWorkerOption = 1,
) -> None:
    """Score every attention head (PCS by default) and select the top heads.

    A --preset fills in the options not given (explicit options win); heads.json records the
    preset and every resulting option."""
    from workbench.data.scoring_examples import check_source, load_scoring_examples
    from workbench.data.sources import load_examples
    from workbench.experiments.discovery import DiscoverSettings
    from workbench.presets import preset_values
    from workbench.typed_config import flat_values

    if top_k is not None and top_percent is not None:
        raise InputError("give --top-k or --top-percent, not both")
    if data is not None:
        data = data.resolve()  # recorded with the heads as an absolute path: `workbench studio --run` finds it from anywhere
    given = {
        "score": score, "format": prompt_format, "retriever": retriever, "profile_k": profile_k, "sample": sample,
        "method": method, "variant": variant, "ablation": ablation, "estimator": estimator, "ig_steps": ig_steps,
        "top_k": top_k, "top_percent": top_percent, "norm": norm, "min_pcs": min_pcs, "miss_rate": miss_rate,
        "racing": racing, "confidence": confidence,
    }  # fmt: skip
    values = preset_values(preset, "discover", given)
    if values.get("top_percent") is not None and top_k is None:
        values["top_k"] = None  # a fraction (given or the preset's) replaces the default top-k
    settings = DiscoverSettings(**values, seed=seed)  # type: ignore[call-arg]  # the prompt group's seed, given flat (typed_config)
    record = {"preset": preset, "seed": seed, **flat_values(settings)}
    where = placement(shard, ray, workers, cpus_per_worker)
    if where.shard is not None:
        from workbench.execution.shards import check_shardable

        check_shardable(settings)
    if settings.score != "pcs" and (shard or ray):
        raise InputError("--shard and --ray apply to PCS scans (--score pcs)")
    if clusters is not None:
        _cluster_heads(out, clusters, data, task, split, settings, record, limit, top_m, max_rows, seed,
                       lambda: load_lens(model, device, dtype, device_map), where, worker_loader(model, dtype))  # fmt: skip
        return
    if settings.score != "pcs":
        lens = load_lens(model, device, dtype, device_map)
        _pattern_heads(lens, out, settings, record)
        return
    task = check_source(data, task)
    loaded = load_examples(data, task, split) if task is not None else None  # bad data fails before the model loads
    lens = load_lens(model, device, dtype, device_map)
    if settings.top_k is not None and settings.top_k > lens.geometry.n_total_heads:
        raise InputError(
            f"--top-k must lie in 1..{lens.geometry.n_total_heads} (the model's number of heads), got {settings.top_k}"
        )
    examples = load_scoring_examples(lens, data, task, split, settings.prompt, limit=limit, sample=settings.sample, loaded=loaded)
    if settings.sample is not None:
        print(f"scoring {len(examples)} examples drawn at random (seed {seed}; at most {settings.sample})")
    with where.open(lens, worker_loader(model, dtype)) as runners:
        _pcs_heads(lens, out, examples, settings, record, data, task, split, top_m, max_rows, seed, limit, where.shard, runners)


def _pcs_heads(lens, out, examples, settings, record, data, task, split, top_m, max_rows, seed, limit, shard, runners) -> None:
    from workbench.execution.shards import discover_shard
    from workbench.experiments.cost import discovery_plan
    from workbench.experiments.discovery import scan_options, selection_options
    from workbench.pipeline.discovery import discovery_stage, run_discovery
    from workbench.pipeline.stage import data_digest

    task = task or data.stem
    if shard is not None:
        extra = {
            "task": task,
            "split": split,
            "data": str(data) if data else "demo",
            "preset": record["preset"],
            "options": record,
        }
        metadata = {"split": split, "preset": record["preset"], "options": record}
        scan = scan_options(lens, settings, top_m=top_m, max_rows=max_rows, seed=seed, task=task)
        done = discover_shard(lens, out, shard, examples, scan=scan, selection=selection_options(settings, extra),
                              metadata=metadata, options={"model": lens.name}, workers=runners)  # fmt: skip
        if done is not None:
            print(f"shard {shard.label}: scored {done[0].n_examples} examples; once every shard is done: workbench merge {out}")
        return
    stage = discovery_stage(
        lens, out, settings, data=str(data) if data else "demo", data_hash=data_digest(examples),
        task=task, split=split, top_m=top_m, max_rows=max_rows, seed=seed, extra={"preset": record["preset"], "limit": limit},
    )  # fmt: skip
    if not stage.check():
        for line in discovery_plan(lens, examples, settings, top_m=top_m):
            print(line)
    result, weights = run_discovery(lens, stage, examples, settings, announce=print, workers=runners)
    print(
        f"scored {lens.geometry.n_total_heads} heads on {result.n_examples} examples "
        f"({settings.method}, {settings.variant}, {settings.ablation} ablation)"
    )
    mean = result.mean()
    for layer, head in weights.heads():
        print(f"  layer {layer:>2} head {head:>2}  pcs {mean[layer, head]:+.4f}  weight {weights.weights[layer, head]:.3f}")
    print(f"wrote {out / 'pcs.parquet'} and {out / 'heads.json'}")


def _cluster_heads(out, clusters_path, data, task, split, settings, record, limit, top_m, max_rows, seed, lens_loader,
                   where, worker_load) -> None:  # fmt: skip
    """PCS per cluster of `clusters_path` on its member examples (the stage `workbench demo` runs);
    the clusters are checked against the data (and embedder) before the model loads. A shard
    (`where.shard`) scores its slice of the examples in cluster order (`workbench.execution.shards.discover_shard`)."""
    from workbench.data.prompts import tokenized_examples
    from workbench.data.scoring_examples import choose
    from workbench.data.sources import load_examples
    from workbench.execution.shards import discover_shard
    from workbench.experiments.cluster_discovery import cluster_selection, clustered_examples
    from workbench.experiments.discovery import scan_options
    from workbench.pipeline.clusters import cluster_discovery_stage, run_cluster_discovery
    from workbench.pipeline.stage import data_digest
    from workbench.users import ClusterFile

    clusters = ClusterFile.load(clusters_path)
    clusters.check_embedder(clusters_path)
    task = task or clusters.task
    examples = load_examples(data, task, split)
    clustered = clustered_examples(examples, clusters)  # all of the split, or the first examples `cluster --limit` took
    clusters.check_data(clustered, task, split, clusters_path)
    pool = choose(clustered_examples(clustered, clusters, limit), sample=settings.sample, seed=settings.prompt.seed)
    lens = lens_loader()
    chosen = tokenized_examples(lens, pool, settings.prompt, partners=examples, progress=True)
    with where.open(lens, worker_load) as runners:
        if where.shard is not None:
            # the keys the cluster stage records (`options` names the clusters file)
            extra = {"task": task, "split": split, "data": str(data) if data else "demo", "preset": record["preset"],
                     "options": record}  # fmt: skip
            scan = scan_options(lens, settings, top_m=top_m, max_rows=max_rows, seed=seed, task=task)
            done = discover_shard(lens, out, where.shard, chosen, scan=scan, selection=cluster_selection(settings, clusters, extra),
                                  metadata={}, options={"model": lens.name}, clusters=clusters, workers=runners)  # fmt: skip
            if done is not None:
                held = ", ".join(str(r.metadata["cluster"]) for r in done)
                print(f"shard {where.shard.label}: scored {sum(r.n_examples for r in done)} examples of clusters {held}; "
                      f"once every shard is done: workbench merge {out}")  # fmt: skip
            return
        stage = cluster_discovery_stage(
            lens, out, settings, clusters, data=str(data) if data else "demo", data_hash=data_digest(chosen), task=task,
            split=split, top_m=top_m, max_rows=max_rows, seed=seed,
            extra={"preset": record["preset"], "limit": limit, "clusters": str(clusters_path)},
        )  # fmt: skip
        results, heads = run_cluster_discovery(lens, stage, chosen, clusters, settings, announce=print, workers=runners)
    for cluster, (result, weights) in enumerate(zip(results, heads.weights)):
        print(f"cluster {cluster}: {result.n_examples} examples, heads {weights.heads()}")
    print(f"wrote {out / 'cluster_heads.json'} and one folder per cluster")


def _pattern_heads(lens, out: Path, settings, record: dict[str, Any]) -> None:
    """Retrieval or induction heads: the top heads by score, weights normalised as for PCS."""
    from workbench.heads import HeadWeights
    from workbench.scores import induction_scores, retrieval_scores

    score = settings.score
    grid = (retrieval_scores if score == "retrieval" else induction_scores)(lens, seed=record["seed"])
    weights = HeadWeights.from_scores(
        grid, top_k=settings.top_k, top_percent=settings.top_percent, min_score=settings.min_pcs, norm=settings.norm,
        model=lens.name, method=score, seed=record["seed"], extra={"score": score, "preset": record["preset"], "options": record},
    )  # fmt: skip
    _save_selection(weights, out, f"{score} score >= {settings.min_pcs}")
    for layer, head in weights.heads():
        print(f"  layer {layer:>2} head {head:>2}  {score} {grid[layer, head]:.4f}  weight {weights.weights[layer, head]:.3f}")
    print(f"wrote {out / 'heads.json'} ({score} heads)")


def _save_selection(weights, out: Path, rule: str) -> None:
    """Write heads.json, or refuse an empty selection (nothing downstream can use it)."""
    if not weights.heads():
        raise InputError(f"no head has {rule}, so no heads.json was written (lower --min-pcs)")
    weights.save(out / "heads.json")


def register(app: typer.Typer) -> None:
    app.command("discover")(discover)
