"""Clustering a split's users (what `workbench cluster` runs), and its report.

`cluster_examples` embeds each user's profile (one user, one profile: `workbench.users.profiles`),
clusters the users (`workbench.users.clusters`) and returns the `ClusterFile` with a per-user
table. `save_clustering` writes `clusters.json`, `cluster_users.parquet` (columns `user_id,
cluster, n_examples, cosine_to_centroid`), `cluster_routing.parquet` (how the clustered users
themselves are routed: columns `routing, temperature, mean_top_weight, mean_entropy,
uniform_entropy, same_as_cluster`) and the short report `clusters.md`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import io
from workbench.data.examples import Example
from workbench.errors import InputError
from workbench.users.clusters import ClusterFile, cluster_users, data_digest, number_of_clusters, silhouette
from workbench.users.embeddings import Embeddings, embed_texts, embedder_identity
from workbench.users.profiles import ProfileText, profile_text, user_profiles
from workbench.users.routing import DEFAULT_TEMPERATURE, cosine_similarities, route

AUTHORS_TEMPERATURE = 1.0  # the authors' default (on their negative Euclidean distances), for reference
ROUTING_COLUMNS = ("routing", "temperature", "mean_top_weight", "mean_entropy", "uniform_entropy", "same_as_cluster")


@dataclass
class Clustering:
    """A clustering, the per-user table and the users' embeddings (rows in table order)."""

    file: ClusterFile
    users: pd.DataFrame
    embeddings: Embeddings


def cluster_examples(
    examples: Sequence[Example],
    *,
    task: str,
    split: str,
    data: str,
    k: int | None = None,
    group_size: int | None = None,
    seed: int = 0,
    recipe: ProfileText = ProfileText(),
    cache: str | Path | None = None,
) -> Clustering:
    """Cluster the users of `examples` into `k` clusters, or about one per `group_size` users."""
    if (k is None) == (group_size is None):
        raise InputError("give one of k and group_size")
    if not examples:
        raise InputError("no examples to cluster")
    profiles = user_profiles(examples)
    k = number_of_clusters(len(profiles), group_size) if group_size is not None else k
    if not 1 <= k <= len(profiles):  # type: ignore[operator]
        raise InputError(f"cannot make {k} clusters from {len(profiles)} users (the {task} {split!r} split has {len(profiles)})")
    texts = [profile_text(task, profile, recipe) for profile in profiles]
    embeddings = embed_texts(texts, max_length=recipe.max_length, cache=cache)
    clusters = cluster_users(embeddings, k, seed=seed)  # type: ignore[arg-type]
    members = [clusters.members(c) for c in range(clusters.k)]
    file = ClusterFile(
        task=task, split=split, data=data, data_digest=data_digest(examples), n_examples=len(examples),
        embedder=embedder_identity(), profile_text=recipe, seed=seed, group_size=group_size, centroids=clusters.centroids,
        user_ids=tuple(tuple(profiles[i].user_id for i in chosen) for chosen in members),
        example_ids=tuple(tuple(e for i in chosen for e in profiles[i].example_ids) for chosen in members),
        silhouette=silhouette(embeddings, clusters.labels),
    )  # fmt: skip
    similarity = cosine_similarities(embeddings, clusters.centroids)
    users = pd.DataFrame({
        "user_id": [profile.user_id for profile in profiles],
        "cluster": clusters.labels,
        "n_examples": [len(profile.example_ids) for profile in profiles],
        "cosine_to_centroid": similarity[np.arange(len(profiles)), clusters.labels],
    })  # fmt: skip
    return Clustering(file, users, embeddings)


def clustered_routing(clustering: Clustering, temperatures: Sequence[float]) -> pd.DataFrame:
    """How the clustered users are routed: hard, and soft at each temperature (columns above)."""
    labels = clustering.users["cluster"].to_numpy()
    rows = []
    routes: list[tuple[str, float | None, np.ndarray]] = [
        ("hard", None, route(clustering.embeddings, clustering.file.centroids, mode="hard"))
    ]
    for t in temperatures:
        routes.append(("soft", t, route(clustering.embeddings, clustering.file.centroids, mode="soft", temperature=t)))
    for mode, temperature, weights in routes:
        entropy = -(weights * np.log(np.clip(weights, 1e-300, None))).sum(axis=1)
        rows.append((mode, temperature, float(weights.max(axis=1).mean()), float(entropy.mean()),
                     float(np.log(clustering.file.k)), float((weights.argmax(axis=1) == labels).mean())))  # fmt: skip
    return pd.DataFrame(rows, columns=list(ROUTING_COLUMNS))


def clustering_report(clustering: Clustering, routing: pd.DataFrame) -> str:
    """A short Markdown report: settings, sizes, silhouette, and the routing of the clustered users."""
    file, users = clustering.file, clustering.users
    recipe = file.profile_text
    score = "n/a (needs 2 <= k < users)" if file.silhouette is None else f"{file.silhouette:.3f}"
    lines = [
        f"# Clusters of {file.task} {file.split!r} users",
        "",
        f"{len(users)} users ({file.n_examples} examples, data {file.data}, digest {file.data_digest}) in k = {file.k} "
        f"clusters{f' (one per {file.group_size} users)' if file.group_size else ''}, seed {file.seed}.",
        f"Profile text: {recipe.source}, the first {recipe.items} items, {recipe.max_length} tokens; embedder "
        f"{file.embedder['name']} ({file.embedder['package']}, weights {file.embedder['weights_digest']}), unit-norm.",
        f"Silhouette (cosine distance): {score}.",
        "",
        "| cluster | users | examples | mean cosine to centroid |",
        "|---|---|---|---|",
    ]
    for cluster, part in users.groupby("cluster"):
        lines.append(f"| {cluster} | {len(part)} | {int(part['n_examples'].sum())} | {part['cosine_to_centroid'].mean():.3f} |")
    lines += [
        "",
        "Routing of the clustered users (entropy in nats; uniform routing has entropy ln K):",
        "",
        "| routing | mean top weight | mean entropy | ln K | routed to own cluster |",
        "|---|---|---|---|---|",
    ]
    for row in routing.itertuples():
        name = "hard" if row.routing == "hard" else f"soft, T = {row.temperature:g}"
        lines.append(f"| {name} | {row.mean_top_weight:.3f} | {row.mean_entropy:.3f} | {row.uniform_entropy:.3f} | "
                     f"{row.same_as_cluster:.0%} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def save_clustering(folder: str | Path, clustering: Clustering, *, temperature: float = DEFAULT_TEMPERATURE) -> None:
    """Write the clustering's files (module docstring); the report shows soft routing at
    `temperature` and at the authors' T = 1."""
    folder = Path(folder)
    routing = clustered_routing(clustering, sorted({temperature, AUTHORS_TEMPERATURE}))
    io.write_parquet(folder / "cluster_users.parquet", clustering.users)
    io.write_parquet(folder / "cluster_routing.parquet", routing)
    io.write_text(folder / "clusters.md", clustering_report(clustering, routing))
    clustering.file.save(folder / "clusters.json")
