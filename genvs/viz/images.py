"""Images for display and on disk: [-1, 1] tensors to [0, 1], colour maps, grids, contact sheets, video frames, videos.

Model code keeps images in [-1, 1] as ``[B, 3, H, W]`` tensors; everything here converts to [0, 1] for display with
:func:`to_display`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import imageio.v3 as iio
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor
from torchvision.utils import make_grid

__all__ = ["to_display", "image_grid", "save_contact_sheet", "MAP_CMAPS", "MAP_RANGES", "masked_depth", "field_rgb",
           "MIN_PANEL_PIXELS", "panel_scale", "trajectory_frames", "progress_frames", "write_video", "save_frames",
           "show_video"]


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


def masked_depth(depth: Tensor, opacity: Tensor, threshold: float = 0.5) -> Tensor:
    """Depth ``[..., H, W]`` with NaN where ``opacity < threshold`` (shown blank by matplotlib).

    Rendered depth is ``sum w t / opacity``: meaningful where something was hit, noise elsewhere.
    """
    return torch.where(opacity >= threshold, depth, torch.full_like(depth, float("nan")))


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
