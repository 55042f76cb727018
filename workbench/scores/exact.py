"""The exact PCS engine: the true NLL change when each head is ablated, fast.

Per sequence, one clean forward records every block's input residual (`Lens.tail_context`).
The heads of layer l are then the rows of one batch that the tail runner starts at layer l from
the cached clean residual, so a head in layer l costs only layers >= l; logits are computed only
at the target positions. Rows are chunked (`max_rows`) to bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import torch

from workbench.lens import Lens
from workbench.masks import Head
from workbench.scores.ablation import Ablation
from workbench.scores.nll import TargetSequence, mean_nll
from workbench.tensor_types import HeadGrid


def exact_deltas(
    lens: Lens,
    sequence: TargetSequence,
    ablation: Ablation,
    heads: Sequence[Head] | None = None,
    *,
    max_rows: int = 64,
) -> HeadGrid:
    """`NLL(head ablated) − NLL(clean)` for `heads` (default all) as a float64 `[layer, head]`
    grid; heads not asked for are NaN."""
    geometry = lens.geometry
    heads = geometry.all_heads() if heads is None else sorted(geometry.check_head(*head) for head in heads)
    context = lens.tail_context(list(sequence.ids))
    clean = mean_nll(context.logits[:, sequence.positions.to(context.logits.device)], sequence.targets)[0]
    deltas = torch.full((geometry.n_layers, geometry.n_heads), float("nan"), dtype=torch.float64)
    for layer, layer_heads in groupby(heads, key=lambda head: head[0]):
        layer_heads = list(layer_heads)
        for start in range(0, len(layer_heads), max_rows):
            chunk = layer_heads[start : start + max_rows]
            logits = lens.run_tail(
                context,
                layer,
                rows=len(chunk),
                mask=ablation.one_head_per_row(lens, chunk),
                positions=sequence.positions.to(lens.device),
            )
            ablated = mean_nll(logits, sequence.targets).cpu()
            deltas[layer, [head for _, head in chunk]] = ablated - clean.cpu()
    return deltas
