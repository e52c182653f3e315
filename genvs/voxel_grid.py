"""An explicit radiance field: a voxel grid of density and colour, fitted to posed images.

A radiance field maps a 3D point ``x`` to a density ``sigma(x) >= 0`` (how much light is
absorbed per unit length) and a colour ``c(x)``; volume rendering (:mod:`genvs.rendering`,
where the compositing equation lives) turns it into images. GeNVS predicts such a field from
an input image with a network. Here the field is *explicit*: its values are stored on a dense
``R x R x R`` grid of voxels covering the box ``[-bound, bound]^3`` and read between voxels
by trilinear interpolation,

    sigma(x) = softplus(D(x)) / voxel_size,    c(x) = sigmoid(C(x)),

where ``D`` and ``C`` interpolate the raw grids and ``voxel_size = 2 bound / (R - 1)``, so a
raw value of a few units already makes a voxel-thick layer opaque. Points outside the box have
zero density. Because rendering is differentiable, the grid can be fitted to the training
views of one object by gradient descent on the photometric error (:func:`fit_voxel_grid`), and
then rendered from held-out cameras (:func:`render_image`).

Grid layout: ``density[0, 0, k, j, i]`` holds voxel ``(x_i, y_j, z_k)`` with
``x_i = -bound + i * voxel_size`` (``align_corners=True``), so the grid's ``(D, H, W)`` axes
are world ``(z, y, x)`` -- the order in which ``torch.nn.functional.grid_sample`` reads its
``(x, y, z)`` sampling coordinates.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from genvs.cameras import pixel_rays
from genvs.fitting import FitSettings, Fitter
from genvs.rendering import FieldFn, image_rays, render_in_chunks, render_rays

__all__ = ["VoxelGrid", "render_image", "opacity_entropy", "fit_voxel_grid"]

# Raw density at initialisation: softplus(-8) / voxel_size ~ 0.018 per unit length at R = 64,
# so a ray through the whole box is about 2% opaque: the grid starts nearly transparent.
INIT_RAW_DENSITY = -8.0


class VoxelGrid(torch.nn.Module):
    """Dense trilinear grid of density and colour on ``[-bound, bound]^3``.

    Parameters ``density [1, 1, R, R, R]`` and ``colour [1, 3, R, R, R]`` hold raw
    (pre-activation) values; activations are applied after interpolation.

    Args:
        resolution: ``R``, voxels per side (grid points, corners included).
        bound: half the side of the box, in world units.
    """

    def __init__(self, resolution: int = 64, bound: float = 0.6):
        super().__init__()
        self.resolution = resolution
        self.bound = bound
        shape = (resolution, resolution, resolution)
        self.density = torch.nn.Parameter(torch.full((1, 1) + shape, INIT_RAW_DENSITY))
        self.colour = torch.nn.Parameter(torch.zeros((1, 3) + shape))

    @property
    def voxel_size(self) -> float:
        """Distance between neighbouring grid points, ``2 bound / (R - 1)``."""
        return 2.0 * self.bound / (self.resolution - 1)

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Density and colour at world points.

        Args:
            points: ``[..., 3]`` world coordinates.
        Returns:
            sigma ``[...]`` (>= 0, zero outside the box) and rgb ``[..., 3]`` in (0, 1).
        """
        batch_shape = points.shape[:-1]
        coords = (points / self.bound).reshape(1, -1, 1, 1, 3)  # grid_sample wants [N, D, H, W, 3]
        raw = torch.cat([self.density, self.colour], dim=1)
        sampled = F.grid_sample(raw, coords, align_corners=True, padding_mode="border")
        sampled = sampled.reshape(4, -1).T.reshape(batch_shape + (4,))  # from [1, 4, N, 1, 1]
        inside = (points.abs() <= self.bound).all(dim=-1)
        sigma = F.softplus(sampled[..., 0]) / self.voxel_size
        sigma = torch.where(inside, sigma, torch.zeros_like(sigma))
        return sigma, torch.sigmoid(sampled[..., 1:])

    def tv_loss(self) -> Tensor:
        """Total variation: mean squared difference between neighbouring raw voxels.

        Summed over the three axes and over density and colour: an optional smoothness prior
        against floaters where few cameras look (with 30-50 views around the object it did not
        improve held-out PSNR). Returns a scalar.
        """
        raw = torch.cat([self.density, self.colour], dim=1)
        return sum((raw.diff(dim=axis) ** 2).mean() for axis in (2, 3, 4))


