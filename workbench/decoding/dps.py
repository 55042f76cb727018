"""Differential Preference Steering: contrast the full model with itself minus its preference heads.

Each prompt gets a *personalized* row (the full model) and a *generic* row (the preference heads
suppressed) in the same batch; the generic row's head mask is active over the whole context,
prefill included. Next-token scores are `(1 + γ)·l_pref − γ·l_gen` (see `contrast.py`).

Suppression of head (l, h) with weight w at the head output `z`:

- `weighted` (the paper): `z' = z_ref + (1 − w)·(z − z_ref)`, `z_ref` zero unless given;
- `zero`: every head with w > 0 is zeroed;
- `mean`: every head with w > 0 is replaced by its mean output `z_ref` (given, or the mean over
  all positions of the prompts of this `generate` call).

Reference-compatible options (the authors' code, see research/reference_dps.md §3.1):

- `site="query-scale"` scales the head's *query* by `1 − w` (s = 0 gives uniform attention,
  i.e. the mean of the values, not zero);
- `shared_prefill=True`: the generic row reuses the *unmasked* prompt cache. We prefill every
  prompt but its last token once, unmasked, copy that cache to the generic rows, and feed the
  last prompt token to both rows with the mask on, exactly the authors' procedure (their loop
  also re-fed the last prompt token); the personalized row is unchanged by this split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from workbench.decoding.base import Decoder, DecoderRun, Prompts, StepScores, split_groups
from workbench.decoding.contrast import Combine, ContrastRule, Gamma
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.lens import Lens
from workbench.masks import HeadMask, Site
from workbench.tensor_types import HeadGrid, HeadReference, StepLogits

Suppression = Literal["weighted", "zero", "mean"]
SUPPRESSIONS = ("weighted", "zero", "mean")
DPS_SITES = ("head-output", "query-scale")


@dataclass(frozen=True)
class DPS(Decoder):
    weights: HeadWeights | HeadGrid
    gamma: Gamma = 1.0
    gamma_cap: float | None = None
    normalize_entropy: bool = False
    combine: Combine = "logits"
    plausibility: float | None = None
    suppression: Suppression = "weighted"
    z_ref: HeadReference | None = None
    shared_prefill: bool = False
    site: Site = "head-output"

    name = "dps"

    def __post_init__(self) -> None:
        if not isinstance(self.weights, HeadWeights):
            object.__setattr__(self, "weights", HeadWeights(self.weights))
        if self.suppression not in SUPPRESSIONS:
            raise InputError(f"{self.name}: suppression must be one of {', '.join(SUPPRESSIONS)}, got {self.suppression!r}")
        if self.site not in DPS_SITES:
            raise InputError(f"{self.name}: site must be one of {', '.join(DPS_SITES)}, got {self.site!r}")
        if self.site == "query-scale" and (self.suppression == "mean" or self.z_ref is not None):
            raise InputError(
                f"{self.name}: query-scale masking has no reference activation; use suppression 'weighted' or 'zero'"
            )
        if self.suppression == "zero" and self.z_ref is not None:
            raise InputError(f"{self.name}: zero suppression takes no z_ref; use suppression 'mean' or 'weighted'")
        if not (self.weights.weights > 0).any():
            raise InputError(f"{self.name}: the head weights select no head (all weights are 0)")
        self.rule()  # validates γ, its cap, the combination and β

    def rule(self) -> ContrastRule:
        return ContrastRule(self.gamma, self.gamma_cap, self.normalize_entropy, self.combine, self.plausibility, owner=self.name)

    def generic_mask(self, lens: Lens, prompts: Prompts) -> HeadMask:
        """The single-row mask of the generic pass."""
        self.weights.check(lens.geometry)
        w = self.weights.weights
        scale = 1 - w if self.suppression == "weighted" else (w <= 0).float()
        z_ref = self.z_ref
        if z_ref is not None:
            z_ref = torch.as_tensor(z_ref, dtype=torch.float32)
            expected = (lens.geometry.n_layers, lens.geometry.n_heads, lens.geometry.d_head)
            if tuple(z_ref.shape) != expected:
                raise InputError(f"{self.name}: z_ref has shape {tuple(z_ref.shape)} but the model needs {expected}")
        elif self.suppression == "mean":
            z_ref = lens.mean_head_outputs(prompts)
        try:
            return HeadMask(scale[None], z_ref, self.site)
        except ValueError as error:
            raise InputError(f"{self.name}: {error}") from None

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        generic = self.generic_mask(lens, prompts)
        identity = HeadMask(torch.ones_like(generic.scale), generic.z_ref, generic.site)
        return _SelfContrastRun(self.rule(), [identity, generic], self.shared_prefill)


class _SelfContrastRun(DecoderRun):
    """Two rows per prompt, the same tokens: group 0 with the full model, group 1 masked."""

    groups = 2

    def __init__(self, rule: ContrastRule, masks: list[HeadMask], shared_prefill: bool):
        self.rule, self.masks, self.shared_prefill = rule, masks, shared_prefill

    def rows(self, prompts, contrasts):
        return list(prompts) * 2

    def group_masks(self) -> list[HeadMask]:
        return self.masks

    def score(self, logits: StepLogits) -> StepScores:
        full, generic = split_groups(logits, 2)
        scores, gamma = self.rule(full, generic)
        return StepScores(scores=scores, full=full, contrast=generic, gamma=gamma)


@dataclass(frozen=True)
class Suppressed(Decoder):
    """Decode with the heads suppressed and no contrast: DPS's generic pass on its own (the
    authors' "masked heads" baselines)."""

    weights: HeadWeights | HeadGrid
    suppression: Suppression = "weighted"
    z_ref: HeadReference | None = None
    site: Site = "head-output"

    name = "suppressed"

    def __post_init__(self) -> None:
        self.as_dps()  # validates

    def as_dps(self) -> DPS:
        return DPS(self.weights, suppression=self.suppression, z_ref=self.z_ref, site=self.site)

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        return _MaskedRun(self.as_dps().generic_mask(lens, prompts))


class _MaskedRun(DecoderRun):
    def __init__(self, mask: HeadMask):
        self.mask = mask

    def group_masks(self) -> list[HeadMask]:
        return [self.mask]

    def score(self, logits: StepLogits) -> StepScores:
        return StepScores(scores=logits, full=logits)
