"""genvs.viz.images: image tensors to pixels, contact sheets, colour maps, frames and videos."""

import matplotlib

matplotlib.use("Agg")

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from genvs import viz


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


def test_masked_depth_blanks_rays_that_hit_nothing():
    depth = torch.tensor([[1.2, 1.8]])
    masked = viz.masked_depth(depth, torch.tensor([[0.9, 0.1]]))
    assert masked[0, 0] == 1.2 and torch.isnan(masked[0, 1])


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_trajectory_videos_read_back_with_their_frames_and_size(tmp_path, suffix):
    n, size, render = 7, 32, 16
    generator = torch.Generator().manual_seed(0)
    result = {
        "samples": torch.rand(n, 3, size, size, generator=generator) * 2 - 1,
        "features": torch.rand(n, 16, render, render, generator=generator) * 2 - 1,
        "depth": 0.8 + torch.rand(n, render, render, generator=generator),
        "opacity": torch.rand(n, render, render, generator=generator),
    }
    frames = viz.trajectory_frames(result, near=0.8, far=1.8, scale=2)
    assert frames.shape == (n, 3, 2 * size, 4 * 2 * size) and frames.min() >= -1 and frames.max() <= 1
    native = frames[:, :, ::2, ::2]  # undo the x2 nearest upscaling
    torch.testing.assert_close(native[..., :size], result["samples"])  # panel 1 is the sample
    empty = result["opacity"].repeat_interleave(2, -1).repeat_interleave(2, -2) < 0.5  # at the image size
    depth_panel = native[..., 2 * size: 3 * size].permute(0, 2, 3, 1)
    assert torch.all(depth_panel[empty] == 1.0) and not torch.all(depth_panel[~empty] == 1.0)  # blank where no hit
    path = viz.write_video(frames, tmp_path / f"orbit{suffix}", fps=10)
    assert path.suffix == suffix
    video = iio.imread(path, plugin="FFMPEG") if suffix == ".mp4" else iio.imread(path, index=None)
    assert video.shape[:3] == (n, 2 * size, 8 * size)


def test_trajectory_panels_default_to_at_least_256_px_by_nearest_upscaling():
    assert [viz.panel_scale(size) for size in (16, 32, 64, 100, 128, 256, 512)] == [16, 8, 4, 3, 2, 1, 1]
    result = {"samples": torch.zeros(2, 3, 32, 32), "features": torch.zeros(2, 16, 16, 16),
              "depth": torch.ones(2, 16, 16), "opacity": torch.ones(2, 16, 16)}
    assert viz.trajectory_frames(result, near=0.8, far=1.8).shape == (2, 3, 256, 4 * 256)


def test_field_rgb_is_the_first_three_channels_upsampled_and_clamped():
    features = torch.linspace(-2, 2, 2 * 5 * 16 * 2 * 2).reshape(2, 5, 16, 2, 2)
    rgb = viz.field_rgb(features, 4)
    assert rgb.shape == (2, 5, 3, 4, 4)
    torch.testing.assert_close(rgb[..., ::2, ::2], features[:, :, :3].clamp(-1, 1))  # nearest: each pixel a 2x2 block
    torch.testing.assert_close(viz.field_rgb(features[0, 0], 4), rgb[0, 0])  # any leading shape, none included


def test_progress_frames_put_each_steps_noisy_image_beside_its_estimate():
    steps = [{"x": torch.full((2, 3, 4, 4), 5.0 - step), "denoised": torch.full((2, 3, 4, 4), 0.1 * step),
              "sigma": torch.tensor(1.0)} for step in range(3)]
    frames = viz.progress_frames(steps, images=(1, 0), scale=2)
    assert frames.shape == (3, 3, 16, 16)
    assert torch.equal(frames[0, :, :, :8], torch.ones(3, 16, 8))  # x = 5, clamped to the display range
    assert torch.allclose(frames[2, :, :, 8:], torch.full((3, 16, 8), 0.2))
