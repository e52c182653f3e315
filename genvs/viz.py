"""Figures and widgets: image grids, contact sheets, camera plots, depth/opacity maps, browsers.

Model code keeps images in [-1, 1] as ``[B, 3, H, W]`` tensors; everything here converts to
[0, 1] for display with :func:`to_display`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import imageio.v3 as iio
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch
import numpy as np
import torch
from torch import Tensor
from torchvision.utils import make_grid

from genvs.cameras import pixel_rays, rotate_around, unproject
from genvs.field import plane_depths

__all__ = [
    "to_display",
    "image_grid",
    "save_contact_sheet",
    "show_images",
    "masked_depth",
    "plot_cameras",
    "plot_depth_planes",
    "feature_pca",
    "plot_evaluation_examples",
    "dataset_browser",
    "plot_genvs_diagram",
    "plot_course_map",
    "plot_losses",
    "plot_error_per_sigma",
    "trace_summary",
    "samples_browser",
    "field_rgb",
    "trajectory_frames",
    "progress_frames",
    "write_video",
    "save_frames",
    "show_video",
    "GenerationPanel",
    "MAP_CMAPS",
]

LOSS_PARTS = ("loss", "denoising", "rgb", "input_rgb", "opacity")


def to_display(images: Tensor) -> Tensor:
    """``[..., 3, H, W]`` in [-1, 1] to [0, 1] (clamped, detached, on the CPU)."""
    return ((images.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)


def image_grid(images: Tensor, n_columns: int, padding: int = 2) -> np.ndarray:
    """Tile ``[N, 3, H, W]`` images in [-1, 1] into one ``[H', W', 3]`` uint8 array (white gaps)."""
    grid = make_grid(to_display(images), nrow=n_columns, padding=padding, pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def save_contact_sheet(rows: Sequence[Tensor], path: str | Path) -> Path:
    """Write a PNG with one row per tensor in ``rows`` (each ``[V, 3, H, W]`` in [-1, 1]).

    Rows may have different view counts; short rows are padded with white. Returns the path.
    """
    n_columns = max(row.shape[0] for row in rows)
    padded = [torch.cat([row, torch.ones((n_columns - row.shape[0],) + row.shape[1:])]) for row in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image_grid(torch.cat(padded), n_columns))
    return path


MAP_CMAPS = {"depth": "viridis_r", "opacity": "gray", "density": "magma", "error": "inferno"}
"""The one colour map of each single-channel quantity, in every lesson and figure: depth (near is bright,
blank where nothing was hit), opacity (black: empty, white: opaque; always on [0, 1]), density, per-pixel error."""
MAP_RANGES = {"opacity": (0.0, 1.0)}
"""Quantities with a fixed colour range; the others use each map's own range (its colour bar says which)."""
MIN_TILE_INCHES = 1.4
"""The smallest tile :func:`show_images` draws: at least ~100 px at 72 dpi (a 32 px image shows each pixel as a
3 x 3 block at least, nearest-neighbour)."""


