"""Decoding: one batched, KV-cached generation loop and the decoders that run on it (greedy,
DPS, and the CAD, DoLa and DeCoRe baselines). See `loop.py` for the loop and one module per
decoder family."""

from __future__ import annotations

from workbench.decoding.base import Decoder
from workbench.decoding.cad import CAD
from workbench.decoding.decore import DeCoRe
from workbench.decoding.dola import DoLa
from workbench.decoding.dps import DPS, Suppressed
from workbench.decoding.greedy import Greedy
from workbench.decoding.loop import Generation, generate
from workbench.decoding.sampling import Sampling

__all__ = ["CAD", "DPS", "DeCoRe", "Decoder", "DoLa", "Generation", "Greedy", "Sampling", "Suppressed", "generate"]
