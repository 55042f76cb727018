"""Where a command's examples run: this process, one shard of them, or Ray workers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from workbench.engine.lens import Lens
from workbench.engine.workers import LocalWorkers, Workers
from workbench.errors import InputError
from workbench.execution.ray import RayWorkers
from workbench.execution.shards import Shard


@dataclass(frozen=True)
class Placement:
    """Where a command's examples run: `shard` (this process takes one slice, `workbench.execution.shards`),
    `ray` ("local": a Ray instance started and stopped by the command; else a cluster's address;
    None: this process), `workers` and `cpus_per_worker` of `RayWorkers`."""

    shard: Shard | None = None
    ray: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1

    def __post_init__(self) -> None:
        if self.ray is None and self.workers is not None:
            raise InputError("--workers needs --ray (without it, the examples run in this process)")

    def open(self, lens: Lens, load: Callable[..., Lens]) -> AbstractContextManager[Workers]:
        """The workers, as a context manager: `lens` in this process, or Ray actors built by `load(device=...)`."""
        if self.ray is None:
            return contextlib.nullcontext(LocalWorkers(lens))
        address = None if self.ray == "local" else self.ray
        return RayWorkers(load, address=address, workers=self.workers, cpus_per_worker=self.cpus_per_worker)
