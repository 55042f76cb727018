"""Ray workers: one local Ray instance with 2 one-thread CPU workers on the tiny model gives the
single process's hybrid scan (with a worker killed in the middle), per-cluster discovery (exact,
attribution, and hybrid with a worker killed in the middle), validation table and predictions,
bit for bit; Ray absent or an unreachable cluster is a one-line error."""

from __future__ import annotations

import os
import signal
import sys

import pandas as pd
import pytest
import torch
from same_results import assert_same_results
from toy_clusters import toy_clusters, toy_examples

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.data.prompts import PromptConfig
from workbench.data.sources import load_examples
from workbench.engine.models import tiny_model
from workbench.errors import InputError
from workbench.execution.ray import RayWorkers
from workbench.experiments.cluster_discovery import discover_cluster_heads
from workbench.experiments.discovery import DiscoverSettings, scan_options
from workbench.experiments.evaluation import EvalConfig, evaluate
from workbench.experiments.validation import head_sets, validation_deltas
from workbench.heads import HeadWeights
from workbench.scores import score_heads

pytestmark = pytest.mark.integration  # whole jobs end to end

TOPICS = ["cats", "rain", "jazz", "tea", "sun", "snow"]


class KilledOnce(RayWorkers):
    """Ray workers whose first worker process is killed (SIGKILL) once the first result is in."""

    killed: int | None = None

    def map(self, job, tasks, shared=()):
        for item in super().map(job, tasks, shared):
            if self.killed is None:
                self.killed = self._ray.get(self.actors[0].pid.remote())
                os.kill(self.killed, signal.SIGKILL)
            yield item


@pytest.fixture(scope="module")
def workers():
    with KilledOnce(tiny_model, workers=2, cpus_per_worker=1) as started:
        yield started


def test_ray_runs_equal_one_process_even_when_a_worker_dies(tiny, workers, tmp_path):
    examples = [
        tokenize_pair(tiny, f"e{i}", "u", f"Profile: likes {t}. Write.", f"All about {t}!", prompt_no_profile="Write.")
        for i, t in enumerate(TOPICS)
    ]
    single = score_heads(tiny, examples, method="hybrid", top_m=5, progress=False)
    on_ray = score_heads(tiny, examples, method="hybrid", top_m=5, progress=False, workers=workers, checkpoint=tmp_path / "c")
    assert torch.equal(on_ray.per_example, single.per_example) and torch.equal(on_ray.exact, single.exact)
    assert workers._ray.get(workers.actors[0].pid.remote()) != workers.killed  # restarted, its jobs rerun
    assert len(list((tmp_path / "c").glob("*.npz"))) == 2 * len(examples)  # every entry checkpointed by the driver

    sets = head_sets(tiny, HeadWeights.random_heads(tiny.geometry, 3, seed=2), n_random=2, seed=1)
    pd.testing.assert_frame_equal(
        validation_deltas(tiny, examples, sets, ablation="mean", progress=False, workers=workers),
        validation_deltas(tiny, examples, sets, ablation="mean", progress=False),
        check_exact=True,
    )

    texts = load_examples(None, "LaMP-7", "dev")[:5]
    config = EvalConfig(task="LaMP-7", split="dev", model="tiny", max_new_tokens=4, batch_size=1,
                        prompt=PromptConfig(profile_k=2), resamples=50)  # fmt: skip
    evaluate(tiny, texts, config, tmp_path / "single", progress=False)
    evaluate(tiny, texts, config, tmp_path / "ray", progress=False, workers=workers)
    for name in ("predictions.jsonl", "metrics.json"):
        assert_same_results(tmp_path / "ray", tmp_path / "single", name)


def test_per_cluster_discovery_on_ray_equals_one_process_even_when_a_worker_dies(tiny, workers, tmp_path):
    """All clusters' examples fan out together; mean ablation takes all examples' reference, each
    cluster keeps its own hybrid candidates (`test_shards_clusters` checks that the shards equal
    one process too)."""
    examples = toy_examples(tiny)
    clusters = toy_clusters(examples)
    for method, ablation in [("exact", "mean"), ("attribution", "zero"), ("hybrid", "zero")]:
        settings = DiscoverSettings(method=method, ablation=ablation, top_k=2, min_pcs=-1.0)
        single, single_heads = discover_cluster_heads(
            tiny, examples, clusters, settings, scan_options(tiny, settings, top_m=7), progress=False
        )
        if method == "hybrid":
            workers.killed = None  # kill worker 0 again, in the middle of this scan
        on_ray, ray_heads = discover_cluster_heads(tiny, examples, clusters, settings, scan_options(tiny, settings, top_m=7), progress=False,
                                                   workers=workers, checkpoint=tmp_path / method)  # fmt: skip
        for mine, theirs in zip(on_ray, single):
            assert torch.equal(mine.per_example, theirs.per_example) and torch.equal(mine.exact, theirs.exact), method
            assert (mine.example_ids, mine.metadata) == (theirs.example_ids, theirs.metadata)
        assert [w.to_json() for w in ray_heads.weights] == [w.to_json() for w in single_heads.weights]
    assert workers._ray.get(workers.actors[0].pid.remote()) != workers.killed  # restarted, its jobs rerun
    assert len(list((tmp_path / "hybrid").rglob("*.npz"))) == 2 * len(examples)  # every entry checkpointed, in one folder


