"""DeCoRe (Gema et al., 2024, "Decoding by Contrasting Retrieval Heads"): contrast the full model
with itself with its retrieval heads masked, on log-probabilities.

It is the same machinery as DPS with other heads and defaults: the retrieval heads (a
`HeadWeights`, e.g. from the head-scores work) are zeroed at their output, and
`(1 + α)·log p_full − α·log p_masked` uses a fixed α (0.5, DeCoRe-vanilla) or α = the entropy of
the full distribution (`alpha="entropy"`, DeCoRe-entropy), optionally normalised and capped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.decoding.base import Decoder, DecoderRun, Prompts
from workbench.decoding.contrast import ContrastRule, Gamma
from workbench.decoding.dps import DPS
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.lens import Lens
from workbench.tensor_types import HeadGrid


@dataclass(frozen=True)
class DeCoRe(Decoder):
    heads: HeadWeights | HeadGrid
    alpha: float | Literal["entropy"] = 0.5
    alpha_cap: float | None = None
    normalize_entropy: bool = False
    plausibility: float | None = None

    name = "decore"

    def __post_init__(self) -> None:
        if isinstance(self.alpha, str) and self.alpha != "entropy":
            raise InputError(f"{self.name}: α must be a number >= 0 or 'entropy', got {self.alpha!r}")
        ContrastRule(self.gamma(), self.alpha_cap, plausibility=self.plausibility, owner=self.name, term="α")
        self.as_dps()  # validates the heads

    def gamma(self) -> Gamma:
        return "adaptive" if self.alpha == "entropy" else self.alpha

    def as_dps(self) -> DPS:
        return DPS(
            self.heads,
            gamma=self.gamma(),
            gamma_cap=self.alpha_cap,
            normalize_entropy=self.normalize_entropy,
            combine="logprobs",
            plausibility=self.plausibility,
            suppression="zero",
        )

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        return self.as_dps().prepare(lens, prompts, contrast_prompts)
