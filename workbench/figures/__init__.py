"""The paper's figures as plain functions: tables (PCS results, head sets, validation and
comparison tables) in, a plotly `Figure` out, usable from a notebook. Figures that show runs take
a colour map (`series_colours`; a run folder keeps its own in `colours.json`), so a run has one
colour everywhere. `save_figures` writes HTML pages (one shared plotly.js per folder) and PNGs
atomically, the PNGs as `static_version` draws them (no hover hints); `show_static_copies` makes
a notebook store a PNG beside each interactive figure; `workbench.figures.runfolder` draws
everything a run folder holds (`workbench figures all`)."""

from workbench.figures.colours import read_colours, series_colours
from workbench.figures.efficiency import efficiency_figure
from workbench.figures.export import StaticPngRenderer, save_figure, save_figures, show_static_copies
from workbench.figures.heatmaps import (
    HeatmapPanel,
    cluster_heatmaps,
    describe_scores,
    head_heatmap,
    heatmap_panels,
    pcs_heatmap,
    pcs_side_by_side,
    score_grid,
)
from workbench.figures.overlap import head_set_label, jaccard, overlap_heatmap
from workbench.figures.paired import paired_bars
from workbench.figures.style import static_version
from workbench.figures.sweeps import sweep_plot
from workbench.figures.validation import random_draw_means, validation_figure

__all__ = [
    "HeatmapPanel",
    "StaticPngRenderer",
    "cluster_heatmaps",
    "describe_scores",
    "efficiency_figure",
    "head_heatmap",
    "head_set_label",
    "heatmap_panels",
    "jaccard",
    "overlap_heatmap",
    "paired_bars",
    "pcs_heatmap",
    "pcs_side_by_side",
    "random_draw_means",
    "read_colours",
    "save_figure",
    "save_figures",
    "score_grid",
    "series_colours",
    "show_static_copies",
    "static_version",
    "sweep_plot",
    "validation_figure",
]
