"""Clusters of users: k-means on unit-norm profile embeddings, and the `clusters.json` file.

Clustering is scikit-learn's k-means++ (seeded, 10 restarts) followed by spherical refinement:
each user is assigned to the centroid of highest cosine similarity and each centroid is the
normalised mean of its users, until no assignment changes. A cluster's members are then exactly
the users whose hard route (`workbench.users.routing`) is that cluster. Clusters are numbered by
size, largest first.

`clusters.json` (`ClusterFile`) records the centroids, each cluster's user and example ids, and
everything that made them: the task, split, data source and a digest of its examples, the
embedder's identity (name, package, a digest of its weights), the profile-text recipe, seed, k
(and the group size it came from, if any). A command given a clusters file checks the embedder
and the data against it and refuses a mismatch in one line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float, Int

from workbench import io
from workbench.checkpoint import digest
from workbench.data.examples import Example
from workbench.errors import InputError
from workbench.heads import read_json_object
from workbench.typed_config import flat_values
from workbench.users.embeddings import Embeddings, embedder_identity
from workbench.users.profiles import ProfileText

FORMAT = "workbench.clusters/1"
Centroids = Float[np.ndarray, "cluster dim"]
Labels = Int[np.ndarray, " user"]
REFINEMENT_ROUNDS = 300


@dataclass(frozen=True)
class UserClusters:
    """Unit-norm centroids and each user's cluster (the centroid of highest cosine similarity)."""

    centroids: Centroids
    labels: Labels
    seed: int

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    def sizes(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.k).tolist()

    def members(self, cluster: int) -> list[int]:
        return np.flatnonzero(self.labels == cluster).tolist()


def number_of_clusters(n_users: int, target_size: int = 100) -> int:
    """The authors' rule: about one cluster per `target_size` users, at least one."""
    if n_users < 1:
        raise InputError("cannot cluster zero users")
    if target_size < 1:
        raise InputError(f"the group size must be at least 1, got {target_size}")
    return int(min(max(1, math.floor(n_users / target_size + 0.5)), n_users))


def cluster_users(embeddings: Embeddings, k: int, *, seed: int = 0) -> UserClusters:
    """k-means++ (scikit-learn, 10 restarts, seeded), then spherical refinement (module docstring)."""
    from sklearn.cluster import KMeans

    points = np.asarray(embeddings, dtype=np.float64)
    if points.ndim != 2 or not np.isfinite(points).all():
        raise InputError("embeddings must be a finite [users, dim] array")
    if not 1 <= k <= len(points):
        raise InputError(f"cannot make {k} clusters from {len(points)} users")
    distinct = len(np.unique(points.round(6), axis=0))
    if k > distinct:
        raise InputError(f"cannot make {k} clusters from {len(points)} users with only {distinct} distinct profiles")
    fitted = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed).fit(points)
    centroids, labels = _spherical_refinement(points, _normalised(fitted.cluster_centers_))
    order = sorted(range(k), key=lambda c: (-int((labels == c).sum()), int(np.flatnonzero(labels == c)[0])))
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    return UserClusters(centroids[order].astype(np.float32), relabel[labels], seed)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


