"""Preference heads per cluster of users: PCS on each cluster's member examples, heads per cluster.

`discover_cluster_heads` scores each cluster's member examples as global discovery scores all
examples (`workbench.experiments.discovery`, with the options of `workbench discover`; the
hybrid's candidates are the cluster's own, and mean ablation averages over all examples, so an
example scores the same in every cluster), so one cluster is global discovery; the scans of all
clusters run together, one fan-out per phase. The result is a `ClusterHeads`
(`workbench.users.cluster_heads`), saved with each cluster's scores by `save_cluster_discovery`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data.examples import Example
from workbench.data.tokenized import TokenizedExample
from workbench.errors import InputError
from workbench.experiments.discovery import DiscoverSettings, scan_options, selection_options
from workbench.heads import HeadWeights
from workbench.scores import PCSResult, ScanOptions
from workbench.scores.ablation import make_ablation
from workbench.scores.nll import reference_sequences
from workbench.scores.pcs import PCSScan, score_scans
from workbench.users.cluster_heads import ClusterHeads, cluster_folder
from workbench.users.clusters import ClusterFile

if TYPE_CHECKING:
    from workbench.engine.lens import Lens
    from workbench.engine.workers import Workers


def discover_cluster_heads(
    lens: Lens,
    examples: Sequence[TokenizedExample],
    clusters: ClusterFile,
    settings: DiscoverSettings,
    scan: ScanOptions | None = None,
    *,
    checkpoint: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    workers: Workers | None = None,
) -> tuple[list[PCSResult], ClusterHeads]:
    """PCS of every head on each cluster's member examples among `examples`, and each cluster's
    heads selected with `settings` (scored with `scan`, default `scan_options(lens, settings)`).
    A head's score on an example does not depend on the cluster: mean ablation takes its mean over
    all of `examples`, and `checkpoint` is one folder of per-example checkpoints for every cluster
    (keyed by content, so a global discovery's folder with the same scan options serves too).
    `extra` is recorded with every cluster's heads and in the index. `workers` run the examples of
    all clusters together (`workbench.scores.pcs.score_scans`): each phase is one fan-out, the
    hybrid's barrier between them, candidates chosen per cluster."""
    if settings.score != "pcs":
        raise InputError(f"per-cluster discovery scores PCS, not {settings.score} heads")
    members = cluster_members(examples, clusters)
    scan = scan_options(lens, settings) if scan is None else scan
    # One ablation for every cluster, its mean over all examples: a score does not depend on the cluster.
    ablation = make_ablation(lens, scan.ablation, reference_sequences(examples))
    scans = [PCSScan(lens, chosen, scan, ablation=ablation, checkpoint=checkpoint, progress=progress, workers=workers)
             for chosen in members]  # fmt: skip
    results = score_scans(scans, members)
    for cluster, result in enumerate(results):
        result.metadata["cluster"] = cluster
    selection = cluster_selection(settings, clusters, extra)
    return results, select_cluster_heads(results, selection, model=lens.name, clusters_digest=clusters.digest())


def cluster_selection(settings: DiscoverSettings, clusters: ClusterFile, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The selection keywords of every cluster (`workbench.experiments.discovery.selection_options`), `extra`
    recorded after the clustering's digest."""
    return selection_options(settings, {"clusters_digest": clusters.digest(), **(extra or {})})


def clustered_examples(examples: Sequence[Example], clusters: ClusterFile, limit: int | None = None) -> list[Example]:
    """The examples `clusters` clustered, in data order; with `limit`, at most that many, taken in
    turn from each cluster (each in data order) so that every cluster keeps members. A limit below
    the number of clusters is refused, naming `--limit`."""
    cluster_of = clusters.cluster_of_example()
    chosen = [e for e in examples if e.example_id in cluster_of]
    if limit is None:
        return chosen
    if limit < clusters.k:
        raise InputError(f"--limit {limit} leaves a cluster without examples: each of the {clusters.k} clusters needs one "
                         f"(give --limit {clusters.k} or more)")  # fmt: skip
    queues = [[e.example_id for e in chosen if cluster_of[e.example_id] == c] for c in range(clusters.k)]
    picked: set[str] = set()
    for turn in range(max(map(len, queues))):
        for queue in queues:
            if turn < len(queue) and len(picked) < limit:
                picked.add(queue[turn])
    return [e for e in chosen if e.example_id in picked]


def cluster_members(examples: Sequence[TokenizedExample], clusters: ClusterFile) -> list[list[TokenizedExample]]:
    """Each cluster's member examples among `examples`, in their order; refuses an example of no
    cluster and a cluster with no example."""
    cluster_of = clusters.cluster_of_example()
    outside = [e.example_id for e in examples if e.example_id not in cluster_of]
    if outside:
        raise InputError(f"example {outside[0]!r} belongs to no cluster of the clusters file")
    members = [[e for e in examples if cluster_of[e.example_id] == c] for c in range(clusters.k)]
    empty = [c for c, chosen in enumerate(members) if not chosen]
    if empty:
        raise InputError(
            f"cluster {empty[0]} has no member examples among the {len(examples)} examples given "
            f"(its {clusters.sizes()[empty[0]]} users' examples were left out: raise --sample or leave it out)"
        )
    return members


def select_cluster_heads(
    results: Sequence[PCSResult], selection: dict[str, Any], *, model: str, clusters_digest: str
) -> ClusterHeads:
    """Each cluster's heads from its scores (`selection`: the keywords of `HeadWeights.from_scores`,
    its `extra` recorded with every cluster's heads and in the index)."""
    shared = selection["extra"]
    weights = [
        HeadWeights.from_scores(
            result, **{**selection, "extra": {"cluster": cluster, "n_users": len(set(result.user_ids)), **shared}}
        )
        for cluster, result in enumerate(results)
    ]
    return ClusterHeads(weights, clusters_digest, model, shared)


def save_cluster_discovery(folder: str | Path, results: Sequence[PCSResult], heads: ClusterHeads) -> None:
    """Each cluster's `pcs.parquet`; then, unless a cluster selected no head (an `InputError`, the
    scores kept), its `heads.json` and the index."""
    folder = Path(folder)
    for cluster, result in enumerate(results):
        result.save(folder / cluster_folder(cluster) / "pcs.parquet")
    for cluster, weights in enumerate(heads.weights):
        if not weights.heads():
            raise InputError(
                f"cluster {cluster}: no head passed the PCS threshold (--min-pcs), so no cluster heads were written "
                f"(lower --min-pcs); the scores are kept in {folder / cluster_folder(cluster) / 'pcs.parquet'}"
            )
    heads.save(folder)
