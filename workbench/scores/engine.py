"""The ΔNLL engine: the NLL of a sequence's target tokens, clean and with each of many head masks.

Every ablation measurement of the workbench (exact PCS, the validation study, interactive
studies, the profile effect) is this one computation. Per sequence, one clean forward records
every block's input residual and per-head outputs `z` (`Lens.tail_context`). A mask then runs
from its own lowest active layer l (`Lens.run_tail_at`): below l it changes nothing, and at l it
changes only `z` (head-output and residual-slice masks leave the attention pattern alone), so
block l reruns only its output projection and MLP from the recorded `z`; blocks above l rerun in
full, except the last, whose MLP and unembedding run only at the target positions. Masks that
start at the same layer are the rows of one batch (chunks of `max_rows`); a mask that changes
nothing is the clean pass itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import InputError
from workbench.lens import Lens
from workbench.masks import HeadMask
from workbench.scores.nll import TargetSequence, token_nll


@dataclass(frozen=True)
class SequenceNLL:
    """Per-token NLL (float64, nats) of one sequence's target: clean, and with each mask."""

    clean: Float[Tensor, " target"]
    masked: Float[Tensor, "mask target"]

    @property
    def clean_mean(self) -> float:
        return float(self.clean.mean())

    @property
    def masked_mean(self) -> Float[Tensor, " mask"]:
        return self.masked.mean(dim=1)

    @property
    def deltas(self) -> Float[Tensor, " mask"]:
        """Mean NLL with each mask minus the clean mean NLL."""
        return self.masked_mean - self.clean.mean()


def sequence_nll(lens: Lens, sequence: TargetSequence, masks: Sequence[HeadMask] = (), *, max_rows: int = 64) -> SequenceNLL:
    """Clean per-token NLL of `sequence`'s target and the same with each one-row mask applied
    (the masks share a site and reference activation, as `HeadMask.stack` requires)."""
    if max_rows < 1:
        raise InputError(f"max_rows must be at least 1, got {max_rows}")
    starts = []
    for mask in masks:
        mask.check(lens.geometry)
        if mask.rows != 1:
            raise InputError(f"the NLL engine takes one-row masks, got one with {mask.rows} rows")
        active = mask.active_layers()
        starts.append(active[0] if active else None)
    reuse_z = all(mask.site != "query-scale" for mask in masks)
    recorded: dict[int, torch.Tensor] = {}
    record_layers = sorted({start for start in starts if start is not None}) if reuse_z else []
    with lens.intervene(None, [(lens.hook_name("z", layer), _recorder(recorded, layer)) for layer in record_layers]):
        context = lens.tail_context(list(sequence.ids))
    positions = sequence.positions.to(lens.device)
    clean = token_nll(context.logits[:, positions], sequence.targets)[0].cpu()
    masked = clean.expand(len(masks), -1).clone()
    pending = sorted((start, index) for index, start in enumerate(starts) if start is not None)
    for start, group in groupby(pending, key=lambda item: item[0]):
        indices = [index for _, index in group]
        for begin in range(0, len(indices), max_rows):
            chunk = indices[begin : begin + max_rows]
            logits = lens.run_tail_at(
                context,
                start,
                positions,
                rows=len(chunk),
                mask=HeadMask.stack([masks[index] for index in chunk]),
                head_outputs=recorded.get(start),
            )
            masked[chunk] = token_nll(logits, sequence.targets).cpu()
    return SequenceNLL(clean, masked)


def _recorder(store: dict[int, torch.Tensor], layer: int) -> Callable[..., None]:
    def record(z: torch.Tensor, hook: Any) -> None:
        store[layer] = z.detach()

    return record
