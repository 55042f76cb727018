"""Decoding: one batched, KV-cached generation loop and the decoders that run on it (greedy,
DPS and its controls, and the CAD, DoLa and DeCoRe baselines), each a typed config registered
under one name. See `loop.py` for the loop, `registry.py` for the registry and one module per
decoder family; `routed.py` gives a head-suppressing decoder its own head weights per prompt; `trace.py` traces
what DPS and each suppressed head did at every generated token."""

from __future__ import annotations

from workbench.decoding.base import Decoder
from workbench.decoding.cad import CAD
from workbench.decoding.contrast import Contrast
from workbench.decoding.decore import DeCoRe
from workbench.decoding.dola import DoLa
from workbench.decoding.dps import DPS, RandomHeads, Suppressed, Suppression
from workbench.decoding.greedy import Greedy
from workbench.decoding.loop import Generation, generate
from workbench.decoding.registry import DECODERS, decoder_options, make_decoder
from workbench.decoding.routed import Routed, generate_routed
from workbench.decoding.sampling import Sampling
from workbench.decoding.trace import DecodingTrace, trace_dps

__all__ = [
    "CAD",
    "DECODERS",
    "DPS",
    "Contrast",
    "DeCoRe",
    "Decoder",
    "DecodingTrace",
    "DoLa",
    "Generation",
    "Greedy",
    "RandomHeads",
    "Routed",
    "Sampling",
    "Suppressed",
    "Suppression",
    "decoder_options",
    "generate",
    "generate_routed",
    "make_decoder",
    "trace_dps",
]
