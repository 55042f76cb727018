"""What `workbench discover` scores and how it selects heads: one typed config, filled from a
preset's values and then the options given (`workbench.presets`), recorded with the heads."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from workbench.data.prompts import PromptConfig
from workbench.errors import InputError
from workbench.heads import NORMS, HeadWeights
from workbench.scores import AblationKind, EstimatorName, Method, PCSResult, ScanOptions, Variant, score_heads
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
    method: Method = "hybrid"
    variant: Variant = "standard"
    ablation: AblationKind = "zero"
    estimator: EstimatorName = "attribution"
    ig_steps: PositiveInt = 2
    top_k: PositiveInt | None = 10
    top_percent: Fraction | None = None
    norm: Literal[NORMS] = "max"  # type: ignore[valid-type]
    min_pcs: float = 0.0
    miss_rate: Fraction | None = None  # the hybrid's certified candidates (`workbench.scores.certificate`)
    racing: bool = False  # the hybrid's raced exact phase (`workbench.scores.racing`)
    confidence: Fraction = 0.95  # of the certificate and the race

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
    their selection size (certified, raced); `values` set the scan's other options (`top_m`,
    `max_rows`, `seed`, `task`)."""
    return ScanOptions(method=settings.method, variant=settings.variant, ablation=settings.ablation,
                       estimator=settings.estimator, ig_steps=settings.ig_steps,
                       top_k=settings.selection_size(lens.geometry.n_total_heads), miss_rate=settings.miss_rate,
                       racing=settings.racing, confidence=settings.confidence, **values)  # fmt: skip


def selection_options(settings: DiscoverSettings, extra: dict[str, Any]) -> dict[str, Any]:
    """The keywords of `HeadWeights.from_scores` for `settings` (what `workbench merge` selects with)."""
    return {"top_k": settings.top_k, "top_percent": settings.top_percent, "min_score": settings.min_pcs,
            "norm": settings.norm, "extra": extra}  # fmt: skip


def reselect(
    result: PCSResult, top_k: int, *, norm: str | None = None, min_pcs: float | None = None, source: str = ""
) -> HeadWeights:
    """The top `top_k` heads of a finished scan, without scoring again (`workbench select`). Of a
    hybrid scan only the heads it verified (scored exactly) are eligible: the others hold
    attribution estimates, ranked on another footing. `norm` and `min_pcs` default to the scan's."""
    recorded = result.metadata.get("options") or {}
    verified_only = bool(result.exact.any()) and not bool(result.exact.all())
    eligible = int(result.exact.sum()) if verified_only else result.exact.numel()
    what = "heads the hybrid scan scored exactly" if verified_only else "heads scored"
    if not 1 <= top_k <= eligible:
        raise InputError(f"--top-k must lie in 1..{eligible} (the {what}), got {top_k}")
    if verified_only:  # an unverified head can never rank: its mean is -inf
        result = dataclasses.replace(result, per_example=result.per_example.masked_fill(~result.exact, -math.inf))
    extra = {key: recorded[key] for key in ("task", "split", "data", "preset") if recorded.get(key) is not None}
    return HeadWeights.from_scores(
        result, top_k=top_k, norm=recorded.get("norm", "max") if norm is None else norm,
        min_score=recorded.get("min_pcs", 0.0) if min_pcs is None else min_pcs,
        extra={**extra, "selected_from": source, "verified_only": verified_only, "options": recorded},
    )  # fmt: skip
