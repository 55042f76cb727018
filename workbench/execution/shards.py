"""Shards: one run's examples cut into N deterministic slices that run anywhere, then merged.

`--shard I/N` (I in 0..N-1) gives a run the I-th of N contiguous slices of its examples (whole
batches for an evaluation, so that every prompt is decoded in the batch a single process would
put it in). The shard works in `RUN_DIR/shards/I-of-N/` with its own checkpoints and a manifest
(`shard.json`) of the options and a digest of all the run's examples, so shards of different
options or data are refused, both when a shard starts beside others and when they are merged.

`merge_run(RUN_DIR)` (`workbench merge`) joins finished shards into the files a single process
writes: `pcs.parquet` and `heads.json` (discover), or each cluster's `cluster-<id>/pcs.parquet`
and `heads.json` and `cluster_heads.json` (discover --clusters), `validation.parquet` and
`validation_summary.csv` (validate), `predictions.jsonl`, `config.json` and `metrics.json`, and a
routed run's `routing.json` and `routing_weights.parquet` (evaluate). Every per-example value is
computed exactly as in one process and the summaries are computed from the joined per-example
values, so the merged files hold the same numbers, bit for bit (predictions when every shard
decodes at the thread count of that process: decoding steps depend on it, docs/numerics.md).

Per-cluster discovery cuts the examples in cluster order (each cluster's members, cluster after
cluster) into contiguous slices: every shard gets about as many examples, and a cluster falls in
one or a few shards, each of which scores its part with the whole run's mean-ablation
reference (as one process does: an example scores the same in every cluster). A routed evaluation's shard routes its users by the profiles of the whole run's
examples, so that a user whose examples fall in two shards gets one route.

The hybrid PCS method needs a barrier: its exact candidates come from the attribution of *all*
examples (of each cluster, per cluster). A hybrid shard first stores its attribution
(`attribution.npz`); once every shard's is there, a rerun of the same command reads them all,
chooses the candidates of the whole run (of each cluster it holds) and scores them exactly on
its own examples.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from workbench import io
from workbench.checkpoint import digest
from workbench.data.files import read_json
from workbench.data.tasks import task_spec
from workbench.engine.numerics import mixed_threads_note
from workbench.errors import InputError
from workbench.experiments.cluster_discovery import cluster_members, save_cluster_discovery, select_cluster_heads
from workbench.experiments.evaluation import (
    CONFIG,
    METRICS,
    PREDICTIONS,
    decoding_threads,
    evaluate,
    metric_intervals,
    read_predictions,
)
from workbench.experiments.validation import summarize_validation, validation_deltas
from workbench.heads import HeadWeights
from workbench.scores.ablation import make_ablation
from workbench.scores.nll import reference_sequences
from workbench.scores.pcs import PCSScan, ScanOptions, scan_estimates, scan_results
from workbench.scores.results import PCSResult
from workbench.users.cluster_heads import INDEX, cluster_folder
from workbench.users.routing import ROUTES_TABLE, ROUTING_FILE, RoutingConfig, merge_routing

if TYPE_CHECKING:
    import pandas as pd

    from workbench.data.examples import Example
    from workbench.data.tokenized import TokenizedExample
    from workbench.engine.lens import Lens
    from workbench.engine.masks import Head
    from workbench.engine.workers import Workers
    from workbench.experiments.evaluation import EvalConfig
    from workbench.scores.results import PCSResult
    from workbench.users.clusters import ClusterFile

T = TypeVar("T")
SHARDS, MANIFEST, ESTIMATES = "shards", "shard.json", "attribution.npz"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"shard {self.index}/{self.count}: I/N needs N >= 1 and 0 <= I < N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`"I/N"`: the I-th (from 0) of N shards."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise InputError(f"--shard takes I/N (shard I of N, counting from 0), got {text!r}")
        return cls(int(match[1]), int(match[2]))

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def folder(self, run_dir: str | Path) -> Path:
        return Path(run_dir) / SHARDS / f"{self.index}-of-{self.count}"

    def take(self, items: Sequence[T], unit: int = 1) -> list[T]:
        """This shard's contiguous slice of `items`, in whole groups of `unit` (the shards of
        0..N-1 together are `items`, in order, each item once)."""
        n_units = -(-len(items) // unit)
        first, last = n_units * self.index // self.count, n_units * (self.index + 1) // self.count
        if first == last:
            groups = f" ({n_units} groups of {unit})" if unit > 1 else ""
            raise InputError(f"shard {self.label} gets no examples: {len(items)} examples{groups} for {self.count} shards")
        return list(items[first * unit : last * unit])


def open_shard(
    run_dir: str | Path,
    shard: Shard,
    kind: str,
    options: dict[str, Any],
    ids: Sequence[str],
    shard_ids: Sequence[str],
    content: str,
) -> Path:
    """The shard's folder, with its manifest; refused when this shard or another one of the run
    was made with other options or data (`ids`: the whole run's example ids in order; `content`:
    a digest of the examples themselves)."""
    manifest = {
        "kind": kind,
        "index": shard.index,
        "count": shard.count,
        "options": json.loads(json.dumps(options, default=str)),  # key order kept: heads.json as one process writes it
        "examples": digest(list(ids), content),
        "n_examples": len(ids),
        "example_ids": list(shard_ids),
    }
    for other in _manifests(run_dir):
        _check_same(other, manifest, f"shard {other['index']}/{other['count']} in {run_dir}")
    folder = shard.folder(run_dir)
    path = folder / MANIFEST
    if not path.is_file() or json.loads(path.read_text(encoding="utf-8")) != {**manifest, "finished": True}:
        io.write_json(path, {**manifest, "finished": False})
    return folder


def finish_shard(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    io.write_json(folder / MANIFEST, {**manifest, "finished": True})


def _manifests(run_dir: str | Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((Path(run_dir) / SHARDS).glob(f"*/{MANIFEST}")):
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError:
            raise InputError(f"{path}: not a shard manifest (malformed JSON)") from None
    return found


def _check_same(stored: dict[str, Any], wanted: dict[str, Any], where: str) -> None:
    """Refuse shards of another command, shard count, options or data."""
    if stored.get("kind") != wanted["kind"]:
        raise InputError(f"{where} is a {stored.get('kind')} shard, not {wanted['kind']}; use another output folder")
    if stored.get("count") != wanted["count"]:
        raise InputError(f"{where} is one of {stored.get('count')} shards, not {wanted['count']}; use another output folder")
    old, new = stored.get("options", {}), wanted["options"]
    changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
    if changed:
        raise InputError(f"{where} was made with other options (differs in: {', '.join(changed)}); use another output folder")
    if stored.get("examples") != wanted["examples"]:
        raise InputError(f"{where} was made on other examples; use another output folder")


def tokenized_digest(examples: Sequence[TokenizedExample]) -> str:
    """A digest of what scoring examples are: ids and every token sequence."""
    return digest([[e.example_id, e.prompt_ids, e.target_ids, e.no_profile_prompt_ids, e.swapped_prompt_ids] for e in examples])


# --- discover --------------------------------------------------------------------------------


def check_shardable(options: Any) -> None:
    """Refuse scan options (`ScanOptions` or `DiscoverSettings`) a shard cannot run: the certified
    and the raced hybrid decide which heads to score from every example's exact scores."""
    if options.miss_rate is not None or options.racing:
        raise InputError("--miss-rate and --racing need every example's exact scores in one process: they do not run in "
                         "shards (use --ray or --workers to spread the examples)")  # fmt: skip


