"""Routed DPS: every prompt's generic pass suppresses its own head weights (its user's routed mix).

`generate_routed(lens, prompts, decoder, routes)` decodes prompt i with `decoder` (DPS, or another
decoder that suppresses heads) given the head weights `routes[i]`, exactly as `generate` would
decode that prompt with those weights, and with everything else the same: mean suppression's
reference activation is the mean over all `prompts`, as it is for one `generate` call.

`Routed` is that decoder: it prepares `decoder` once per prompt with the prompt's weights and
hands the loop one head mask per group with a row per prompt, so routed prompts are decoded
together in batches whatever their weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from workbench.decoding.base import Decoder, DecoderRun, Prompts, StepScores
from workbench.decoding.loop import Generation, generate
from workbench.engine.masks import HeadMask
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.tensor_types import StepLogits

if TYPE_CHECKING:
    from workbench.engine.lens import Hook, Lens


@dataclasses.dataclass(frozen=True)
class Routed(Decoder):
    """`decoder` with head weights `routes[i]` for prompt i (the module docstring)."""

    decoder: Decoder
    routes: Sequence[HeadWeights]

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"routed {self.decoder.name}"

    @property
    def contrast_prompts(self) -> bool:  # type: ignore[override]
        return self.decoder.contrast_prompts

    def check(self, lens: Lens) -> None:
        if not hasattr(self.decoder, "heads"):
            raise InputError(f"{self.decoder.name}: suppresses no heads, so it cannot be routed")
        if self.decoder.heads is not None:
            raise InputError(f"{self.decoder.name}: a routed decoder takes its head weights from the routes, not heads=...")
        for weights in self.routes:
            dataclasses.replace(self.decoder, heads=weights).check(lens)  # type: ignore[type-var]

    def prepare(self, lens: Lens, prompts: Prompts, contrast_prompts: Prompts | None) -> DecoderRun:
        self.check(lens)
        if len(self.routes) != len(prompts):
            raise InputError(f"{len(self.routes)} routes for {len(prompts)} prompts")
        decoder = self.decoder
        generic = getattr(decoder, "generic", None)
        if generic is not None and generic.suppression == "mean" and generic.z_ref is None:
            z_ref = lens.mean_head_outputs(prompts)
            decoder = dataclasses.replace(decoder, generic=dataclasses.replace(generic, z_ref=z_ref))  # type: ignore[type-var]
        runs = [
            dataclasses.replace(decoder, heads=weights).prepare(  # type: ignore[type-var]
                lens, [prompt], None if contrast_prompts is None else [contrast_prompts[i]]
            )
            for i, (prompt, weights) in enumerate(zip(prompts, self.routes))
        ]
        per_prompt = [run.group_masks() for run in runs]
        masks = [HeadMask.stack([masks[group] for masks in per_prompt]) for group in range(runs[0].groups)]  # type: ignore[index]
        return _RoutedRun(runs[0], masks)


class _RoutedRun(DecoderRun):
    """A prepared run of the routed decoder: one prompt's run with every prompt's masks. The runs
    of one decoder differ only in their masks (their scores combine the groups' logits alike)."""

    def __init__(self, run: DecoderRun, masks: list[HeadMask]):
        self.run, self.masks = run, masks
        self.groups, self.shared_prefill = run.groups, run.shared_prefill

    def rows(self, prompts: Prompts, contrasts: Prompts | None) -> list[Sequence[int]]:
        return self.run.rows(prompts, contrasts)

    def group_masks(self) -> list[HeadMask]:
        return self.masks

    def hooks(self) -> list[Hook]:
        return self.run.hooks()

    def score(self, logits: StepLogits) -> StepScores:
        return self.run.score(logits)


def generate_routed(
    lens: Lens,
    prompts: Prompts,
    decoder: Decoder,
    routes: Sequence[HeadWeights],
    *,
    contrast_prompts: Prompts | None = None,
    **options: Any,
) -> list[Generation]:
    """One `Generation` per prompt, in order; `options` are `generate`'s."""
    return generate(lens, prompts, Routed(decoder, routes), contrast_prompts, **options)
