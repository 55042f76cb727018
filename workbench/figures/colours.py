"""One colour per run across every figure of a run folder.

A colour map is a plain `{name: "#rrggbb"}` over the names the figures show for runs and other
series (a decoding run, a sweep's group). `series_colours` keeps every colour already in a map and
gives each new name the first colour no other name has (greedy and random-heads have fixed colours
of their own), so distinct names get distinct colours, and a run keeps its colour when the figures
are redrawn or a run is added, as long as the map is kept. A run folder keeps it in
`colours.json` at its top (written by `workbench figures all` and the demo's figures stage; edit it
to choose colours). Every figure function that shows runs takes such a map.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from workbench import io
from workbench.errors import InputError
from workbench.heads import read_json_object

COLOURS_FILE = "colours.json"
FIXED = {"greedy": "#34495e", "random-heads": "#7f7f7f"}  # the baseline dark slate, the random control grey
PALETTE = (  # Okabe and Ito's colour-blind-safe set first (less black, yellow), then Tableau's 10 less grey
    "#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9",
    "#59a14f", "#b07aa1", "#9c755f", "#e15759", "#76b7b2", "#edc948", "#ff9da7", "#17becf",
)  # fmt: skip
HEX = re.compile(r"#[0-9a-f]{6}")
ColourMap = Mapping[str, str]


def _more_colours() -> Iterator[str]:
    """The palette, then hues a golden angle apart at two lightnesses (never ending)."""
    yield from PALETTE
    step = 0
    while True:
        hue = (step * 0.381966) % 1.0
        red, green, blue = colorsys.hls_to_rgb(hue, 0.42 if step % 2 else 0.55, 0.65)
        yield f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
        step += 1


def series_colours(names: Iterable[str], known: ColourMap | None = None) -> dict[str, str]:
    """`known` extended by a colour for every name it lacks, each one no other name in the map has
    (a fixed name's own colour when free, else the first free one of the palette)."""
    colours = dict(known or {})
    used = set(colours.values())
    for name in dict.fromkeys(names):
        if name in colours:
            continue
        fixed = FIXED.get(name)
        free = (colour for colour in _more_colours() if colour not in used and colour not in FIXED.values())
        colours[name] = fixed if fixed and fixed not in used else next(free)
        used.add(colours[name])
    return colours


def read_colours(path: str | Path) -> dict[str, str]:
    """A colour map from a JSON object of `"name": "#rrggbb"`, distinct colours; one line naming what is wrong."""
    record = read_json_object(Path(path))
    colours = {}
    for name, colour in record.items():
        if not isinstance(colour, str) or not HEX.fullmatch(colour.lower()):
            raise InputError(f"{path}: the colour of {name!r} must be written #rrggbb, got {colour!r}")
        colours[name] = colour.lower()
    shared = [name for name in colours if list(colours.values()).count(colours[name]) > 1]
    if shared:
        raise InputError(f"{path}: {', '.join(map(repr, shared))} share the colour {colours[shared[0]]}; give each run its own")
    return colours


def write_colours(path: str | Path, colours: ColourMap) -> bool:
    """Record `colours` in `path` (atomically) unless it holds them already; whether it wrote."""
    path = Path(path)
    if path.is_file() and read_colours(path) == dict(colours):
        return False
    io.write_json(path, dict(colours))
    return True