def discover_shard(
    lens: Lens,
    run_dir: str | Path,
    shard: Shard,
    examples: Sequence[TokenizedExample],
    *,
    scan: ScanOptions,
    selection: dict[str, Any],
    metadata: dict[str, Any],
    options: dict[str, Any],
    clusters: ClusterFile | None = None,
    workers: Workers | None = None,
) -> list[PCSResult] | None:
    """Score this shard's part of `examples` (all of the run's) into its folder with `scan`,
    `metadata` added to the results, `selection` the keywords of
    `HeadWeights.from_scores` the merge will use. With `clusters`, each cluster's members are
    scanned as `discover --clusters` scans them, the shards taking contiguous slices of the
    examples in cluster order (so a shard holds parts of one or a few clusters, and every shard
    about as many examples), one `cluster-<id>/pcs.parquet` per cluster it holds. Returns the
    results, or None (and says so) for a hybrid shard while other shards' attribution is
    missing: run it again when they are done."""

    check_shardable(scan)
    if clusters is None:
        groups = [("", list(examples), metadata)]
    else:
        members = cluster_members(examples, clusters)
        groups = [(cluster_folder(c), chosen, {**metadata, "cluster": c}) for c, chosen in enumerate(members)]
    ordered = [e for _, chosen, _ in groups for e in chosen]
    mine_ids = {e.example_id for e in shard.take(ordered)}
    recorded = {**options, "scoring": dataclasses.asdict(scan), "selection": selection, "metadata": metadata,
                "clusters": None if clusters is None else clusters.digest(),
                "groups": [[name, len(chosen)] for name, chosen, _ in groups]}  # fmt: skip
    ids = [e.example_id for e in ordered]
    folder = open_shard(run_dir, shard, "discover", recorded, ids, [i for i in ids if i in mine_ids], tokenized_digest(ordered))
    held = [(name, chosen, [e for e in chosen if e.example_id in mine_ids], extra) for name, chosen, extra in groups]
    held = [group for group in held if group[2]]
    # One ablation for every cluster, its mean over the whole run's examples, as one process makes it.
    ablation = make_ablation(lens, scan.ablation, reference_sequences(examples))
    scans = [PCSScan(lens, chosen, scan, ablation=ablation, checkpoint=folder / "checkpoint" / name, workers=workers)
             for name, chosen, _, _ in held]  # fmt: skip
    mine = [part for _, _, part, _ in held]
    if scan.method == "exact":
        results = scan_results(scans, mine)
    else:
        estimates = scan_estimates(scans, mine)
        candidates = None
        if scan.method == "hybrid":
            _save_estimates(folder / ESTIMATES, [e for part in mine for e in part], estimates)
            everyone, missing = _all_estimates(run_dir, shard)
            if missing:
                print(
                    f"shard {shard.label}: attribution done; the exact phase needs the attribution of every shard "
                    f"(missing: {', '.join(missing)}): run this command again when they are done"
                )
                return None
            candidates = [scan.candidates(_rows(everyone, chosen)) for scan, (_, chosen, _, _) in zip(scans, held)]
        results = scan_results(scans, mine, estimates, candidates)
    for (name, _, _, extra), result in zip(held, results):
        result.metadata.update(extra)
        result.save(folder / name / "pcs.parquet")
    finish_shard(folder)
    return results


