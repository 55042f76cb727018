"""Named presets: sets of option defaults that reproduce a known procedure.

A preset fills in options the user did not give; options given explicitly still win. Runs record
the preset's name and every resulting option, so a report never describes other settings than
those that made its numbers.

`authors`: the DPS authors' released code (docs/authors_procedure.md). Discovery: their detection
prompt (the first five profile items as `History i:` lines, no chat template), at most 50
examples drawn once (seeded here; their draw was unseeded), residual-slice ablation at the output
projection, exact scoring, the top 4 % of heads with max normalisation. Decoding: query scaling,
one unmasked prefill shared by both passes, log-probability contrast with γ = the raw entropy of
the full model (uncapped), the chat template with BM25-retrieved profile items, 32 new tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import InputError


@dataclass(frozen=True)
class Preset:
    """Option defaults per command, under the options' names (`decoder` holds the decoder's
    options, applied where the chosen decoder has them)."""

    name: str
    summary: str
    discover: Mapping[str, Any] = field(default_factory=dict)
    evaluate: Mapping[str, Any] = field(default_factory=dict)


AUTHORS = Preset(
    name="authors",
    summary="The DPS authors' code: History-lines detection prompt, ≤50 examples, resid-slice ablation, top 4 %; "
    "query-scale DPS with a shared unmasked prefill, log-prob contrast, entropy γ.",
    discover={
        "score": "pcs",
        "format": "history",
        "retriever": "first",
        "profile_k": 5,
        "sample": 50,
        "method": "exact",
        "variant": "standard",
        "ablation": "resid-slice",
        "top_percent": 0.04,
        "norm": "max",
        "min_pcs": 0.0,
    },
    evaluate={
        "method": "dps",
        "format": "chat",
        "retriever": "bm25",
        "profile_k": 5,
        "max_prompt_tokens": 2048,
        "max_new_tokens": 32,
        "decoder": {
            "gamma": "entropy",
            "gamma_cap": None,
            "entropy_scale": "nats",
            "combine": "logprobs",
            "plausibility": None,
            "suppression": "weighted",
            "site": "query-scale",
            "prefill": "shared",
        },
    },
)
PRESETS: dict[str, Preset] = {preset.name: preset for preset in (AUTHORS,)}


def preset_values(name: str | None, command: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The options of `command`: those given explicitly (not None) over the preset's; options
    neither sets are left to the typed configs' own defaults."""
    values: dict[str, Any] = {}
    if name is not None:
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
        values = dict(getattr(PRESETS[name], command))
    return {**values, **{key: value for key, value in given.items() if value is not None}}
