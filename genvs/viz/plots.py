"""Plots: images side by side, camera frustums and depth planes in 3D, feature colours, loss curves, the denoiser's
error per noise level, evaluation examples.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from genvs.cameras import pixel_rays, unproject
from genvs.field import plane_depths
from genvs.viz.images import MAP_CMAPS, MAP_RANGES, to_display

__all__ = ["show_images", "MIN_TILE_INCHES", "plot_cameras", "plot_depth_planes", "feature_pca", "LOSS_PARTS",
           "plot_losses", "plot_error_per_sigma", "trace_summary", "plot_evaluation_examples"]


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


LOSS_PARTS = ("loss", "denoising", "rgb", "input_rgb", "opacity")


def plot_losses(records: Sequence[dict], ax=None, parts: Sequence[str] = LOSS_PARTS, smooth: int = 1):
    """Loss curves of a training log (:func:`genvs.fitting.read_log` rows or the trainer's records).

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
    :func:`genvs.diagnostics.trace_detail` result.

    Left: the denoiser's error ``rmse`` per noise level (:func:`genvs.diagnostics.error_per_sigma`) against
    ``sigma`` itself (what returning the noisy input would score) and the truth's fine-detail size: where the
    error is above that size the denoiser cannot know the fine detail and a sampler must invent it. Shaded: the
    training distribution ``ln sigma ~ N(mean, std^2)`` (``training_noise``). Right: along one sampling run
    (:func:`genvs.diagnostics.detail_settling` at the steps' noise levels), the share of the final sample's fine detail
    still undecided and the cosine between the estimate's fine detail and the truth's. The trace's ``band``, where
    25% to 90% of the detail is decided (:func:`genvs.diagnostics.deciding_sigmas`), is shaded on both panels. Noise
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
    """The numbers behind :func:`plot_error_per_sigma` for a :func:`genvs.diagnostics.trace_detail` result, as text:
    the truth's fine-detail size, the denoiser's error at 8 of the noise levels, the band of levels where 25% to 90%
    of the final fine detail is decided, the share still undecided after the first step below sigma = 0.1, and the
    cosine with the truth's fine detail at the first and last step."""
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
