"""Ray workers: per-example work on Ray actors that each hold their own model.

`RayWorkers` implements `workbench.engine.workers.Workers`: it starts one Ray actor per worker, each
loading the model once (one GPU per worker where the cluster has GPUs, else a set number of CPU
cores and torch threads), and yields results in the order they finish, so the caller's progress
bar and checkpoint stay live. An actor that dies is restarted (reloading its model) and its
unfinished calls rerun: every job is a pure function of its inputs, so the results do not change.
Results equal a single process's because each job is: the caller, not the worker, gathers them
(the hybrid method picks its candidates from all examples between its two phases).
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from workbench.errors import InputError

if TYPE_CHECKING:
    from workbench.engine.lens import Lens

R = TypeVar("R")
RAY_EXTRA = "pip install 'workbench[ray]'"


class LensWorker:
    """A Ray actor's state: one model, loaded once, and the jobs run on it."""

    def __init__(self, load: Callable[..., Lens], device: str, threads: int | None):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.lens = load(device=device)

    def run(self, job: Callable[..., Any], shared: tuple, task: tuple) -> Any:
        return job(self.lens, *shared, *task)

    def pid(self) -> int:
        return os.getpid()


class RayWorkers:
    """Jobs on Ray actors: `address` None starts a local Ray instance (stopped on exit), else
    connects to that cluster. `load(device=...)` builds each worker's model (a picklable callable,
    e.g. `functools.partial(load_model, name, dtype=...)`). `workers`: how many (default: one
    per GPU of the cluster, else one per `cpus_per_worker` cores); `in_flight`: jobs queued per
    worker so it never waits for the driver; `max_restarts`: how often a dead worker is restarted
    and its unfinished jobs rerun. Use as a context manager."""

    def __init__(
        self,
        load: Callable[..., Lens],
        *,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: int = 1,
        max_restarts: int = 3,
        in_flight: int = 2,
    ):
        for name, value in (("workers", workers), ("cpus_per_worker", cpus_per_worker), ("in_flight", in_flight)):
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if max_restarts < 0:
            raise InputError(f"max_restarts must be at least 0, got {max_restarts}")
        self.load, self.address, self.n_workers, self.cpus_per_worker = load, address, workers, cpus_per_worker
        self.max_restarts, self.in_flight = max_restarts, in_flight
        self.actors: list[Any] = []
        self._ray: Any = None
        self._started = False

    def __enter__(self) -> RayWorkers:
        ray = import_ray()
        self._ray = ray
        if self.address is not None:
            check_reachable(self.address)
        if not ray.is_initialized():
            self._started = True
            if self.address is None:
                cpus = None if self.n_workers is None else self.n_workers * self.cpus_per_worker
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
            else:
                try:
                    ray.init(address=self.address, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError) as error:
                    self._started = False
                    message = " ".join(str(error).split())[:200]
                    raise InputError(f"cannot reach the Ray cluster at {self.address!r}: {message}") from None
        try:
            self._start_actors()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start_actors(self) -> None:
        ray = self._ray
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if self.n_workers is None:
            self.n_workers = gpus or max(1, int(ray.cluster_resources().get("CPU", 1)) // self.cpus_per_worker)
        actor = ray.remote(
            num_cpus=self.cpus_per_worker,
            num_gpus=1 if gpus else 0,
            max_restarts=self.max_restarts,
            max_task_retries=self.max_restarts,
        )(LensWorker)
        threads = None if gpus else self.cpus_per_worker
        self.actors = [actor.remote(self.load, "cuda" if gpus else "cpu", threads) for _ in range(self.n_workers)]

    def __exit__(self, *exc: object) -> None:
        if self._ray is not None:
            for actor in self.actors:
                self._ray.kill(actor)
            self.actors = []
            if self._started:
                self._ray.shutdown()
                self._started = False

    def map(self, job: Callable[..., R], tasks: Sequence[tuple], shared: tuple = ()) -> Iterator[tuple[int, R]]:
        if not self.actors:
            raise RuntimeError("RayWorkers.map outside its `with` block")
        ray = self._ray
        shared_ref = ray.put(shared)  # sent to each node once, not with every task
        queue = deque(enumerate(tasks))
        running: dict[Any, tuple[int, int]] = {}  # result ref -> (task index, actor index)
        load = [0] * len(self.actors)
        while queue or running:
            for which, actor in enumerate(self.actors):
                while queue and load[which] < self.in_flight:
                    index, task = queue.popleft()
                    running[actor.run.remote(job, shared_ref, task)] = (index, which)
                    load[which] += 1
            (ready,), _ = ray.wait(list(running), num_returns=1)
            index, which = running.pop(ready)
            load[which] -= 1
            try:
                result = ray.get(ready)
            except ray.exceptions.RayActorError:
                raise WorkerLost(
                    f"a Ray worker died more than {self.max_restarts} times; what finished is kept: run the command again"
                ) from None
            yield index, result


class WorkerLost(RuntimeError):
    """A Ray worker died more often than it may be restarted."""


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in one line, within `timeout` seconds, when nothing listens at `address` (`host:port`,
    or `ray://host:port` for Ray Client); Ray itself would retry for minutes."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray takes a cluster address host:port (e.g. head-node:6379) or nothing, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise InputError(f"cannot reach the Ray cluster at {address!r}: {error.strerror or error}") from None


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(f"--ray needs Ray, which is not installed ({RAY_EXTRA})") from None
    return ray
