"""Preference heads per cluster of users, on disk: what routed decoding reads.

`ClusterHeads` is one folder `cluster-<id>/` per cluster with its `pcs.parquet` and `heads.json`,
and the index `cluster_heads.json` naming the clusters file (and its digest), the model, the
options, and each cluster's head file with a digest of its weights. Routed decoding reads the
index and refuses heads made for other clusters or another model. They are found by
`workbench.experiments.cluster_discovery`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench import io
from workbench.checkpoint import digest
from workbench.errors import InputError
from workbench.heads import HeadWeights, read_json_object
from workbench.users.clusters import ClusterFile

if TYPE_CHECKING:
    from workbench.engine.lens import Lens

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
