"""The registry of decoders: one name per decoder, the same on command lines, in Python and in
every record. Each decoder class declares its options once (`workbench.typed_config`);
`make_decoder` builds one from flat options, and `decoder_options` lists them for `workbench
decoders` and the command-line options of `evaluate` and `steer`.
"""

from __future__ import annotations

from typing import Any

from workbench.decoding.base import Decoder
from workbench.decoding.cad import CAD
from workbench.decoding.decore import DeCoRe
from workbench.decoding.dola import DoLa
from workbench.decoding.dps import DPS, RandomHeads, Suppressed
from workbench.decoding.greedy import Greedy
from workbench.errors import InputError
from workbench.heads import HeadWeights
from workbench.typed_config import Option, options

DECODERS: dict[str, type[Decoder]] = {cls.name: cls for cls in (Greedy, DPS, RandomHeads, Suppressed, CAD, DoLa, DeCoRe)}


def decoder_class(method: str) -> type[Decoder]:
    if method not in DECODERS:
        raise InputError(f"unknown decoder {method!r}; the decoders are {', '.join(DECODERS)}")
    return DECODERS[method]


def uses_heads(method: str) -> bool:
    """Whether the decoder suppresses heads (and so needs head weights)."""
    return any(option.name == "heads" for option in options(decoder_class(method)))


def decoder_options(method: str) -> list[Option]:
    """The command-line options of one decoder (its head weights and tensors are Python-only)."""
    return [option for option in options(decoder_class(method)) if not option.python_only]


def make_decoder(method: str, heads: HeadWeights | None = None, **values: Any) -> Decoder:
    """The decoder `method` with the given option values (flat names) and, where it uses them,
    `heads`. An option the decoder does not have is an `InputError` naming its options."""
    cls = decoder_class(method)
    if heads is not None:
        if not uses_heads(method):
            raise InputError(f"{method}: takes no head weights (--heads)")
        values = {"heads": heads, **values}
    return cls(**values)
