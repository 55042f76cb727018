"""How a head is ablated while scoring: the reference activation and the site of the mask.

- `zero`: the head's output `z` is replaced by 0 (the paper's definition).
- `mean`: `z` is replaced by its mean over a reference set of sequences (per layer and head).
- `resid-slice`: the authors' discovery code; it zeroes the `d_model / n_heads`-wide slice `h`
  of the attention block's output after the output projection, i.e. residual coordinates,
  not the head. Offered only to reproduce their rankings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from workbench.checkpoint import digest
from workbench.engine.lens import Lens
from workbench.engine.masks import Head, HeadMask, Site
from workbench.errors import InputError
from workbench.tensor_types import HeadReference

AblationKind = Literal["zero", "mean", "resid-slice"]
ABLATIONS: tuple[str, ...] = get_args(AblationKind)


@dataclass(frozen=True)
class Ablation:
    name: str
    z_ref: HeadReference | None = None
    reference_digest: str | None = None  # `mean`: which sequences `z_ref` averages over

    @property
    def site(self) -> Site:
        return "resid-slice" if self.name == "resid-slice" else "head-output"

    def together(self, lens: Lens, heads: Sequence[Head]) -> HeadMask:
        return HeadMask.ablate(lens.geometry, heads, z_ref=self.z_ref, site=self.site)


def make_ablation(lens: Lens, name: str, reference: Sequence[Sequence[int]] = ()) -> Ablation:
    """The ablation `name`; `mean` averages `z` over the `reference` token sequences."""
    if name not in ABLATIONS:
        raise InputError(f"unknown ablation {name!r}; choose one of {', '.join(ABLATIONS)}")
    if name != "mean":
        return Ablation(name)
    if not reference:
        raise InputError("mean ablation needs at least one reference sequence")
    return Ablation(name, lens.mean_head_outputs(reference), digest([list(r) for r in reference]))
