import math

import matplotlib

matplotlib.use("Agg")

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from genvs import cameras, viz
from genvs.diagnostics import deciding_sigmas


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


def test_the_generation_panel_samples_the_camera_its_sliders_describe():
    from genvs.model import PRESETS, GeNVS
    from genvs.sampling import sample_novel_views

    model = GeNVS(PRESETS["smoke"], seed=0)
    size = PRESETS["smoke"].field.encoder.image_size
    view = {"images": torch.zeros(1, 3, size, size), "K": cameras.make_intrinsics(1.0 * size, size / 2, size / 2)[None],
            "c2w": cameras.orbit(1)}
    panel = viz.GenerationPanel(model, {"car": view})
    panel.controls["steps"].value = 2
    panel.controls["azimuth"].value = 0.0
    at_input = panel.generate()
    panel.controls["azimuth"].value = 90.0
    turned = panel.generate()
    assert turned["samples"].shape == (1, 1, 3, size, size) and turned["depth"].shape == (1, 1, 16, 16)
    assert not torch.equal(at_input["features"], turned["features"])  # the field is rendered from the new camera
    target = cameras.rotate_around(view["c2w"][0], math.radians(90.0), 0.0)  # the sliders' camera, sampled directly
    expected = sample_novel_views(model, view["images"][None], view["K"][None], view["c2w"][None], view["K"][None],
                                  target[None, None], sampler="euler", steps=2, churn=0.4, guidance_scale=1.0, seed=0)
    assert all(torch.equal(turned[key], expected[key]) for key in ("samples", "features", "depth", "opacity"))
    panel.controls["seed"].value = 1
    assert not torch.equal(panel.generate()["samples"], turned["samples"])


def test_the_generation_panel_samples_with_the_route_it_is_set_to():
    from test_sampling import perturbed

    from genvs.model import PRESETS, GeNVS
    from genvs.routes import RenderRoute

    model = GeNVS(PRESETS["smoke"], seed=0)
    other = perturbed(GeNVS(PRESETS["smoke"], seed=0).denoiser)  # another denoiser of the same render
    size = PRESETS["smoke"].field.encoder.image_size
    view = {"images": torch.zeros(1, 3, size, size), "K": cameras.make_intrinsics(1.0 * size, size / 2, size / 2)[None],
            "c2w": cameras.orbit(1)}
    panel = viz.GenerationPanel(model, {"car": view}, routes={"GeNVS": RenderRoute(model),
                                                              "other": RenderRoute(model, other)})
    panel.controls["steps"].value = 2
    own = panel.generate()["samples"]
    default = viz.GenerationPanel(model, {"car": view})  # one route, GeNVS's: no route dropdown shown
    default.controls["steps"].value = 2
    assert torch.equal(default.generate()["samples"], own) and default.controls["route"].layout.display == "none"
    panel.controls["route"].value = "other"
    assert not torch.equal(panel.generate()["samples"], own)
    panel.controls["route"].value = "GeNVS"
    assert torch.equal(panel.generate()["samples"], own)


def test_field_rgb_is_the_first_three_channels_upsampled_and_clamped():
    features = torch.linspace(-2, 2, 2 * 5 * 16 * 2 * 2).reshape(2, 5, 16, 2, 2)
    rgb = viz.field_rgb(features, 4)
    assert rgb.shape == (2, 5, 3, 4, 4)
    torch.testing.assert_close(rgb[..., ::2, ::2], features[:, :, :3].clamp(-1, 1))  # nearest: each pixel a 2x2 block
    torch.testing.assert_close(viz.field_rgb(features[0, 0], 4), rgb[0, 0])  # any leading shape, none included


def test_evaluation_examples_show_a_row_per_object_and_a_column_per_method():
    examples = {"input": torch.zeros(2, 3, 8, 8), "truth": torch.zeros(2, 3, 3, 8, 8),
                "regression": torch.zeros(2, 3, 3, 8, 8), "stochastic": torch.ones(2, 3, 3, 8, 8)}
    figure = viz.plot_evaluation_examples(examples, target=1)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:4] == ["input", "truth", "regression", "stochastic"] and len(titles) == 8
    assert figure.axes[7].images[0].get_array().min() == 1.0  # row 2, stochastic: its own images
    matplotlib.pyplot.close(figure)


def test_course_map_names_every_lesson_and_draws_every_pipeline_stage_in_a_box():
    from matplotlib.patches import FancyBboxPatch

    figure = viz.plot_course_map()
    ax = figure.axes[0]
    texts = {text.get_text().replace("\n", " "): text.get_position() for text in ax.texts}
    for lesson in ["00", "01", "02", "03", "04", "05", "06"]:
        assert lesson in texts, f"lesson {lesson} is not on the map"
    boxes = [patch.get_bbox() for patch in ax.patches if isinstance(patch, FancyBboxPatch)]
    stages = ["photo + camera", "encoder (2D CNN)", "frustum feature volume", "volume rendering", "feature image",
              "EDM denoiser", "novel view"]
    for stage in stages:
        x, y = texts[stage]
        assert any(box.contains(x, y) for box in boxes), f"no box around {stage!r}"
    assert any("autoregressive" in text for text in texts)
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


def test_progress_frames_put_each_steps_noisy_image_beside_its_estimate():
    steps = [{"x": torch.full((2, 3, 4, 4), 5.0 - step), "denoised": torch.full((2, 3, 4, 4), 0.1 * step),
              "sigma": torch.tensor(1.0)} for step in range(3)]
    frames = viz.progress_frames(steps, images=(1, 0), scale=2)
    assert frames.shape == (3, 3, 16, 16)
    assert torch.equal(frames[0, :, :, :8], torch.ones(3, 16, 8))  # x = 5, clamped to the display range
    assert torch.allclose(frames[2, :, :, 8:], torch.full((3, 16, 8), 0.2))
