"""Routing users to clusters, the routed head weights, and how peaked the routes are.

A user's profile embedding e (unit norm) is compared with every cluster centroid c_j (unit norm)
by cosine similarity s_j = e·c_j. `hard` routing puts weight 1 on the most similar cluster;
`soft` routing gives r_j = softmax_j(s_j / T), which tends to hard routing as T → 0 and to the
uniform mix as T grows. Cosines lie in [-1, 1] and those of one user to different centroids
typically differ by a few hundredths to tenths, so T is on that scale (default 0.05). The user's
head weights are the routed mix w̄ = Σ_j r_j w_j of the clusters' weights, which DPS suppresses.

Any user with a profile can be routed: evaluation embeds each user's profile on the fly (with
the clustering's profile-text recipe), whether or not the user was clustered.

Diagnostics per user (`routing_diagnostics`): the route's entropy against the uniform entropy
ln K, the top route weight, the cosine between the user's w̄ and the global map (the plain mean
of the cluster maps, which is what soft routing tends to as T grows), the number of heads with
w̄ > 0.5 (suppressed more than half) and with w̄ > 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from pydantic import Field

from workbench import io
from workbench.checkpoint import digest
from workbench.data.examples import Example
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.typed_config import Positive, typed_config
from workbench.users.cluster_heads import ClusterHeads
from workbench.users.clusters import Centroids, ClusterFile
from workbench.users.embeddings import Embeddings, embed_texts
from workbench.users.profiles import profile_text, user_profiles

if TYPE_CHECKING:
    from workbench.engine.lens import Lens

RouteWeights = Float[np.ndarray, "user cluster"]
Mode = Literal["hard", "soft"]
DEFAULT_TEMPERATURE = 0.05
USER_COLUMNS = ("user_id", "seen_in_clustering", "n_examples", "cluster", "top_weight", "entropy", "uniform_entropy",
                "cosine_to_global", "heads_over_half", "heads_weighted")  # fmt: skip
ROUTE_COLUMNS = ("user_id", "cluster", "similarity", "weight")
ROUTING_FILE, ROUTES_TABLE = "routing.json", "routing_weights.parquet"


def route(
    embeddings: Embeddings, centroids: Centroids, *, mode: Mode = "hard", temperature: float = DEFAULT_TEMPERATURE
) -> RouteWeights:
    """Each user's weight on each cluster (see the module docstring)."""
    if mode not in ("hard", "soft"):
        raise InputError(f"unknown routing mode {mode!r}; choose hard or soft")
    check_temperature(temperature)
    similarity = cosine_similarities(embeddings, centroids)
    if mode == "hard":
        weights = np.zeros_like(similarity)
        weights[np.arange(len(similarity)), similarity.argmax(axis=1)] = 1.0
        return weights
    logits = similarity / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise InputError(f"routing temperature must be a finite number > 0, got {temperature}")


def cosine_similarities(embeddings: Embeddings, centroids: Centroids) -> Float[np.ndarray, "user cluster"]:
    return np.atleast_2d(np.asarray(embeddings, dtype=np.float64)) @ np.asarray(centroids, dtype=np.float64).T


def routed_head_weights(route_weights: Sequence[float], cluster_weights: Sequence[HeadWeights]) -> HeadWeights:
    """The routed mix Σ_c r_c · w_c of the clusters' head weights (stays in [0, 1])."""
    if len(route_weights) != len(cluster_weights):
        raise InputError(f"{len(route_weights)} routing weights for {len(cluster_weights)} clusters")
    shapes = {weights.shape for weights in cluster_weights}
    if len(shapes) != 1:
        raise InputError(f"cluster head weights disagree on the model's head layout: {sorted(shapes)}")
    mixed = sum(float(r) * weights.weights.double() for r, weights in zip(route_weights, cluster_weights))
    first = cluster_weights[0]
    return HeadWeights(
        torch.as_tensor(mixed).clamp(0.0, 1.0), model=first.model, task=first.task, method=f"routed({first.method})"
    )


