"""`workbench cluster --limit` and `workbench discover --clusters --limit` (issue 22.4): a limit keeps
every cluster populated (examples taken in turn from each cluster) or says in one line, before the
model loads, how to fix it; the progress bar and the summary count the same profiles."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

import workbench.commands.discover as discover_command
import workbench.users.embeddings as embeddings_module
from workbench.cli import app
from workbench.data.sources import load_examples
from workbench.experiments.cluster_discovery import clustered_examples
from workbench.users import ClusterFile

pytestmark = pytest.mark.unit


def invoke(*args):
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    """The users of the demo set's first 8 LaMP-4 train examples in 2 clusters."""
    out = tmp_path_factory.mktemp("clusters")
    result = invoke("cluster", "--task", "LaMP-4", "--k", 2, "--limit", 8, "--out", out)
    assert result.exit_code == 0, result.output
    return out / "clusters.json", result


def test_cluster_limit_clusters_the_first_examples_and_counts_profiles(clusters) -> None:
    path, result = clusters
    file = ClusterFile.load(path)
    first = load_examples(None, "LaMP-4", "train")[:8]
    assert file.n_examples == 8 and file.users() == {e.user_id for e in first}
    users = len(file.users())
    assert f"{users} profiles (one per user, from 8 examples) in 2 clusters of {file.sizes()} profiles" in result.output


def test_the_limit_takes_examples_in_turn_from_each_cluster(clusters) -> None:
    file = ClusterFile.load(clusters[0])
    examples = load_examples(None, "LaMP-4", "train")
    cluster_of = file.cluster_of_example()
    in_order = [e for e in examples if e.example_id in cluster_of]
    by_cluster = [[e.example_id for e in in_order if cluster_of[e.example_id] == c] for c in range(2)]
    small = min(map(len, by_cluster))
    # by hand: the first of each cluster, then the second of each, ...; the larger cluster fills what is left
    expected = {*by_cluster[0][:small], *by_cluster[1][:small]}
    limit = 2 * small + 1
    larger = max(by_cluster, key=len)
    if len(larger) > small:
        expected.add(larger[small])
    chosen = clustered_examples(examples, file, limit)
    assert {e.example_id for e in chosen} == expected and len(chosen) == min(limit, len(in_order))
    assert [e.example_id for e in chosen] == [e.example_id for e in in_order if e.example_id in expected]  # data order


def test_discover_clusters_limit_below_the_clusters_is_one_line_before_the_model(clusters, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(discover_command, "load_lens", lambda *a, **k: pytest.fail("the model was loaded"))
    result = invoke("discover", "--clusters", clusters[0], "--limit", 1, "--out", tmp_path / "d")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --limit 1 leaves a cluster without examples: each of the 2 clusters needs one (give --limit 2 or more)"
    )


def test_discover_clusters_limit_4_scores_every_cluster(clusters, tiny, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(discover_command, "load_lens", lambda *a, **k: tiny)
    out = tmp_path / "d"
    result = invoke("discover", "--clusters", clusters[0], "--limit", 4, "--method", "attribution", "--top-k", 2,
                    "--profile-k", 1, "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    counts = {int(c): int(n) for c, n in re.findall(r"cluster (\d+): (\d+) examples", result.output)}
    assert counts == {0: 2, 1: 2}  # 4 examples, taken in turn from the 2 clusters
    assert all((out / f"cluster-{c}" / "heads.json").is_file() for c in counts)


def test_the_embedding_bar_counts_profiles_cached_or_not(tmp_path, monkeypatch) -> None:
    bars = []
    real_tqdm = embeddings_module.tqdm

    def recording(*args, **kwargs):
        bars.append(real_tqdm(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(embeddings_module, "tqdm", recording)
    embeddings_module.embed_texts(["one profile"], cache=tmp_path)
    embeddings_module.embed_texts(["one profile", "another", "another"], cache=tmp_path)  # 1 cached, 1 text for 2
    assert [(bar.total, bar.n) for bar in bars] == [(1, 1), (3, 3)]
