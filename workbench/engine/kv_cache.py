"""A KV cache for decoding that grows in place, and whose lower layers row groups can share.

Transformers' `DynamicCache` concatenates every layer's keys and values with the new token's at
every step, i.e. copies the whole cache once per step. `GrowingKVCache` allocates each layer's
keys and values for the whole generation (`[rows, kv_heads, capacity, d_head]`, `capacity` from
a `CacheSpec`) and writes each new position in place; attention reads views of the filled part.
Past the capacity a layer's buffers are reallocated at twice the size (one copy, not one per step).

**Shared lower layers.** A contrastive decoder (DPS, DeCoRe, ...) runs each prompt in `groups`
rows (row `g·n + i` is group g of prompt i) whose tokens and head masks are identical below some
layer: everything those layers compute is then identical too. Below `shared_below` the cache holds
one row per prompt (`n` rows), from `shared_below` up all `groups · n` rows; the forward
(`workbench.engine.fast_path`) runs the shared layers once per prompt and fans the residual stream out
to the groups at `shared_below`.

Sliding-window layers keep their whole history: the attention masks keys outside the window
(and a one-token step attends to a view of the last `window` positions only), which is what a
cache keeping only the window computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import InputError

LayerKeys = Float[Tensor, "rows kv_head context d_head"]


@dataclass(frozen=True)
class CacheSpec:
    """How to lay out a `GrowingKVCache`: positions to allocate (prompt plus new tokens; more is
    allocated when needed), row groups, and the layers below which the groups share their rows."""

    capacity: int
    groups: int = 1
    shared_below: int = 0

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.groups < 1 or self.shared_below < 0:
            raise InputError(f"invalid cache layout {self}")
        if self.shared_below and self.groups == 1:
            raise InputError("shared lower layers need more than one row group")


class GrowingKVCache:
    """Per-layer key and value buffers written in place (see the module docstring)."""

    def __init__(self, n_layers: int, rows: int, spec: CacheSpec):
        if rows % spec.groups:
            raise InputError(f"{rows} rows cannot form {spec.groups} row groups")
        self.n_layers, self.rows, self.groups = n_layers, rows, spec.groups
        self.shared_below = min(spec.shared_below, n_layers)
        self.capacity = spec.capacity
        self.length = 0  # positions filled (the same in every layer and row: rows are left-padded)
        self.keys: list[LayerKeys | None] = [None] * n_layers
        self.values: list[LayerKeys | None] = [None] * n_layers

    @property
    def prompt_rows(self) -> int:
        """Rows of a shared layer: one per prompt."""
        return self.rows // self.groups

    def layer_rows(self, layer: int) -> int:
        return self.prompt_rows if layer < self.shared_below else self.rows

    # --- the Hugging Face cache protocol (what attention modules call) ------------------------

    def update(
        self, key: LayerKeys, value: LayerKeys, layer_idx: int, cache_kwargs: object = None
    ) -> tuple[LayerKeys, LayerKeys]:
        """Write the new positions' keys and values after the filled ones; return views of all of
        them. The positions count as filled once the whole forward is done (`advance`)."""
        rows, _, new, _ = key.shape
        if rows != self.layer_rows(layer_idx):
            raise ValueError(f"layer {layer_idx} of the cache holds {self.layer_rows(layer_idx)} rows, got {rows}")
        end = self.length + new
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if keys is None or values is None:
            shape = (rows, key.shape[1], max(self.capacity, end), key.shape[3])
            keys = key.new_empty(shape)
            values = value.new_empty(shape)
        elif end > keys.shape[2]:
            size = max(end, 2 * keys.shape[2])
            keys, values = _resized(keys, self.length, size), _resized(values, self.length, size)
        keys[:, :, self.length : end] = key
        values[:, :, self.length : end] = value
        self.keys[layer_idx], self.values[layer_idx] = keys, values
        return keys[:, :, :end], values[:, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def advance(self, new: int) -> None:
        self.length += new

    # --- rows ----------------------------------------------------------------------------------

    def select_rows(self, rows: torch.Tensor) -> GrowingKVCache:
        """Keep, repeat or reorder rows in place: new row i is old row `rows[i]`. Shared layers stay
        shared when every new group still takes its rows from the same prompts (dropping finished
        prompts does); otherwise they are written out for every row and sharing ends."""
        rows = rows.long()
        if rows.numel() and not 0 <= int(rows.min()) <= int(rows.max()) < self.rows:
            raise ValueError(f"row index out of range for a cache of {self.rows} rows")
        n = self.prompt_rows
        shared = None
        if self.shared_below and len(rows) % self.groups == 0:
            by_group = (rows % n).view(self.groups, -1)
            if bool((by_group == by_group[:1]).all()):
                shared = by_group[0]
        for layer in range(self.n_layers):
            keys, values = self.keys[layer], self.values[layer]
            if keys is None or values is None:
                continue
            if layer < self.shared_below:
                index = (shared if shared is not None else rows % n).to(keys.device)
            else:
                index = rows.to(keys.device)
            self.keys[layer], self.values[layer] = keys[index], values[index]
        if shared is None:
            self.groups, self.shared_below = 1, 0
        self.rows = len(rows)
        return self

    def fanned_out(self, groups: int, shared_below: int) -> GrowingKVCache:
        """A new cache whose `groups` row groups each continue this one-group cache: layers below
        `shared_below` keep (and share) these buffers, the others get one copy per group. A step on
        the new cache writes only past `length`, so the positions filled here stay as they are
        (a shared layer's buffers are written there, with what every group computes alike)."""
        if self.groups != 1:
            raise ValueError("only a cache of one row group can be fanned out")
        fanned = GrowingKVCache(
            self.n_layers, self.rows * groups, CacheSpec(self.capacity, groups, shared_below if groups > 1 else 0)
        )
        fanned.length = self.length
        for layer in range(self.n_layers):
            keys, values = self.keys[layer], self.values[layer]
            if layer >= fanned.shared_below and keys is not None and values is not None:
                keys, values = keys.repeat(groups, 1, 1, 1), values.repeat(groups, 1, 1, 1)
            fanned.keys[layer], fanned.values[layer] = keys, values
        return fanned

    @staticmethod
    def join(caches: Sequence[GrowingKVCache]) -> GrowingKVCache:
        """One cache holding the rows of `caches` (row chunks of one padded batch) in order; the
        first is extended and returned. Only caches without shared layers can be joined."""
        joined = caches[0]
        if len(caches) == 1:
            return joined
        if any(cache.shared_below or cache.groups != 1 for cache in caches):
            raise ValueError("caches with shared lower layers cannot be joined")
        if len({cache.length for cache in caches}) != 1:
            raise ValueError(f"cannot join caches of different lengths {sorted({cache.length for cache in caches})}")
        for layer in range(joined.n_layers):
            parts = [(cache.keys[layer], cache.values[layer]) for cache in caches]
            if any(keys is None for keys, _ in parts):
                continue
            capacity = max(keys.shape[2] for keys, _ in parts)  # type: ignore[union-attr]
            joined.keys[layer] = torch.cat([_resized(keys, joined.length, capacity) for keys, _ in parts])  # type: ignore[arg-type]
            joined.values[layer] = torch.cat([_resized(values, joined.length, capacity) for _, values in parts])  # type: ignore[arg-type]
        joined.rows = sum(cache.rows for cache in caches)
        return joined


def _resized(buffer: LayerKeys, filled: int, size: int) -> Float[Tensor, "rows kv_head size d_head"]:
    """`buffer` with room for `size` positions (itself when it has exactly that), its filled part copied."""
    if buffer.shape[2] == size:
        return buffer
    resized = buffer.new_empty((*buffer.shape[:2], size, buffer.shape[3]))
    resized[:, :, :filled] = buffer[:, :, :filled]
    return resized
