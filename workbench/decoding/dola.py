"""DoLa (Chuang et al., 2024, "Decoding by Contrasting Layers"): contrast the final layer with a
premature layer, `log p_final − log p_premature`, restricted to tokens the final layer finds
plausible (probability at least β = 0.1 times its maximum).

Layer j means the residual stream after block j (`blocks.{j}.hook_resid_post`) read through the
model's own final norm and unembedding. At every step and for every prompt the premature layer
is the candidate whose next-token distribution is farthest from the final one in Jensen–Shannon
divergence. Candidates: a list of block indices, or "low" (every second block of the lower half,
from 0) or "high" (every second block of the upper half, below the last block), as in
Hugging Face's `dola_layers` (which counts the embedding output as layer 0, so its layer i is
our block i − 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import annotated_types
import torch
from jaxtyping import Float
from pydantic import BeforeValidator, Field
from torch import Tensor

from workbench.decoding.base import Decoder, DecoderRun, Prompts, StepScores
from workbench.decoding.contrast import implausible
from workbench.errors import InputError
from workbench.tensor_types import StepLogits
from workbench.typed_config import Fraction, NonNegativeInt, typed_config

if TYPE_CHECKING:
    from workbench.engine.lens import Hook, Lens

LayerLogits = Float[Tensor, "batch candidate vocab"]


def _split_list(value: object) -> object:
    """ "0,2,4" (a command line's form) is the list [0, 2, 4]; "low" / "high" stay as they are."""
    if isinstance(value, str) and re.fullmatch(r"[\d,\s]+", value):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Candidates = Annotated[
    Literal["low", "high"] | Annotated[tuple[NonNegativeInt, ...], annotated_types.MinLen(1)], BeforeValidator(_split_list)
]


def candidate_blocks(candidates: Sequence[int] | Literal["low", "high"], n_layers: int) -> list[int]:
    if candidates == "low":
        return list(range(0, max(n_layers // 2, 1), 2))
    if candidates == "high":
        return list(range(n_layers // 2, n_layers - 1, 2)) or [n_layers - 2]
    blocks = [int(block) for block in candidates]
    for block in blocks:
        if not 0 <= block < n_layers - 1:
            raise InputError(f"dola: candidate layer {block} out of range: premature layers are blocks 0..{n_layers - 2}")
    return blocks


def jensen_shannon(final: StepLogits, premature: LayerLogits) -> Float[Tensor, "batch candidate"]:
    """JS divergence (nats) between each row's final distribution and each candidate's."""
    log_p = final.float().log_softmax(dim=-1)[:, None]
    log_q = premature.float().log_softmax(dim=-1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    kl_p = (log_p.exp() * (log_p - log_m)).sum(dim=-1)
    kl_q = (log_q.exp() * (log_q - log_m)).sum(dim=-1)
    return 0.5 * (kl_p + kl_q)


@typed_config
class DoLa(Decoder):
    """DoLa: the final layer contrasted with the most divergent premature layer."""

    candidate_layers: Candidates = Field(
        default="low", description="Premature layer candidates: 'low', 'high' or block indices such as 0,2,4."
    )
    plausibility: Fraction = Field(default=0.1, description="Keep only tokens with p >= β·max p of the final layer.")

    name = "dola"

    def check(self, lens: Lens) -> None:
        if lens.n_layers < 2:
            raise InputError("dola: needs a model with at least 2 layers")
        candidate_blocks(self.candidate_layers, lens.n_layers)

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        self.check(lens)
        return _LayerContrastRun(lens, candidate_blocks(self.candidate_layers, lens.n_layers), self.plausibility)


class _LayerContrastRun(DecoderRun):
    """One row per prompt; hooks keep the last-position residual of every candidate block."""

    def __init__(self, lens: Lens, blocks: list[int], plausibility: float):
        self.lens, self.blocks, self.plausibility = lens, blocks, plausibility
        self.residuals: dict[int, list[torch.Tensor]] = {}

    def hooks(self) -> list[Hook]:
        """Fresh readers for one forward; a chunked prefill calls them once per row chunk."""
        self.residuals = {block: [] for block in self.blocks}

        def reader(block: int):
            def read(resid: torch.Tensor, hook: Any) -> None:
                self.residuals[block].append(resid[:, -1].detach())

            return read

        return [(self.lens.hook_name("resid_post", block), reader(block)) for block in self.blocks]

    def layer_logits(self) -> LayerLogits:
        """Next-token logits of every candidate block, from the residuals of the last forward."""
        hidden = torch.stack([torch.cat(self.residuals[block]) for block in self.blocks], dim=1)
        return self.lens.unembed(hidden)

    def score(self, logits: StepLogits) -> StepScores:
        premature_all = self.layer_logits()
        choice = jensen_shannon(logits, premature_all).argmax(dim=-1)
        premature = premature_all[torch.arange(len(choice)), choice]
        scores = logits.float().log_softmax(dim=-1) - premature.float().log_softmax(dim=-1)
        scores = scores.masked_fill(implausible(logits, self.plausibility), -math.inf)
        layer = torch.tensor(self.blocks, device=choice.device)[choice]
        return StepScores(scores=scores, full=logits, contrast=premature, extra={"premature_layer": layer})