def test_ray_absent_or_unreachable_is_one_line(monkeypatch):
    for address, message in [
        ("127.0.0.1:1", r"^cannot reach the Ray cluster at '127.0.0.1:1': "),
        ("head-node", r"^--ray takes a cluster address host:port \(e.g. head-node:6379\) or nothing, got 'head-node'$"),
    ]:
        with pytest.raises(InputError, match=message) as caught, RayWorkers(tiny_model, address=address):
            pass
        assert "\n" not in str(caught.value)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(InputError, match=r"^--ray needs Ray, which is not installed \(pip install 'workbench\[ray\]'\)$"):
        RayWorkers(tiny_model).__enter__()


def test_cli_ray_alone_is_a_local_instance_an_address_a_cluster(tiny, monkeypatch, tmp_path):
    import json

    from typer.testing import CliRunner

    import workbench.commands.discover as discover_command
    import workbench.execution.placement as placement
    from workbench.cli import app
    from workbench.engine.workers import LocalWorkers

    monkeypatch.setattr(discover_command, "load_lens", lambda *args: tiny)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"id": f"e{i}", "user_id": "u", "prompt": f"Profile: {t}.", "target": f"{t}!"}) + "\n"
                            for i, t in enumerate(TOPICS[:3])))  # fmt: skip
    run = lambda *args: CliRunner().invoke(app, [str(a) for a in args])
    common = ("discover", "--data", data, "--method", "attribution", "--top-k", 2)
    real = placement.RayWorkers
    asked = []

    class Recorded:
        """Ray workers as the command asks for them, running in this process."""

        def __init__(self, load, *, address, workers, cpus_per_worker):
            asked.append((address, workers, cpus_per_worker))

        def __enter__(self):
            return LocalWorkers(tiny)

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(placement, "RayWorkers", Recorded)
    assert run(*common, "--out", tmp_path / "single").exit_code == 0
    assert run(*common, "--ray", "--out", tmp_path / "local").exit_code == 0
    assert (
        run(*common, "--out", tmp_path / "cluster", "--workers", 3, "--cpus-per-worker", 2, "--ray", "head:6379").exit_code == 0
    )
    assert asked == [(None, None, 1), ("head:6379", 3, 2)]
    assert_same_results(tmp_path / "local", tmp_path / "single", "pcs.parquet")
    monkeypatch.setattr(placement, "RayWorkers", real)
    failed = run(*common, "--out", tmp_path / "refused", "--ray", "127.0.0.1:1")
    assert failed.exit_code == 2 and failed.output == "error: cannot reach the Ray cluster at '127.0.0.1:1': Connection refused\n"


class FakeRay:
    """Ray's scheduling surface as `RayWorkers` uses it: the cluster's resources, and what an
    actor was asked for and started with (no processes)."""

    def __init__(self, resources):
        self.resources, self.asked, self.started = resources, [], []

    def cluster_resources(self):
        return self.resources

    def remote(self, **options):
        self.asked.append(options)
        fake = self

        class Actor:
            @staticmethod
            def remote(*args):
                fake.started.append(args)

        return lambda cls: Actor


@pytest.mark.parametrize(
    ("resources", "cpus", "wanted"),
    [
        ({"CPU": 16.0, "GPU": 2.0}, 1, (2, 1, "cuda", None)),  # one worker per GPU, on it
        ({"CPU": 6.0}, 2, (3, 0, "cpu", 2)),  # one worker per 2 cores, 2 torch threads each
    ],
)
def test_workers_take_one_gpu_each_on_gpu_clusters_else_their_cores(resources, cpus, wanted):
    """What each worker asks Ray for on a GPU cluster and on a CPU one (no GPU was lent to test
    the GPU case on hardware: this checks the requests, not CUDA)."""
    workers = RayWorkers(tiny_model, cpus_per_worker=cpus)
    workers._ray = FakeRay(resources)
    workers._start_actors()
    n, gpus, device, threads = wanted
    assert len(workers.actors) == n and len(workers._ray.started) == n
    assert workers._ray.asked == [{"num_cpus": cpus, "num_gpus": gpus, "max_restarts": 3, "max_task_retries": 3}]
    assert all(args == (tiny_model, device, threads) for args in workers._ray.started)
