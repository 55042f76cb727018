"""Heterogeneous users: profile embeddings, clusters of users, their preference heads on disk, and
routing each user to the clusters' head weights (the paper's cluster-aware DPS).

- `embeddings`: all-MiniLM-L6-v2 profile embeddings (unit norm), cached on disk by content;
- `profiles`: one profile per user and the text of it that is embedded;
- `clusters`: k-means with spherical refinement, and the `clusters.json` record;
- `clustering`: a split's users clustered, with a report (`workbench cluster`);
- `cluster_heads`: head weights per cluster on disk (found by `workbench.experiments.cluster_discovery`,
  `workbench discover --clusters`);
- `routing`: hard / soft routes, the routed head mix and its diagnostics (`workbench evaluate
  --clusters`). docs/routing.md explains how this differs from the DPS authors' code.
"""

from workbench.users.cluster_heads import ClusterHeads
from workbench.users.clustering import Clustering, cluster_examples, save_clustering
from workbench.users.clusters import ClusterFile, UserClusters, cluster_users, number_of_clusters
from workbench.users.embeddings import embed_texts, embedder_identity
from workbench.users.profiles import ProfileText, UserProfile, profile_text, user_profiles
from workbench.users.routing import (
    RoutingConfig,
    UserRoutes,
    route,
    route_users,
    routed_head_weights,
    routing_diagnostics,
)

__all__ = [
    "ClusterFile",
    "ClusterHeads",
    "Clustering",
    "ProfileText",
    "RoutingConfig",
    "UserClusters",
    "UserProfile",
    "UserRoutes",
    "cluster_examples",
    "cluster_users",
    "embed_texts",
    "embedder_identity",
    "number_of_clusters",
    "profile_text",
    "route",
    "route_users",
    "routed_head_weights",
    "routing_diagnostics",
    "save_clustering",
    "user_profiles",
]
