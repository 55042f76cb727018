"""The cluster stages: users clustered by their profiles, and preference heads per cluster.

`cluster`: the users of some examples embedded (MiniLM) and k-means clustered; its folder holds
`clusters.json`, `cluster_users.parquet`, `cluster_routing.parquet` and `clusters.md`
(`workbench.users.clustering.save_clustering`). `discover-clusters`: PCS on each cluster's member
examples and each cluster's heads (`cluster-<id>/pcs.parquet`, `heads.json`, the index
`cluster_heads.json`), which `workbench discover --clusters` runs too. `workbench demo` runs both.

A head's PCS on one example does not depend on the cluster the example is in (a cluster's PCS is
the mean over its members), so per-cluster discovery may read and extend the per-example
checkpoint of a global discovery with the same scoring options: exact and attribution entries are
reused as they are, a hybrid entry is completed with the cluster's candidates it lacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.data.examples import Example
from workbench.data.tokenized import TokenizedExample
from workbench.experiments.cluster_discovery import discover_cluster_heads, save_cluster_discovery
from workbench.experiments.discovery import SCAN_OPTIONS, DiscoverSettings, scan_options
from workbench.pipeline.discovery import PCS_FILE, discovery_stage
from workbench.pipeline.stage import Stage
from workbench.scores import PCSResult
from workbench.typed_config import flat_values
from workbench.users.cluster_heads import INDEX, ClusterHeads, cluster_folder
from workbench.users.clustering import cluster_examples, save_clustering
from workbench.users.clusters import ClusterFile
from workbench.users.embeddings import embedder_identity
from workbench.users.profiles import ProfileText

if TYPE_CHECKING:
    from workbench.engine.lens import Lens
    from workbench.engine.workers import Workers

CLUSTERS_FILE = "clusters.json"


def clusters_stage(
    folder: Path,
    *,
    task: str,
    split: str,
    data: str,
    data_hash: str,
    k: int | None,
    seed: int,
    recipe: ProfileText,
    temperature: float,
    group_size: int | None = None,
) -> Stage:
    """The fingerprint of clustering users into `k` clusters (or one per `group_size` users): the
    examples' content, the embedder's weights, the profile-text recipe, the seed and the
    temperature the report shows soft routing at."""
    identity = embedder_identity()
    options = {"task": task, "split": split, "data": data, "k": k, "group_size": group_size, "seed": seed,
               "profile_text": flat_values(recipe), "temperature": temperature}  # fmt: skip
    return Stage("cluster", folder, options, outputs=(CLUSTERS_FILE, "cluster_users.parquet", "clusters.md"),
                 model={"name": identity["name"], "weights": identity["weights_digest"]}, data=data_hash)  # fmt: skip


def run_clusters(
    stage: Stage, examples: Sequence[Example], *, recipe: ProfileText, announce: Callable[[str], None] | None = None
) -> ClusterFile:
    """The clustering of the stage: reused when its fingerprint matches, else computed."""
    options = stage.options

    def compute() -> ClusterFile:
        clustering = cluster_examples(examples, task=options["task"], split=options["split"], data=options["data"],
                                      k=options["k"], group_size=options["group_size"], seed=options["seed"],
                                      recipe=recipe)  # fmt: skip
        save_clustering(stage.folder, clustering, temperature=options["temperature"])
        return clustering.file

    return stage.run(compute, lambda: ClusterFile.load(stage.folder / CLUSTERS_FILE), announce=announce)


def cluster_discovery_stage(
    lens: Lens, folder: Path, settings: DiscoverSettings, clusters: Stage | ClusterFile, **discovery: object
) -> Stage:
    """`discovery_stage`'s fingerprint (same keywords), with the clustering: the stage that makes
    it, or (a file given) its digest."""
    extra = dict(discovery.pop("extra", None) or {})  # type: ignore[call-overload]
    if isinstance(clusters, ClusterFile):
        extra["clusters_digest"] = clusters.digest()
    stage = discovery_stage(lens, folder, settings, extra=extra, **discovery)  # type: ignore[arg-type]
    inputs = {"clusters": clusters} if isinstance(clusters, Stage) else {}
    return dataclasses.replace(stage, name="discover-clusters", outputs=(INDEX,), inputs=inputs)


def run_cluster_discovery(
    lens: Lens,
    stage: Stage,
    examples: Sequence[TokenizedExample],
    clusters: ClusterFile,
    settings: DiscoverSettings,
    *,
    checkpoint: Path | None = None,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
    workers: Workers | None = None,
) -> tuple[list[PCSResult], ClusterHeads]:
    """Each cluster's scores and heads: reused when the fingerprint matches, else computed with
    per-example checkpoints in `checkpoint` (default the stage's `checkpoint/`; a global
    discovery's with the same scoring options is reused, see the module docstring), the examples
    run by `workers` (default: this process)."""
    options, folder = stage.options, stage.folder

    def compute() -> tuple[list[PCSResult], ClusterHeads]:
        record = {"fingerprint": stage.digest, **dict(options)}
        extra = {"task": options["task"], "split": options["split"], "data": options["data"], "preset": options.get("preset"),
                 "options": record}  # fmt: skip
        scan = scan_options(lens, settings, **{name: options[name] for name in SCAN_OPTIONS})
        results, heads = discover_cluster_heads(lens, examples, clusters, settings, scan, checkpoint=checkpoint or folder / "checkpoint",
                                                extra=extra, progress=progress, workers=workers)  # fmt: skip
        save_cluster_discovery(folder, results, heads)
        return results, heads

    def load() -> tuple[list[PCSResult], ClusterHeads]:
        heads = ClusterHeads.load(folder)
        return [PCSResult.load(folder / cluster_folder(c) / PCS_FILE) for c in range(heads.k)], heads

    return stage.run(compute, load, announce=announce)
