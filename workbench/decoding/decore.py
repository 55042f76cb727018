"""DeCoRe (Gema et al., 2024, "Decoding by Contrasting Retrieval Heads"): contrast the full model
with itself with its retrieval heads masked, on log-probabilities.

It is DPS with other heads and defaults: the retrieval heads (`workbench discover --score
retrieval` writes them) are zeroed at their output, and `(1 + α)·log p_full − α·log p_masked`
uses a fixed α = γ = 0.5 (DeCoRe-vanilla) or `gamma="entropy"` (DeCoRe-entropy), optionally
scaled and capped. Every DPS option applies.
"""

from __future__ import annotations

from pydantic import Field

from workbench.decoding.contrast import Contrast
from workbench.decoding.dps import DPS, Suppression
from workbench.typed_config import typed_config


@typed_config
class DeCoRe(DPS):
    """DeCoRe: the full model contrasted with its retrieval heads zeroed, on log-probabilities."""

    contrast: Contrast = Field(default_factory=lambda: Contrast(gamma=0.5, combine="logprobs"))
    generic: Suppression = Field(default_factory=lambda: Suppression(suppression="zero"))

    name = "decore"
