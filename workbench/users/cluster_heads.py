"""Preference heads per cluster of users: PCS on each cluster's member examples, heads per cluster.

`discover_cluster_heads` scores each cluster's member examples as global discovery scores all
examples (`workbench.discovery`, with the options of `workbench discover`; the hybrid's
candidates are the cluster's own, and mean ablation averages over all examples, so an example
scores the same in every cluster), so one cluster is global discovery; the scans of all clusters run together, one fan-out per phase. `ClusterHeads` is the
result on disk: one folder `cluster-<id>/` per cluster with its `pcs.parquet` and `heads.json`,
and the index `cluster_heads.json` naming the clusters file (and its digest), the model, the
options, and each cluster's head file with a digest of its weights. Routed decoding reads the index and refuses
heads made for other clusters or another model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench import io
from workbench.checkpoint import digest
from workbench.data.tokenized import TokenizedExample
from workbench.discovery import DiscoverSettings, scoring_options, selection_options
from workbench.errors import InputError
from workbench.heads import HeadWeights, read_json_object
from workbench.scores import PCSResult
from workbench.scores.ablation import make_ablation
from workbench.scores.nll import reference_sequences
from workbench.scores.pcs import PCSScan, score_scans
from workbench.users.clusters import ClusterFile

if TYPE_CHECKING:
    from workbench.distributed import Workers
    from workbench.lens import Lens

INDEX = "cluster_heads.json"
FORMAT = "workbench.cluster_heads/1"


def cluster_folder(cluster: int) -> str:
    return f"cluster-{cluster}"


@dataclass
class ClusterHeads:
    """Head weights per cluster (index = cluster id) and the record of how they were found."""

    weights: list[HeadWeights]
    clusters_digest: str
    model: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.weights)

    def digest(self) -> str:
        return digest(self.clusters_digest, self.model, [w.weights.tolist() for w in self.weights])

    def save(self, folder: str | Path) -> None:
        """Each cluster's `heads.json`, then the index (written last: a folder with an index is whole)."""
        folder = Path(folder)
        entries = []
        for cluster, weights in enumerate(self.weights):
            path = Path(cluster_folder(cluster)) / "heads.json"
            weights.save(folder / path)
            entries.append({"id": cluster, "heads": str(path), "digest": digest(weights.weights.tolist()),
                            "n_heads": len(weights.heads()), "n_examples": weights.n_examples})  # fmt: skip
        index = {"format": FORMAT, "model": self.model, "clusters_digest": self.clusters_digest, "k": self.k,
                 **self.record, "clusters": entries}  # fmt: skip
        io.write_json(folder / INDEX, index)

    @classmethod
    def load(cls, path: str | Path) -> ClusterHeads:
        """From a folder written by `save` (or its index file)."""
        path = Path(path)
        index_path = path / INDEX if path.is_dir() else path
        index = read_json_object(index_path, made_by="the output folder of `workbench discover --clusters`")
        if index.get("format") != FORMAT:
            raise InputError(f"{index_path}: not a cluster-heads index (write one with `workbench discover --clusters`)")
        try:
            entries = sorted(index["clusters"], key=lambda entry: int(entry["id"]))
            if [int(entry["id"]) for entry in entries] != list(range(len(entries))) or not entries:
                raise InputError(f"{index_path}: cluster ids must be 0..k-1")
            weights = [HeadWeights.load(index_path.parent / entry["heads"]) for entry in entries]
            for entry, loaded in zip(entries, weights):
                if digest(loaded.weights.tolist()) != entry["digest"]:
                    raise InputError(f"{index_path.parent / entry['heads']}: its weights changed since the index was written")
            record = {k: v for k, v in index.items() if k not in ("format", "model", "clusters_digest", "k", "clusters")}
            return cls(weights, str(index["clusters_digest"]), str(index["model"]), record)
        except KeyError as error:
            raise InputError(f"{index_path}: missing field {error.args[0]!r}") from None
        except (TypeError, ValueError) as error:
            raise InputError(f"{index_path}: malformed cluster-heads index ({error})") from None

    def check(self, clusters: ClusterFile, source: str | Path, lens: Lens | None = None) -> None:
        """Refuse heads found for other clusters, or (given `lens`) another model or head layout."""
        if self.clusters_digest != clusters.digest():
            raise InputError(f"{source}: these cluster heads were discovered for another clustering than the clusters file given")
        if lens is None:
            return
        if self.model != lens.name:
            raise InputError(f"{source}: cluster heads were discovered with model {self.model!r}, not {lens.name!r}")
        for weights in self.weights:
            weights.check(lens.geometry)


def discover_cluster_heads(
    lens: Lens,
    examples: Sequence[TokenizedExample],
    clusters: ClusterFile,
    settings: DiscoverSettings,
    *,
    checkpoint: str | Path | None = None,
    top_m: int | None = None,
    max_rows: int = 64,
    seed: int = 0,
    task: str = "",
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    workers: Workers | None = None,
) -> tuple[list[PCSResult], ClusterHeads]:
    """PCS of every head on each cluster's member examples among `examples`, and each cluster's
    heads selected with `settings`. A head's score on an example does not depend on the cluster:
    mean ablation takes its mean over all of `examples`, and `checkpoint` is one folder of
    per-example checkpoints for every cluster (keyed by content, so a global discovery's folder
    with the same scoring options serves too). `extra` is recorded with every cluster's heads and
    in the index. `workers` run the examples of all clusters together
    (`workbench.scores.pcs.score_scans`): each phase is one fan-out, the hybrid's barrier between
    them, candidates chosen per cluster."""
    if settings.score != "pcs":
        raise InputError(f"per-cluster discovery scores PCS, not {settings.score} heads")
    members = cluster_members(examples, clusters)
    scoring = scoring_options(lens, settings, top_m=top_m, max_rows=max_rows, seed=seed, task=task)
    # One ablation for every cluster, its mean over all examples: a score does not depend on the cluster.
    made = {**scoring, "ablation": make_ablation(lens, scoring["ablation"], reference_sequences(examples))}
    scans = [PCSScan(lens, chosen, **made, checkpoint=checkpoint, progress=progress, workers=workers)
             for chosen in members]  # fmt: skip
    results = score_scans(scans, members)
    for cluster, result in enumerate(results):
        result.metadata["cluster"] = cluster
    selection = cluster_selection(settings, clusters, extra)
    return results, select_cluster_heads(results, selection, model=lens.name, clusters_digest=clusters.digest())


def cluster_selection(settings: DiscoverSettings, clusters: ClusterFile, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The selection keywords of every cluster (`workbench.discovery.selection_options`), `extra`
    recorded after the clustering's digest."""
    return selection_options(settings, {"clusters_digest": clusters.digest(), **(extra or {})})


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
            f"(its {clusters.sizes()[empty[0]]} users' examples were left out; score all of the clustered examples)"
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
