"""Cluster-aware DPS end to end on the tiny model: per-cluster discovery against global discovery,
routed decoding against plain DPS with hand-mixed heads, every evaluated user routed (new users
embedded on the fly), and the commands' one-line errors. A stand-in embedder (a unit vector drawn
from a hash of the text) keeps the embedding model out of these tests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import workbench.commands.discover as discover_command
import workbench.commands.evaluate as evaluate_command
import workbench.users.embeddings as embeddings_module
from workbench.cli import app
from workbench.data.sources import load_examples
from workbench.decoding import DPS, Contrast, Suppression, generate
from workbench.decoding.routed import generate_routed
from workbench.heads import HeadWeights
from workbench.users import (
    ClusterFile,
    ClusterHeads,
    ProfileText,
    RoutingConfig,
    cluster_examples,
    embedder_identity,
    profile_text,
    route,
    route_users,
    routed_head_weights,
    user_profiles,
)
from workbench.users.clusters import data_digest

TEXTS = ("a cat sat", "the dog ran far", "jazz at night", "so it goes", "rain again")
NEW_TOKENS = 6


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def stand_in_embedding(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return unit(np.random.default_rng(seed).standard_normal((1, 16)))[0].astype(np.float32)


@pytest.fixture
def embedded(monkeypatch, tmp_path) -> list[str]:
    """Replace the embedding model by `stand_in_embedding` (cached under tmp_path); returns the
    texts the embedder was asked for."""
    asked: list[str] = []

    def embed(texts, *options):
        asked.extend(texts)
        return np.stack([stand_in_embedding(text) for text in texts])

    monkeypatch.setattr(embeddings_module, "_embed", embed)
    monkeypatch.setattr(embeddings_module, "default_embedding_cache", lambda: tmp_path / "embeddings")
    return asked


def cluster_maps(tiny, k: int = 2) -> list[HeadWeights]:
    grids = [torch.zeros(tiny.n_layers, tiny.n_heads) for _ in range(k)]
    grids[0][0, 1], grids[0][2, 3] = 1.0, 0.4
    grids[1][1, 0], grids[1][2, 3] = 1.0, 0.8
    if k > 2:
        grids[2][2, 2], grids[2][0, 0] = 1.0, 0.6
    return [HeadWeights(grid, model=tiny.name) for grid in grids]


def hand_mix(route_weights, maps: list[HeadWeights]) -> HeadWeights:
    mixed = torch.zeros_like(maps[0].weights)
    for r, weights in zip(route_weights, maps):
        mixed += float(r) * weights.weights
    return HeadWeights(mixed)


def step_scores(generation) -> list[float]:
    return [step["top_scores"][0]["value"] for step in generation.steps]


def assert_same_decode(routed, alone) -> None:
    assert routed.token_ids == alone.token_ids
    assert step_scores(routed) == pytest.approx(step_scores(alone), abs=1e-4)


# --- routed decoding --------------------------------------------------------------------------


def test_a_routed_dps_decode_is_plain_dps_with_each_prompts_hand_mixed_heads(tiny):
    maps = cluster_maps(tiny)
    routes = [[1.0, 0.0], [0.3, 0.7], [0.3, 0.7], [0.9, 0.1], [0.0, 1.0]]
    prompts = [tiny.encode_chat(text) for text in TEXTS]
    decoder = DPS(contrast=Contrast(gamma=3.0))
    routed = generate_routed(tiny, prompts, decoder, [routed_head_weights(r, maps) for r in routes],
                             max_new_tokens=NEW_TOKENS, diagnostics=True, batch_size=4)  # fmt: skip
    for prompt, r, generation in zip(prompts, routes, routed):
        alone = generate(tiny, [prompt], DPS(hand_mix(r, maps), contrast=Contrast(gamma=3.0)), max_new_tokens=NEW_TOKENS,
                         diagnostics=True)[0]  # fmt: skip
        assert_same_decode(generation, alone)
    assert len({tuple(g.token_ids) for g in routed}) > 1  # the mixes decode differently


def test_mean_suppression_takes_its_reference_over_all_routed_prompts(tiny):
    maps = cluster_maps(tiny)
    routes = [[1.0, 0.0], [0.2, 0.8], [0.0, 1.0]]
    prompts = [tiny.encode_chat(text) for text in TEXTS[:3]]
    decoder = DPS(contrast=Contrast(gamma=3.0), generic=Suppression(suppression="mean"))
    routed = generate_routed(tiny, prompts, decoder, [routed_head_weights(r, maps) for r in routes],
                             max_new_tokens=NEW_TOKENS, diagnostics=True)  # fmt: skip
    z_ref = tiny.mean_head_outputs(prompts)  # what one `generate` call over all prompts uses
    for prompt, r, generation in zip(prompts, routes, routed):
        plain = DPS(hand_mix(r, maps), contrast=Contrast(gamma=3.0), generic=Suppression(suppression="mean", z_ref=z_ref))
        assert_same_decode(generation, generate(tiny, [prompt], plain, max_new_tokens=NEW_TOKENS, diagnostics=True)[0])


def test_hard_routing_decodes_with_the_nearest_clusters_heads_and_cold_soft_routing_is_hard(tiny):
    rng = np.random.default_rng(3)
    centroids, users = unit(rng.standard_normal((3, 8))), unit(rng.standard_normal((5, 8)))
    maps = cluster_maps(tiny, 3)
    prompts = [tiny.encode_chat(text) for text in TEXTS]
    hard = route(users, centroids, mode="hard")
    routed = generate_routed(tiny, prompts, DPS(contrast=Contrast(gamma=3.0)), [routed_head_weights(r, maps) for r in hard],
                             max_new_tokens=NEW_TOKENS, diagnostics=True)  # fmt: skip
    nearest = []
    for user, prompt, generation in zip(users, prompts, routed):
        cosines = [sum(a * b for a, b in zip(user, c)) / math.sqrt(sum(b * b for b in c)) for c in centroids]
        nearest.append(cosines.index(max(cosines)))
        alone = generate(tiny, [prompt], DPS(maps[nearest[-1]], contrast=Contrast(gamma=3.0)), max_new_tokens=NEW_TOKENS,
                         diagnostics=True)[0]  # fmt: skip
        assert_same_decode(generation, alone)
    assert len(set(nearest)) > 1
    cold = route(users, centroids, mode="soft", temperature=1e-4)
    cold_routed = generate_routed(tiny, prompts, DPS(contrast=Contrast(gamma=3.0)),
                                  [routed_head_weights(r, maps) for r in cold], max_new_tokens=NEW_TOKENS)  # fmt: skip
    assert [g.token_ids for g in cold_routed] == [g.token_ids for g in routed]


def test_routed_decoding_refuses_what_it_cannot_route(tiny):
    maps = cluster_maps(tiny)
    prompts = [tiny.encode_chat(text) for text in TEXTS[:2]]
    from workbench.decoding import Greedy
    from workbench.errors import InputError

    with pytest.raises(InputError, match="greedy: suppresses no heads"):
        generate_routed(tiny, prompts, Greedy(), maps)
    with pytest.raises(InputError, match="takes its head weights from the routes"):
        generate_routed(tiny, prompts, DPS(maps[0]), maps)
    with pytest.raises(InputError, match="1 routes for 2 prompts"):
        generate_routed(tiny, prompts, DPS(), maps[:1])


# --- routing every evaluated user -------------------------------------------------------------


def write_clusters_and_heads(tiny, tmp_path, k: int = 2) -> tuple[ClusterFile, list[HeadWeights]]:
    train = load_examples(None, "LaMP-7", "train")
    clustering = cluster_examples(train, task="LaMP-7", split="train", data="demo", k=k, recipe=ProfileText(items=3))
    clustering.file.save(tmp_path / "clusters" / "clusters.json")
    maps = cluster_maps(tiny, k)
    ClusterHeads(maps, clustering.file.digest(), tiny.name).save(tmp_path / "heads")
    return clustering.file, maps


def test_every_evaluated_user_is_routed_and_new_users_are_embedded_on_the_fly(tiny, embedded, tmp_path):
    clusters, maps = write_clusters_and_heads(tiny, tmp_path)
    train, dev = load_examples(None, "LaMP-7", "train"), load_examples(None, "LaMP-7", "dev")
    examples = [*train[:3], *dev[:5]]
    config = RoutingConfig(clusters=str(tmp_path / "clusters"), cluster_heads=str(tmp_path / "heads"), mode="soft",
                           temperature=0.3)  # fmt: skip
    embedded.clear()
    routes = route_users(tiny, examples, config)
    profiles = {p.user_id: p for p in user_profiles(examples)}
    new = [user for user in profiles if user not in {u for members in clusters.user_ids for u in members}]
    assert new and sorted(embedded) == sorted(profile_text("LaMP-7", profiles[u], ProfileText(items=3)) for u in new)
    assert list(routes.users["user_id"]) == list(profiles) == list(routes.weights)
    assert routes.users.set_index("user_id")["seen_in_clustering"].to_dict() == {u: u not in new for u in profiles}
    for user, profile in profiles.items():
        vector = stand_in_embedding(profile_text("LaMP-7", profile, ProfileText(items=3)))
        cosines = [float(np.dot(vector, c)) / float(np.linalg.norm(c)) for c in clusters.centroids]
        exps = [math.exp(x / 0.3) for x in cosines]
        expected = [e / sum(exps) for e in exps]
        assert routes.routes[routes.routes["user_id"] == user]["weight"].tolist() == pytest.approx(expected, abs=1e-6)
        assert torch.allclose(routes.weights[user].weights, hand_mix(expected, maps).weights, atol=1e-6)


# --- per-cluster discovery --------------------------------------------------------------------


@pytest.fixture
def cli(tiny, monkeypatch):
    for module in (discover_command, evaluate_command):
        monkeypatch.setattr(module, "load_lens", lambda *args: tiny)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def one_cluster_file(path) -> None:
    """All LaMP-7 train users in one cluster (the centroid is immaterial to discovery)."""
    train = load_examples(None, "LaMP-7", "train")
    users = tuple(dict.fromkeys(e.user_id for e in train))
    ClusterFile(
        task="LaMP-7", split="train", data="demo", data_digest=data_digest(train), n_examples=len(train),
        embedder=embedder_identity(), profile_text=ProfileText(), seed=0, group_size=None,
        centroids=unit(np.ones((1, 4))), user_ids=(users,), example_ids=(tuple(e.example_id for e in train),), silhouette=None,
    ).save(path)  # fmt: skip


def test_one_cluster_discovery_is_global_discovery_bit_for_bit(cli, tmp_path):
    one_cluster_file(tmp_path / "clusters.json")
    options = (
        "--task",
        "LaMP-7",
        "--split",
        "train",
        "--limit",
        4,
        "--method",
        "hybrid",
        "--top-k",
        3,
        "--top-m",
        5,
        "--profile-k",
        1,
    )
    plain = cli("discover", *options, "--out", tmp_path / "global")
    assert plain.exit_code == 0, plain.output
    clustered = cli("discover", *options, "--clusters", tmp_path / "clusters.json", "--out", tmp_path / "per-cluster")
    assert clustered.exit_code == 0, clustered.output
    columns = ["example_id", "layer", "head", "pcs", "exact"]
    whole = pd.read_parquet(tmp_path / "global" / "pcs.parquet")[columns]
    cluster = pd.read_parquet(tmp_path / "per-cluster" / "cluster-0" / "pcs.parquet")[columns]
    pd.testing.assert_frame_equal(whole, cluster, check_exact=True)
    assert whole["exact"].any() and not whole["exact"].all()  # hybrid: some heads re-scored exactly
    heads = ClusterHeads.load(tmp_path / "per-cluster")
    assert torch.equal(heads.weights[0].weights, HeadWeights.load(tmp_path / "global" / "heads.json").weights)


def test_the_cluster_discovery_command_runs_the_demos_stage_and_refuses_a_changed_option(cli, tmp_path):
    one_cluster_file(tmp_path / "clusters.json")
    options = ("--task", "LaMP-7", "--split", "train", "--limit", 3, "--method", "attribution", "--profile-k", 1,
               "--clusters", tmp_path / "clusters.json", "--out", tmp_path / "per-cluster")  # fmt: skip
    first = cli("discover", *options, "--top-k", 2)
    assert first.exit_code == 0, first.output
    assert json.loads((tmp_path / "per-cluster" / "fingerprint.json").read_text())["stage"] == "discover-clusters"
    again = cli("discover", *options, "--top-k", 2)
    assert again.exit_code == 0 and "reusing" in again.output, again.output
    refused = cli("discover", *options, "--top-k", 3)  # after the tokenizing bar (the data's hash is of the prompts)
    assert refused.exit_code == 2 and "was made with other arguments (top_k 2 -> 3)" in refused.output.splitlines()[-1]


def test_the_cluster_command_reuses_its_stage_and_refuses_a_changed_option(cli, embedded, tmp_path):
    cluster = ("cluster", "--task", "LaMP-7", "--out", tmp_path / "c")
    first = cli(*cluster, "--k", 2)
    assert first.exit_code == 0, first.output
    made = (tmp_path / "c" / "clusters.json").read_bytes()
    assert json.loads((tmp_path / "c" / "fingerprint.json").read_text())["stage"] == "cluster"
    again = cli(*cluster, "--k", 2)
    assert again.exit_code == 0 and "reusing" in again.output, again.output
    one_line_error(cli(*cluster, "--k", 3), "was made with other arguments (k 2 -> 3)")
    assert (tmp_path / "c" / "clusters.json").read_bytes() == made


# --- the commands: routed evaluation and one-line errors --------------------------------------


def test_a_routed_evaluation_writes_its_routing_beside_the_metrics(cli, tiny, embedded, tmp_path):
    write_clusters_and_heads(tiny, tmp_path)
    out = tmp_path / "run"
    result = cli("evaluate", "--task", "LaMP-7", "--split", "dev", "--limit", 3, "--max-new-tokens", 3, "--method", "dps",
                 "--clusters", tmp_path / "clusters" / "clusters.json", "--cluster-heads", tmp_path / "heads",
                 "--routing", "soft", "--temperature", 0.2, "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    routing = json.loads((out / "routing.json").read_text())
    users = list(dict.fromkeys(e.user_id for e in load_examples(None, "LaMP-7", "dev")[:3]))
    assert [row["user_id"] for row in routing["users"]] == users
    summary = routing["summary"]
    assert summary["n_new_users"] == len(users) and summary["uniform_entropy"] == pytest.approx(math.log(2))
    assert summary["mode"] == "soft" and summary["temperature"] == 0.2
    weights = pd.read_parquet(out / "routing_weights.parquet")
    for row in routing["users"]:
        mine = weights[weights["user_id"] == row["user_id"]]["weight"]
        assert row["top_weight"] == pytest.approx(mine.max())
        assert row["entropy"] == pytest.approx(-sum(p * math.log(p) for p in mine if p > 0))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["routing"] == summary and metrics["config"]["routing"]["temperature"] == 0.2


def test_a_sharded_routed_evaluation_merges_into_one_process_files(tiny, embedded, tmp_path):
    """User u05's two examples fall in different shards (the second lists its profile in another
    order, so alone it would make another profile text): both shards route u05 by the profile
    of the whole run, and the merge counts u05 once, with both examples."""
    from same_results import assert_same_results

    from workbench.decoding import make_decoder
    from workbench.execution.shards import Shard, evaluate_shard, merge_run
    from workbench.experiments.evaluation import EvalConfig, evaluate

    write_clusters_and_heads(tiny, tmp_path)
    dev = load_examples(None, "LaMP-7", "dev")[:5]
    dev[2] = dataclasses.replace(dev[2], profile=dev[2].profile[::-1])
    routing = RoutingConfig(clusters=str(tmp_path / "clusters"), cluster_heads=str(tmp_path / "heads"), mode="soft",
                            temperature=0.2)  # fmt: skip
    config = EvalConfig(task="LaMP-7", split="dev", model=tiny.name, decoder=make_decoder("dps"), max_new_tokens=3,
                        batch_size=1, resamples=50, routing=routing)  # fmt: skip
    evaluate(tiny, dev, config, tmp_path / "single", progress=False)
    run = tmp_path / "run"
    for index in (1, 0):
        evaluate_shard(tiny, run, Shard(index, 2), dev, config, progress=False)
    assert merge_run(run)[2:] == [run / "routing.json", run / "routing_weights.parquet"]
    for name in ("predictions.jsonl", "metrics.json", "routing.json"):
        assert_same_results(run, tmp_path / "single", name)
    weights = pd.read_parquet(tmp_path / "single" / "routing_weights.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(run / "routing_weights.parquet"), weights, check_exact=True)
    users = json.loads((run / "routing.json").read_text())["users"]
    assert [(u["user_id"], u["n_examples"]) for u in users] == [("u02", 1), ("u05", 2), ("u08", 1), ("u11", 1)]
    shards = [json.loads((Shard(i, 2).folder(run) / "routing.json").read_text())["users"] for i in range(2)]
    assert [[u["user_id"] for u in users] for users in shards] == [["u02", "u05"], ["u05", "u08", "u11"]]


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0, result.output


def test_bad_clustering_and_routing_input_gives_one_line_errors(cli, tiny, embedded, tmp_path):
    write_clusters_and_heads(tiny, tmp_path)
    clusters, heads = tmp_path / "clusters" / "clusters.json", tmp_path / "heads"
    record = json.loads(clusters.read_text())
    del record["centroids"]
    (tmp_path / "broken.json").write_text(json.dumps(record))
    evaluate = ("evaluate", "--task", "LaMP-7", "--split", "dev", "--limit", 2, "--method", "dps", "--out", tmp_path / "o")
    one_line_error(cli(*evaluate, "--clusters", clusters, "--cluster-heads", heads, "--temperature", -1),
                   "--temperature must be a number > 0, got -1.0")  # fmt: skip
    one_line_error(cli(*evaluate, "--clusters", clusters, "--cluster-heads", heads, "--routing", "hard", "--temperature", 1),
                   "--temperature applies to soft routing only")  # fmt: skip
    one_line_error(cli(*evaluate, "--clusters", clusters), "give --clusters and --cluster-heads together")
    one_line_error(cli(*evaluate, "--clusters", tmp_path / "broken.json", "--cluster-heads", heads), "missing field 'centroids'")
    other = json.loads(clusters.read_text())
    other["embedder"]["weights_digest"] = "0" * 16
    (tmp_path / "other-embedder.json").write_text(json.dumps(other))
    one_line_error(cli(*evaluate, "--clusters", tmp_path / "other-embedder.json", "--cluster-heads", heads),
                   "clustered with embedder")  # fmt: skip
    index = json.loads((heads / "cluster_heads.json").read_text())
    (heads / "cluster_heads.json").write_text(json.dumps({**index, "model": "another-model"}))
    one_line_error(cli(*evaluate, "--clusters", clusters, "--cluster-heads", heads), "discovered with model 'another-model'")
    assert not (tmp_path / "o").exists()
    discover = ("discover", "--task", "LaMP-7", "--out", tmp_path / "d")
    one_line_error(cli(*discover, "--clusters", tmp_path / "broken.json"), "missing field 'centroids'")
    cluster = ("cluster", "--task", "LaMP-7", "--out", tmp_path / "c")
    embedded.clear()
    one_line_error(cli(*cluster, "--k", 39), "cannot make 39 clusters from 38 users")
    one_line_error(cli(*cluster, "--k", 2, "--group-size", 10), "give one of --k and --group-size")
    one_line_error(cli(*cluster, "--k", 2, "--temperature", -0.5), "temperature must be a finite number > 0")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists() and not embedded  # refused before embedding
