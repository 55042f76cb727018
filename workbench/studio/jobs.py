"""Serialised model access and cancellable background jobs, without any web framework.

`FairLock` is the one lock every model computation of the studio takes: the lens's hooks are
global to the model, so two computations at once (two tabs, or a generation and a click) would
apply each other's masks. It serves threads in arrival order, and a long job can `yield_turn`
between decoding steps so that a click waiting behind it runs next: the page stays responsive
while a generation is under way.

`JobBoard` runs long work (generations) in threads, with progress, cancellation between steps
and the results kept for the page to poll.
"""

from __future__ import annotations

import threading
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import InputError


class FairLock:
    """A first-come, first-served lock (a ticket lock)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def acquire(self) -> None:
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._condition.wait_for(lambda: self._serving == ticket)

    def release(self) -> None:
        with self._condition:
            self._serving += 1
            self._condition.notify_all()

    @property
    def waiting(self) -> int:
        """Threads waiting for the lock (not counting the holder)."""
        with self._condition:
            return max(0, self._next_ticket - self._serving - 1)

    def yield_turn(self) -> None:
        """Let every thread already waiting go first, then continue (call only while holding it)."""
        if self.waiting:
            self.release()
            self.acquire()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Cancelled(Exception):
    """Raised inside a job's work when the page asked to stop it."""


@dataclass
class Job:
    """One background job: `work(job)` calls `job.step()` as it advances and fills `results`."""

    id: str
    total_steps: int
    done_steps: int = 0
    status: str = "running"  # running, done, cancelled or failed
    results: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def step(self) -> None:
        if self.cancel_requested.is_set():
            raise Cancelled
        self.done_steps = min(self.total_steps, self.done_steps + 1)

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "done_steps": self.done_steps,
            "total_steps": self.total_steps,
            "results": dict(self.results),
            "error": self.error,
        }


class JobBoard:
    """Background jobs by id: at most `max_running` at once, the last `keep` remembered."""

    def __init__(self, *, max_running: int = 4, keep: int = 64):
        self.max_running, self.keep = max_running, keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._guard = threading.Lock()

    def start(self, total_steps: int, work: Callable[[Job], None]) -> Job:
        with self._guard:
            running = sum(job.status == "running" for job in self._jobs.values())
            if running >= self.max_running:
                raise InputError(f"{running} jobs are already running; wait for one to finish or cancel it")
            job = Job(uuid.uuid4().hex, max(1, total_steps))
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status == "running":
                    break
                self._jobs.pop(oldest)
        threading.Thread(target=self._run, args=(job, work), name=f"studio-job-{job.id[:8]}", daemon=True).start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], None]) -> None:
        try:
            work(job)
            job.status = "done"
        except Cancelled:
            job.status = "cancelled"
        except InputError as error:
            job.error, job.status = str(error), "failed"
        except Exception as error:  # a bug: the page shows it, the log keeps the traceback, the server serves on
            traceback.print_exc()
            job.error, job.status = f"{type(error).__name__}: {error}", "failed"

    def get(self, job_id: str) -> Job:
        with self._guard:
            job = self._jobs.get(job_id)
        if job is None:
            raise InputError("unknown or expired job")
        return job

    def cancel(self, job_id: str) -> None:
        self.get(job_id).cancel_requested.set()
