"""Exact PCS of one sequence: the true NLL change when each head alone is ablated.

Each head is one mask of the ΔNLL engine (`workbench.scores.engine`), so a head in layer l costs
only the network above its output projection, and heads of one layer share a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.engine.interventions import Hook
from workbench.engine.lens import Lens
from workbench.engine.masks import Head
from workbench.scores.ablation import Ablation
from workbench.scores.engine import sequence_nll
from workbench.scores.nll import TargetSequence
from workbench.tensor_types import HeadGrid


def exact_deltas(
    lens: Lens,
    sequence: TargetSequence,
    ablation: Ablation,
    heads: Sequence[Head] | None = None,
    *,
    max_rows: int = 64,
    hooks: Sequence[Hook] = (),
) -> HeadGrid:
    """`NLL(head ablated) − NLL(clean)` for `heads` (default all) as a float64 `[layer, head]`
    grid; heads not asked for are NaN. `hooks` act in every forward."""
    geometry = lens.geometry
    heads = geometry.all_heads() if heads is None else [geometry.check_head(*head) for head in heads]
    deltas = torch.full((geometry.n_layers, geometry.n_heads), float("nan"), dtype=torch.float64)
    if heads:
        masks = [ablation.together(lens, [head]) for head in heads]
        result = sequence_nll(lens, sequence, masks, max_rows=max_rows, hooks=hooks)
        deltas[[layer for layer, _ in heads], [head for _, head in heads]] = result.deltas
    return deltas
