"""The ΔNLL engine: the NLL of a sequence's target tokens, clean and with each of many head masks.

Every ablation measurement of the workbench (exact PCS, the validation study, interactive
studies, the profile effect) is this one computation. Per sequence, one clean forward records
every block's input residual and per-head outputs `z` (`Lens.tail_context`). A mask then runs
from its own lowest active layer l (a `Restart` of `Lens.run`): below l it changes nothing, and at l it
changes only `z` (head-output and residual-slice masks leave the attention pattern alone), so
block l reruns only its output projection and MLP from the recorded `z`; blocks above l rerun in
full, and the unembedding runs only at the target positions. Masks that
start at the same layer are the rows of one batch (chunks of `max_rows`); a mask that changes
nothing is the clean pass itself. Where the lens's fast path serves the caller's hooks, the clean
forward and the restarts all run there (SDPA attention, `workbench.engine.tail`), so that a
score is the difference of two runs of one implementation.
`masked_logits` is this computation up to the logits (what `sequence_nll` reduces to NLL, and
what the DPS decoding trace reads its passes from).

`MaskedNLL` is the same computation for one mask after another (the studio's clicks): the clean
forward runs once, and a mask that differs from the previous one only from layer d up restarts
from the previous run's residual entering block d, so a click costs the layers above it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.engine.interventions import Hook, Recording
from workbench.engine.lens import Lens
from workbench.engine.masks import HeadMask
from workbench.engine.tail import Restart
from workbench.errors import InputError
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


def sequence_nll(
    lens: Lens, sequence: TargetSequence, masks: Sequence[HeadMask] = (), *, max_rows: int = 64, hooks: Sequence[Hook] = ()
) -> SequenceNLL:
    """Clean per-token NLL of `sequence`'s target and the same with each one-row mask applied
    (the masks share a site and reference activation, as `HeadMask.stack` requires). `hooks` act in
    the clean forward and every masked one."""
    chunks = masked_logits(lens, sequence.ids, sequence.positions, masks, max_rows=max_rows, hooks=hooks)
    _, clean_logits = next(chunks)
    clean = token_nll(clean_logits, sequence.targets)[0].cpu()
    masked = clean.expand(len(masks), -1).clone()
    for chunk, logits in chunks:
        masked[chunk] = token_nll(logits, sequence.targets).cpu()
    return SequenceNLL(clean, masked)


def masked_logits(
    lens: Lens,
    ids: Sequence[int],
    positions: Int[Tensor, " kept"],
    masks: Sequence[HeadMask] = (),
    *,
    max_rows: int = 64,
    hooks: Sequence[Hook] = (),
) -> Iterator[tuple[list[int], Float[Tensor, "rows kept vocab"]]]:
    """The logits of `ids` at `positions`: first `([], clean logits)` (one row), then
    `(indices, logits)` for chunks of the one-row masks, each row restarted at its mask's lowest
    active layer. A mask that changes nothing is not run (its logits are the clean ones)."""
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
    record_layers = sorted({start for start in starts if start is not None}) if reuse_z else []
    recording = Recording([lens.hook_name("z", layer) for layer in record_layers])
    clean_hooks = [*hooks, *recording.hooks]
    context = lens.tail_context(list(ids), hooks=clean_hooks, fast=lens.fast_path_refusal(None, clean_hooks) is None)
    positions = positions.to(lens.device)
    yield [], context.logits[:, positions]
    pending = sorted((start, index) for index, start in enumerate(starts) if start is not None)
    for start, group in groupby(pending, key=lambda item: item[0]):
        indices = [index for _, index in group]
        head_outputs = recording[lens.hook_name("z", start)] if reuse_z else None
        for begin in range(0, len(indices), max_rows):
            chunk = indices[begin : begin + max_rows]
            restart = Restart(context, start, rows=len(chunk), head_outputs=head_outputs)
            chunk_mask = HeadMask.stack([masks[index] for index in chunk])
            yield chunk, lens.run(start=restart, mask=chunk_mask, hooks=hooks, positions=positions).logits


class MaskedNLL:
    """Per-token NLL of one sequence's target, clean and under one one-row mask after another. The
    clean forward runs once (its logits kept at the target positions only); each mask restarts at
    its lowest active layer, or where it first differs from the previous mask, from the residual
    the previous masked run fed that block. `hooks` act in every forward."""

    def __init__(self, lens: Lens, sequence: TargetSequence, *, hooks: Sequence[Hook] = ()):
        self.lens, self.sequence, self.hooks = lens, sequence, tuple(hooks)
        context = lens.tail_context(list(sequence.ids), hooks=self.hooks, fast=lens.fast_path_refusal(None, self.hooks) is None)
        self.context = replace(context, logits=context.logits[:, sequence.positions.to(context.logits.device)])
        self.clean = token_nll(self.context.logits, sequence.targets)[0].cpu()
        self._last: tuple[HeadMask, dict[int, torch.Tensor], Tensor] | None = None  # mask, block inputs by layer, NLL

    @property
    def nbytes(self) -> int:
        """Memory held by the recorded clean run and the last masked run (tensors counted once)."""
        held = [self.context.residuals, self.context.block_kwargs, self.context.logits, self._last[1] if self._last else {}]
        unique = {id(t): t for t in _tensors(held)}
        return sum(t.nelement() * t.element_size() for t in unique.values())

    def masked(self, mask: HeadMask | None) -> Float[Tensor, " target"]:
        """The per-token NLL with `mask` (one row) active."""
        if mask is None or not mask.active_layers():
            return self.clean
        mask.check(self.lens.geometry)
        start, residual, inherited = mask.active_layers()[0], None, {}
        if self._last is not None:
            previous, residuals, tokens = self._last
            first = _first_difference(previous, mask)
            if first is None:
                return tokens
            if first > start and first in residuals:
                start, residual = first, residuals[first]
                inherited = {layer: r for layer, r in residuals.items() if layer < first}
        names = {layer: self.lens.hook_name("resid_pre", layer) for layer in range(start, self.lens.n_layers)}
        recording = Recording(list(names.values()))
        restart = Restart(self.context, start, residual=residual)
        logits = self.lens.run(
            start=restart, mask=mask, hooks=self.hooks, record=recording, positions=self.sequence.positions
        ).logits
        tokens = token_nll(logits, self.sequence.targets)[0].cpu()
        recorded = {layer: recording[name] for layer, name in names.items() if name in recording.store}
        self._last = (mask, {**inherited, **recorded}, tokens)
        return tokens


def _first_difference(previous: HeadMask, mask: HeadMask) -> int | None:
    """The lowest layer where one-row `mask` acts differently from `previous`; None when they are
    the same (another reference activation or site differs everywhere)."""
    same_reference = (previous.z_ref is None and mask.z_ref is None) or (
        previous.z_ref is not None and mask.z_ref is not None and torch.equal(previous.z_ref, mask.z_ref)
    )
    if not same_reference or previous.site != mask.site:
        return 0
    differing = torch.nonzero((previous.scale[0] != mask.scale[0]).any(dim=1)).flatten().tolist()
    return differing[0] if differing else None


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []
