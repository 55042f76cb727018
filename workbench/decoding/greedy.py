"""Plain decoding with the full model: the baseline every other decoder is compared against."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.decoding.base import Decoder, DecoderRun, Prompts, StepScores
from workbench.tensor_types import StepLogits
from workbench.typed_config import typed_config

if TYPE_CHECKING:
    from workbench.engine.lens import Lens


@typed_config
class Greedy(Decoder):
    """The model's own next-token logits (argmax, or sampled when `generate` gets a `Sampling`)."""

    name = "greedy"

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        return _GreedyRun()


class _GreedyRun(DecoderRun):
    def score(self, logits: StepLogits) -> StepScores:
        return StepScores(scores=logits, full=logits)