def show_images(
    images: Tensor | Sequence[Tensor],
    titles: Sequence[str] | None = None,
    n_columns: int | None = None,
    size: float = 2.0,
    maps: str | Sequence[str | None] | None = None,
):
    """Show images side by side with titles; returns the matplotlib figure.

    Accepts ``[N, 3, H, W]`` in [-1, 1] (colour) and ``[H, W]`` single-channel maps. A map needs its
    quantity, from :data:`MAP_CMAPS` (``"depth"``, ``"opacity"``, ...): ``maps`` gives one per image
    (``None`` for colour images), or one name for every map. A map is drawn in its quantity's colour
    map with a colour bar. Pixels stay square blocks (nearest neighbour) and tiles are at least
    :data:`MIN_TILE_INCHES` wide, so small images stay readable.
    """
    images = list(images)
    quantities = [maps] * len(images) if maps is None or isinstance(maps, str) else list(maps)
    n_columns = n_columns or len(images)
    n_rows = -(-len(images) // n_columns)
    size = max(size, MIN_TILE_INCHES)
    figure, axes = plt.subplots(n_rows, n_columns, figsize=(size * n_columns, size * n_rows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= len(images):
            continue
        image = images[index].detach().float().cpu()
        if image.dim() == 3:
            ax.imshow(to_display(image).permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            quantity = quantities[index]
            if quantity not in MAP_CMAPS:
                raise ValueError(f"image {index} is a single-channel map: name its quantity in maps= "
                                 f"(one of {sorted(MAP_CMAPS)}), got {quantity!r}")
            low, high = MAP_RANGES.get(quantity, (None, None))
            shown = ax.imshow(image.numpy(), cmap=MAP_CMAPS[quantity], vmin=low, vmax=high, interpolation="nearest")
            figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
        if titles is not None:
            ax.set_title(titles[index], fontsize=9)
    figure.tight_layout()
    return figure


def masked_depth(depth: Tensor, opacity: Tensor, threshold: float = 0.5) -> Tensor:
    """Depth ``[..., H, W]`` with NaN where ``opacity < threshold`` (shown blank by matplotlib).

    Rendered depth is ``sum w t / opacity``: meaningful where something was hit, noise elsewhere.
    """
    return torch.where(opacity >= threshold, depth, torch.full_like(depth, float("nan")))


def plot_cameras(
    c2w: Tensor,
    K: Tensor,
    image_size: tuple[int, int],
    ax=None,
    frustum_depth: float = 0.25,
    highlight: Sequence[int] = (),
    colour: str = "tab:blue",
):
    """Draw camera frustums in 3D (world z-up) with the world origin marked.

    Each camera is drawn as lines from its centre to the four image corners at depth
    ``frustum_depth`` (image corners come from :func:`genvs.cameras.pixel_rays`), with its
    top edge thicker so "up" on screen is visible.

    Args:
        c2w: ``[N, 4, 4]`` poses; K: ``[N, 3, 3]`` or ``[3, 3]``; image_size: ``(H, W)``.
        highlight: indices drawn in red (e.g. the input view).
    Returns:
        the matplotlib 3D axes.
    """
    if ax is None:
        ax = plt.figure(figsize=(5, 5)).add_subplot(projection="3d")
    height, width = image_size
    K = K.expand(c2w.shape[0], 3, 3)
    origins, directions = pixel_rays(K, c2w, height, width)
    corner_index = [(0, 0), (0, width - 1), (height - 1, width - 1), (height - 1, 0)]
    for n in range(c2w.shape[0]):
        centre = origins[n, 0, 0].numpy()
        corners = [(origins[n, i, j] + frustum_depth * directions[n, i, j]).numpy() for i, j in corner_index]
        line_colour = "tab:red" if n in highlight else colour
        for corner in corners:
            ax.plot(*zip(centre, corner), color=line_colour, linewidth=0.8)
        for k, (start, end) in enumerate(zip(corners, corners[1:] + corners[:1])):
            ax.plot(*zip(start, end), color=line_colour, linewidth=2.0 if k == 0 else 0.8)
    ax.scatter([0], [0], [0], color="black", s=20)
    limit = float(c2w[:, :3, 3].abs().max()) + frustum_depth
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), zlim=(-limit, limit), xlabel="x", ylabel="y", zlabel="z")
    ax.set_box_aspect((1, 1, 1))
    return ax


def plot_depth_planes(
    K: Tensor,
    c2w: Tensor,
    image_size: int,
    near: float,
    far: float,
    n_planes: int,
    ax=None,
    every: int = 1,
    colour: str = "tab:orange",
):
    """Draw the depth planes of a camera's frustum volume in 3D: where its voxels sit in the world.

    Plane ``d`` is the image rectangle ``[0, W] x [0, H]`` unprojected to the depth of its voxel
    centres, :func:`genvs.field.plane_depths`; the four frustum edges join the nearest and
    farthest planes.

    Args:
        K: ``[3, 3]`` intrinsics of the ``image_size`` image; c2w: ``[4, 4]`` pose.
        n_planes: ``D``; every: draw one plane in ``every``.
    Returns:
        the matplotlib 3D axes.
    """
    if ax is None:
        ax = plt.figure(figsize=(5, 5)).add_subplot(projection="3d")
    corners = K.new_tensor([[0.0, 0.0], [image_size, 0.0], [image_size, image_size], [0.0, image_size]])
    depths = plane_depths(near, far, n_planes)[::every].tolist()
    planes = [unproject(corners, K.new_full((4,), depth), K, c2w).numpy() for depth in depths]
    for plane in planes:
        ax.plot(*np.concatenate([plane, plane[:1]]).T, color=colour, linewidth=0.6)
    for corner in range(4):
        ax.plot(*np.stack([planes[0][corner], planes[-1][corner]]).T, color=colour, linewidth=0.6, linestyle=":")
    return ax


def feature_pca(features: Tensor, low: float = 0.01, high: float = 0.99) -> Tensor:
    """Show many-channel features as colours: their 3 principal components as R, G and B.

    The principal directions are computed jointly over all images and pixels, so the same colour
    means the same feature everywhere; each component is then mapped from its ``low``-``high``
    quantile range to [-1, 1] (the model range that :func:`show_images` displays).

    Args:
        features: ``[N, C, ...]`` feature maps (``C >= 3``), e.g. ``[N, C, H, W]``.
    Returns:
        ``[N, 3, ...]`` in [-1, 1].
    """
    channels = features.shape[1]
    flat = features.detach().float().cpu().movedim(1, -1).reshape(-1, channels)
    centred = flat - flat.mean(dim=0)
    _, _, directions = torch.linalg.svd(centred, full_matrices=False)
    components = centred @ directions[:3].T  # [pixels, 3]
    lower, upper = torch.quantile(components, torch.tensor([low, high]), dim=0)
    scaled = (2.0 * (components - lower) / (upper - lower).clamp_min(1e-8) - 1.0).clamp(-1.0, 1.0)
    shape = features.shape[:1] + features.shape[2:] + (3,)
    return scaled.reshape(shape).movedim(-1, 1)


def dataset_browser(dataset, image_scale: float = 3.0):
    """An ipywidgets browser over an SRN-format dataset: pick an object and a view.

    Shows the image next to a 3D plot of all that object's cameras (the shown one in red).
    ``dataset`` is a :class:`genvs.data.SRNDataset` built with ``views_per_item=None``.
    """
    import ipywidgets as widgets

    cache: dict[int, dict] = {}

    def show(object_index: int, view: int):
        item = cache.setdefault(object_index, dataset[object_index])
        view = min(view, item["images"].shape[0] - 1)
        figure = plt.figure(figsize=(2 * image_scale, image_scale))
        image_ax = figure.add_subplot(1, 2, 1)
        image_ax.imshow(to_display(item["images"][view]).permute(1, 2, 0).numpy(), interpolation="nearest")
        image_ax.set_title(f"{item['object_id']} view {int(item['view_ids'][view])}", fontsize=9)
        image_ax.axis("off")
        camera_ax = figure.add_subplot(1, 2, 2, projection="3d")
        plot_cameras(item["c2w"], item["K"], item["images"].shape[-2:], ax=camera_ax, highlight=[view],
                     frustum_depth=0.15)
        plt.show()

    n_views = dataset.objects[0].n_views
    return widgets.interactive(
        show,
        object_index=widgets.IntSlider(0, 0, len(dataset) - 1, description="object"),
        view=widgets.IntSlider(0, 0, n_views - 1, description="view"),
    )


def plot_genvs_diagram(config, batch: int = 1, inputs: int = 1, targets: int = 1):
    """Draw GeNVS's data flow for ``config`` (a :class:`genvs.model.GeNVSConfig`), each arrow labelled with its shape.

    Returns the matplotlib figure.
    """
    encoder, field, denoiser = config.field.encoder, config.field, config.denoiser
    H, s, C = encoder.image_size, field.render_size, field.feature_channels
    D, h = encoder.depth_planes, encoder.volume_size
    n_samples = field.n_stratified + field.n_importance
    boxes = [  # (x, y, text, colour)
        (0.08, 0.75, "input views\n+ cameras", "#dddddd"),
        (0.29, 0.75, f"encoder\n{encoder.backbone} + ASPP\n+ decoder", "#cfe2f3"),
        (0.50, 0.75, "feature volumes\n(one per input view)", "#cfe2f3"),
        (0.71, 0.75, f"field: sample,\naverage views,\nMLP {field.mlp_hidden} wide", "#d9ead3"),
        (0.92, 0.75, f"volume\nrendering\n{n_samples} samples/ray", "#d9ead3"),
        (0.92, 0.40, "feature image\nupsampled\n(bilinear)", "#d9ead3"),
        (0.60, 0.40, "U-Net denoiser\nD(x; σ, c)", "#fce5cd"),
        (0.29, 0.40, "clean target\nestimate", "#fce5cd"),
        (0.60, 0.07, "noisy target\nx = y + σn", "#dddddd"),
    ]
    arrows = [  # (from, to, label)
        (0, 1, f"[{batch}·{inputs}, 3, {H}, {H}]"),
        (1, 2, f"[{batch}·{inputs}, {C}, {D}, {h}, {h}]"),
        (2, 3, "3D points on\ntarget rays"),
        (3, 4, f"σ, {C} features\nper point"),
        (4, 5, f"[{batch}·{targets}, {C}, {s}, {s}]"),
        (5, 6, f"c: [{batch}·{targets}, {C}, {H}, {H}]"),
        (8, 6, f"[{batch}·{targets}, 3, {H}, {H}]"),
        (6, 7, f"[{batch}·{targets}, 3, {H}, {H}]"),
    ]
    half_width, half_height = 0.078, 0.085
    figure, ax = plt.subplots(figsize=(12, 4.6))
    ax.set_axis_off()
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.03, 0.95))
    for x, y, text, colour in boxes:
        ax.add_patch(FancyBboxPatch((x - half_width, y - half_height), 2 * half_width, 2 * half_height,
                                    boxstyle="round,pad=0.005", facecolor=colour, edgecolor="#555555"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
    for start, end, label in arrows:
        (x0, y0), (x1, y1) = boxes[start][:2], boxes[end][:2]
        horizontal = abs(y1 - y0) < 1e-6
        dx = np.sign(x1 - x0) * half_width if horizontal else 0.0
        dy = 0.0 if horizontal else np.sign(y1 - y0) * half_height
        ax.annotate("", xy=(x1 - dx, y1 - dy), xytext=(x0 + dx, y0 + dy),
                    arrowprops={"arrowstyle": "->", "color": "#333333"})
        label_x, label_y = ((x0 + x1) / 2, y0 + half_height + 0.05) if horizontal else (x0 + 0.01, (y0 + y1) / 2)
        ax.text(label_x, label_y, label, ha="center" if horizontal else "left", va="center", fontsize=7.5,
                color="#1f4e79")
    ax.text(0.29, 0.2, "denoising loss\n(EDM, vs the true target)", ha="center", fontsize=8, color="#990000")
    ax.text(0.92, 0.13, "RGB loss: channels 0-2\nvs the target image\n(+ opacity regulariser)", ha="center",
            fontsize=8, color="#990000")
    ax.set_title(f"GeNVS: one forward pass of training ({H} px images, {s} px render)", fontsize=11)
    return figure


def plot_course_map():
    """Draw the course as a map: GeNVS's pipeline as boxes, the lessons that build each part, and each lesson's payoff.

    Top: photo -> encoder -> frustum feature volume -> volume rendering -> feature image -> EDM denoiser ->
    novel view, with the autoregressive loop back to the input; each box is coloured by, and labelled with,
    the lesson that builds it. Bottom: one row per lesson (00 to 06): what it builds and what you see at its end.
    Returns the matplotlib figure.
    """
    colours = {"00": "#e8e8e8", "01": "#d9ead3", "02": "#cfe2f3", "03": "#fce5cd", "04": "#ead1dc",
               "05": "#fff2cc", "06": "#d0e0e3"}
    stages = [  # (box text, lessons that build it; the first one colours the box)
        ("photo\n+ camera", "00, 01"),
        ("encoder\n(2D CNN)", "02"),
        ("frustum\nfeature volume", "02"),
        ("volume\nrendering", "01"),
        ("feature\nimage", "02"),
        ("EDM\ndenoiser", "03"),
        ("novel\nview", "05"),
    ]
    lessons = [  # (number, title, what it builds, what you see at its end)
        ("00", "setup and data", "SRN-format data, cameras",
         "synthetic cars in the SRN format, camera frustums in 3D, a real SRN car whose poses check out"),
        ("01", "cameras and volume rendering", "pixel rays, volume rendering",
         "a voxel field fitted to one car renders views it never saw, with depth and opacity maps"),
        ("02", "image-to-volume encoder", "encoder, frustum volume, feature image",
         "a regression baseline: new views of new cars from one photo, in the right pose but blurry"),
        ("03", "EDM denoising", "the EDM denoiser",
         "a conditional denoiser whose samples are sharper than the blurry image it is conditioned on"),
        ("04", "joint training", "the whole model, trained end to end",
         "a small GeNVS trained live: loss curves and samples improving, a checkpoint you can resume"),
        ("05", "sampling, autoregressive generation", "samplers, the autoregressive loop",
         "novel views of new cars from one photo, and an orbit around the car as a video"),
        ("06", "evaluation", "metrics, the held-out protocol",
         "PSNR, SSIM, sharpness and consistency: sharp samples against the blurry regression"),
    ]
    figure, ax = plt.subplots(figsize=(13, 6.6))
    ax.set_axis_off()
    ax.set(xlim=(0.0, 1.0), ylim=(0.0, 0.95))
    half_width, half_height, y = 0.052, 0.06, 0.74
    xs = np.linspace(0.07, 0.93, len(stages))
    for x, (text, builders) in zip(xs, stages):
        ax.add_patch(FancyBboxPatch((x - half_width, y - half_height), 2 * half_width, 2 * half_height,
                                    boxstyle="round,pad=0.006", facecolor=colours[builders[:2]], edgecolor="#555555"))
        ax.text(x, y, text, ha="center", va="center", fontsize=9)
        ax.text(x, y - half_height - 0.035, f"lesson {builders}", ha="center", va="center", fontsize=8.5,
                fontweight="bold", color="#333333")
    for x0, x1 in zip(xs, xs[1:]):
        ax.annotate("", xy=(x1 - half_width - 0.006, y), xytext=(x0 + half_width + 0.006, y),
                    arrowprops={"arrowstyle": "->", "color": "#333333"})
    top, loop_y = y + half_height + 0.01, y + half_height + 0.07  # the autoregressive loop, above the boxes
    ax.plot([xs[-1], xs[-1], xs[0]], [top, loop_y, loop_y], color="#7f6000", linewidth=1.2)
    ax.annotate("", xy=(xs[0], top), xytext=(xs[0], loop_y), arrowprops={"arrowstyle": "->", "color": "#7f6000"})
    ax.text(0.5, loop_y + 0.03, "lesson 05: autoregressive generation, each generated view becomes another input",
            ha="center", va="center", fontsize=9, color="#7f6000")
    # Lesson 04 trains encoder ... denoiser together; lesson 06 scores the novel views.
    left, right = xs[1] - half_width, xs[5] + half_width
    ax.plot([left, left, right, right], [0.61, 0.595, 0.595, 0.61], color="#741b47", linewidth=1.2)
    ax.text((left + right) / 2, 0.57, "lesson 04: joint training of encoder, field and denoiser",
            ha="center", va="center", fontsize=9, color="#741b47")
    ax.text(xs[-1], 0.57, "lesson 06: scored\nagainst the truth", ha="center", va="center", fontsize=8.5,
            color="#134f5c")
    ax.text(0.07, 0.50, "lesson", fontsize=8.5, color="#555555", ha="center", va="center")
    ax.text(0.11, 0.50, "builds", fontsize=8.5, color="#555555", va="center")
    ax.text(0.38, 0.50, "what you see at the end", fontsize=8.5, color="#555555", va="center")
    for row, (number, title, builds, payoff) in enumerate(lessons):
        row_y = 0.44 - row * 0.066
        ax.add_patch(FancyBboxPatch((0.048, row_y - 0.022), 0.044, 0.044, boxstyle="round,pad=0.004",
                                    facecolor=colours[number], edgecolor="#555555"))
        ax.text(0.07, row_y, number, ha="center", va="center", fontsize=10, fontweight="bold")
        ax.text(0.11, row_y + 0.012, title, va="center", fontsize=9, fontweight="bold")
        ax.text(0.11, row_y - 0.016, builds, va="center", fontsize=8.5, color="#333333")
        ax.text(0.38, row_y, payoff, va="center", fontsize=9)
    ax.set_title("The course: GeNVS's pipeline, the lesson that builds each part, what each lesson shows",
                 fontsize=11.5)
    return figure


def plot_losses(records: Sequence[dict], ax=None, parts: Sequence[str] = LOSS_PARTS, smooth: int = 1):
    """Loss curves of a training log (:func:`genvs.training.read_log` rows or the trainer's records).

    Args:
        records: dicts with ``step`` and any of ``parts``.
        smooth: running mean over this many records (1: none).
    Returns:
        the matplotlib axes (log-scale losses against steps).
    """
    if ax is None:
        ax = plt.figure(figsize=(6, 3.5)).add_subplot()
    steps = np.array([record["step"] for record in records])
    for part in parts:
        values = np.array([record.get(part, np.nan) for record in records], dtype=float)
        if np.isnan(values).all():
            continue
        if smooth > 1 and len(values) >= smooth:
            values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
        ax.plot(steps[len(steps) - len(values):], values, label=part, linewidth=2 if part == "loss" else 1)
    ax.set(xlabel="step", ylabel="loss", yscale="log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_error_per_sigma(trace: dict, training_noise: tuple[float, float] | None = None, title: str = ""):
    """Where a denoiser's samples get their fine detail, as one figure for lessons 03-05, from a
    :func:`genvs.sampling.trace_detail` result.

    Left: the denoiser's error ``rmse`` per noise level (:func:`genvs.denoiser.error_per_sigma`) against
    ``sigma`` itself (what returning the noisy input would score) and the truth's fine-detail size: where the
    error is above that size the denoiser cannot know the fine detail and a sampler must invent it. Shaded: the
    training distribution ``ln sigma ~ N(mean, std^2)`` (``training_noise``). Right: along one sampling run
    (:func:`genvs.metrics.detail_settling` at the steps' noise levels), the share of the final sample's fine detail
    still undecided and the cosine between the estimate's fine detail and the truth's. The trace's ``band``, where
    25% to 90% of the detail is decided (:func:`genvs.metrics.deciding_sigmas`), is shaded on both panels. Noise
    falls from left to right, as in sampling.

    Returns:
        the matplotlib figure.
    """
    errors, settling, band = trace["errors"], trace["settling"], trace["band"]
    figure, (ax, right) = plt.subplots(1, 2, figsize=(10.4, 3.4))
    sigma = errors["sigma"].numpy()
    ax.loglog(sigma, errors["rmse"].numpy(), "o-", markersize=3, label="denoiser's error (RMSE)")
    ax.loglog(sigma, sigma, "--", color="gray", label="σ: the noisy input's error")
    ax.axhline(float(errors["truth_detail_rms"]), color="tab:green", linestyle=":",
               label="size of the truth's fine detail")
    if training_noise is not None:
        mean, std = training_noise
        density = np.exp(-0.5 * ((np.log(sigma) - mean) / std) ** 2)
        twin = ax.twinx()
        twin.fill_between(sigma, density, color="tab:orange", alpha=0.15, label="training σ (density)")
        twin.set(ylim=(0, 1.05), yticks=[])
        twin.legend(loc="lower left", fontsize=7)
    ax.set(xlabel="σ", ylabel="RMSE of D(y + σn; σ)", title=title or "the denoiser's error per noise level")
    steps = trace["step_sigmas"].numpy()
    right.semilogx(steps, settling["undecided"].numpy(), "o-", markersize=3, label="final fine detail still undecided")
    right.semilogx(steps, settling["agreement"].numpy(), "s-", markersize=3,
                   label="estimate's fine detail vs the truth's (cosine)")
    right.set(xlabel="σ of the sampler's step", ylim=(0, 1.05), title="one sampling run, step by step")
    for panel in (ax, right):
        panel.axvspan(min(band), max(band), color="tab:red", alpha=0.1)
        panel.invert_xaxis()
    right.legend(fontsize=7)
    ax.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return figure


def trace_summary(trace: dict) -> str:
    """The numbers behind :func:`plot_error_per_sigma` for a :func:`genvs.sampling.trace_detail` result, as text:
    the truth's fine-detail size, the denoiser's error at 8 of the noise levels, the band of levels where 25% to 90%
    of the final fine detail is decided, the share still undecided after the first step below sigma = 0.1, and the cosine with the
    truth's fine detail at the first and last step."""
    errors, settling, step_sigmas = trace["errors"], trace["settling"], trace["step_sigmas"]
    lines = [f"{len(trace['samples'])} images; size of the truth's fine detail (RMS): {errors['truth_detail_rms']:.3f}",
             f"{'σ':>8}{'RMSE of D':>11}{'noise left':>12}{'detail of D':>13}"]
    for row in range(0, len(errors["sigma"]), max(1, len(errors["sigma"]) // 8)):
        lines.append(f"{errors['sigma'][row]:8.3f}{errors['rmse'][row]:11.3f}{errors['noise_left'][row]:12.3f}"
                     f"{errors['detail'][row]:13.2f}")
    start = settling["undecided"][0]
    low = step_sigmas < 0.1
    late = float(settling["undecided"][low][0] / start) if low.any() else 0.0
    lines += [f"25% to 90% of the final fine detail is decided between σ = {max(trace['band']):.2f} and "
              f"σ = {min(trace['band']):.2f}; after the first step below σ = 0.1, {late:.1%} of it is still undecided",
              f"cosine with the truth's fine detail: {settling['agreement'][0]:.2f} at the first step, "
              f"{settling['agreement'][-1]:.2f} at the last"]
    return "\n".join(lines)


def samples_browser(run_dir: str | Path, image_scale: float = 2.0):
    """A slider over a run's ``samples/step_*.png`` grids: watch the samples change during training."""
    import ipywidgets as widgets

    paths = sorted(Path(run_dir).glob("samples/step_*.png"))
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no samples/step_*.png yet (sample grids are written during training)")
    steps = [int(path.stem.split("_")[1]) for path in paths]

    def show(step: int):
        image = iio.imread(paths[steps.index(step)])
        plt.figure(figsize=(image.shape[1] / 80 * image_scale / 2, image.shape[0] / 80 * image_scale / 2))
        plt.imshow(image, interpolation="nearest")
        plt.axis("off")
        plt.title(f"step {step}")
        plt.show()

    return widgets.interactive(show, step=widgets.SelectionSlider(options=steps, value=steps[-1], description="step"))


def plot_evaluation_examples(examples: dict[str, Tensor], target: int = 0, size: float = 1.6):
    """One row per evaluated object: input | truth | each method's prediction of one target view.

    Args:
        examples: :func:`genvs.evaluation.evaluate`'s ``examples``: ``input [E, 3, H, W]``,
            ``truth [E, k, 3, H, W]`` and one ``[E, k, 3, H, W]`` per method.
        target: which of the ``k`` kept targets to show.
    Returns:
        the matplotlib figure.
    """
    columns = ["input", "truth"] + [name for name in examples if name not in ("input", "truth")]
    rows = [[examples["input"][row]] + [examples[name][row, target] for name in columns[1:]]
            for row in range(examples["input"].shape[0])]
    titles = columns + [""] * (len(columns) * (len(rows) - 1))
    return show_images([image for row in rows for image in row], titles, n_columns=len(columns), size=size)


def _colour_map(values: Tensor, name: str) -> Tensor:
    """``[..., H, W]`` values in [0, 1] (NaN: white) as ``[..., 3, H, W]`` colours in [-1, 1]."""
    rgba = torch.from_numpy(plt.get_cmap(name)(values.nan_to_num(0.0).clamp(0, 1).numpy())).float()
    colours = torch.where(values.isnan()[..., None], torch.ones(3), rgba[..., :3])
    return colours.movedim(-1, -3) * 2 - 1


def field_rgb(features: Tensor, size: int) -> Tensor:
    """The feature field's colour guess for display: channels 0-2 of ``features [..., C, s, s]``,
    upsampled (nearest) to ``[..., 3, size, size]`` and clamped to [-1, 1]."""
    rgb = features[..., :3, :, :].float()
    upsampled = torch.nn.functional.interpolate(rgb.reshape(-1, *rgb.shape[-3:]), size=(size, size), mode="nearest")
    return upsampled.reshape(*rgb.shape[:-2], size, size).clamp(-1.0, 1.0)


MIN_PANEL_PIXELS = 256
"""The smallest panel :func:`trajectory_frames` writes by default: a 32 px image becomes 256 px (each pixel an
8 x 8 block), large enough to read in a video player, a GIF in a README or an image viewer."""


def panel_scale(size: int, min_pixels: int = MIN_PANEL_PIXELS) -> int:
    """The smallest integer upscaling that makes a ``size`` px image at least ``min_pixels`` px (1 if it already is):
    32 -> 8, 64 -> 4, 100 -> 3, 128 -> 2, 256 -> 1."""
    return max(1, -(-min_pixels // size))


def trajectory_frames(result: dict, near: float, far: float, scale: int | None = None) -> Tensor:
    """Video frames of a generated trajectory: sample | field RGB | depth | opacity, side by side.

    Args:
        result: :func:`genvs.sampling.generate_trajectory`'s dict (``samples [N, 3, H, W]``,
            ``features [N, C, s, s]``, ``depth`` and ``opacity [N, s, s]``).
        near, far: the depth range mapped to the colour map (blank where opacity < 0.5).
        scale: integer upscaling (nearest) of every panel; ``None`` (default): :func:`panel_scale` of the image
            size, so that each panel is at least :data:`MIN_PANEL_PIXELS` px (32 px images: x8).
    Returns:
        ``[N, 3, H * scale, 4 * W * scale]`` in [-1, 1].
    """
    samples = result["samples"].float()
    size = samples.shape[-1]

    def panel(images: Tensor) -> Tensor:
        return torch.nn.functional.interpolate(images.float(), size=(size, size), mode="nearest")

    depth = (masked_depth(result["depth"], result["opacity"]) - near) / (far - near)
    panels = [samples, field_rgb(result["features"], size), panel(_colour_map(depth, MAP_CMAPS["depth"])),
              panel(result["opacity"][:, None].expand(-1, 3, -1, -1) * 2 - 1)]
    frames = torch.cat(panels, dim=-1)
    scale = panel_scale(size) if scale is None else scale
    return torch.nn.functional.interpolate(frames, scale_factor=scale, mode="nearest") if scale > 1 else frames


def progress_frames(steps: Sequence[dict], images: Sequence[int] = (0,), scale: int | None = None) -> Tensor:
    """Video frames of one sampling run, step by step: the noisy image ``x`` beside the denoiser's estimate.

    Args:
        steps: the dicts :func:`genvs.sampling.sample_images` passes to its ``callback``, one per step
            (``x``, ``denoised`` ``[B, 3, H, W]``, ``sigma``).
        images: which of the batch's images to show, one row each.
        scale: integer upscaling (nearest); ``None``: :func:`panel_scale` of the image size.
    Returns:
        ``[S, 3, rows * H * scale, 2 * W * scale]`` in [-1, 1] (``x`` clamped to [-1, 1] for display).
    """
    frames = torch.stack([torch.cat([torch.cat([step["x"][index].clamp(-1, 1), step["denoised"][index].clamp(-1, 1)],
                                               dim=-1) for index in images], dim=-2).float().cpu()
                          for step in steps])
    scale = panel_scale(frames.shape[-2] // len(images)) if scale is None else scale
    return torch.nn.functional.interpolate(frames, scale_factor=scale, mode="nearest") if scale > 1 else frames


def write_video(frames: Tensor, path: str | Path, fps: int = 12) -> Path:
    """Write ``frames [N, 3, H, W]`` in [-1, 1] as an H.264 mp4 (imageio + ffmpeg), or a GIF if that fails.

    An mp4 needs even ``H`` and ``W``; a ``.gif`` path, or an mp4 that cannot be written (no
    ffmpeg), gives a looping GIF next to it. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = _pixels(frames)
    if path.suffix == ".mp4":
        try:
            iio.imwrite(path, pixels, plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)
            return path
        except (OSError, RuntimeError, ValueError) as error:
            print(f"could not write an mp4 ({error}); writing a GIF instead")
            path = path.with_suffix(".gif")
    iio.imwrite(path, pixels, duration=1000 / fps, loop=0)
    return path


def _pixels(images: Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in [-1, 1] as ``[N, H, W, 3]`` uint8."""
    return (to_display(images.detach().float().cpu()).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def save_frames(images: Tensor, folder: str | Path) -> list[Path]:
    """Write ``images [N, 3, H, W]`` in [-1, 1] as ``folder/000.png, 001.png, ...`` at their own size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{index:03d}.png" for index in range(images.shape[0])]
    for path, pixels in zip(paths, _pixels(images)):
        iio.imwrite(path, pixels)
    return paths


def show_video(path: str | Path, width: int = 640):
    """Display a video (mp4 or GIF) inline in a notebook."""
    from IPython.display import Image, Video

    path = Path(path)
    if path.suffix == ".gif":
        return Image(filename=str(path), width=width)
    return Video(str(path), embed=True, width=width, html_attributes="controls loop autoplay muted")


class GenerationPanel:
    """Widgets to sample one novel view: object, camera offsets, sampler settings, a Generate button.

    The target camera is the object's input camera moved by the azimuth and elevation sliders
    (:func:`genvs.cameras.rotate_around`); Generate shows the input, the feature field's RGB,
    depth and opacity for that camera, and the sample, side by side.

    Args:
        model: a trained :class:`genvs.model.GeNVS`.
        objects: name -> one input view ``{"images": [1, 3, H, W], "K": [1, 3, 3], "c2w": [1, 4, 4]}``.
        denoisers: name -> a denoiser of the render (default ``{"GeNVS": model.denoiser}``); with more than one, a
            dropdown picks the route (lesson 07: GeNVS's own denoiser or the ControlNet route).
    Display ``panel.widget``; ``panel.generate()`` does what the button does and keeps ``panel.result``.
    """

    def __init__(self, model, objects: dict[str, dict], denoisers: dict | None = None):
        import ipywidgets as widgets

        from genvs.sampling import CHURN_SAMPLERS, SAMPLERS

        self.model, self.objects, self.churn_samplers, self.result = model, objects, CHURN_SAMPLERS, None
        self.denoisers = denoisers or {"GeNVS": model.denoiser}
        self.controls = {
            "object": widgets.Dropdown(options=list(objects), description="object"),
            "route": widgets.Dropdown(options=list(self.denoisers), description="route",
                                      layout=widgets.Layout(display=None if len(self.denoisers) > 1 else "none")),
            "azimuth": widgets.FloatSlider(value=60.0, min=-180.0, max=180.0, step=5.0, description="azimuth °"),
            "elevation": widgets.FloatSlider(value=0.0, min=-30.0, max=30.0, step=5.0, description="elevation °"),
            "sampler": widgets.Dropdown(options=list(SAMPLERS), value="euler", description="sampler"),
            "steps": widgets.IntSlider(value=25, min=2, max=100, description="steps"),
            "churn": widgets.FloatSlider(value=0.4, min=0.0, max=0.41, step=0.01, description="churn γ"),
            "guidance": widgets.FloatSlider(value=1.0, min=0.0, max=4.0, step=0.25, description="guidance"),
            "seed": widgets.IntText(value=0, description="seed"),
        }
        button = widgets.Button(description="Generate", button_style="primary")
        self.output = widgets.Output()
        button.on_click(lambda _: self._show())
        self.widget = widgets.VBox([widgets.HBox(list(self.controls.values())[:5]),
                                    widgets.HBox(list(self.controls.values())[5:] + [button]), self.output])

    def generate(self) -> dict:
        """Sample the view the controls describe; returns (and keeps) :func:`sample_novel_views`'s dict."""
        from genvs.sampling import sample_novel_views

        value = {name: control.value for name, control in self.controls.items()}
        view = self.objects[value["object"]]
        target = rotate_around(view["c2w"][0], math.radians(value["azimuth"]), math.radians(value["elevation"]))
        churn = value["churn"] if value["sampler"] in self.churn_samplers else 0.0  # EDM's per-step gamma
        self.result = sample_novel_views(self.model, view["images"][None], view["K"][None], view["c2w"][None],
                                         view["K"][None], target[None, None], self.denoisers[value["route"]],
                                         sampler=value["sampler"],
                                         steps=value["steps"], churn=churn, guidance_scale=value["guidance"],
                                         seed=value["seed"])
        return self.result

    def _show(self) -> None:
        self.output.clear_output(wait=True)
        with self.output:
            start = time.perf_counter()
            result = self.generate()
            seconds = time.perf_counter() - start
            images = self.objects[self.controls["object"].value]["images"]
            show_images([images[0], field_rgb(result["features"][0, 0], images.shape[-1]),
                         masked_depth(result["depth"][0, 0], result["opacity"][0, 0]), result["opacity"][0, 0],
                         result["samples"][0, 0]],
                        titles=["input", "field RGB", "field depth", "field opacity", f"sample ({seconds:.1f} s)"],
                        size=2.2, maps=[None, None, "depth", "opacity", None])
            plt.show()
