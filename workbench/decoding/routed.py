"""Routed DPS: every prompt's generic pass suppresses its own head weights (its user's routed mix).

`generate_routed(lens, prompts, decoder, routes)` decodes prompt i with `decoder` (DPS, or another
decoder that suppresses heads) given the head weights `routes[i]`, exactly as `generate` would
decode that prompt with those weights, and with everything else the same: mean suppression's
reference activation is the mean over all `prompts`, as it is for one `generate` call.

The generation loop applies one head mask per row group, the same for every prompt of a batch,
so prompts are decoded together where they share their weights (hard routing: one batch stream
per cluster) and apart where they do not (soft routing: usually one per user). A loop that took
a mask per prompt would decode them all together; nothing else here would change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from workbench.checkpoint import digest
from workbench.decoding.base import Decoder, Prompts
from workbench.decoding.loop import Generation, generate
from workbench.errors import InputError
from workbench.heads import HeadWeights

if TYPE_CHECKING:
    from workbench.lens import Lens


def generate_routed(
    lens: Lens,
    prompts: Prompts,
    decoder: Decoder,
    routes: Sequence[HeadWeights],
    *,
    contrast_prompts: Prompts | None = None,
    **options: Any,
) -> list[Generation]:
    """One `Generation` per prompt, in order; `options` are `generate`'s (module docstring)."""
    if not hasattr(decoder, "heads"):
        raise InputError(f"{decoder.name}: suppresses no heads, so it cannot be routed")
    if decoder.heads is not None:  # type: ignore[attr-defined]
        raise InputError(f"{decoder.name}: a routed decoder takes its head weights from the routes, not heads=...")
    if len(routes) != len(prompts):
        raise InputError(f"{len(routes)} routes for {len(prompts)} prompts")
    generic = getattr(decoder, "generic", None)
    if generic is not None and generic.suppression == "mean" and generic.z_ref is None:
        z_ref = lens.mean_head_outputs(prompts)
        decoder = dataclasses.replace(decoder, generic=dataclasses.replace(generic, z_ref=z_ref))  # type: ignore[type-var]
    together: dict[str, list[int]] = {}
    for index, weights in enumerate(routes):
        together.setdefault(digest(weights.weights.tolist()), []).append(index)
    results: list[Generation | None] = [None] * len(prompts)
    for indices in together.values():
        routed = dataclasses.replace(decoder, heads=routes[indices[0]])  # type: ignore[type-var]
        contrasts = None if contrast_prompts is None else [contrast_prompts[i] for i in indices]
        for index, generation in zip(indices, generate(lens, [prompts[i] for i in indices], routed, contrasts, **options)):
            results[index] = generation
    return results  # type: ignore[return-value]
