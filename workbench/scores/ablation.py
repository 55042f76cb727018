"""How a head is ablated while scoring: the reference activation and the site of the mask.

- `zero`: the head's output `z` is replaced by 0 (the paper's definition).
- `mean`: `z` is replaced by its mean over a reference set of sequences (per layer and head).
- `resid-slice`: the authors' discovery code; it zeroes the `d_model / n_heads`-wide slice `h`
  of the attention block's output after the output projection, i.e. residual coordinates,
  not the head. Offered only to reproduce their rankings.

`workbench audit` compares these with further kinds (`workbench.experiments.audit`), built here too:

- `resample`: `z` at every position is replaced by another sequence's `z` at the same position
  (`resampled_outputs`: a per-position reference activation).
- `query-zero`: the head's query is zeroed (the authors' DPS mask at full strength): its attention
  becomes uniform over the causal window, so it outputs the running mean of its values, not 0.
- `scaled`: `z` is multiplied by `keep = 1 − α` (zero ablation is α = 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from workbench.checkpoint import digest
from workbench.engine.lens import Lens
from workbench.engine.masks import Head, HeadMask, Site
from workbench.errors import InputError
from workbench.tensor_types import HeadReference, PositionalHeadReference

AblationKind = Literal["zero", "mean", "resid-slice"]
ABLATIONS: tuple[str, ...] = get_args(AblationKind)


SITE_OF = {"resid-slice": "resid-slice", "query-zero": "query-scale"}  # other kinds act at the head output


@dataclass(frozen=True)
class Ablation:
    name: str
    z_ref: HeadReference | PositionalHeadReference | None = None
    reference_digest: str | None = None  # `mean`: which sequences `z_ref` averages over
    keep: float = 0.0  # the factor s left on an ablated head (`scaled`: 1 − α)

    @property
    def site(self) -> Site:
        return SITE_OF.get(self.name, "head-output")  # type: ignore[return-value]

    def together(self, lens: Lens, heads: Sequence[Head]) -> HeadMask:
        return HeadMask.ablate(lens.geometry, heads, z_ref=self.z_ref, site=self.site, keep=self.keep)


def make_ablation(lens: Lens, name: str, reference: Sequence[Sequence[int]] = ()) -> Ablation:
    """The ablation `name`; `mean` averages `z` over the `reference` token sequences."""
    if name not in ABLATIONS:
        raise InputError(f"unknown ablation {name!r}; choose one of {', '.join(ABLATIONS)}")
    if name != "mean":
        return Ablation(name)
    if not reference:
        raise InputError("mean ablation needs at least one reference sequence")
    return Ablation(name, lens.mean_head_outputs(reference), digest([list(r) for r in reference]))


def resampled_outputs(lens: Lens, donor: Sequence[int], length: int) -> PositionalHeadReference:
    """Every head's `z` in a clean run of `donor`, as the reference of a sequence of `length`
    tokens: position p takes the donor's `z` at p; positions past the donor's end take the mean of
    the donor's `z` over its positions. `[layer, length, head, d_head]`."""
    if not donor or length < 1:
        raise InputError("resample ablation needs a non-empty donor sequence and recipient")
    _, z = lens.capture(list(donor))  # [1, pos, layer, head, d_head]
    z = z[0]
    if z.shape[0] < length:
        z = torch.cat([z, z.mean(dim=0, keepdim=True).expand(length - z.shape[0], -1, -1, -1)])
    return z[:length].permute(1, 0, 2, 3).contiguous()
