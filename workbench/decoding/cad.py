"""Context-aware decoding (Shi et al., 2023) for personalization: contrast the prompt *with* the
user's profile against the same prompt *without* it, `(1 + α)·l_profile − α·l_no_profile` on
logits (α = γ = 0.5 by default; every `Contrast` option applies).

Both prompts run as two rows of one batch. The authors' CAD baseline contrasted two identical
prompts (their no-context prompt was the prompt itself), which makes it exactly greedy decoding;
here the caller passes the real profile-free prompts as `contrast_prompts`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from workbench.decoding.base import Decoder, DecoderRun, Prompts, StepScores, split_groups
from workbench.decoding.contrast import Contrast
from workbench.errors import InputError
from workbench.tensor_types import StepLogits
from workbench.typed_config import typed_config

if TYPE_CHECKING:
    from workbench.engine.lens import Lens


@typed_config
class CAD(Decoder):
    """Context-aware decoding: the prompt with the profile contrasted with the prompt without it."""

    contrast: Contrast = Field(default_factory=lambda: Contrast(gamma=0.5))

    name = "cad"
    contrast_prompts = True

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        if contrast_prompts is None:
            raise InputError("cad: needs contrast_prompts (the same prompts without the user's profile)")
        if len(contrast_prompts) != len(prompts):
            raise InputError(f"cad: {len(contrast_prompts)} contrast prompts for {len(prompts)} prompts")
        return _ContextContrastRun(self.contrast)


class _ContextContrastRun(DecoderRun):
    """Two rows per prompt: group 0 the prompt, group 1 its contrast prompt; no head mask."""

    groups = 2

    def __init__(self, contrast: Contrast):
        self.contrast = contrast

    def rows(self, prompts, contrasts):
        return list(prompts) + list(contrasts)

    def score(self, logits: StepLogits) -> StepScores:
        full, no_profile = split_groups(logits, 2)
        scores, gamma = self.contrast(full, no_profile)
        return StepScores(scores=scores, full=full, contrast=no_profile, gamma=gamma)
