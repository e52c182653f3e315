"""Pinhole cameras: intrinsics, camera-to-world poses, pixel rays, projection, trajectories.

Conventions (see DESIGN.md, one of each everywhere):

* ``c2w`` is a 4x4 camera-to-world matrix with OpenCV axes: x right, y down, z forward.
  ``x_world = R @ x_cam + t`` with ``R = c2w[:3, :3]`` and ``t = c2w[:3, 3]`` (the camera centre).
* ``K`` is a 3x3 intrinsics matrix in pixels of the image it belongs to. Pixel ``(i, j)``
  (row i, column j) has its centre at ``(u, v) = (j + 0.5, i + 0.5)``, so the image spans
  ``[0, W] x [0, H]`` in continuous pixel coordinates.
* Ray directions have camera-space z-component 1, so the ray parameter ``t`` is depth along the
  optical axis: ``x = o + t * d`` lies at camera depth ``t``.

Every function is batched over leading dimensions and differentiable. Rays, projection and
unprojection always compute in (at least) float32, whatever autocast is active
(:func:`full_precision`): in bf16 a 128 px camera's projected pixels are off by up to a pixel.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "full_precision",
    "make_intrinsics",
    "rescale_intrinsics",
    "invert_intrinsics",
    "pixel_rays",
    "pluecker_rays",
    "project",
    "unproject",
    "world_to_camera",
    "look_at",
    "spherical_to_c2w",
    "c2w_to_spherical",
    "orbit",
    "spiral",
    "rotation_about",
    "rotate_around",
    "trajectory_from",
]


Function = TypeVar("Function", bound=Callable)
LOW_PRECISION = (torch.float16, torch.bfloat16)


def full_precision(function: Function) -> Function:
    """Decorator: run ``function`` with autocast off and its half-precision tensor arguments in float32.

    Geometry (rays, projection, volume coordinates) needs float32 whatever autocast a training
    step runs under: bf16 keeps 8 significant bits. Measured on SRN's 128 px camera (``f = 131.25``)
    under CPU bf16 autocast without it: projected pixels off by up to 0.94 px, depths by 0.009
    (0.6 of 64 depth planes over [0.8, 1.8]). float64 arguments stay float64.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        no_autocast = (torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type)
                       else contextlib.nullcontext())  # e.g. the meta device: no autocast to turn off
        with no_autocast:
            return function(*(_at_least_float32(value) for value in args),
                            **{name: _at_least_float32(value) for name, value in kwargs.items()})

    return wrapper


def _at_least_float32(value):
    return value.float() if isinstance(value, Tensor) and value.dtype in LOW_PRECISION else value


