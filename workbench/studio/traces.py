"""The decoding view's model side: DPS traces (`workbench.decoding.trace`) of the studio's examples.

The suppressed heads are the top n of a head map, weighted as `workbench discover` weights its
selection (`HeadWeights.from_scores`: max(PCS, 0) on the top n, divided by the largest): the run's
first score map, or without one this example's attribution PCS. Each trace decodes with DPS
(greedy, γ fixed or the full pass's entropy) and stops where `evaluate` stops: the task's token
budget and its answer stop strings for the example's prompt format. A trace is kept per (example,
profile state, γ, n), so that a click on a token only redraws from it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from workbench.data.prompts import answer_stop_strings
from workbench.data.tasks import task_spec
from workbench.decoding import DPS, Contrast, DecodingTrace, trace_dps
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.scores import PCSResult
from workbench.studio.examples import ProfileState, StudioExample, TextExample
from workbench.studio.session import StudioSession

KEPT_TRACES = 32
MAX_GAMMA = 10.0


@dataclass(frozen=True)
class TraceSettings:
    """γ (a number, or "entropy") and the number of suppressed heads."""

    gamma: float | Literal["entropy"] = 1.0
    n_heads: int = 10

    def __post_init__(self) -> None:
        gamma = self.gamma
        if gamma != "entropy" and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma <= MAX_GAMMA):
            raise InputError(f"γ must be 'entropy' or a number in [0, {MAX_GAMMA:g}], got {gamma!r}")
        n = self.n_heads
        if isinstance(n, bool) or not isinstance(n, (int, float)) or n != int(n) or n < 1:
            raise InputError(f"the number of heads must be a whole number >= 1, got {n!r}")
        object.__setattr__(self, "n_heads", int(n))

    def describe(self) -> str:
        gamma = "entropy of the full pass" if self.gamma == "entropy" else f"{self.gamma:g}"
        return f"γ = {gamma}, {self.n_heads} heads"


class StudioTraces:
    """DPS traces of a session's examples, kept per (example, profile state, settings)."""

    def __init__(self, session: StudioSession):
        self.session = session
        self._kept: OrderedDict[tuple, DecodingTrace] = OrderedDict()
        self._kept_lock = threading.Lock()  # callbacks run in several server threads
        self._maps: dict[str, PCSResult] = {}

    def head_map(self, example: StudioExample, state: ProfileState) -> tuple[PCSResult, str]:
        """The map the heads are chosen from, and its label."""
        run = self.session.run
        if run.scores:
            entry = run.scores[0]
            if entry.path not in self._maps:
                self._maps[entry.path] = run.load_scores(entry.path)
            return self._maps[entry.path], entry.label
        return self.session.attribution(example, state, "standard"), "attribution PCS of this example (standard)"

    def heads(self, example: StudioExample, state: ProfileState, n_heads: int) -> tuple[HeadWeights, str]:
        result, label = self.head_map(example, state)
        geometry = self.session.lens.geometry
        geometry.check_grid(result.mean(), f"the map {label!r}")
        total = geometry.n_layers * geometry.n_heads
        if n_heads > total:
            raise InputError(f"the number of heads must be at most {total} (this model's heads), got {n_heads}")
        return HeadWeights.from_scores(result, top_k=n_heads), f"top {n_heads} of {label}"

    def trace(self, example: StudioExample, state: ProfileState, settings: TraceSettings) -> tuple[DecodingTrace, str]:
        """The trace (decoded now, or kept from before) and where its heads came from."""
        key = (example.key, state.key, settings)
        heads, source = self.heads(example, state, settings.n_heads)
        with self._kept_lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                return kept, source
        form = ("chat" if example.chat else "plain") if isinstance(example, TextExample) else self.session.source.prompt_format
        spec = task_spec(self.session.source.task)
        with self.session.lock:
            trace = trace_dps(
                self.session.lens,
                list(example.prompt_ids(state)),
                DPS(heads, contrast=Contrast(gamma=settings.gamma)),
                max_new_tokens=spec.max_new_tokens,
                stop_strings=answer_stop_strings(form, spec),  # type: ignore[arg-type]
            )
        with self._kept_lock:
            self._kept[key] = trace
            while len(self._kept) > KEPT_TRACES:
                self._kept.popitem(last=False)
        return trace, source