def render_image(
    field: FieldFn,
    K: Tensor,
    c2w: Tensor,
    height: int,
    width: int,
    near: float,
    far: float,
    n_samples: int = 128,
    n_importance: int = 0,
    background: float | Tensor = 1.0,
    perturb: bool = False,
    chunk: int = 4096,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Render a whole image from one camera, ``chunk`` rays at a time.

    Differentiable; wrap the call in ``torch.no_grad()`` when only looking at the result.

    Args:
        field: maps points ``[..., S, 3]`` to ``(sigma [..., S], values [..., S, C])``,
            e.g. a :class:`VoxelGrid` (``C = 3`` colours in [0, 1]).
        K: ``[3, 3]`` intrinsics; c2w: ``[4, 4]`` camera-to-world pose.
        height, width: image size in pixels.
        near, far: depth range of the samples.
        n_samples, n_importance: stratified and importance samples per ray
            (see :func:`genvs.rendering.render_rays`).
        background: colour behind the field, in the field's units (1.0 = white for colours in [0, 1]).
        perturb: jitter the samples (training) or not (evaluation).
        chunk: rays rendered together; bounds memory.
    Returns:
        dict with ``rgb [C, H, W]`` (the field's values composited over ``background``;
        in [0, 1] for a :class:`VoxelGrid`), ``depth [H, W]`` (expected depth of what the ray
        hits; ``far`` where the opacity is below 1e-6, and meaningless where it is small, so mask
        it with the opacity for display) and ``opacity [H, W]`` (in [0, 1]).
    """
    origins, directions = pixel_rays(K, c2w, height, width)
    result = render_in_chunks(
        lambda o, d: render_rays(field, o, d, near, far, n_samples, n_importance, background, perturb, generator),
        origins.reshape(-1, 3), directions.reshape(-1, 3), chunk,
    )
    return {"rgb": result["values"].T.reshape(-1, height, width), "depth": result["depth"].reshape(height, width),
            "opacity": result["opacity"].reshape(height, width)}


def opacity_entropy(opacity: Tensor, eps: float = 1e-4) -> Tensor:
    """Mean binary entropy ``-o log o - (1 - o) log(1 - o)`` of ray opacities ``[...]``.

    Zero for rays that are fully transparent or fully opaque, largest at ``o = 1/2``. As a
    loss it removes the faint haze that the fit otherwise leaves in space that the training
    views only ever see against the white background (white density there costs nothing in
    the photometric loss). Returns a scalar.
    """
    o = opacity.clamp(eps, 1.0 - eps)
    return -(o * o.log() + (1.0 - o) * (1.0 - o).log()).mean()


def fit_voxel_grid(
    images: Tensor,
    K: Tensor,
    c2w: Tensor,
    near: float,
    far: float,
    steps: int = 1000,
    rays_per_step: int = 2048,
    lr: float = 0.3,
    seed: int = 0,
    resolution: int = 64,
    bound: float = 0.6,
    n_samples: int = 64,
    entropy_weight: float = 0.01,
    tv_weight: float = 0.0,
    progress: bool = True,
    callback: Callable[[int, VoxelGrid, float], None] | None = None,
) -> tuple[VoxelGrid, dict[str, list[float]]]:
    """Fit a :class:`VoxelGrid` to posed images of one object, on random ray batches.

    Every step draws ``rays_per_step`` pixels from all views, renders them with perturbed
    stratified samples over a white background and takes an Adam step (:class:`genvs.fitting.Fitter`, no weight
    decay, no clipping) on

        loss = MSE(rendered, target) + entropy_weight * opacity_entropy + tv_weight * tv_loss

    with colours in [0, 1]. The defaults reach about 30-33 dB PSNR on held-out views of a
    64x64 synthetic car from 50 training views in under a minute on one CPU thread. The steps
    are small, so on cores busy with other work ``torch.set_num_threads(1)`` is much faster
    (measured ~10x on 2 shared cores).

    Args:
        images: ``[V, 3, H, W]`` training views in [-1, 1], composited on white.
        K: ``[V, 3, 3]`` (or one ``[3, 3]``) intrinsics; c2w: ``[V, 4, 4]`` camera-to-world
            poses (OpenCV axes).
        near, far: depth range of the samples.
        steps, rays_per_step, lr: optimisation schedule; the learning rate decays along a cosine
            to ``lr / 10`` by the last step.
        seed: step ``t``'s ray batch and jitter come from ``derive_seed(seed, t)``; the same seed gives the same
            grid on CPU.
        resolution, bound: the grid (see :class:`VoxelGrid`).
        n_samples: stratified samples per ray.
        entropy_weight: weight of :func:`opacity_entropy` (cleaner opacity maps: it halved the
            held-out opacity error on synthetic cars at no cost in PSNR).
        tv_weight: weight of :meth:`VoxelGrid.tv_loss` (adds ~50% to the step time at R = 64).
        progress: show a tqdm progress bar.
        callback: called as ``callback(step, grid, mse)`` after every step.
    Returns:
        the fitted grid and a history dict of per-step lists: ``loss`` (the batch MSE),
        ``psnr`` (``-10 log10 MSE``, in dB) and ``time`` (seconds since the start).
    """
    device = images.device
    origins, directions, colours = image_rays((images + 1.0) / 2.0, K, c2w)  # [V*H*W, 3], colours in [0, 1]
    grid = VoxelGrid(resolution, bound).to(device)

    def loss(batch: dict, generator: torch.Generator) -> dict[str, Tensor]:
        index = torch.randint(colours.shape[0], (rays_per_step,), generator=generator, device=device)
        result = render_rays(
            grid, origins[index], directions[index], near, far, n_samples,
            background=1.0, perturb=True, generator=generator,
        )
        mse = F.mse_loss(result["values"], colours[index])
        total = mse + entropy_weight * opacity_entropy(result["opacity"])
        if tv_weight > 0:
            total = total + tv_weight * grid.tv_loss()
        return {"loss": total, "mse": mse}

    history: dict[str, list[float]] = {"loss": [], "psnr": [], "time": []}
    start = time.perf_counter()

    def record(row: dict) -> None:
        history["loss"].append(row["mse"])
        history["psnr"].append(-10.0 * math.log10(max(row["mse"], 1e-12)))
        history["time"].append(time.perf_counter() - start)
        if callback is not None:
            callback(row["step"] - 1, grid, row["mse"])

    settings = FitSettings(steps, warmup_steps=0, min_lr_fraction=0.1, weight_decay=0.0, grad_clip=0.0, seed=seed)
    fitter = Fitter(grid, {"grid": (grid, lr)}, loss, None, settings, None, {}, device=device, log_every=1,
                    progress=progress, desc="fit voxel grid")
    fitter.run(callback=record)
    return grid, history
