"""Profile embeddings, clustering and routing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.users import (
    RoutingReport,
    cluster_users,
    embed_texts,
    number_of_clusters,
    route,
    routed_head_weights,
)


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated groups of unit vectors in 8 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3]
    truth = np.repeat(np.arange(3), 10)
    points = centres[truth] + 0.05 * rng.standard_normal((30, 8))
    return points / np.linalg.norm(points, axis=1, keepdims=True), truth


def test_kmeans_recovers_separated_groups_and_is_seeded():
    points, truth = blobs()
    clusters = cluster_users(points, 3, seed=1)
    # same partition up to relabelling
    pairs = {(int(a), int(b)) for a, b in zip(truth, clusters.labels)}
    assert len(pairs) == 3 and sorted(clusters.sizes()) == [10, 10, 10]
    assert np.array_equal(cluster_users(points, 3, seed=1).labels, clusters.labels)
    assert np.allclose(np.linalg.norm(clusters.centroids, axis=1), 1.0, atol=1e-6)


def test_hard_routing_picks_the_nearest_centroid_and_soft_routing_tends_to_it():
    points, _ = blobs()
    clusters = cluster_users(points, 3, seed=0)
    hard = route(points, clusters, mode="hard")
    assert np.array_equal(hard.argmax(axis=1), clusters.labels)
    assert np.allclose(hard.sum(axis=1), 1.0)
    soft = route(points, clusters, mode="soft", temperature=0.05)
    assert np.allclose(soft.sum(axis=1), 1.0) and np.array_equal(soft.argmax(axis=1), clusters.labels)
    sharp = route(points, clusters, mode="soft", temperature=1e-4)
    assert np.allclose(sharp, hard, atol=1e-6)
    flat = route(points, clusters, mode="soft", temperature=1e3)
    assert RoutingReport.of(flat).mean_normalised_entropy > 0.999
    assert RoutingReport.of(hard).mean_top_weight == 1.0


def test_routed_weights_are_the_weighted_sum_of_cluster_weights():
    first = HeadWeights(torch.tensor([[1.0, 0.0], [0.5, 0.0]]), model="m")
    second = HeadWeights(torch.tensor([[0.0, 1.0], [0.5, 0.25]]), model="m")
    mixed = routed_head_weights([0.25, 0.75], [first, second])
    assert torch.allclose(mixed.weights, 0.25 * first.weights + 0.75 * second.weights)
    with pytest.raises(InputError, match="2 routing weights for 1 clusters"):
        routed_head_weights([0.5, 0.5], [first])


def test_number_of_clusters_follows_the_target_group_size():
    assert number_of_clusters(2500) == 25 and number_of_clusters(40) == 1 and number_of_clusters(3, 1) == 3
    with pytest.raises(InputError):
        number_of_clusters(0)


def test_bad_input_is_rejected():
    points, _ = blobs()
    clusters = cluster_users(points, 2)
    with pytest.raises(InputError, match="cannot make 31 clusters from 30 users"):
        cluster_users(points, 31)
    with pytest.raises(InputError, match="temperature must be > 0"):
        route(points, clusters, mode="soft", temperature=0.0)
    with pytest.raises(InputError, match="profile text 1 is empty"):
        embed_texts(["fine", "   "])


def test_profile_embeddings_are_unit_norm_and_semantic():
    vectors = embed_texts(
        [
            "I love hiking in the mountains and cooking vegetarian food.",
            "Trekking trips and plant-based recipes are my favourite things.",
            "Quarterly earnings beat analyst expectations on strong cloud revenue.",
        ]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
