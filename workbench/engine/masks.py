"""Head masks: what an intervention does to each attention head, row by row.

A `HeadMask` holds `scale[row, layer, head]` (one row broadcasts over the batch) and an optional
reference activation `z_ref[layer, head, d_head]`, or one per position `z_ref[layer, pos, head,
d_head]` (resample ablation: another sequence's outputs; it fits only a full forward of a sequence
of exactly `pos` tokens). At the head's output (`hook_z`, the input of
the output projection) the lens computes

    z' = z_ref + scale · (z − z_ref)

so zero ablation is `z_ref = 0, scale = 0`, mean ablation uses the mean activation as `z_ref`,
and weighted suppression (DPS) is `scale = 1 − w`. Every row carries its own mask, so one batch
can ablate a different head in each row.

Two further *sites* reproduce the authors' reference code; neither is a head ablation:

- `query-scale` multiplies the head's query by `scale` (0 gives uniform attention over the causal
  window, i.e. the head outputs the mean value vector, not nothing).
- `resid-slice` multiplies the `d_model / n_heads`-wide slice `h` of the attention block's output
  (after the output projection has mixed all heads), i.e. it zeroes residual-stream coordinates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from workbench.errors import InputError
from workbench.tensor_types import HeadGrid, HeadReference, HeadScale, PositionalHeadReference

Site = Literal["head-output", "query-scale", "resid-slice"]
SITES: tuple[str, ...] = ("head-output", "query-scale", "resid-slice")
Head = tuple[int, int]


@dataclass(frozen=True)
class HeadGeometry:
    """The attention-head layout of a model."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    n_ctx: int
    d_vocab: int

    @property
    def n_total_heads(self) -> int:
        return self.n_layers * self.n_heads

    def all_heads(self) -> list[Head]:
        return [(layer, head) for layer in range(self.n_layers) for head in range(self.n_heads)]

    def check_head(self, layer: int, head: int) -> Head:
        if not (0 <= int(layer) < self.n_layers and 0 <= int(head) < self.n_heads):
            raise InputError(
                f"head ({layer}, {head}) out of range: the model has {self.n_layers} layers "
                f"x {self.n_heads} heads (indices from 0)"
            )
        return int(layer), int(head)

    def check_grid(self, grid: torch.Tensor, what: str = "head grid") -> None:
        if tuple(grid.shape) != (self.n_layers, self.n_heads):
            raise InputError(
                f"{what} has shape {tuple(grid.shape)} but the model has {self.n_layers} layers x {self.n_heads} heads"
            )


