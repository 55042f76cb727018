"""Where per-example work runs: the `Workers` protocol that every executor implements.

Scans, the validation study and evaluations hand their units of work (one example, one batch of
prompts) to `Workers.map` as a module-level job `job(lens, *shared, *task)`. `LocalWorkers` runs
them one after another on the caller's lens; the execution layer (`workbench.execution`) offers
others (Ray actors), which the caller hands in: experiments never import an executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from workbench.engine.lens import Lens

R = TypeVar("R")


class Workers(Protocol):
    def map(self, job: Callable[..., R], tasks: Sequence[tuple], shared: tuple = ()) -> Iterator[tuple[int, R]]:
        """`job(lens, *shared, *task)` for every task, as `(task index, result)` in order of completion."""
        ...


class LocalWorkers:
    """Every job in this process, in order, on one lens."""

    def __init__(self, lens: Lens):
        self.lens = lens

    def map(self, job: Callable[..., R], tasks: Sequence[tuple], shared: tuple = ()) -> Iterator[tuple[int, R]]:
        for index, task in enumerate(tasks):
            yield index, job(self.lens, *shared, *task)
