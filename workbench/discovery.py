"""What `workbench discover` scores and how it selects heads: one typed config, filled from a
preset's values and then the options given (`workbench.presets`), recorded with the heads."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from workbench.data.prompts import PromptConfig
from workbench.errors import InputError
from workbench.heads import NORMS
from workbench.scores import ABLATIONS, METHODS, VARIANTS
from workbench.typed_config import Fraction, PositiveInt, typed_config


@typed_config
class DiscoverSettings:
    """What `discover` scores and selects (a preset's values, then the options given)."""

    score: Literal["pcs", "retrieval", "induction"] = "pcs"
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sample: PositiveInt | None = None
    method: Literal[METHODS] = "hybrid"  # type: ignore[valid-type]
    variant: Literal[tuple(VARIANTS)] = "standard"  # type: ignore[misc]
    ablation: Literal[ABLATIONS] = "zero"  # type: ignore[valid-type]
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
