"""Profiles, embeddings, clustering and routing (workbench.users), checked against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import workbench.users.embeddings as embeddings_module
from workbench.data.examples import Example
from workbench.data.sources import load_examples
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.users import (
    ProfileText,
    cluster_examples,
    cluster_users,
    embed_texts,
    embedder_identity,
    number_of_clusters,
    profile_text,
    route,
    routed_head_weights,
    routing_diagnostics,
    user_profiles,
)


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated groups of unit vectors in 8 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3]
    truth = np.repeat(np.arange(3), 10)
    points = centres[truth] + 0.05 * rng.standard_normal((30, 8))
    return points / np.linalg.norm(points, axis=1, keepdims=True), truth


def overlapping(seed: int = 0, n: int = 80, dim: int = 5) -> np.ndarray:
    """Unit vectors with no clear groups: where Euclidean and cosine assignments can disagree."""
    points = np.random.default_rng(seed).standard_normal((n, dim)) + np.array([1.5, 0, 0, 0, 0])
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def hand_softmax_route(points: np.ndarray, centroids: np.ndarray, temperature: float) -> np.ndarray:
    rows = []
    for point in points:
        cosines = [float(point @ c) / (np.linalg.norm(point) * np.linalg.norm(c)) for c in centroids]
        exps = [math.exp((x - max(cosines)) / temperature) for x in cosines]
        rows.append([e / sum(exps) for e in exps])
    return np.array(rows)


# --- clustering -------------------------------------------------------------------------------


def test_kmeans_recovers_separated_groups_and_is_seeded():
    points, truth = blobs()
    clusters = cluster_users(points, 3, seed=1)
    # same partition up to relabelling
    pairs = {(int(a), int(b)) for a, b in zip(truth, clusters.labels)}
    assert len(pairs) == 3 and sorted(clusters.sizes()) == [10, 10, 10]
    assert np.array_equal(cluster_users(points, 3, seed=1).labels, clusters.labels)
    assert np.allclose(np.linalg.norm(clusters.centroids, axis=1), 1.0, atol=1e-6)


def test_clustering_is_determined_by_its_seed():
    points = overlapping(3, n=60)
    runs = [cluster_users(points, 4, seed=seed) for seed in range(6)]
    again = cluster_users(points, 4, seed=2)
    assert np.array_equal(again.labels, runs[2].labels) and np.array_equal(again.centroids, runs[2].centroids)
    assert len({tuple(run.labels) for run in runs}) > 1  # overlapping data: the seed decides the partition


def test_clusters_are_the_cosine_regions_of_their_centroids_numbered_by_size():
    """Every user is in the cluster of its most similar centroid, each centroid is the normalised
    mean of its users, and cluster 0 is the largest (checked by hand on overlapping data)."""

    def check(points: np.ndarray, k: int) -> None:
        clusters = cluster_users(points, k, seed=0)
        for user, label in enumerate(clusters.labels):
            cosines = [float(points[user] @ c) for c in clusters.centroids]
            assert cosines.index(max(cosines)) == label
        for cluster in range(k):
            members = points[clusters.labels == cluster]
            mean = members.sum(axis=0) / np.linalg.norm(members.sum(axis=0))
            assert np.allclose(clusters.centroids[cluster], mean, atol=1e-5)
        assert clusters.sizes() == sorted(clusters.sizes(), reverse=True)

    for seed in range(3):
        check(overlapping(seed), 4)


def test_number_of_clusters_follows_the_target_group_size():
    assert number_of_clusters(2500) == 25 and number_of_clusters(40) == 1 and number_of_clusters(3, 1) == 3
    assert number_of_clusters(250) == 3  # the authors round halves up (int(x + 0.5)), not to even
    with pytest.raises(InputError):
        number_of_clusters(0)


# --- routing ----------------------------------------------------------------------------------


def test_hard_routing_picks_the_nearest_centroid_and_soft_routing_is_a_softmax_of_cosines():
    points = overlapping(1, n=30)
    clusters = cluster_users(points, 3, seed=0)
    hard = route(points, clusters.centroids, mode="hard")
    assert np.array_equal(hard.argmax(axis=1), clusters.labels) and np.array_equal(hard.sum(axis=1), np.ones(30))
    for temperature in (0.02, 0.3, 2.0):
        soft = route(points, clusters.centroids, mode="soft", temperature=temperature)
        assert np.allclose(soft, hand_softmax_route(points, clusters.centroids, temperature), atol=1e-9)


def test_soft_routing_tends_to_hard_routing_as_the_temperature_falls():
    points = overlapping(2, n=30)
    clusters = cluster_users(points, 3, seed=0)
    hard = route(points, clusters.centroids, mode="hard")
    gaps = [np.abs(route(points, clusters.centroids, mode="soft", temperature=t) - hard).max() for t in (1.0, 0.1, 0.01, 1e-4)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-6
    flat = route(points, clusters.centroids, mode="soft", temperature=1e4)
    assert np.allclose(flat, 1 / 3, atol=1e-4)  # and to the uniform mix as it grows


def test_routed_weights_are_the_weighted_sum_of_cluster_weights():
    first = HeadWeights(torch.tensor([[1.0, 0.0], [0.5, 0.0]]), model="m")
    second = HeadWeights(torch.tensor([[0.0, 1.0], [0.5, 0.25]]), model="m")
    mixed = routed_head_weights([0.25, 0.75], [first, second])
    assert torch.allclose(mixed.weights, torch.tensor([[0.25, 0.75], [0.5, 0.1875]]))
    with pytest.raises(InputError, match="2 routing weights for 1 clusters"):
        routed_head_weights([0.5, 0.5], [first])


def test_routing_diagnostics_match_a_hand_computation():
    clusters = [
        HeadWeights(torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.2]])),
        HeadWeights(torch.tensor([[0.0, 0.5, 1.0], [0.6, 0.0, 0.0]])),
    ]
    routes = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    mixed = [routed_head_weights(r, clusters) for r in routes]
    table = routing_diagnostics(["a", "b", "c"], routes, mixed, clusters)
    global_map = [0.5, 0.5, 0.5, 0.3, 0.0, 0.1]  # the plain mean of the two cluster maps
    for row, r, w in zip(table.itertuples(), routes, mixed):
        flat = w.weights.flatten().tolist()
        cosine = sum(a * b for a, b in zip(flat, global_map)) / math.sqrt(
            sum(a * a for a in flat) * sum(b * b for b in global_map)
        )
        assert row.cosine_to_global == pytest.approx(cosine)
        assert row.entropy == pytest.approx(-sum(p * math.log(p) for p in r if p > 0))
        assert row.uniform_entropy == pytest.approx(math.log(2)) and row.top_weight == max(r)
        assert row.heads_over_half == sum(v > 0.5 for v in flat) and row.heads_weighted == sum(v > 0 for v in flat)
    assert table["cluster"].tolist() == [0, 0, 1]
    assert table.loc[1, "cosine_to_global"] == pytest.approx(1.0)  # an even mix is the global map


# --- profiles and embeddings ------------------------------------------------------------------


def example(example_id: str, user: str, profile: list[dict], task: str = "LaMP-4") -> Example:
    return Example(example_id, user, task, "Generate a headline for the following article: x", tuple(profile), "gold")


ITEM_A = {"id": "1", "text": "Rain fell on the town all week.", "title": "week of rain"}
ITEM_B = {"id": "2", "text": "The bakery won a prize.", "title": "bakery wins"}
ITEM_C = {"id": "3", "text": "", "title": "museum opens"}


def test_one_user_is_one_profile_the_union_of_their_examples_profiles():
    examples = [example("e1", "u1", [ITEM_A, ITEM_B]), example("e2", "u2", [ITEM_B]), example("e3", "u1", [ITEM_B, ITEM_C])]
    profiles = user_profiles(examples)
    assert [p.user_id for p in profiles] == ["u1", "u2"]
    assert profiles[0].example_ids == ("e1", "e3") and profiles[0].items == (ITEM_A, ITEM_B, ITEM_C)
    assert profiles[1].items == (ITEM_B,)


def test_profile_text_recipes():
    profile = user_profiles([example("e1", "u1", [ITEM_A, ITEM_B, ITEM_C])])[0]
    shots = profile_text("LaMP-4", profile, ProfileText(items=2))
    assert (
        shots
        == "Article: Rain fell on the town all week.\nHeadline: week of rain\n\nArticle: The bakery won a prize.\nHeadline: bakery wins"
    )
    authors = profile_text("LaMP-4", profile, ProfileText(source="authors"))
    assert authors == "Rain fell on the town all week.\nThe bakery won a prize.\nmuseum opens"  # text, else the title
    blank = user_profiles([example("e1", "u9", [{"id": "7", "text": " ", "title": ""}])])[0]
    with pytest.raises(InputError, match="user 'u9': empty profile text"):
        profile_text("LaMP-4", blank, ProfileText(source="authors"))


@pytest.mark.slow  # loads the embedding model
def test_profile_embeddings_are_unit_norm_and_semantic(tmp_path):
    vectors = embed_texts(
        [
            "I love hiking in the mountains and cooking vegetarian food.",
            "Trekking trips and plant-based recipes are my favourite things.",
            "Quarterly earnings beat analyst expectations on strong cloud revenue.",
        ],
        cache=tmp_path,
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


@pytest.mark.slow  # loads the embedding model
def test_embeddings_are_cached_by_content_and_embedder(tmp_path, monkeypatch):
    texts = ["the first profile", "a second, longer profile text", "the first profile"]
    fresh = embed_texts(texts, cache=tmp_path)
    assert np.array_equal(fresh[0], fresh[2]) and not np.allclose(fresh[0], fresh[1])
    real_embed = embeddings_module._embed
    asked: list[list[str]] = []
    monkeypatch.setattr(embeddings_module, "_embed", lambda texts, *a: asked.append(list(texts)) or real_embed(texts, *a))
    again = embed_texts([texts[1], "something new", texts[0]], cache=tmp_path)
    assert asked == [["something new"]]  # only the new text is embedded
    assert np.allclose(again[0], fresh[1], atol=1e-6) and np.allclose(again[2], fresh[0], atol=1e-6)
    assert np.allclose(again[1], real_embed(["something new"], 256, 32, "cpu", lambda batch: None)[0], atol=1e-5)
    embed_texts([texts[0]], cache=tmp_path, max_length=8)  # another truncation is another embedder
    assert asked[-1] == [texts[0]]


def test_the_embedder_identity_is_a_digest_of_its_files(tmp_path, monkeypatch):
    real = embedder_identity()
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"other weights")
    monkeypatch.setattr(embeddings_module, "_model_folder", lambda: folder)
    embedder_identity.cache_clear()
    try:
        other = embedder_identity()
    finally:
        embedder_identity.cache_clear()
    assert other["name"] == real["name"] and other["weights_digest"] != real["weights_digest"]


@pytest.mark.slow  # loads the embedding model
def test_clustering_a_split_covers_every_user_once(tmp_path):
    examples = load_examples(None, "LaMP-7", "train")
    clustering = cluster_examples(examples, task="LaMP-7", split="train", data="demo", k=3, cache=tmp_path)
    file = clustering.file
    users = [p.user_id for p in user_profiles(examples)]
    assert sorted(u for members in file.user_ids for u in members) == sorted(users)
    assert sorted(e for members in file.example_ids for e in members) == sorted(e.example_id for e in examples)
    assert sum(file.sizes()) == 38 and file.k == 3 and file.n_examples == 57 and -1 <= file.silhouette <= 1
    by_user = {e.example_id: e.user_id for e in examples}
    for users_of, examples_of in zip(file.user_ids, file.example_ids):
        assert {by_user[e] for e in examples_of} == set(users_of)  # a user's examples go with the user
    assert cluster_examples(examples, task="LaMP-7", split="train", data="demo", group_size=20, cache=tmp_path).file.k == 2


# --- bad input --------------------------------------------------------------------------------


def test_bad_input_is_rejected():
    points, _ = blobs()
    clusters = cluster_users(points, 2)
    with pytest.raises(InputError, match="cannot make 31 clusters from 30 users"):
        cluster_users(points, 31)
    with pytest.raises(InputError, match="only 2 distinct profiles"):
        cluster_users(np.repeat(points[:2], 3, axis=0), 3)
    for temperature in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(InputError, match="temperature must be a finite number > 0"):
            route(points, clusters.centroids, mode="soft", temperature=temperature)
    with pytest.raises(InputError, match="profile text 1 is empty"):
        embed_texts(["fine", "   "])
    with pytest.raises(InputError, match="cannot make 40 clusters from 38 users"):
        cluster_examples(load_examples(None, "LaMP-7", "train"), task="LaMP-7", split="train", data="demo", k=40)