def _save_estimates(path: Path, examples: Sequence[TokenizedExample], estimates: list[dict[str, torch.Tensor]]) -> None:
    """The attribution of `examples` (the groups' `estimates` one after another)."""
    joined = {name: torch.cat([part[name] for part in estimates]) for name in estimates[0]}
    with io.atomic_path(path) as temporary, open(temporary, "wb") as handle:
        arrays = {k: v.numpy() for k, v in joined.items()}
        np.savez(handle, example_ids=np.array([e.example_id for e in examples]), **arrays)  # type: ignore[arg-type]  # numpy's stub: **arrays may hit allow_pickle


def _all_estimates(run_dir: str | Path, shard: Shard) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """Every shard's attribution by example id, or the shards still missing."""
    rows: dict[str, dict[str, torch.Tensor]] = {}
    missing = []
    for index in range(shard.count):
        path = Shard(index, shard.count).folder(run_dir) / ESTIMATES
        if not path.is_file():
            missing.append(f"{index}/{shard.count}")
            continue
        with np.load(path) as stored:
            grids = {name: torch.from_numpy(stored[name]) for name in stored.files if name != "example_ids"}
            for row, example_id in enumerate(stored["example_ids"].tolist()):
                rows[example_id] = {name: grid[row] for name, grid in grids.items()}
    return ({}, missing) if missing else (rows, [])


