"""The contrast rule shared by DPS, DeCoRe and CAD: combine the scores of the full pass with
those of a weakened pass as `(1 + γ)·full − γ·weak`.

- γ is fixed (≥ 0) or *adaptive*: the entropy of the full next-token distribution in nats,
  optionally divided by ln|V| (so it lies in [0, 1]) and capped.
- The combination acts on raw logits (the DPS paper, CAD) or on log-probabilities (the DPS
  authors' code, DeCoRe).
- An optional plausibility constraint β (contrastive decoding's adaptive plausibility) keeps only
  tokens whose full-model probability is at least β times the largest one; the rest get -inf,
  so the contrast cannot promote tokens the full model considers implausible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import InputError
from workbench.tensor_types import StepLogits

Gamma = float | Literal["adaptive"]
Combine = Literal["logits", "logprobs"]
COMBINES = ("logits", "logprobs")
RowValues = Float[Tensor, " batch"]


def entropy(logits: StepLogits) -> RowValues:
    """Entropy in nats of `softmax(logits)` per row, computed in float32."""
    logprobs = logits.float().log_softmax(dim=-1)
    return -(logprobs.exp() * logprobs).nan_to_num().sum(dim=-1)


def implausible(logits: StepLogits, beta: float) -> torch.Tensor:
    """Tokens whose probability is below `beta` times the row's largest probability."""
    logprobs = logits.float().log_softmax(dim=-1)
    return logprobs < logprobs.max(dim=-1, keepdim=True).values + math.log(beta)


def check_plausibility(beta: float | None, owner: str) -> None:
    if beta is not None and not (0 < beta <= 1):
        raise InputError(f"{owner}: plausibility β must lie in (0, 1] or be None, got {beta}")


@dataclass(frozen=True)
class ContrastRule:
    """`(1 + γ)·full − γ·weak` with a fixed or entropy-adaptive γ. `owner` and `term` name the
    decoder and its strength parameter (γ, α) in error messages."""

    gamma: Gamma = 1.0
    gamma_cap: float | None = None
    normalize_entropy: bool = False
    combine: Combine = "logits"
    plausibility: float | None = None
    owner: str = "contrast"
    term: str = "γ"

    def __post_init__(self) -> None:
        if isinstance(self.gamma, str):
            if self.gamma != "adaptive":
                raise InputError(f"{self.owner}: {self.term} must be a number >= 0 or 'adaptive', got {self.gamma!r}")
        elif isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)):
            raise InputError(f"{self.owner}: {self.term} must be a number >= 0 or 'adaptive', got {self.gamma!r}")
        elif not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise InputError(f"{self.owner}: {self.term} must be a finite number >= 0, got {self.gamma}")
        if self.gamma_cap is not None and not (math.isfinite(self.gamma_cap) and self.gamma_cap >= 0):
            raise InputError(f"{self.owner}: the {self.term} cap must be a finite number >= 0, got {self.gamma_cap}")
        if self.combine not in COMBINES:
            raise InputError(f"{self.owner}: combine must be one of {', '.join(COMBINES)}, got {self.combine!r}")
        check_plausibility(self.plausibility, self.owner)

    def gammas(self, full: StepLogits) -> RowValues:
        """γ of every row at this step."""
        if self.gamma == "adaptive":
            gamma = entropy(full)
            if self.normalize_entropy:
                gamma = gamma / math.log(full.shape[-1])
        else:
            gamma = torch.full(full.shape[:1], float(self.gamma), device=full.device)
        return gamma if self.gamma_cap is None else gamma.clamp(max=self.gamma_cap)

    def __call__(self, full: StepLogits, weak: StepLogits) -> tuple[StepLogits, RowValues]:
        """The contrasted scores of every row and the γ used."""
        gamma = self.gammas(full)
        if self.combine == "logprobs":
            full, weak = full.float().log_softmax(dim=-1), weak.float().log_softmax(dim=-1)
        scores = (1 + gamma[:, None]) * full - gamma[:, None] * weak
        if self.plausibility is not None:
            scores = scores.masked_fill(implausible(full, self.plausibility), -math.inf)
        return scores, gamma
