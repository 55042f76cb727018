"""What a decoder is to the generation loop.

A decoder (`Greedy`, `DPS`, `CAD`, `DoLa`, `DeCoRe`) is a frozen set of hyperparameters. For one
`generate` call it is *prepared* into a `DecoderRun`, which tells the loop

- how many batch rows each prompt needs (`groups`: 1, or 2 for contrastive decoders) and which
  token sequence each row holds (`rows`), laid out group by group: rows `[g·n, (g+1)·n)` are
  group g of the n prompts of the batch;
- the single-row head mask of each group (`group_masks`), applied over the whole context;
- any extra hooks it needs during every forward (`hooks`, e.g. DoLa's residual readers);
- how to turn the last-position logits of all rows into next-token scores (`score`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from workbench.decoding.contrast import RowValues
from workbench.lens import Hook, Lens
from workbench.masks import HeadMask
from workbench.tensor_types import StepLogits

Prompts = Sequence[Sequence[int]]


@dataclass
class StepScores:
    """One step of every prompt: the scores tokens are chosen from, plus what diagnostics report."""

    scores: StepLogits
    full: StepLogits
    contrast: StepLogits | None = None
    gamma: RowValues | None = None
    extra: dict[str, RowValues] = field(default_factory=dict)


class DecoderRun(ABC):
    groups: int = 1
    shared_prefill: bool = False

    def rows(self, prompts: Prompts, contrasts: Prompts | None) -> list[Sequence[int]]:
        return list(prompts)

    def group_masks(self) -> list[HeadMask] | None:
        return None

    def hooks(self) -> list[Hook]:
        return []

    @abstractmethod
    def score(self, logits: StepLogits) -> StepScores:
        """Scores for the n prompts from the logits of all `groups · n` rows."""


class Decoder(ABC):
    name: str

    @abstractmethod
    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        """Check the decoder against the model and prompts (raising `InputError`) and bind it."""


def split_groups(logits: StepLogits, groups: int) -> list[StepLogits]:
    """The logits of each row group (group-major layout)."""
    return list(logits.chunk(groups, dim=0))
