"""Per-cluster discovery as the demo runs it: reading the global discovery's per-example
checkpoint gives what scoring each cluster's members from scratch gives, and scores nothing that
the checkpoint already holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench.scores.pcs as pcs_module
from workbench.data.prompts import PromptConfig, tokenized_examples
from workbench.data.sources import load_examples
from workbench.engine.models import tiny_model
from workbench.experiments.discovery import DiscoverSettings, discover_heads
from workbench.pipeline.clusters import cluster_discovery_stage, run_cluster_discovery
from workbench.pipeline.discovery import discovery_stage, run_discovery
from workbench.pipeline.stage import data_digest
from workbench.users import ClusterFile, ProfileText, embedder_identity
from workbench.users.clusters import data_digest as clustered_data_digest

USERS = (("u01", "u04"), ("u03",))  # cluster 0 is not contiguous in the examples' order


@pytest.fixture(scope="module")
def lens():
    return tiny_model(n_ctx=2048)


@pytest.fixture(scope="module")
def train(lens):
    examples = load_examples(None, "LaMP-4", "train")[:5]  # users u01, u01, u03, u03, u04
    return examples, tokenized_examples(lens, examples, PromptConfig(profile_k=1), partners=examples)


def two_clusters(examples) -> ClusterFile:
    """The users of USERS by hand (the centroids are immaterial to discovery)."""
    return ClusterFile(
        task="LaMP-4", split="train", data="demo", data_digest=clustered_data_digest(examples), n_examples=len(examples),
        embedder=embedder_identity(), profile_text=ProfileText(), seed=0, group_size=None,
        centroids=np.eye(2, 4, dtype=np.float32), user_ids=USERS,
        example_ids=tuple(tuple(e.example_id for e in examples if e.user_id in users) for users in USERS), silhouette=None,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["exact", "attribution", "hybrid"])
def test_cluster_scores_from_the_global_checkpoint_equal_scoring_each_cluster_from_scratch(lens, train, tmp_path, method,
                                                                                           monkeypatch):  # fmt: skip
    examples, tokenized = train
    settings = DiscoverSettings(prompt=PromptConfig(profile_k=1), method=method, top_k=2)
    where = {"data": "demo", "data_hash": data_digest(tokenized), "task": "LaMP-4", "split": "train"}
    run_discovery(lens, discovery_stage(lens, tmp_path / "global", settings, **where), tokenized, settings, progress=False)
    scored = []
    real = pcs_module.example_scores
    monkeypatch.setattr(pcs_module, "example_scores", lambda *args: (scored.append((args[4], args[6])), real(*args))[1])
    clusters = two_clusters(examples)
    stage = cluster_discovery_stage(lens, tmp_path / "clusters", settings, clusters, **where)
    results, heads = run_cluster_discovery(lens, stage, tokenized, clusters, settings,
                                           checkpoint=tmp_path / "global" / "checkpoint", progress=False)  # fmt: skip
    reused = list(scored)
    monkeypatch.setattr(pcs_module, "example_scores", real)
    for cluster, users in enumerate(USERS):
        members = [e for e in tokenized if e.user_id in users]
        scratch, weights = discover_heads(lens, members, settings, progress=False)
        assert results[cluster].example_ids == [e.example_id for e in members]
        assert torch.equal(results[cluster].exact, scratch.exact)
        assert torch.allclose(results[cluster].per_example, scratch.per_example, atol=1e-6, rtol=0)
        assert torch.equal(heads.weights[cluster].weights, weights.weights)
    # the cost: nothing the global discovery scored is scored again
    assert all(phase == "exact" for phase, _ in reused)  # attribution is never recomputed
    if method != "hybrid":
        assert reused == []
    else:  # only the cluster's candidates that the global candidates lacked
        assert 0 < sum(len(lacking) for _, lacking in reused) < len(examples) * 2 * settings.top_k * 3
