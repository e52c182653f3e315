import matplotlib

matplotlib.use("Agg")

import imageio.v3 as iio
import numpy as np
import torch

from genvs import cameras, viz


def test_to_display_maps_model_range_to_unit_range():
    images = torch.tensor([-1.0, 0.0, 1.0, 3.0]).reshape(1, 4, 1, 1)
    torch.testing.assert_close(viz.to_display(images).flatten(), torch.tensor([0.0, 0.5, 1.0, 1.0]))


def test_contact_sheet_has_one_row_per_object_and_pads_short_rows(tmp_path):
    rows = [torch.full((3, 3, 8, 8), -1.0), torch.full((2, 3, 8, 8), -1.0)]
    path = viz.save_contact_sheet(rows, tmp_path / "sheet.png")
    sheet = iio.imread(path)
    padding = 2
    assert sheet.shape == (2 * 8 + 3 * padding, 3 * 8 + 4 * padding, 3)
    # First row's images are black; the missing third image of row two is white padding.
    assert sheet[padding + 3, padding + 3].tolist() == [0, 0, 0]
    assert np.all(sheet[2 * padding + 8 + 3, 3 * padding + 2 * 8 + 3] == 255)


def test_plot_cameras_draws_every_frustum():
    c2w = cameras.orbit(5)
    ax = viz.plot_cameras(c2w, cameras.make_intrinsics(50.0, 32.0, 32.0), (64, 64))
    assert len(ax.lines) == 5 * 8  # 4 edges to the corners + 4 image-plane edges per camera


def test_show_images_handles_colour_and_single_channel_maps():
    figure = viz.show_images([torch.zeros(3, 8, 8), torch.rand(8, 8)], titles=["rgb", "depth"])
    assert len(figure.axes) == 2 and figure.axes[1].get_title() == "depth"


def test_masked_depth_blanks_rays_that_hit_nothing():
    depth = torch.tensor([[1.2, 1.8]])
    masked = viz.masked_depth(depth, torch.tensor([[0.9, 0.1]]))
    assert masked[0, 0] == 1.2 and torch.isnan(masked[0, 1])


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
