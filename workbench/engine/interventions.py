"""What a forward does besides computing: head masks applied as hooks, and activations recorded.

Every run path of the engine (the bridge's forward, its cached steps, the restart from a layer, the
fast path) takes the same hooks, TransformerLens-style `(hook_name, fn)` pairs where
`fn(activation, hook)` may return a replacement. Two kinds are made here:

- `mask_hooks`: a `HeadMask` as one hook per layer it changes. This is the ONE place the ablation
  formula `z' = z_ref + s·(z − z_ref)` (and the authors' two other sites) is written; scores,
  heatmaps, decoders and the studio all reach it through here.
- `Recording`: hooks that keep the activations of named hook points (detached, optionally cut
  down by `keep`, or as the leaves of a gradient computation with `differentiable=True`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from workbench.engine.adapters import ModelAdapter
from workbench.engine.masks import HeadGeometry, HeadMask
from workbench.errors import InputError

Hook = tuple[str, Callable[..., Any]]
SITE_KINDS = {"head-output": "z", "resid-slice": "o_out"}  # query-scale: the adapter's query hook


def site_hook_name(adapter: ModelAdapter, site: str, layer: int) -> str:
    """The hook point an intervention site (`HeadMask.site`) acts on in block `layer`: the head
    output `z`, the query (after the query norm where the family has one), or the output
    projection's output."""
    kind = adapter.query_hook if site == "query-scale" else SITE_KINDS[site]
    return adapter.hook_name(kind, layer)


def mask_hooks(mask: HeadMask | None, geometry: HeadGeometry, adapter: ModelAdapter) -> list[Hook]:
    """The forward hooks that apply `mask`, one per layer it changes (none for `None`)."""
    if mask is None:
        return []
    mask.check(geometry)
    return [
        (site_hook_name(adapter, mask.site, layer), _site_hook(mask, layer, geometry, adapter)) for layer in mask.active_layers()
    ]


def _site_hook(mask: HeadMask, layer: int, geometry: HeadGeometry, adapter: ModelAdapter) -> Callable[..., torch.Tensor]:
    """The hook of one layer. Its scales and reference activation move to the device and dtype of
    the activation they meet (once per device and dtype): in a model split over several devices,
    layer l's activation lives on layer l's device."""
    scale_by_row = mask.scale[:, layer, :]  # [rows, head]
    z_ref_of_layer = None if mask.z_ref is None else mask.z_ref[layer]  # [head, d_head] or [pos, head, d_head]
    n_heads = geometry.n_heads
    # Heads lie on axis 2 of z ([batch, pos, head, d]); a normed query may be [batch, head, pos, d].
    head_axis = adapter.query_head_axis if mask.site == "query-scale" else 2
    placed: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def like(activation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = activation.shape[0]
        if scale_by_row.shape[0] not in (1, batch):
            raise InputError(f"head mask has {scale_by_row.shape[0]} rows but the batch has {batch}")
        key = (activation.device, activation.dtype)
        if key not in placed:
            z_ref = None if z_ref_of_layer is None else z_ref_of_layer.to(*key)
            placed[key] = (scale_by_row.to(*key), z_ref)
        return placed[key]

    def per_head(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # [batch, pos, head, d]
        scale_by_head, z_ref = like(activation)
        scale = scale_by_head[:, None, :, None] if head_axis == 2 else scale_by_head[:, :, None, None]
        if z_ref is None:
            return activation * scale
        if z_ref.ndim == 3:  # one reference per position: it fits only a full forward of as many positions
            if z_ref.shape[0] != activation.shape[1]:
                raise InputError(
                    f"the head mask's reference activation covers {z_ref.shape[0]} positions but the forward has "
                    f"{activation.shape[1]} (a per-position reference needs a full forward of its own sequence)"
                )
            return activation * scale + z_ref[None] * (1 - scale)
        # z_ref + s·(z − z_ref), written so that s = 1 gives z and s = 0 gives z_ref bit-exactly
        # (identity rows beside masked rows must equal an unmasked run).
        return activation * scale + z_ref[None, None] * (1 - scale)

    def residual_slices(activation: torch.Tensor, hook: Any) -> torch.Tensor:  # [batch, pos, d_model]
        batch, pos, d_model = activation.shape
        sliced = activation.reshape(batch, pos, n_heads, d_model // n_heads)
        return (sliced * like(activation)[0][:, None, :, None]).reshape(batch, pos, d_model)

    return residual_slices if mask.site == "resid-slice" else per_head


class Recording:
    """The activations of `names` (hook points) in the forwards it is hooked into; the last forward
    wins. `keep` cuts each activation down before it is stored (e.g. to a few query positions).
    With `differentiable=True` each activation becomes a leaf that requires a gradient and is
    passed on in its place, so `torch.autograd.grad(loss, recording.values())` differentiates with
    respect to it (the model's weights carry no gradient, so the graph starts there)."""

    def __init__(
        self, names: Sequence[str], *, keep: Callable[[torch.Tensor], torch.Tensor] | None = None, differentiable: bool = False
    ):
        self.names = list(dict.fromkeys(names))
        self.keep, self.differentiable = keep, differentiable
        self.store: dict[str, torch.Tensor] = {}

    @property
    def hooks(self) -> list[Hook]:
        return [(name, self._hook(name)) for name in self.names]

    def _hook(self, name: str) -> Callable[..., torch.Tensor | None]:
        def record(activation: torch.Tensor, hook: Any) -> torch.Tensor | None:
            if self.differentiable:
                if not activation.requires_grad:
                    activation = activation.detach().requires_grad_(True)
                self.store[name] = activation
                return activation
            self.store[name] = (activation if self.keep is None else self.keep(activation)).detach()
            return None

        return record

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.store:
            raise KeyError(f"nothing was recorded at {name!r} (did the forward reach it?)")
        return self.store[name]

    def values(self) -> list[torch.Tensor]:
        """The recorded activations in the order of `names`."""
        return [self[name] for name in self.names]