@dataclass(frozen=True)
class HeadMask:
    """Per-row scales on every head, an optional reference activation, and the site they act on."""

    scale: HeadScale
    z_ref: HeadReference | PositionalHeadReference | None = None
    site: Site = "head-output"

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise InputError(f"unknown intervention site {self.site!r}; choose one of {', '.join(SITES)}")
        if self.scale.ndim != 3:
            raise InputError(f"head mask scale must be [rows, layer, head], got shape {tuple(self.scale.shape)}")
        if not torch.isfinite(self.scale).all():
            raise InputError("head mask scale contains NaN or infinite values")
        if (self.scale < 0).any():
            raise InputError(f"head mask scale must be >= 0, found {self.scale.min().item():g}")
        if self.z_ref is not None:
            if self.site != "head-output":
                raise InputError(f"a reference activation z_ref only applies at the head output, not {self.site!r}")
            layers, heads = self.scale.shape[1], self.scale.shape[2]
            if not (self.z_ref.ndim in (3, 4) and self.z_ref.shape[0] == layers and self.z_ref.shape[-2] == heads):
                raise InputError(
                    f"z_ref must be [layer, head, d_head] or [layer, pos, head, d_head] with {layers} layers and "
                    f"{heads} heads, got {tuple(self.z_ref.shape)}"
                )
            if not torch.isfinite(self.z_ref).all():
                raise InputError("z_ref contains NaN or infinite values")

    @property
    def rows(self) -> int:
        return self.scale.shape[0]

    def check(self, geometry: HeadGeometry) -> None:
        """Raise if this mask was built for another head layout."""
        if tuple(self.scale.shape[1:]) != (geometry.n_layers, geometry.n_heads):
            raise InputError(
                f"head mask is for {self.scale.shape[1]} layers x {self.scale.shape[2]} heads but the "
                f"model has {geometry.n_layers} x {geometry.n_heads}"
            )
        if self.z_ref is not None and self.z_ref.shape[-1] != geometry.d_head:
            raise InputError(f"z_ref has d_head {self.z_ref.shape[-1]} but the model has {geometry.d_head}")
        if self.site == "resid-slice" and geometry.d_model % geometry.n_heads:
            raise InputError(f"resid-slice needs d_model ({geometry.d_model}) divisible by n_heads ({geometry.n_heads})")

    def take(self, start: int, stop: int) -> HeadMask:
        """Rows `start:stop` (a one-row mask applies to every row and is returned as is)."""
        return self if self.rows == 1 else HeadMask(self.scale[start:stop], self.z_ref, self.site)

    def active_layers(self) -> list[int]:
        """Layers where some row changes some head (scale != 1); other layers need no hook."""
        return torch.nonzero((self.scale != 1).any(dim=0).any(dim=1)).flatten().tolist()

    # --- constructors -----------------------------------------------------------------------

    @classmethod
    def identity(cls, geometry: HeadGeometry, rows: int = 1) -> HeadMask:
        return cls(torch.ones(rows, geometry.n_layers, geometry.n_heads))

    @classmethod
    def ablate(
        cls,
        geometry: HeadGeometry,
        heads: Iterable[Head],
        *,
        z_ref: HeadReference | PositionalHeadReference | None = None,
        site: Site = "head-output",
        keep: float = 0.0,
    ) -> HeadMask:
        """One row that ablates all `heads` together (zero, or mean when `z_ref` is given); `keep`
        is the factor left on each (0: removed, 1 − α: scaled down by α)."""
        scale = torch.ones(1, geometry.n_layers, geometry.n_heads)
        for layer, head in heads:
            layer, head = geometry.check_head(layer, head)
            scale[0, layer, head] = keep
        return cls(scale, z_ref, site)

    @classmethod
    def one_head_per_row(
        cls,
        geometry: HeadGeometry,
        heads: Sequence[Head],
        *,
        z_ref: HeadReference | None = None,
        site: Site = "head-output",
    ) -> HeadMask:
        """Row i ablates `heads[i]` only: the batch form of a per-head ablation scan."""
        if len(heads) == 0:
            raise InputError("one_head_per_row needs at least one head")
        scale = torch.ones(len(heads), geometry.n_layers, geometry.n_heads)
        for row, (layer, head) in enumerate(heads):
            layer, head = geometry.check_head(layer, head)
            scale[row, layer, head] = 0.0
        return cls(scale, z_ref, site)

    @classmethod
    def weighted(
        cls,
        weights: HeadGrid,
        *,
        z_ref: HeadReference | None = None,
        site: Site = "head-output",
    ) -> HeadMask:
        """Suppress each head in proportion to its weight: `scale = 1 − w`, `w` in [0, 1]."""
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.ndim != 2:
            raise InputError(f"head weights must be [layer, head], got shape {tuple(weights.shape)}")
        if not torch.isfinite(weights).all():
            raise InputError("head weights contain NaN or infinite values")
        if (weights < 0).any() or (weights > 1).any():
            raise InputError(
                f"head weights must lie in [0, 1] to be used as suppression, found "
                f"[{weights.min().item():g}, {weights.max().item():g}]"
            )
        return cls((1.0 - weights)[None], z_ref, site)

    @staticmethod
    def stack(masks: Sequence[HeadMask]) -> HeadMask:
        """Concatenate the rows of masks that share a site and reference activation."""
        first = masks[0]
        for other in masks[1:]:
            same_ref = (first.z_ref is None and other.z_ref is None) or (
                first.z_ref is not None and other.z_ref is not None and torch.equal(first.z_ref, other.z_ref)
            )
            if other.site != first.site or not same_ref:
                raise InputError("only masks with the same site and reference activation can be stacked")
        return HeadMask(torch.cat([m.scale for m in masks]), first.z_ref, first.site)
