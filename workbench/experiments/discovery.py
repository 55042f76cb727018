"""What `workbench discover` scores and how it selects heads: one typed config, filled from a
preset's values and then the options given (`workbench.presets`), recorded with the heads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from workbench.data.prompts import PromptConfig
from workbench.errors import InputError
from workbench.heads import NORMS, HeadWeights
from workbench.scores import ABLATIONS, ESTIMATORS, METHODS, VARIANTS, PCSResult, ScanOptions, score_heads
from workbench.typed_config import Fraction, PositiveInt, typed_config

if TYPE_CHECKING:
    from workbench.data.tokenized import TokenizedExample
    from workbench.engine.lens import Lens
    from workbench.engine.workers import Workers


@typed_config
class DiscoverSettings:
    """What `discover` scores and selects (a preset's values, then the options given)."""

    score: Literal["pcs", "retrieval", "induction"] = "pcs"
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sample: PositiveInt | None = None
    method: Literal[METHODS] = "hybrid"  # type: ignore[valid-type]
    variant: Literal[tuple(VARIANTS)] = "standard"  # type: ignore[misc]
    ablation: Literal[ABLATIONS] = "zero"  # type: ignore[valid-type]
    estimator: Literal[ESTIMATORS] = "attribution"  # type: ignore[valid-type]
    ig_steps: PositiveInt = 2
    top_k: PositiveInt | None = 10
    top_percent: Fraction | None = None
    norm: Literal[NORMS] = "max"  # type: ignore[valid-type]
    min_pcs: float = 0.0

    name = "discover"

    def __post_init__(self) -> None:
        if (self.top_k is None) == (self.top_percent is None):
            raise InputError("give one of top_k and top_percent")

    def selection_size(self, n_total: int) -> int:
        return self.top_k or max(1, math.floor(self.top_percent * n_total))  # type: ignore[operator]


def discover_heads(
    lens: Lens,
    examples: Sequence[TokenizedExample],
    settings: DiscoverSettings,
    scan: ScanOptions | None = None,
    *,
    checkpoint: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
    workers: Workers | None = None,
) -> tuple[PCSResult, HeadWeights]:
    """PCS of every head on `examples` and the heads `settings` select: what `workbench discover`
    runs, globally and per cluster. `scan`: how to score (default `scan_options(lens, settings)`);
    `metadata` is added to the scores' record, `extra` to the heads'. `workers` run the examples
    (default: this process; see `workbench.execution.ray`)."""
    scan = scan_options(lens, settings) if scan is None else scan
    result = score_heads(lens, examples, scan, checkpoint=checkpoint, progress=progress, workers=workers)
    result.metadata.update(metadata or {})
    return result, HeadWeights.from_scores(result, **selection_options(settings, extra or {}))


SCAN_OPTIONS = ("top_m", "max_rows", "seed", "task")  # a scan's options that `DiscoverSettings` does not set


def scan_options(lens: Lens, settings: DiscoverSettings, **values: Any) -> ScanOptions:
    """How `settings` score: their method, variant and ablation, the hybrid's candidates made for
    their selection size; `values` set the scan's other options (`top_m`, `max_rows`, `seed`, `task`)."""
    return ScanOptions(method=settings.method, variant=settings.variant, ablation=settings.ablation,
                       estimator=settings.estimator, ig_steps=settings.ig_steps,
                       top_k=settings.selection_size(lens.geometry.n_total_heads), **values)  # fmt: skip


def selection_options(settings: DiscoverSettings, extra: dict[str, Any]) -> dict[str, Any]:
    """The keywords of `HeadWeights.from_scores` for `settings` (what `workbench merge` selects with)."""
    return {"top_k": settings.top_k, "top_percent": settings.top_percent, "min_score": settings.min_pcs,
            "norm": settings.norm, "extra": extra}  # fmt: skip
