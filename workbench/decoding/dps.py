"""Differential Preference Steering: contrast the full model with itself minus its preference heads.

Each prompt gets a *personalized* row (the full model) and a *generic* row (the preference heads
suppressed) in the same batch; by default the generic row's head mask is active over the whole
context, prefill included. Next-token scores are `(1 + γ)·l_pref − γ·l_gen` (`Contrast`).

How the generic pass suppresses head (l, h) of weight w (`Suppression`):

- `weighted` (the paper): `z' = z_ref + (1 − w)·(z − z_ref)` at the head output, `z_ref` zero
  unless given;
- `zero`: every head with w > 0 is zeroed;
- `mean`: every head with w > 0 is replaced by its mean output `z_ref` (given, or the mean over
  all positions of the prompts of this `generate` call).

Two options reproduce the authors' code (docs/authors_procedure.md):

- `site="query-scale"` scales the head's *query* by `1 − w` (s = 0 gives uniform attention,
  i.e. the mean of the values, not zero);
- `prefill="shared"`: the generic row reuses the *unmasked* prompt cache. We prefill every
  prompt but its last token once, unmasked, copy that cache to the generic rows, and feed the
  last prompt token to both rows with the mask on, as their loop does (it also re-feeds the last
  prompt token); the personalized row is unchanged by this split.

`RandomHeads` (the control: the same budget on other heads), `Suppressed` (the generic pass
alone) and DeCoRe (`decore.py`) reuse these pieces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import torch
from pydantic import AfterValidator, BeforeValidator, Field

from workbench.decoding.base import Decoder, DecoderRun, Prompts, StepScores, split_groups
from workbench.decoding.contrast import Contrast
from workbench.engine.masks import HeadMask
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.tensor_types import StepLogits
from workbench.typed_config import PYTHON_ONLY, NonNegativeInt, typed_config

if TYPE_CHECKING:
    from workbench.engine.lens import Lens


def _as_head_weights(value: object) -> object:
    """A `[layer, head]` grid (tensor or nested list) is taken as head weights."""
    if value is None or isinstance(value, HeadWeights):
        return value
    return HeadWeights(torch.as_tensor(value))


def _selects_a_head(value: HeadWeights | None) -> HeadWeights | None:
    if value is not None and not (value.weights > 0).any():
        raise ValueError("the head weights select no head (all weights are 0)")
    return value


Heads = Annotated[
    HeadWeights | None, BeforeValidator(_as_head_weights), AfterValidator(_selects_a_head), Field(json_schema_extra=PYTHON_ONLY)
]
HEADS_HELP = "Head weights in [0, 1] (a HeadWeights or a [layer, head] grid); --heads FILE on the command line."


@typed_config
class Suppression:
    """How the generic pass suppresses the heads (see the module docstring)."""

    suppression: Literal["weighted", "zero", "mean"] = Field(
        default="weighted",
        description="weighted: scale each head by 1 - w; zero / mean: replace heads with w > 0 by 0 / their mean.",
    )
    site: Literal["head-output", "query-scale"] = Field(
        default="head-output", description="Where: the head's output (the paper), or its query (the authors' code)."
    )
    z_ref: torch.Tensor | None = Field(
        default=None,
        json_schema_extra=PYTHON_ONLY,
        description="Reference activation [layer, head, d_head] (mean suppression's).",
    )

    def __post_init__(self) -> None:
        if self.site == "query-scale" and (self.suppression == "mean" or self.z_ref is not None):
            raise InputError("query-scale masking has no reference activation; use suppression 'weighted' or 'zero'")
        if self.suppression == "zero" and self.z_ref is not None:
            raise InputError("zero suppression takes no z_ref; use suppression 'mean' or 'weighted'")

    def check(self, lens: Lens, heads: HeadWeights | None, owner: str) -> HeadWeights:
        if heads is None:
            raise InputError(f"{owner}: needs head weights (heads=..., or --heads FILE)")
        heads.check(lens.geometry)
        if self.z_ref is not None:
            expected = (lens.geometry.n_layers, lens.geometry.n_heads, lens.geometry.d_head)
            if tuple(self.z_ref.shape) != expected:
                raise InputError(f"{owner}: z_ref has shape {tuple(self.z_ref.shape)} but the model needs {expected}")
        return heads

    def mask(self, lens: Lens, heads: HeadWeights, prompts: Prompts) -> HeadMask:
        """The single-row mask of the generic pass."""
        w = heads.weights
        scale = 1 - w if self.suppression == "weighted" else (w <= 0).float()
        z_ref = self.z_ref
        if z_ref is not None:
            z_ref = z_ref.float()
        elif self.suppression == "mean":
            z_ref = lens.mean_head_outputs(prompts)
        return HeadMask(scale[None], z_ref, self.site)


@typed_config
class DPS(Decoder):
    """Differential Preference Steering: the full model contrasted with its preference heads suppressed."""

    heads: Heads = Field(default=None, description=HEADS_HELP)
    contrast: Contrast = Field(default_factory=Contrast)
    generic: Suppression = Field(default_factory=Suppression)
    prefill: Literal["masked", "shared"] = Field(
        default="masked",
        description="masked: the generic pass is masked over the whole prompt; shared: it reuses the unmasked prompt cache (the authors').",
    )

    name = "dps"

    def check(self, lens: Lens) -> None:
        self.generic.check(lens, self.heads, self.name)

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        heads = self.generic.check(lens, self.heads, self.name)
        generic = self.generic.mask(lens, heads, prompts)
        identity = HeadMask(torch.ones_like(generic.scale), generic.z_ref, generic.site)
        return SelfContrastRun(self.contrast, [identity, generic], self.prefill == "shared")


class SelfContrastRun(DecoderRun):
    """Two rows per prompt, the same tokens: group 0 with the full model, group 1 masked."""

    groups = 2

    def __init__(self, contrast: Contrast, masks: list[HeadMask], shared_prefill: bool):
        self.contrast, self.masks, self.shared_prefill = contrast, masks, shared_prefill

    def rows(self, prompts, contrasts):
        return list(prompts) * 2

    def group_masks(self) -> list[HeadMask]:
        return self.masks

    def score(self, logits: StepLogits) -> StepScores:
        full, generic = split_groups(logits, 2)
        scores, gamma = self.contrast(full, generic)
        return StepScores(scores=scores, full=full, contrast=generic, gamma=gamma)


@typed_config
class RandomHeads(DPS):
    """DPS with a control head set of the same budget: `random-heads` (as many random heads as
    `heads` selects, weight 1), `shuffled` (the same weights on permuted heads) or `random-mask`
    (weight 1 on as many random heads)."""

    control: Literal["random-heads", "shuffled", "random-mask"] = Field(
        default="random-heads", description="Which control head set replaces the given heads (same budget)."
    )
    control_seed: NonNegativeInt = Field(default=0, description="Seed of the control's random draw.")

    name = "random-heads"

    def control_heads(self, lens: Lens) -> HeadWeights:
        heads = self.generic.check(lens, self.heads, self.name)
        if self.control == "shuffled":
            return heads.shuffled(seed=self.control_seed)
        if self.control == "random-mask":
            return heads.random_mask(seed=self.control_seed)
        return HeadWeights.random_heads(lens.geometry, len(heads.heads()), seed=self.control_seed)

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        as_dps = DPS(self.control_heads(lens), contrast=self.contrast, generic=self.generic, prefill=self.prefill)
        return as_dps.prepare(lens, prompts, contrast_prompts)


@typed_config
class Suppressed(Decoder):
    """Decode with the heads suppressed and no contrast: DPS's generic pass on its own (the
    authors' "masked heads" baselines)."""

    heads: Heads = Field(default=None, description=HEADS_HELP)
    generic: Suppression = Field(default_factory=Suppression)

    name = "suppressed"

    def check(self, lens: Lens) -> None:
        self.generic.check(lens, self.heads, self.name)

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        return _MaskedRun(self.generic.mask(lens, self.generic.check(lens, self.heads, self.name), prompts))


class _MaskedRun(DecoderRun):
    def __init__(self, mask: HeadMask):
        self.mask = mask

    def group_masks(self) -> list[HeadMask]:
        return [self.mask]

    def score(self, logits: StepLogits) -> StepScores:
        return StepScores(scores=logits, full=logits)