def _rows(estimates: dict[str, dict[str, torch.Tensor]], examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
    """The attribution of `examples`, stacked in their order (as one process holds it)."""
    first = estimates[examples[0].example_id]
    return {name: torch.stack([estimates[e.example_id][name] for e in examples]) for name in first}


def _merge_discover(run_dir: Path, manifests: list[dict[str, Any]]) -> list[Path]:

    options = manifests[0]["options"]
    if "groups" not in options:
        raise InputError(f"{run_dir}: shards of an older workbench (their manifest lists no groups); run them again")
    folders = [Shard(m["index"], m["count"]).folder(run_dir) for m in manifests]
    results = []
    for name, size in options["groups"]:
        parts = [PCSResult.load(folder / name / "pcs.parquet") for folder in folders if (folder / name / "pcs.parquet").is_file()]
        where = f"{run_dir}{f' ({name})' if name else ''}"
        if sum(part.n_examples for part in parts) != size:
            raise InputError(f"{where}: the shards hold {sum(part.n_examples for part in parts)} of its {size} examples' scores")
        if any(not torch.equal(part.exact, parts[0].exact) for part in parts):
            raise InputError(f"{where}: the shards scored different heads exactly (their hybrid candidates differ)")
        results.append(PCSResult(
            torch.cat([part.per_example for part in parts]),
            parts[0].exact,
            [i for part in parts for i in part.example_ids],
            [u for part in parts for u in part.user_ids],
            {**parts[0].metadata, "n_examples": size},
        ))  # fmt: skip
    if options["clusters"] is not None:
        heads = select_cluster_heads(results, options["selection"], model=options["model"], clusters_digest=options["clusters"])
        save_cluster_discovery(run_dir, results, heads)
        return [*(run_dir / name / "pcs.parquet" for name, _ in options["groups"]), run_dir / INDEX]
    weights = HeadWeights.from_scores(results[0], **options["selection"])
    results[0].save(run_dir / "pcs.parquet")
    if not weights.heads():
        raise InputError(
            f"no head passes the selection's minimum score, so no heads.json was written; {run_dir / 'pcs.parquet'} is kept"
        )
    weights.save(run_dir / "heads.json")
    return [run_dir / "pcs.parquet", run_dir / "heads.json"]


# --- validate --------------------------------------------------------------------------------


def validate_shard(
    lens: Lens,
    run_dir: str | Path,
    shard: Shard,
    examples: Sequence[TokenizedExample],
    sets: list[tuple[str, int, list[Head]]],
    *,
    ablation: str,
    seed: int,
    options: dict[str, Any],
    workers: Workers | None = None,
) -> pd.DataFrame:
    """The validation deltas of this shard's part of `examples` (all of the run's), in its folder."""

    mine = shard.take(examples)
    recorded = {**options, "sets": sets, "ablation": ablation, "seed": seed}
    ids, mine_ids = [e.example_id for e in examples], [e.example_id for e in mine]
    folder = open_shard(run_dir, shard, "validate", recorded, ids, mine_ids, tokenized_digest(examples))
    deltas = validation_deltas(lens, mine, sets, ablation=ablation, reference=reference_sequences(examples), workers=workers)
    io.write_parquet(folder / "validation.parquet", deltas)
    finish_shard(folder)
    return deltas


def _merge_validate(run_dir: Path, manifests: list[dict[str, Any]]) -> list[Path]:
    import pandas as pd

    frames = [pd.read_parquet(Shard(m["index"], m["count"]).folder(run_dir) / "validation.parquet") for m in manifests]
    deltas = pd.concat(frames, ignore_index=True)
    summary = summarize_validation(deltas, seed=manifests[0]["options"]["seed"])
    io.write_parquet(run_dir / "validation.parquet", deltas)
    io.write_text(run_dir / "validation_summary.csv", summary.to_csv(index=False))
    return [run_dir / "validation.parquet", run_dir / "validation_summary.csv"]


# --- evaluate --------------------------------------------------------------------------------


def evaluate_shard(
    lens: Lens,
    run_dir: str | Path,
    shard: Shard,
    examples: Sequence[Example],
    config: EvalConfig,
    *,
    workers: Workers | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate this shard's whole batches of `examples` (the run's, before `config.limit`) in its folder."""

    chosen = list(examples)[: config.limit]
    mine = shard.take(chosen, unit=config.batch_size)
    ids = [e.example_id for e in chosen]
    content = digest([[e.example_id, e.user_id, e.input, e.output, e.profile] for e in chosen])
    folder = open_shard(run_dir, shard, "evaluate", {"config": config.as_dict()}, ids, [e.example_id for e in mine], content)
    result = evaluate(lens, mine, config, folder, workers=workers, progress=progress, profiles=chosen)
    finish_shard(folder)
    return result


def _merge_evaluate(run_dir: Path, manifests: list[dict[str, Any]]) -> list[Path]:

    folders = [Shard(m["index"], m["count"]).folder(run_dir) for m in manifests]
    configs = [read_json(folder / CONFIG) for folder in folders]
    if any(config != configs[0] for config in configs):
        raise InputError(f"{run_dir}: the shards' config.json differ (another heads file or package?); use another output folder")
    lines = []
    for manifest, folder in zip(manifests, folders):
        done = read_predictions(folder / PREDICTIONS)
        missing = [i for i in manifest["example_ids"] if i not in done]
        if missing:
            raise InputError(
                f"shard {manifest['index']}/{manifest['count']} lacks the prediction of {missing[0]!r}; run it again"
            )
        lines += [done[i] for i in manifest["example_ids"]]
    config = configs[0]
    rows = [line["scores"] for line in lines]
    intervals = metric_intervals(task_spec(config["task"]), rows, resamples=config["resamples"], seed=config["seed"])
    result = {**read_json(folders[0] / METRICS), "n": len(rows), "metrics": {k: v.as_dict() for k, v in intervals.items()},
              "seconds": sum(float(line.get("seconds", 0.0)) for line in lines), "threads": decoding_threads(lines)}  # fmt: skip
    result["threads_note"] = mixed_threads_note(result["threads"], f"the merged evaluation in {run_dir}")
    if result["threads_note"]:
        print(f"merge: {result['threads_note']}")
    written = []
    if config["routing"] is not None:
        result["routing"] = merge_routing(folders, run_dir, RoutingConfig(**config["routing"]))
        written = [run_dir / ROUTING_FILE, run_dir / ROUTES_TABLE]
    io.write_json(run_dir / CONFIG, config)
    io.write_text(run_dir / PREDICTIONS, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    io.write_json(run_dir / METRICS, result)
    return [run_dir / PREDICTIONS, run_dir / METRICS, *written]


# --- merge -----------------------------------------------------------------------------------

MERGES = {"discover": _merge_discover, "validate": _merge_validate, "evaluate": _merge_evaluate}


def merge_run(run_dir: str | Path) -> list[Path]:
    """Join the finished shards of `run_dir` into the files a single process writes there;
    returns their paths. Refuses shards of different commands, counts, options or data, missing
    or unfinished shards, and shards that share an example."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such folder")
    manifests = _manifests(run_dir)
    if not manifests:
        raise InputError(f"{run_dir}: no shards to merge (no {SHARDS}/*/{MANIFEST}; run with --shard I/N first)")
    first = manifests[0]
    for other in manifests[1:]:
        _check_same(other, first, f"shard {other['index']}/{other['count']}")
    count = first["count"]
    present = {m["index"] for m in manifests}
    missing = [f"{index}/{count}" for index in range(count) if index not in present]
    if missing:
        raise InputError(f"{run_dir}: missing shard{'s' * (len(missing) > 1)} {', '.join(missing)} of {count}")
    manifests.sort(key=lambda m: m["index"])
    unfinished = [f"{m['index']}/{count}" for m in manifests if not m.get("finished")]
    if unfinished:
        raise InputError(f"{run_dir}: shard{'s' * (len(unfinished) > 1)} {', '.join(unfinished)} not finished; run them again")
    seen: dict[str, int] = {}
    for manifest in manifests:
        for example_id in manifest["example_ids"]:
            if example_id in seen:
                raise InputError(
                    f"{run_dir}: example {example_id!r} is in shards {seen[example_id]}/{count} and {manifest['index']}/{count}"
                )
            seen[example_id] = manifest["index"]
    if len(seen) != first["n_examples"]:
        raise InputError(f"{run_dir}: the shards hold {len(seen)} of the run's {first['n_examples']} examples")
    return MERGES[first["kind"]](run_dir, manifests)