def make_intrinsics(focal: float, cx: float, cy: float, dtype=torch.float32) -> Tensor:
    """Build ``K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]`` (square pixels). Returns ``[3, 3]``."""
    return torch.tensor([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def rescale_intrinsics(K: Tensor, scale_x: float, scale_y: float | None = None) -> Tensor:
    """Intrinsics for an image resized by ``scale_x`` horizontally and ``scale_y`` vertically.

    With pixel centres at +0.5 the image spans ``[0, W]``, so resizing maps ``u -> s * u``
    exactly: ``fx' = s_x fx``, ``cx' = s_x cx``, ``fy' = s_y fy``, ``cy' = s_y cy``.

    Args:
        K: ``[..., 3, 3]`` intrinsics.
        scale_x: new width / old width.
        scale_y: new height / old height (defaults to ``scale_x``).
    Returns:
        ``[..., 3, 3]`` rescaled intrinsics (a new tensor).
    """
    scale_y = scale_x if scale_y is None else scale_y
    scaled = K.clone()  # rows 0 and 1 scale, row 2 stays; Python factors: no host-to-device copy
    scaled[..., 0, :] *= scale_x
    scaled[..., 1, :] *= scale_y
    return scaled


def invert_intrinsics(K: Tensor) -> Tensor:
    """``K^{-1}`` in closed form (no ``torch.linalg.inv``, which waits for the GPU).

    For ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (an upper-triangular pinhole matrix)::

        K^{-1} = [[1/fx, -s/(fx fy), (s cy - cx fy)/(fx fy)],
                  [0,     1/fy,      -cy/fy],
                  [0,     0,          1]]

    Args:
        K: ``[..., 3, 3]`` intrinsics (the bottom row must be ``[0, 0, 1]``, below the diagonal zeros).
    Returns:
        ``[..., 3, 3]``.
    """
    fx, s, cx = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    fy, cy = K[..., 1, 1], K[..., 1, 2]
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([1 / fx, -s / (fx * fy), (s * cy - cx * fy) / (fx * fy)], dim=-1),
            torch.stack([zero, 1 / fy, -cy / fy], dim=-1),
            torch.stack([zero, zero, one], dim=-1)]
    return torch.stack(rows, dim=-2)


@full_precision
def pixel_rays(K: Tensor, c2w: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """World-space rays through every pixel centre.

    ``d_cam = K^{-1} [j + 0.5, i + 0.5, 1]^T`` (so ``d_cam.z = 1``), ``d = R d_cam``, ``o = t``.

    Args:
        K: ``[..., 3, 3]`` intrinsics.
        c2w: ``[..., 4, 4]`` camera-to-world poses (same leading dims as ``K``, or broadcastable).
        height, width: image size in pixels.
    Returns:
        origins ``[..., H, W, 3]`` and directions ``[..., H, W, 3]`` (not normalised; camera-space
        z-component 1, so ``t`` along the ray is depth).
    """
    dtype, device = c2w.dtype, c2w.device
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device) + 0.5,
        torch.arange(width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H, W, 3]
    K_inv = invert_intrinsics(K)[..., None, None, :, :]  # [..., 1, 1, 3, 3]
    dirs_cam = (K_inv @ pixels.unsqueeze(-1)).squeeze(-1)  # [..., H, W, 3]
    rotation = c2w[..., None, None, :3, :3]
    directions = (rotation @ dirs_cam.unsqueeze(-1)).squeeze(-1)
    origins = c2w[..., None, None, :3, 3].expand_as(directions)
    return origins, directions


def pluecker_rays(K: Tensor, c2w: Tensor, height: int, width: int) -> Tensor:
    """Pluecker coordinates ``(d, o x d)`` of the ray through every pixel centre (Pluecker 1865; Sitzmann et al.'s
    Light Field Networks, 2021): ``d`` the pixel's unit ray direction, ``o`` the camera centre. ``(d, o x d)`` names
    the ray itself, not one point on it: the moment ``o x d`` is the same for every point ``o`` of the ray.

    Args:
        K: ``[..., 3, 3]`` intrinsics of ``height x width`` images; c2w: ``[..., 4, 4]``.
    Returns:
        ``[..., 6, H, W]``: the unit direction ``d`` (channels 0-2) and the moment ``o x d`` (3-5), in the frame of
        ``c2w`` (world; or another camera's, for poses relative to it).
    """
    origins, directions = pixel_rays(K, c2w, height, width)  # [..., H, W, 3]
    directions = F.normalize(directions, dim=-1)
    rays = torch.cat([directions, torch.linalg.cross(origins, directions, dim=-1)], dim=-1)
    return rays.movedim(-1, -3)


@full_precision
def world_to_camera(points: Tensor, c2w: Tensor) -> Tensor:
    """Camera-space coordinates ``x_cam = R^T (x - t)`` of world points.

    Args:
        points: ``[..., N, 3]`` world points.
        c2w: ``[..., 4, 4]`` rigid camera-to-world poses.
    Returns:
        ``[..., N, 3]`` camera-space points (OpenCV axes; z is depth).
    """
    rotation = c2w[..., :3, :3]
    centre = c2w[..., None, :3, 3]
    return (points - centre) @ rotation  # row-vector form of R^T (x - t)


@full_precision
def project(points: Tensor, K: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points into a camera: ``[u, v, 1]^T = K x_cam / z``.

    Args:
        points: ``[..., N, 3]`` world points.
        K: ``[..., 3, 3]`` intrinsics.
        c2w: ``[..., 4, 4]`` camera-to-world poses.
    Returns:
        uv ``[..., N, 2]`` in continuous pixel coordinates (pixel centres at +0.5) and
        depth ``[..., N]`` (camera-space z; points behind the camera have depth <= 0 and
        meaningless uv).
    """
    x_cam = world_to_camera(points, c2w)
    depth = x_cam[..., 2]
    pixels = x_cam @ K.transpose(-1, -2)  # [..., N, 3] = (K x_cam)^T
    safe_depth = torch.where(depth.abs() < 1e-8, torch.full_like(depth, 1e-8), depth)
    uv = pixels[..., :2] / safe_depth.unsqueeze(-1)
    return uv, depth


@full_precision
def unproject(uv: Tensor, depth: Tensor, K: Tensor, c2w: Tensor) -> Tensor:
    """Inverse of :func:`project`: ``x = R (z K^{-1} [u, v, 1]^T) + t``.

    Args:
        uv: ``[..., N, 2]`` pixel coordinates; depth: ``[..., N]`` camera-space z.
        K: ``[..., 3, 3]``; c2w: ``[..., 4, 4]``.
    Returns:
        ``[..., N, 3]`` world points.
    """
    pixels = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
    x_cam = pixels @ invert_intrinsics(K).transpose(-1, -2) * depth.unsqueeze(-1)
    return x_cam @ c2w[..., :3, :3].transpose(-1, -2) + c2w[..., None, :3, 3]


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """Camera-to-world pose of a camera at ``eye`` looking at ``target`` (OpenCV axes).

    ``z = normalize(target - eye)`` (forward), ``x = normalize(z x up)`` (right),
    ``y = z x x`` (down, i.e. opposite to ``up`` on screen).

    Args:
        eye: ``[..., 3]`` camera centres.
        target: ``[..., 3]`` points to look at (broadcastable to ``eye``).
        up: ``[..., 3]`` world up vector, default ``+z`` (SRN's world is z-up).
    Returns:
        ``[..., 4, 4]`` camera-to-world matrices.
    Raises:
        ValueError: if the viewing direction is parallel to ``up``.
    """
    if up is None:
        up = eye.new_tensor([0.0, 0.0, 1.0])
    target, up = torch.broadcast_tensors(target, up)
    eye, target, up = torch.broadcast_tensors(eye, target, up)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.linalg.cross(forward, up, dim=-1)
    if bool((right.norm(dim=-1) < 1e-6).any()):
        raise ValueError("look_at: viewing direction is parallel to `up`; choose another up vector")
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)
    c2w = torch.zeros(eye.shape[:-1] + (4, 4), dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = down
    c2w[..., :3, 2] = forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def spherical_to_c2w(
    azimuth: Tensor, elevation: Tensor, radius: Tensor | float, target: Tensor | None = None
) -> Tensor:
    """Camera on a sphere (world z-up) looking at ``target``.

    ``eye = target + r [cos(el) cos(az), cos(el) sin(az), sin(el)]``, angles in radians.

    Args:
        azimuth, elevation: ``[...]`` angles in radians; radius: ``[...]`` or a float.
        target: ``[3]`` point looked at (default origin).
    Returns:
        ``[..., 4, 4]`` camera-to-world poses.
    """
    azimuth = torch.as_tensor(azimuth, dtype=torch.float32)
    elevation = torch.as_tensor(elevation, dtype=azimuth.dtype, device=azimuth.device)
    radius = torch.as_tensor(radius, dtype=azimuth.dtype, device=azimuth.device)
    target = azimuth.new_zeros(3) if target is None else target.to(azimuth)
    direction = torch.stack(
        [torch.cos(elevation) * torch.cos(azimuth), torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation)],
        dim=-1,
    )
    eye = target + radius.unsqueeze(-1) * direction
    return look_at(eye, target.expand_as(eye))


def c2w_to_spherical(c2w: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Azimuth, elevation (radians) and radius of camera centres around ``target`` (z-up).

    Inverse of :func:`spherical_to_c2w` for the camera position. Args: ``c2w [..., 4, 4]``.
    Returns three ``[...]`` tensors.
    """
    offset = c2w[..., :3, 3] if target is None else c2w[..., :3, 3] - target
    radius = offset.norm(dim=-1)
    azimuth = torch.atan2(offset[..., 1], offset[..., 0])
    elevation = torch.asin((offset[..., 2] / radius).clamp(-1.0, 1.0))
    return azimuth, elevation, radius


def orbit(
    n_views: int,
    radius: float = 1.3,
    elevation_deg: float = 20.0,
    start_azimuth_deg: float = 0.0,
    sweep_deg: float = 360.0,
    target: Tensor | None = None,
) -> Tensor:
    """``n_views`` cameras on a horizontal circle, starting at ``start_azimuth_deg``.

    Azimuths ``start + sweep * k / n`` for ``k = 0 .. n-1`` (a full 360 sweep does not repeat
    the first view). Returns ``[n_views, 4, 4]`` camera-to-world poses looking at ``target``.
    """
    steps = torch.arange(n_views, dtype=torch.float32) / n_views
    azimuth = torch.deg2rad(torch.tensor(start_azimuth_deg) + sweep_deg * steps)
    elevation = torch.full_like(azimuth, math.radians(elevation_deg))
    return spherical_to_c2w(azimuth, elevation, radius, target)


def spiral(
    n_views: int,
    radius: float = 1.3,
    elevation_range_deg: tuple[float, float] = (10.0, 60.0),
    turns: float = 2.0,
    start_azimuth_deg: float = 0.0,
    target: Tensor | None = None,
) -> Tensor:
    """Cameras on a spiral over the upper hemisphere, like SRN's test views.

    Azimuth advances ``turns`` full circles while elevation rises linearly from
    ``elevation_range_deg[0]`` to ``[1]``. Returns ``[n_views, 4, 4]`` poses.
    """
    steps = torch.linspace(0.0, 1.0, n_views)
    azimuth = torch.deg2rad(start_azimuth_deg + 360.0 * turns * steps)
    low, high = elevation_range_deg
    elevation = torch.deg2rad(low + (high - low) * steps)
    return spherical_to_c2w(azimuth, elevation, radius, target)


def rotation_about(axis: Tensor, angle: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` by ``angle [...]`` (radians, right-handed) about the unit ``axis [3]``.

    Rodrigues: ``R = I + sin(a) [u]x + (1 - cos(a)) [u]x^2``.
    """
    angle = torch.as_tensor(angle, dtype=axis.dtype, device=axis.device)
    ux, uy, uz = axis.unbind()
    zero = axis.new_zeros(())
    cross = torch.stack([torch.stack([zero, -uz, uy]), torch.stack([uz, zero, -ux]), torch.stack([-uy, ux, zero])])
    sin, cos = angle.sin()[..., None, None], angle.cos()[..., None, None]
    return torch.eye(3, dtype=axis.dtype, device=axis.device) + sin * cross + (1 - cos) * cross @ cross


def rotate_around(c2w: Tensor, azimuth: Tensor, elevation: Tensor) -> Tensor:
    """The camera ``c2w`` moved rigidly around the object (world z-up, centred at the origin).

    First up by ``elevation`` (radians, about the horizontal axis ``normalize(p x z)``, ``p`` the
    camera centre), then about the world z axis by ``azimuth``; the camera keeps its distance to
    the object and its orientation relative to it.

    Args:
        c2w: ``[4, 4]``; azimuth, elevation: ``[...]`` angles in radians.
    Returns:
        ``[..., 4, 4]`` poses.
    Raises:
        ValueError: if the camera is on the z axis and an elevation change is asked for.
    """
    azimuth = torch.as_tensor(azimuth, dtype=c2w.dtype, device=c2w.device)
    elevation = torch.as_tensor(elevation, dtype=c2w.dtype, device=c2w.device)
    up = c2w.new_tensor([0.0, 0.0, 1.0])
    rotation = rotation_about(up, azimuth)
    if bool((elevation != 0).any()):
        horizontal = torch.linalg.cross(c2w[:3, 3], up)
        if horizontal.norm() < 1e-6:
            raise ValueError("the camera is on the z axis, so its elevation cannot change")
        rotation = rotation @ rotation_about(horizontal / horizontal.norm(), elevation)
    poses = c2w.expand(*azimuth.shape, 4, 4).clone()
    poses[..., :3, :] = rotation @ c2w[:3, :]
    return poses


def trajectory_from(c2w: Tensor, n_views: int, sweep_deg: float = 360.0, elevation_swing_deg: float = 0.0) -> Tensor:
    """``n_views`` poses that start exactly at ``c2w`` and move gradually around the object.

    Pose ``k`` is :func:`rotate_around` the input camera by azimuth ``sweep * k / n`` and
    elevation ``elevation_swing * sin(2 pi k / n)``: with no swing an orbit at the input's
    height, with a swing a wave up and back down over one turn.

    Args:
        c2w: ``[4, 4]`` the input camera's pose.
    Returns:
        ``[n_views, 4, 4]``; entry 0 equals ``c2w``.
    """
    steps = torch.arange(n_views, dtype=c2w.dtype, device=c2w.device) / n_views
    return rotate_around(c2w, torch.deg2rad(sweep_deg * steps),
                         math.radians(elevation_swing_deg) * torch.sin(2 * math.pi * steps))
