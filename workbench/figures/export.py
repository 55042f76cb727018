"""Writing figures: HTML pages that share one copy of plotly.js per folder, and PNGs through
kaleido (one browser session for a whole batch) of what a static image can show
(`static_version`: no hover hints). Every file is written atomically. In a notebook,
`show_static_copies` stores a PNG beside each interactive figure, for viewers that cannot run
plotly (GitHub shows the PNG)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import PngRenderer
from plotly.offline import get_plotlyjs

from workbench import io
from workbench.figures.style import static_version

PLOTLY_JS = "plotly.min.js"  # beside the pages, so that a figure folder opens offline
PNG_SCALE = 2


def write_plotly_js(folder: Path) -> Path:
    """The folder's shared `plotly.min.js`, (re)written only when missing or of another version."""
    path = folder / PLOTLY_JS
    script = get_plotlyjs().encode("utf-8")
    if not (path.is_file() and path.stat().st_size == len(script) and path.read_bytes() == script):
        with io.atomic_path(path) as temporary:
            temporary.write_bytes(script)
    return path


def save_figures(
    figures: Mapping[str, go.Figure] | Mapping[Path, go.Figure] | Mapping[str | Path, go.Figure], *, png: bool = True
) -> list[Path]:
    """Write `stem.html` for every `stem: figure` (referencing the `plotly.min.js` written once into
    each folder) and, unless `png=False`, `stem.png`; returns the paths written."""
    stems = {Path(stem): figure for stem, figure in figures.items()}
    written = [write_plotly_js(folder) for folder in dict.fromkeys(stem.parent for stem in stems)]
    for stem, figure in stems.items():
        page = stem.with_suffix(".html")
        with io.atomic_path(page) as temporary:
            figure.write_html(temporary, include_plotlyjs=PLOTLY_JS, full_html=True)
        written.append(page)
    if png and stems:
        images = [stem.with_suffix(".png") for stem in stems]
        with ExitStack() as stack:
            temporaries = [stack.enter_context(io.atomic_path(image)) for image in images]
            drawn = [static_version(figure) for figure in stems.values()]
            pio.write_images(  # kaleido would otherwise use its default size, not the figure's
                drawn,
                temporaries,
                format="png",
                scale=PNG_SCALE,
                width=[figure.layout.width for figure in drawn],
                height=[figure.layout.height for figure in drawn],
            )
        written += images
    return written


def save_figure(figure: go.Figure, stem: str | Path, *, png: bool = True) -> list[Path]:
    """`save_figures` for one figure."""
    return save_figures({stem: figure}, png=png)


class StaticPngRenderer(PngRenderer):
    """Plotly's PNG renderer drawing `static_version` of the figure (at its own size)."""

    def to_mimebundle(self, fig_dict):
        return super().to_mimebundle(static_version(go.Figure(fig_dict)).to_dict())


def show_static_copies() -> None:
    """From now on, a figure shown in this notebook is stored both interactive (plotly's JSON) and
    as a PNG of its static version, which viewers that cannot run plotly display instead."""
    pio.renderers["workbench_png"] = StaticPngRenderer(scale=1)
    pio.renderers.default = "plotly_mimetype+workbench_png"