def routing_diagnostics(
    user_ids: Sequence[str],
    route_weights: RouteWeights,
    user_weights: Sequence[HeadWeights],
    cluster_weights: Sequence[HeadWeights],
) -> pd.DataFrame:
    """One row per user: `user_id, cluster` (the top route), `top_weight`, `entropy` (nats),
    `uniform_entropy` (ln K), `cosine_to_global`, `heads_over_half`, `heads_weighted`."""
    weights = np.asarray(route_weights, dtype=np.float64)
    entropy = -(weights * np.log(np.clip(weights, 1e-300, None))).sum(axis=1)
    global_map = torch.stack([w.weights.double() for w in cluster_weights]).mean(dim=0).flatten()
    rows = []
    for user, r, h, mixed in zip(user_ids, weights, entropy, user_weights):
        flat = mixed.weights.double().flatten()
        norms = float(flat.norm() * global_map.norm())
        rows.append({
            "user_id": user, "cluster": int(r.argmax()), "top_weight": float(r.max()), "entropy": float(h),
            "uniform_entropy": math.log(len(r)), "cosine_to_global": float(flat @ global_map) / norms if norms else math.nan,
            "heads_over_half": int((flat > 0.5).sum()), "heads_weighted": int((flat > 0).sum()),
        })  # fmt: skip
    return pd.DataFrame(rows)


@typed_config
class RoutingConfig:
    """Routed DPS: which clustering and cluster heads, and how users are routed to them."""

    clusters: str = Field(description="The clusters file (`workbench cluster`).")
    cluster_heads: str = Field(description="The folder of per-cluster heads (`workbench discover --clusters`).")
    mode: Mode = Field(default="soft", description="hard: the most similar cluster; soft: softmax of cosine similarity / T.")
    temperature: Positive = Field(default=DEFAULT_TEMPERATURE, description="Soft routing's temperature T on cosine similarities.")

    name = "routing"

    def load(self) -> tuple[ClusterFile, ClusterHeads]:
        """The clusters and cluster heads, checked against this embedder and each other."""
        clusters = ClusterFile.load(self.clusters)
        clusters.check_embedder(self.clusters)
        heads = ClusterHeads.load(self.cluster_heads)
        heads.check(clusters, self.cluster_heads)
        return clusters, heads


def routing_config(
    clusters: str | Path | None, cluster_heads: str | Path | None, mode: str | None = None, temperature: float | None = None
) -> RoutingConfig | None:
    """A command line's routing options (None without `clusters`), its files read and checked."""
    if clusters is None and cluster_heads is None:
        if mode is not None or temperature is not None:
            raise InputError("--routing and --temperature need --clusters and --cluster-heads")
        return None
    if clusters is None or cluster_heads is None:
        raise InputError("give --clusters and --cluster-heads together")
    if mode == "hard" and temperature is not None:
        raise InputError("--temperature applies to soft routing only")
    given: dict[str, Any] = {"mode": mode, "temperature": temperature}
    config = RoutingConfig(
        clusters=str(clusters), cluster_heads=str(cluster_heads), **{k: v for k, v in given.items() if v is not None}
    )
    config.load()
    return config


@dataclass
class UserRoutes:
    """Every evaluated user's routed head weights (by user id), the diagnostics (`users`, one row
    per user; `routes`, one row per user and cluster), the cluster heads and a digest of the
    clustering and cluster heads they came from."""

    weights: dict[str, HeadWeights]
    users: pd.DataFrame
    routes: pd.DataFrame
    heads: ClusterHeads
    digest: str

    def summary(self, config: RoutingConfig) -> dict[str, Any]:
        """What metrics.json records about the routing (means over users)."""
        return routing_summary(self.users, self.routes, config)

    def save(self, folder: str | Path, config: RoutingConfig) -> None:
        """`routing.json` and `routing_weights.parquet` (`save_routing`)."""
        save_routing(folder, self.users, self.routes, config)

    def for_examples(self, examples: Sequence[Example]) -> UserRoutes:
        """The routes of the users of `examples` (all routed here), in the order they first appear,
        `n_examples` counted among `examples`: a shard's part of a run routed as a whole."""
        counts: dict[str, int] = {}
        for example in examples:
            counts[example.user_id] = counts.get(example.user_id, 0) + 1
        users = self.users.set_index("user_id", drop=False).loc[list(counts)].reset_index(drop=True)
        users["n_examples"] = list(counts.values())
        position = {user: index for index, user in enumerate(counts)}
        routes = self.routes[self.routes["user_id"].isin(position)]
        routes = routes.iloc[np.argsort(routes["user_id"].map(position).to_numpy(), kind="stable")].reset_index(drop=True)
        return UserRoutes({user: self.weights[user] for user in counts}, users, routes, self.heads, self.digest)


