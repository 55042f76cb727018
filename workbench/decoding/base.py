"""What a decoder is to the generation loop.

A decoder (`Greedy`, `DPS`, `CAD`, `DoLa`, `DeCoRe`, ...) is a typed config
(`workbench.typed_config`): a frozen set of options, each declared once with its type, default
and help, checked when the decoder is made. For one `generate` call it is *prepared* into a
`DecoderRun`, which tells the loop

- how many batch rows each prompt needs (`groups`: 1, or 2 for contrastive decoders) and which
  token sequence each row holds (`rows`), laid out group by group: rows `[g·n, (g+1)·n)` are
  group g of the n prompts of the batch;
- the head mask of each group (`group_masks`), applied over the whole context: one row for every
  prompt, or one row per prompt (row i for prompt i of the `generate` call);
- any extra hooks it needs during every forward (`hooks`, e.g. DoLa's residual readers);
- how to turn the last-position logits of all rows into next-token scores (`score`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from workbench.decoding.contrast import RowValues
from workbench.engine.masks import HeadMask
from workbench.tensor_types import StepLogits
from workbench.typed_config import flat_values

if TYPE_CHECKING:
    from workbench.engine.lens import Hook, Lens

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
    """`name` is the decoder's name in the registry, on command lines and in records; decoders
    that suppress heads take them as their first field `heads`; `contrast_prompts` says whether
    `generate` must be given the prompts without the user's profile."""

    name: ClassVar[str]
    contrast_prompts: ClassVar[bool] = False

    def check(self, lens: Lens) -> None:  # noqa: B027 (most decoders fit every model)
        """Raise `InputError` if the decoder cannot run on this model (checked before any output)."""

    @abstractmethod
    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        """Check the decoder against the model and prompts (raising `InputError`) and bind it."""

    def options(self) -> dict[str, Any]:
        """Every command-line option of this decoder and its value (what a record must show)."""
        return flat_values(self)


def split_groups(logits: StepLogits, groups: int) -> list[StepLogits]:
    """The logits of each row group (group-major layout)."""
    return list(logits.chunk(groups, dim=0))
