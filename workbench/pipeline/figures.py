"""The figures stage: every figure a run folder has the inputs for (`workbench.figures.runfolder`).

`workbench figures all` and `workbench demo` both run it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workbench.errors import InputError
from workbench.figures import save_figures
from workbench.figures.runfolder import draw_run, read_run


def draw_figures(run: Path, out: Path, *, png: bool, say: Callable[[str], None] = print) -> list[Path]:
    """Draw and write (HTML, and PNG unless `png=False`) every figure `run` has inputs for, into
    `out` (never read as input); `say` gets one line per skipped figure. Returns the files written."""

    drawn = draw_run(read_run(run, skip=out))
    for note in drawn.notes:
        say(note)
    if not drawn.figures:
        raise InputError(f"{run}: nothing to draw (see the notes above; `workbench figures all --help` lists the files used)")
    return save_figures({out / stem: figure for stem, figure in drawn.figures.items()}, png=png)
