"""Ranking heads by a score grid, deterministically, and the reference's default selection size."""

from __future__ import annotations

import torch

from workbench.engine.masks import Head
from workbench.errors import InputError
from workbench.tensor_types import HeadGrid

REFERENCE_TOP_PERCENT = 0.04  # the reference's default selection: 4 % of all heads


def ranked_heads(scores: HeadGrid) -> list[Head]:
    """All heads, highest score first; ties go to the lower layer, then the lower head."""
    grid = torch.as_tensor(scores, dtype=torch.float64)
    if torch.isnan(grid).any():
        raise InputError("head scores contain NaN")
    n_heads = grid.shape[1]
    # A stable sort keeps (layer, head) order among equal scores.
    order = torch.sort(-grid.flatten(), stable=True).indices.tolist()
    return [(index // n_heads, index % n_heads) for index in order]
