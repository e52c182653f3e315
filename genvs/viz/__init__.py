"""Figures, videos and widgets, one module per idea; ``from genvs import viz`` gives all of them by name.

- :mod:`genvs.viz.images`: tensors in [-1, 1] for display and on disk (grids, contact sheets, colour maps, frames,
  videos);
- :mod:`genvs.viz.plots`: matplotlib plots (images side by side, cameras, depth planes, losses, errors);
- :mod:`genvs.viz.figures`: the course's figures (GeNVS's data flow, the map of the lessons);
- :mod:`genvs.viz.widgets`: notebook widgets (dataset browser, sample-grid slider, generation panel).
"""

from genvs.viz.figures import plot_course_map, plot_genvs_diagram
from genvs.viz.images import (
                              MAP_CMAPS,
                              MAP_RANGES,
                              MIN_PANEL_PIXELS,
                              field_rgb,
                              image_grid,
                              masked_depth,
                              panel_scale,
                              progress_frames,
                              save_contact_sheet,
                              save_frames,
                              show_video,
                              to_display,
                              trajectory_frames,
                              write_video,
)
from genvs.viz.plots import (
                              LOSS_PARTS,
                              MIN_TILE_INCHES,
                              feature_pca,
                              plot_cameras,
                              plot_depth_planes,
                              plot_error_per_sigma,
                              plot_evaluation_examples,
                              plot_losses,
                              show_images,
                              trace_summary,
)
from genvs.viz.widgets import GenerationPanel, dataset_browser, samples_browser

__all__ = ["to_display", "image_grid", "save_contact_sheet", "MAP_CMAPS", "MAP_RANGES", "masked_depth", "field_rgb",
           "MIN_PANEL_PIXELS", "panel_scale", "trajectory_frames", "progress_frames", "write_video", "save_frames",
           "show_video", "show_images", "MIN_TILE_INCHES", "plot_cameras", "plot_depth_planes", "feature_pca",
           "LOSS_PARTS", "plot_losses", "plot_error_per_sigma", "trace_summary", "plot_evaluation_examples",
           "plot_genvs_diagram", "plot_course_map", "dataset_browser", "samples_browser", "GenerationPanel"]
