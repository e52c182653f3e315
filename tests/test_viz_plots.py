"""genvs.viz.plots: image panels, cameras, depth planes, feature PCA, losses, errors per sigma."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from genvs import cameras, viz
from genvs.diagnostics import deciding_sigmas


def test_plot_cameras_draws_every_frustum():
    c2w = cameras.orbit(5)
    ax = viz.plot_cameras(c2w, cameras.make_intrinsics(50.0, 32.0, 32.0), (64, 64))
    assert len(ax.lines) == 5 * 8  # 4 edges to the corners + 4 image-plane edges per camera


def test_show_images_draws_maps_in_their_quantitys_colours_with_a_colour_bar():
    opacity = torch.tensor([[0.25, 0.5], [0.75, 1.0]])
    figure = viz.show_images([torch.zeros(3, 8, 8), opacity], titles=["rgb", "opacity"], maps=[None, "opacity"])
    image_axes = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in image_axes] == ["rgb", "opacity"]
    assert len(figure.axes) == 3  # two tiles and the map's colour bar
    shown = image_axes[1].images[0]
    assert shown.get_cmap().name == "gray" and shown.get_clim() == (0.0, 1.0)  # opacity always on [0, 1]
    assert shown.get_interpolation() == "nearest"
    width, height = figure.get_size_inches()
    assert width >= 2 * viz.MIN_TILE_INCHES and height >= viz.MIN_TILE_INCHES


def test_show_images_refuses_a_map_without_its_quantity():
    with pytest.raises(ValueError, match="image 1 is a single-channel map"):
        viz.show_images([torch.zeros(3, 8, 8), torch.rand(8, 8)])


def test_depth_planes_lie_at_their_depths_inside_the_frustum():
    K, c2w = cameras.make_intrinsics(32.0, 16.0, 16.0), cameras.orbit(1)[0]
    ax = viz.plot_depth_planes(K, c2w, 32, 0.8, 1.8, n_planes=8, every=2)
    plane_lines = ax.lines[:4]
    for index, line in enumerate(plane_lines):
        points = torch.tensor(np.stack(line.get_data_3d(), axis=-1), dtype=torch.float32)
        uv, depth = cameras.project(points, K, c2w)
        torch.testing.assert_close(depth, torch.full_like(depth, 0.8 + (2 * index + 0.5) * 0.125))
        assert uv.min() > -1e-3 and uv.max() < 32 + 1e-3
    assert len(ax.lines) == 4 + 4  # 4 planes, 4 frustum edges


def test_feature_pca_colours_follow_the_dominant_directions():
    generator = torch.Generator().manual_seed(0)
    # 8 channels that vary along one direction only (plus tiny noise): the first component carries it
    signal = torch.linspace(-1, 1, 16).view(1, 1, 4, 4).expand(2, 1, 4, 4)
    direction = torch.randn(1, 8, 1, 1, generator=generator)
    features = signal * direction + 1e-3 * torch.randn(2, 8, 4, 4, generator=generator)
    colours = viz.feature_pca(features)
    assert colours.shape == (2, 3, 4, 4) and colours.min() >= -1 and colours.max() <= 1
    red = colours[:, 0].flatten()
    correlation = torch.corrcoef(torch.stack([red, signal.flatten()]))[0, 1]
    assert abs(correlation) > 0.99


def test_evaluation_examples_show_a_row_per_object_and_a_column_per_method():
    examples = {"input": torch.zeros(2, 3, 8, 8), "truth": torch.zeros(2, 3, 3, 8, 8),
                "regression": torch.zeros(2, 3, 3, 8, 8), "stochastic": torch.ones(2, 3, 3, 8, 8)}
    figure = viz.plot_evaluation_examples(examples, target=1)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:4] == ["input", "truth", "regression", "stochastic"] and len(titles) == 8
    assert figure.axes[7].images[0].get_array().min() == 1.0  # row 2, stochastic: its own images
    matplotlib.pyplot.close(figure)


def test_error_per_sigma_figure_shades_the_levels_that_decide_the_detail():
    """The band shaded on both panels runs between the noise levels where 25% and 90% of the detail is decided."""
    sigmas = torch.logspace(2, -2, 9)
    errors = {"sigma": sigmas, "rmse": sigmas.clamp(max=0.2), "truth_detail_rms": torch.tensor(0.1)}
    undecided = torch.tensor([1.0, 1.0, 0.9, 0.7, 0.4, 0.05, 0.01, 0.0, 0.0])  # decided: 0.3 at step 3, 0.95 at 5
    settling = {"undecided": undecided, "agreement": torch.full((9,), 0.5)}
    trace = {"errors": errors, "settling": settling, "step_sigmas": sigmas,
             "band": deciding_sigmas(sigmas, undecided)}
    figure = viz.plot_error_per_sigma(trace, training_noise=(0.5, 1.4))
    left, right = figure.axes[0], figure.axes[1]
    for ax in (left, right):
        (band,) = [patch for patch in ax.patches if patch.get_alpha() == 0.1]
        start, end = band.get_x(), band.get_x() + band.get_width()
        assert np.isclose(start, float(sigmas[5])) and np.isclose(end, float(sigmas[3]))
    assert left.xaxis_inverted() and right.xaxis_inverted()
    assert np.allclose(left.lines[0].get_ydata(), errors["rmse"].numpy())
