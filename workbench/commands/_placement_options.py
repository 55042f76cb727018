"""Options that say where a command's examples run (`discover`, `validate`, `evaluate`): one shard
of them in this process, or all of them on Ray workers; `workbench merge` joins shards."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from workbench.execution.placement import Placement

ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="I/N: process only the I-th (from 0) of N slices of the examples, into OUT/shards/I-of-N; "
        "`workbench merge OUT` joins the N shards.",
    ),
]
RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Run the examples on Ray workers, one model each: --ray alone starts a local Ray instance "
        "(stopped at the end); --ray ADDRESS joins a running cluster (e.g. head-node:6379). Needs workbench[ray].",
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", help="Ray workers. Default: one per GPU of the cluster, else one per --cpus-per-worker cores."),
]
CpusPerWorkerOption = Annotated[
    int, typer.Option("--cpus-per-worker", help="CPU cores (and torch threads) per Ray worker without GPUs.")
]


def placement(shard: str | None, ray: str | None, workers: int | None, cpus_per_worker: int) -> Placement:
    from workbench.execution.placement import Placement
    from workbench.execution.shards import Shard

    return Placement(Shard.parse(shard) if shard is not None else None, ray, workers, cpus_per_worker)


def worker_loader(model: str | None, dtype: str | None):
    """What each Ray worker calls to load the command's model on its own device."""
    from workbench.commands._shared import load_lens

    return functools.partial(load_lens, model, dtype=dtype)
