"""The paper's figures as plain functions: tables (PCS results, head sets, validation and
comparison tables) in, a plotly `Figure` out, usable from a notebook. `save_figures` writes HTML
pages (one shared plotly.js per folder) and PNGs atomically; `workbench.figures.runfolder` draws
everything a run folder holds (`workbench figures all`)."""

from workbench.figures.efficiency import efficiency_figure
from workbench.figures.export import save_figure, save_figures
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
from workbench.figures.sweeps import sweep_plot
from workbench.figures.validation import random_draw_means, validation_figure

__all__ = [
    "HeatmapPanel",
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
    "save_figure",
    "save_figures",
    "score_grid",
    "sweep_plot",
    "validation_figure",
]
