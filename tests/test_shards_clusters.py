"""Sharded per-cluster discovery (in this process, no Ray): the shards take contiguous slices of
the examples in cluster order, so clusters are cut apart, and the merged folder holds what one
process's `discover --clusters` writes, bit for bit: exact PCS with the mean-ablation reference
of all examples (an example scores the same in every cluster), attribution, and hybrid PCS whose candidates come from each cluster's
attribution over all shards; bad or missing shards are refused in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from same_results import assert_same_results
from toy_clusters import toy_clusters, toy_examples
from typer.testing import CliRunner

from workbench.cli import app
from workbench.data.sources import load_examples
from workbench.errors import InputError
from workbench.execution.shards import Shard, discover_shard, merge_run
from workbench.experiments.cluster_discovery import cluster_selection, discover_cluster_heads, save_cluster_discovery
from workbench.experiments.discovery import DiscoverSettings, scan_options
from workbench.scores import PCSResult, score_heads
from workbench.scores.nll import reference_sequences
from workbench.scores.pcs import PCSScan
from workbench.users import ClusterFile, ProfileText, embedder_identity
from workbench.users.cluster_heads import INDEX
from workbench.users.clusters import data_digest

OPTIONS = {"top_m": 7, "max_rows": 64, "seed": 1, "task": "t"}
EXTRA = {"split": "train"}


@pytest.fixture(scope="module")
def examples(tiny):
    return toy_examples(tiny)


def settings(method: str, ablation: str = "zero") -> DiscoverSettings:
    return DiscoverSettings(method=method, ablation=ablation, top_k=2, min_pcs=-1.0)


def one_process(tiny, examples, chosen: DiscoverSettings, out) -> None:
    results, heads = discover_cluster_heads(tiny, examples, toy_clusters(examples), chosen, scan_options(tiny, chosen, **OPTIONS),
                                            extra=EXTRA, progress=False)  # fmt: skip
    save_cluster_discovery(out, results, heads)


def run_shards(tiny, examples, chosen: DiscoverSettings, run, count: int, indices=None, clusters=None) -> list:
    clusters = clusters or toy_clusters(examples)
    return [
        discover_shard(
            tiny,
            run,
            Shard(index, count),
            examples,
            scan=scan_options(tiny, chosen, **OPTIONS),
            selection=cluster_selection(chosen, clusters, EXTRA),
            metadata={},
            options={"model": tiny.name},
            clusters=clusters,
        )
        for index in (range(count) if indices is None else indices)
    ]


def assert_merged_equals_one_process(run, single) -> None:
    files = [f"cluster-{c}/{name}" for c in range(3) for name in ("pcs.parquet", "heads.json")]
    assert sorted(map(str, merge_run(run))) == sorted(str(run / name) for name in [*files[::2], INDEX])
    for name in [*files, INDEX]:
        assert_same_results(run, single, name)


def test_shards_cut_clusters_apart_in_cluster_order(examples, tmp_path, tiny):
    run_shards(tiny, examples, settings("attribution"), tmp_path, 3)
    held = {
        index: sorted(path.parent.name for path in Shard(index, 3).folder(tmp_path).glob("cluster-*/pcs.parquet"))
        for index in range(3)
    }
    assert held == {0: ["cluster-0"], 1: ["cluster-0", "cluster-1"], 2: ["cluster-1", "cluster-2"]}
    ids = [json.loads((Shard(i, 3).folder(tmp_path) / "shard.json").read_text())["example_ids"] for i in range(3)]
    assert ids == [["e0", "e1", "e4", "e5"], ["e8", "e9", "e2", "e6"], ["e10", "e3", "e7", "e11"]]


@pytest.mark.parametrize(("method", "ablation"), [("exact", "mean"), ("attribution", "zero")])
def test_sharded_per_cluster_scan_merged_equals_one_process(tiny, examples, tmp_path, method, ablation):
    """Mean ablation: every cluster's reference is all examples' (not the shard's, not the cluster's)."""
    one_process(tiny, examples, settings(method, ablation), tmp_path / "single")
    for cluster, ids in enumerate(toy_clusters(examples).example_ids):  # the clusters scanned together: each alone
        members = [e for e in examples if e.example_id in ids]
        alone = score_heads(
            tiny, members, method=method, ablation=ablation, reference=reference_sequences(examples), progress=False
        )
        together = PCSResult.load(tmp_path / "single" / f"cluster-{cluster}" / "pcs.parquet")
        assert torch.equal(together.per_example, alone.per_example) and together.example_ids == alone.example_ids
    assert all(part is not None for part in run_shards(tiny, examples, settings(method, ablation), tmp_path / "run", 3))
    assert_merged_equals_one_process(tmp_path / "run", tmp_path / "single")


def test_per_cluster_mean_ablation_averages_once(tiny, examples, tmp_path, monkeypatch):
    """The clusters share one mean ablation: one mean over all examples per process or shard."""
    means = []
    original = tiny.mean_head_outputs
    monkeypatch.setattr(tiny, "mean_head_outputs", lambda reference: means.append(len(reference)) or original(reference))
    one_process(tiny, examples, settings("exact", "mean"), tmp_path / "single")
    assert means == [len(examples)]
    means.clear()
    run_shards(tiny, examples, settings("exact", "mean"), tmp_path / "run", 3)
    assert means == [len(examples)] * 3


def test_sharded_per_cluster_hybrid_takes_each_clusters_candidates_from_all_shards(tiny, examples, tmp_path):
    chosen = settings("hybrid")
    one_process(tiny, examples, chosen, tmp_path / "single")
    clusters = toy_clusters(examples)
    members = [[e for e in examples if e.example_id in ids] for ids in clusters.example_ids]
    scans = [PCSScan(tiny, chosen_members, scan_options(tiny, chosen, **OPTIONS), progress=False)
             for chosen_members in members]  # fmt: skip
    whole = [sorted(scan.candidates(scan.estimates(group))) for scan, group in zip(scans, members)]
    assert sorted(scans[0].candidates(scans[0].estimates(members[0][:4]))) != whole[0]  # shard 0's part of cluster 0
    assert sorted(scans[1].candidates(scans[1].estimates(members[1][:2]))) != whole[1]  # shard 1's part of cluster 1
    assert sorted(scans[2].candidates(scans[2].estimates(examples))) != whole[2]  # every cluster's examples
    run = tmp_path / "run"
    assert run_shards(tiny, examples, chosen, run, 3, indices=[2, 0]) == [None, None]  # shard 1's attribution is missing
    assert run_shards(tiny, examples, chosen, run, 3, indices=[1])[0] is not None
    with pytest.raises(InputError, match=r"shards 0/3, 2/3 not finished; run them again"):
        merge_run(run)
    assert all(part is not None for part in run_shards(tiny, examples, chosen, run, 3, indices=[0, 2]))
    assert_merged_equals_one_process(run, tmp_path / "single")


def test_bad_per_cluster_shards_are_refused_in_one_line(tiny, examples, tmp_path):
    run = tmp_path / "run"
    chosen = settings("attribution")
    run_shards(tiny, examples, chosen, run, 3, indices=[0, 2])
    with pytest.raises(InputError, match=r"missing shard 1/3 of 3$"):
        merge_run(run)
    with pytest.raises(InputError, match=r"shard 0/3 in .* was made with other options \(differs in: scoring\)"):
        run_shards(tiny, examples, settings("attribution", "mean"), run, 3, indices=[1])
    other = toy_clusters(examples)
    other = type(other)(**{**vars(other), "user_ids": (("u0",), ("u1", "u2"), ("u3",)),
                           "example_ids": tuple(tuple(e.example_id for e in examples if e.user_id in users)
                                                for users in (("u0",), ("u1", "u2"), ("u3",)))})  # fmt: skip
    with pytest.raises(InputError, match=r"made with other options \(differs in: clusters, groups, selection\)"):
        run_shards(tiny, examples, chosen, run, 3, indices=[1], clusters=other)
    with pytest.raises(InputError, match=r"is one of 3 shards, not 2"):
        run_shards(tiny, examples, chosen, tmp_path / "run", 2, indices=[1])
    global_run = tmp_path / "global"
    discover_shard(tiny, global_run, Shard(0, 3), examples, scan=scan_options(tiny, chosen, **OPTIONS),
                   selection=cluster_selection(chosen, toy_clusters(examples), EXTRA), metadata={},
                   options={"model": tiny.name})  # fmt: skip
    shutil.copytree(Shard(0, 3).folder(global_run), Shard(1, 3).folder(run))
    (Shard(1, 3).folder(run) / "shard.json").write_text(
        json.dumps({**json.loads((Shard(1, 3).folder(run) / "shard.json").read_text()), "index": 1})
    )
    with pytest.raises(InputError, match=r"^shard 1/3 was made with other options \(differs in: clusters, groups\)"):
        merge_run(run)
    shutil.rmtree(Shard(1, 3).folder(run))
    run_shards(tiny, examples, chosen, run, 3, indices=[1])
    (Shard(1, 3).folder(run) / "cluster-1" / "pcs.parquet").unlink()  # a shard's part of cluster 1 lost
    with pytest.raises(InputError, match=r"\(cluster-1\): the shards hold 1 of its 3 examples' scores$"):
        merge_run(run)
    for path in run.glob("shards/*/shard.json"):  # as an older workbench wrote them
        manifest = json.loads(path.read_text())
        del manifest["options"]["groups"]
        path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"shards of an older workbench \(their manifest lists no groups\); run them again$"):
        merge_run(run)


def two_cluster_file(path) -> None:
    """LaMP-7 train users, alternately in two clusters (the centroids are immaterial to discovery)."""
    train = load_examples(None, "LaMP-7", "train")
    users = list(dict.fromkeys(e.user_id for e in train))
    groups = (tuple(users[0::2]), tuple(users[1::2]))
    ClusterFile(
        task="LaMP-7", split="train", data="demo", data_digest=data_digest(train), n_examples=len(train),
        embedder=embedder_identity(), profile_text=ProfileText(), seed=0, group_size=None, centroids=np.eye(2, 4),
        user_ids=groups, example_ids=tuple(tuple(e.example_id for e in train if e.user_id in g) for g in groups),
        silhouette=None,
    ).save(path)  # fmt: skip


def test_cli_per_cluster_shards_and_ray_equal_one_process(tiny, tmp_path, monkeypatch):
    import workbench.commands.discover as discover_command
    import workbench.execution.placement as placement
    from workbench.engine.workers import LocalWorkers

    monkeypatch.setattr(discover_command, "load_lens", lambda *args: tiny)
    asked = []

    class Recorded:
        """Ray workers as the command asks for them, running in this process."""

        def __init__(self, load, **options):
            asked.append(options)

        def __enter__(self):
            return LocalWorkers(tiny)

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(placement, "RayWorkers", Recorded)
    two_cluster_file(tmp_path / "clusters.json")
    run = lambda *args: CliRunner().invoke(app, [str(a) for a in args])
    common = ("discover", "--task", "LaMP-7", "--split", "train", "--limit", 7, "--method", "hybrid", "--top-k", 2,
              "--top-m", 5, "--profile-k", 1, "--clusters", tmp_path / "clusters.json")  # fmt: skip
    assert run(*common, "--out", tmp_path / "single").exit_code == 0
    first = run(*common, "--out", tmp_path / "run", "--shard", "0/2")
    assert first.exit_code == 0 and "run this command again" in first.output, first.output
    for shard, held in (("1/2", "4 examples of clusters 0, 1;"), ("0/2", "3 examples of clusters 0;")):
        done = run(*common, "--out", tmp_path / "run", "--shard", shard)
        assert done.exit_code == 0 and f"shard {shard}: scored {held}" in done.output, done.output
    merged = run("merge", tmp_path / "run")
    assert merged.exit_code == 0, merged.output
    on_ray = run(*common, "--out", tmp_path / "ray", "--ray", "--workers", 2)
    assert on_ray.exit_code == 0 and asked == [{"address": None, "workers": 2, "cpus_per_worker": 1}], on_ray.output
    for name in ("cluster-0/pcs.parquet", "cluster-1/pcs.parquet", "cluster-0/heads.json", "cluster-1/heads.json", INDEX):
        assert_same_results(tmp_path / "run", tmp_path / "single", name)
        assert_same_results(tmp_path / "ray", tmp_path / "single", name)
    refused = run(*common, "--score", "retrieval", "--out", tmp_path / "other", "--shard", "0/2")
    assert refused.exit_code == 2 and refused.output == "error: --shard and --ray apply to PCS scans (--score pcs)\n"