def _spherical_refinement(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Assign by cosine, re-centre on normalised means, until no assignment changes. A cluster left
    empty takes the user least similar to its own centroid (among clusters of two or more)."""
    labels = np.full(len(points), -1)
    for _ in range(REFINEMENT_ROUNDS):
        assigned = (points @ centroids.T).argmax(axis=1)
        for cluster in range(len(centroids)):
            if not (assigned == cluster).any():
                shared = np.bincount(assigned, minlength=len(centroids))[assigned] > 1
                fit = np.where(shared, (points * centroids[assigned]).sum(axis=1), np.inf)
                assigned[int(fit.argmin())] = cluster
        if np.array_equal(assigned, labels):
            break
        labels = assigned
        centroids = _normalised(np.stack([points[labels == c].mean(axis=0) for c in range(len(centroids))]))
    return centroids, labels


def silhouette(embeddings: Embeddings, labels: Labels) -> float | None:
    """The mean silhouette coefficient with cosine distance (None unless 2 <= k < users)."""
    from sklearn.metrics import silhouette_score

    k = len(set(labels.tolist()))
    if not 2 <= k < len(labels):
        return None
    return float(silhouette_score(np.asarray(embeddings, dtype=np.float64), labels, metric="cosine"))


def data_digest(examples: Sequence[Example]) -> str:
    """A digest of examples' content (ids, users, inputs, profiles, outputs): the data's identity."""
    return digest([dataclasses.asdict(example) for example in examples])


@dataclass(frozen=True)
class ClusterFile:
    """The record of one clustering (`clusters.json`); see the module docstring."""

    task: str
    split: str
    data: str
    data_digest: str
    n_examples: int
    embedder: dict[str, Any]
    profile_text: ProfileText
    seed: int
    group_size: int | None
    centroids: Centroids
    user_ids: tuple[tuple[str, ...], ...]
    example_ids: tuple[tuple[str, ...], ...]
    silhouette: float | None

    @property
    def k(self) -> int:
        return len(self.centroids)

    def sizes(self) -> list[int]:
        return [len(users) for users in self.user_ids]

    def users(self) -> set[str]:
        return {user for members in self.user_ids for user in members}

    def cluster_of_example(self) -> dict[str, int]:
        return {example: cluster for cluster, members in enumerate(self.example_ids) for example in members}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "task": self.task,
            "split": self.split,
            "data": self.data,
            "data_digest": self.data_digest,
            "n_examples": self.n_examples,
            "n_users": sum(self.sizes()),
            "embedder": self.embedder,
            "profile_text": flat_values(self.profile_text),
            "seed": self.seed,
            "k": self.k,
            "group_size": self.group_size,
            "silhouette": self.silhouette,
            "clusters": [
                {"id": cluster, "size": len(users), "user_ids": list(users), "example_ids": list(examples)}
                for cluster, (users, examples) in enumerate(zip(self.user_ids, self.example_ids))
            ],
            "centroids": self.centroids.tolist(),
        }

    def digest(self) -> str:
        return digest(self.to_json())

    def save(self, path: str | Path) -> None:
        io.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ClusterFile:
        path = Path(path)
        if path.is_dir():
            path = path / "clusters.json"
        record = read_json_object(path)
        if record.get("format") != FORMAT:
            raise InputError(f"{path}: not a workbench clusters file (write one with `workbench cluster`)")
        try:
            clusters = record["clusters"]
            centroids = np.asarray(record["centroids"], dtype=np.float32)
            loaded = cls(
                task=str(record["task"]),
                split=str(record["split"]),
                data=str(record["data"]),
                data_digest=str(record["data_digest"]),
                n_examples=int(record["n_examples"]),
                embedder=dict(record["embedder"]),
                profile_text=ProfileText(**record["profile_text"]),
                seed=int(record["seed"]),
                group_size=record["group_size"],
                centroids=centroids,
                user_ids=tuple(tuple(str(u) for u in entry["user_ids"]) for entry in clusters),
                example_ids=tuple(tuple(str(e) for e in entry["example_ids"]) for entry in clusters),
                silhouette=record["silhouette"],
            )
        except KeyError as error:
            raise InputError(f"{path}: missing field {error.args[0]!r}") from None
        except (TypeError, ValueError) as error:
            raise InputError(f"{path}: malformed clusters record ({error})") from None
        if centroids.ndim != 2 or len(centroids) != len(clusters) or not np.isfinite(centroids).all():
            raise InputError(f"{path}: needs one finite centroid per cluster ({len(clusters)} clusters)")
        return loaded

    def check_embedder(self, source: str | Path) -> None:
        """Refuse a clustering made with another embedder (its weights digest differs)."""
        current = embedder_identity()
        if self.embedder.get("weights_digest") != current["weights_digest"]:
            raise InputError(
                f"{source}: clustered with embedder {self.embedder.get('name')!r} (weights {self.embedder.get('weights_digest')}), "
                f"but this installation embeds with {current['name']!r} (weights {current['weights_digest']}); cluster again"
            )

    def check_data(self, examples: Sequence[Example], task: str, split: str, source: str | Path) -> None:
        """Refuse examples other than those clustered (task, split or content differ)."""
        if (task, split) != (self.task, self.split):
            raise InputError(f"{source}: clusters the {self.task} {self.split!r} split, not {task} {split!r}")
        if data_digest(examples) != self.data_digest:
            raise InputError(
                f"{source}: clusters other data ({self.data}, digest {self.data_digest}) than the {len(examples)} "
                f"{task} {split!r} examples given (digest {data_digest(examples)})"
            )