def routing_summary(users: pd.DataFrame, routes: pd.DataFrame, config: RoutingConfig) -> dict[str, Any]:
    """Means over the users' diagnostics (one row per user; `routes`: one row per user and cluster)."""
    return {
        "mode": config.mode,
        "temperature": config.temperature if config.mode == "soft" else None,
        "k": int(routes["cluster"].max()) + 1,
        "n_users": len(users),
        "n_new_users": int((~users["seen_in_clustering"]).sum()),
        "mean_entropy": float(users["entropy"].mean()),
        "uniform_entropy": float(users["uniform_entropy"].iloc[0]),
        "mean_top_weight": float(users["top_weight"].mean()),
        "mean_cosine_to_global": float(users["cosine_to_global"].mean()),
        "min_cosine_to_global": float(users["cosine_to_global"].min()),
        "mean_heads_over_half": float(users["heads_over_half"].mean()),
        "mean_heads_weighted": float(users["heads_weighted"].mean()),
    }


def save_routing(folder: str | Path, users: pd.DataFrame, routes: pd.DataFrame, config: RoutingConfig) -> dict[str, Any]:
    """`routing.json` (the summary and one record per user) and `routing_weights.parquet` (one row
    per user and cluster: cosine similarity and route weight); returns the summary."""
    summary = routing_summary(users, routes, config)
    records = users.astype(object).where(users.notna(), None).to_dict(orient="records")
    io.write_json(Path(folder) / ROUTING_FILE, {"summary": summary, "users": records})
    io.write_parquet(Path(folder) / ROUTES_TABLE, routes)
    return summary


def merge_routing(folders: Sequence[Path], out: Path, config: RoutingConfig) -> dict[str, Any]:
    """Join the routing files of a run's shards (in order) into those of one process in `out`:
    each user once, where they first appear, their `n_examples` summed over the shards; returns
    the summary. Refuses shards that routed a user differently."""
    users, routes = [], []
    for folder in folders:
        try:
            records = json.loads((folder / ROUTING_FILE).read_text(encoding="utf-8"))["users"]
            users.append(pd.DataFrame(records, columns=list(USER_COLUMNS)).astype({"cosine_to_global": float}))
            routes.append(pd.read_parquet(folder / ROUTES_TABLE))
        except (OSError, KeyError, ValueError) as error:
            raise InputError(f"{folder}: no readable routing files ({ROUTING_FILE}, {ROUTES_TABLE}): {error}") from None
    joined = pd.concat(users, ignore_index=True)
    counts = joined.groupby("user_id", sort=False)["n_examples"].sum()
    first = joined.drop_duplicates("user_id").set_index("user_id", drop=False)
    others = joined.drop(columns="n_examples")
    if not others.equals(first.drop(columns="n_examples").loc[joined["user_id"]].reset_index(drop=True)):
        raise InputError(f"{out}: the shards routed a user differently; use another output folder")
    merged = first.reset_index(drop=True)
    merged["n_examples"] = counts.loc[merged["user_id"]].to_numpy()
    all_routes = pd.concat(routes, ignore_index=True)
    all_routes = all_routes[~all_routes.duplicated(["user_id", "cluster"])].reset_index(drop=True)
    return save_routing(out, merged, all_routes, config)


def route_users(lens: Lens, examples: Sequence[Example], config: RoutingConfig, *, cache: str | Path | None = None) -> UserRoutes:
    """Route every user of `examples` (embedded from their profiles with the clustering's recipe)
    and mix the clusters' head weights for each. Refuses a clustering from another embedder and
    cluster heads from another clustering or model."""
    clusters, heads = config.load()
    heads.check(clusters, config.cluster_heads, lens)
    profiles = user_profiles(examples)
    texts = [profile_text(clusters.task, profile, clusters.profile_text) for profile in profiles]
    embeddings = embed_texts(texts, max_length=clusters.profile_text.max_length, cache=cache)
    weights = route(embeddings, clusters.centroids, mode=config.mode, temperature=config.temperature)
    mixed = [routed_head_weights(r, heads.weights) for r in weights]
    user_ids = [profile.user_id for profile in profiles]
    users = routing_diagnostics(user_ids, weights, mixed, heads.weights)
    seen = clusters.users()
    users.insert(1, "seen_in_clustering", [user in seen for user in user_ids])
    users.insert(2, "n_examples", [len(profile.example_ids) for profile in profiles])
    users = users[list(USER_COLUMNS)]
    similarity = cosine_similarities(embeddings, clusters.centroids)
    routes = pd.DataFrame(
        [(user, c, float(similarity[i, c]), float(weights[i, c])) for i, user in enumerate(user_ids) for c in range(clusters.k)],
        columns=list(ROUTE_COLUMNS),
    )
    return UserRoutes(dict(zip(user_ids, mixed)), users, routes, heads, digest(clusters.digest(), heads.digest()))
