"""The figures stage: every figure a run folder has the inputs for (`workbench.figures.runfolder`),
with one colour per run that the run folder keeps (`colours.json` at its top: a run keeps its
colour when the figures are drawn again or runs are added).

`workbench figures all` and `workbench demo` both run it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workbench.errors import InputError
from workbench.figures import save_figures
from workbench.figures.colours import COLOURS_FILE, write_colours
from workbench.figures.runfolder import draw_run, read_run


def draw_figures(run: Path, out: Path, *, png: bool, say: Callable[[str], None] = print) -> list[Path]:
    """Draw and write (HTML, and PNG unless `png=False`) every figure `run` has inputs for, into
    `out` (never read as input), recording the runs' colours in `run`; `say` gets one line per
    skipped figure. Returns the files written (the colour record first, when it changed)."""
    contents = read_run(run, skip=out)
    drawn = draw_run(contents)
    for note in drawn.notes:
        say(note)
    if not drawn.figures:
        raise InputError(f"{run}: nothing to draw (see the notes above; `workbench figures all --help` lists the files used)")
    recorded = []
    try:
        if contents.colours and write_colours(run / COLOURS_FILE, contents.colours):
            recorded.append(run / COLOURS_FILE)
    except OSError as error:  # a run folder one may read but not write: the figures are still drawn
        say(f"colours not recorded in {run / COLOURS_FILE} ({error.strerror or error})")
    return recorded + save_figures({out / stem: figure for stem, figure in drawn.figures.items()}, png=png)
