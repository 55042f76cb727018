"""The contrast rule shared by DPS, DeCoRe and CAD: combine the scores of the full pass with
those of a weakened pass as `(1 + γ)·full − γ·weak`.

- γ is fixed (≥ 0) or `"entropy"`: the entropy of the full next-token distribution at each step,
  in nats (`entropy_scale="nats"`, up to ln|V|) or divided by ln|V| (`"ln-vocab"`, in [0, 1]),
  optionally capped (`gamma_cap`). CAD's and DeCoRe's α is this γ.
- The combination acts on raw logits (the DPS paper, CAD) or on log-probabilities (the DPS
  authors' code, DeCoRe).
- An optional plausibility constraint β (contrastive decoding's adaptive plausibility) keeps only
  tokens whose full-model probability is at least β times the largest one; the rest get -inf,
  so the contrast cannot promote tokens the full model considers implausible.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float
from pydantic import Field
from torch import Tensor

from workbench.tensor_types import StepLogits
from workbench.typed_config import Fraction, NonNegative, typed_config

Gamma = NonNegative | Literal["entropy"]
RowValues = Float[Tensor, " batch"]


def entropy(logits: StepLogits) -> RowValues:
    """Entropy in nats of `softmax(logits)` per row, computed in float32."""
    logprobs = logits.float().log_softmax(dim=-1)
    return -(logprobs.exp() * logprobs).nan_to_num().sum(dim=-1)


def implausible(logits: StepLogits, beta: float) -> torch.Tensor:
    """Tokens whose probability is below `beta` times the row's largest probability."""
    logprobs = logits.float().log_softmax(dim=-1)
    return logprobs < logprobs.max(dim=-1, keepdim=True).values + math.log(beta)


@typed_config
class Contrast:
    """`(1 + γ)·full − γ·weak` with a fixed or entropy γ (see the module docstring)."""

    gamma: Gamma = Field(
        default=1.0, description="Contrast strength γ (CAD's and DeCoRe's α), or 'entropy' (of the full model, per step)."
    )
    gamma_cap: NonNegative | None = Field(default=None, description="Upper bound on γ (with 'entropy').")
    entropy_scale: Literal["nats", "ln-vocab"] = Field(
        default="nats", description="Entropy γ in nats, or divided by ln|V| (then in [0, 1])."
    )
    combine: Literal["logits", "logprobs"] = Field(
        default="logits", description="Contrast raw logits (the paper, CAD) or log-probabilities (the authors' code, DeCoRe)."
    )
    plausibility: Fraction | None = Field(default=None, description="Keep only tokens with p >= β·max p of the full model.")

    def gammas(self, full: StepLogits) -> RowValues:
        """γ of every row at this step."""
        if self.gamma == "entropy":
            gamma = entropy(full)
            if self.entropy_scale == "ln-vocab":
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
