"""Lesson 02's "your turn": where a world point falls in an input view's frustum volume, and what it reads there.

1. Volume coordinates (:func:`genvs.field.volume_coordinates`, steps 1-2 of :mod:`genvs.field`'s docstring)::

       x_cam = R^T (x - t),   z = x_cam.z,   (u, v) = (K x_cam)_xy / z
       coords = (2u/W - 1, 2v/H - 1, 2(z - near)/(far - near) - 1)     grid_sample's (x, y, z), align_corners=False
       visible = all(|coords| <= 1 + 1e-5)                               outside, in front of near, beyond far, behind

2. Sampling the volume there (:func:`genvs.field.sample_volumes`, step 3): trilinear ``F.grid_sample`` of
   ``volume [C, D, h, w]`` at ``coords``, ``align_corners=False``, border padding (invisible points are masked
   later, by the visibility).

The oracles are the package's functions, on one view (the batch dimensions added and removed).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genvs.cameras import spherical_to_c2w, unproject, world_to_camera
from genvs.course.checking import Case, Exercise, Mistake
from genvs.data.synthetic import srn_intrinsics
from genvs.field import BOUNDARY_TOLERANCE, sample_volumes, volume_coordinates

__all__ = ["VOLUME_COORDINATES", "SAMPLE_VOLUME"]

NEAR, FAR = 0.8, 1.8  # the SRN cars' depth range, the volumes' first and last plane boundaries


# --- 1. volume coordinates -------------------------------------------------------------------------------------


def package_coordinates(points: Tensor, K: Tensor, c2w: Tensor, image_size: int, near: float,
                        far: float) -> tuple[Tensor, Tensor]:
    """:func:`genvs.field.volume_coordinates` of world points ``[N, 3]`` in one view (``K [3, 3]``, ``c2w [4, 4]``):
    coords ``[N, 3]`` and visible ``[N]``."""
    return volume_coordinates(points, K, c2w, image_size, near, far)


def coordinates_solution(points: Tensor, K: Tensor, c2w: Tensor, image_size: int, near: float,
                         far: float) -> tuple[Tensor, Tensor]:
    """Normalised volume coordinates ``[N, 3]`` (grid_sample's x, y, z) and visibility ``[N]`` of world points
    ``[N, 3]`` in the view with intrinsics ``K [3, 3]`` (pixels of ``image_size`` images) and pose ``c2w [4, 4]``."""
    x_cam = (points - c2w[:3, 3]) @ c2w[:3, :3]                 # R^T (x - t), as row vectors
    z = x_cam[:, 2]                                             # depth along the optical axis
    uv = (x_cam @ K.T)[:, :2] / z[:, None]                      # (u, v) = (K x_cam)_xy / z: the perspective divide
    xy = 2 * uv / image_size - 1                                # the image spans [0, W]: 2u/W - 1 in [-1, 1]
    depth = 2 * (z - near) / (far - near) - 1                   # near -> -1, far -> +1
    coords = torch.cat([xy, depth[:, None]], dim=-1)            # (x, y, z) = (column, row, depth)
    visible = (coords.abs() <= 1 + 1e-5).all(dim=-1)            # inside [-1, 1]^3, up to rounding
    return coords, visible


def visibility(coords: Tensor) -> Tensor:
    """The package's rule: every coordinate within ``1 + 1e-5`` of 0. ``[N, 3] -> [N]``."""
    return (coords.abs() <= 1 + BOUNDARY_TOLERANCE).all(dim=-1)


def camera_frame(points: Tensor, K: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """``K x_cam [N, 3]`` (before the divide) and the depth ``z [N]``."""
    x_cam = world_to_camera(points, c2w)
    return x_cam @ K.T, x_cam[:, 2]


def normalised(u: Tensor, v: Tensor, z: Tensor, image_size: int, near: float, far: float) -> Tensor:
    """``(2u/W - 1, 2v/H - 1, 2(z - near)/(far - near) - 1)``, ``[N, 3]``."""
    return torch.stack([2 * u / image_size - 1, 2 * v / image_size - 1, 2 * (z - near) / (far - near) - 1], dim=-1)


def with_visibility(coords: Tensor) -> tuple[Tensor, Tensor]:
    return coords, visibility(coords)


def no_perspective_divide(points, K, c2w, image_size, near, far):
    pixels, z = camera_frame(points, K, c2w)
    return with_visibility(normalised(pixels[:, 0], pixels[:, 1], z, image_size, near, far))


def corners_aligned(points, K, c2w, image_size, near, far):
    coords, _ = package_coordinates(points, K, c2w, image_size, near, far)
    uv = (coords[:, :2] + 1) * image_size / 2
    xy = 2 * (uv - 0.5) / (image_size - 1) - 1
    return with_visibility(torch.cat([xy, coords[:, 2:]], dim=-1))


def half_pixel_twice(points, K, c2w, image_size, near, far):
    coords, _ = package_coordinates(points, K, c2w, image_size, near, far)
    return with_visibility(torch.cat([coords[:, :2] + 1 / image_size, coords[:, 2:]], dim=-1))


def depth_zero_to_one(points, K, c2w, image_size, near, far):
    coords, _ = package_coordinates(points, K, c2w, image_size, near, far)
    return with_visibility(torch.cat([coords[:, :2], (coords[:, 2:] + 1) / 2], dim=-1))


def depth_height_width_order(points, K, c2w, image_size, near, far):
    coords, _ = package_coordinates(points, K, c2w, image_size, near, far)
    return with_visibility(coords.flip(-1))


def rows_first(points, K, c2w, image_size, near, far):
    coords, _ = package_coordinates(points, K, c2w, image_size, near, far)
    return with_visibility(coords[:, [1, 0, 2]])


def image_only_visibility(points, K, c2w, image_size, near, far):
    coords, _ = package_coordinates(points, K, c2w, image_size, near, far)
    return coords, visibility(coords[:, :2])


def no_boundary_tolerance(points, K, c2w, image_size, near, far):
    coords, _ = package_coordinates(points, K, c2w, image_size, near, far)
    return coords, (coords.abs() <= 1).all(dim=-1)


def clamped_to_border(points, K, c2w, image_size, near, far):
    coords, _ = package_coordinates(points, K, c2w, image_size, near, far)
    return coords.clamp(-1, 1), torch.ones(coords.shape[0], dtype=torch.bool)


def camera(azimuth_deg: float, elevation_deg: float, image_size: int) -> tuple[Tensor, Tensor]:
    """An SRN camera 1.3 from the origin, looking at it: ``K [3, 3]`` and ``c2w [4, 4]``."""
    return srn_intrinsics(image_size), spherical_to_c2w(math.radians(azimuth_deg), math.radians(elevation_deg), 1.3)


def random_pixels(generator: torch.Generator, n: int, low: float, high: float) -> Tensor:
    """``[n, 2]`` continuous pixel coordinates drawn uniformly in ``[low, high]^2``."""
    return low + (high - low) * torch.rand(n, 2, generator=generator)


def coordinate_cases(generator: torch.Generator) -> list[Case]:
    size = 32
    K, c2w = camera(30.0, 20.0, size)
    box = (torch.rand(24, 3, generator=generator) - 0.5) * 1.2            # the object's box around the origin
    pixels = random_pixels(generator, 8, 1.0, size - 1.0)
    inside = unproject(pixels, NEAR + (FAR - NEAR) * torch.rand(8, generator=generator), K, c2w)
    centres = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="xy"), -1).reshape(-1, 2)
    on_near = unproject(centres * size / 4 + 0.5, torch.full((16,), NEAR), K, c2w)
    behind = 2 * c2w[:3, 3] - inside                                      # mirrored through the camera centre
    beyond = unproject(pixels, 2.0 + torch.rand(8, generator=generator), K, c2w)
    small_K, high_c2w = camera(-110.0, 60.0, 16)
    depths = 0.6 + 1.4 * torch.rand(12, generator=generator)
    seen_from_above = unproject(random_pixels(generator, 12, -4.0, 20.0), depths, small_K, high_c2w)
    return [Case("24 random points in the object's box, a 32 px camera", (box, K, c2w, size, NEAR, FAR)),
            Case("8 points inside the frustum", (inside, K, c2w, size, NEAR, FAR)),
            Case("16 points on the near plane at pixel centres (unjittered samples)",
                 (on_near, K, c2w, size, NEAR, FAR)),
            Case("8 points behind the camera that project into the image", (behind, K, c2w, size, NEAR, FAR)),
            Case("8 points beyond the far plane", (beyond, K, c2w, size, NEAR, FAR)),
            Case("12 points, some outside the image, a 16 px camera from above",
                 (seen_from_above, small_K, high_c2w, 16, NEAR, FAR))]


VOLUME_COORDINATES = Exercise(
    name="volume_coordinates", lesson="02", oracle=package_coordinates, cases=coordinate_cases,
    solution=coordinates_solution,
    hint="x_cam = (points - c2w[:3, 3]) @ c2w[:3, :3]; (u, v) = (x_cam @ K.T)[:, :2] / z with z = x_cam[:, 2]; "
         "coords = (2u/W - 1, 2v/H - 1, 2(z - near)/(far - near) - 1) in that order; visible where every "
         "|coord| <= 1 + 1e-5.",
    mistakes=(
        Mistake(no_perspective_divide, "the perspective divide is missing: (u, v) = (K x_cam)_xy / z, divided by "
                                       "the depth z."),
        Mistake(corners_aligned, "the pixel convention is align_corners=True's: the image spans [0, W] with pixel "
                                 "centres at j + 1/2, so x = 2u/W - 1 (grid_sample's align_corners=False), not "
                                 "2(u - 1/2)/(W - 1) - 1."),
        Mistake(half_pixel_twice, "the half-pixel offset is added twice: project's u is already continuous (pixel "
                                  "centres at j + 1/2), so x = 2u/W - 1, not (2u + 1)/W - 1."),
        Mistake(depth_zero_to_one, "the depth is normalised to [0, 1]: grid_sample's z must span [-1, 1], "
                                   "2(z - near)/(far - near) - 1."),
        Mistake(depth_height_width_order, "the coordinates are in the volume's (depth, row, column) order: "
                                          "grid_sample wants (x, y, z) = (column u, row v, depth)."),
        Mistake(rows_first, "x and y are swapped: grid_sample's x is the column coordinate u (along w), y the row "
                            "coordinate v (along h)."),
        Mistake(image_only_visibility, "the visibility only checks the image: points in front of near, beyond far "
                                       "or behind the camera (z coordinate outside [-1, 1]) are invisible too."),
        Mistake(clamped_to_border, "the points outside the frustum are clamped to its border and kept: they must "
                                   "be invisible (|coords| <= 1 in every coordinate) and their coordinates left "
                                   "as they are."),
        Mistake(no_boundary_tolerance, "points on the boundary, such as samples exactly at near, are lost to "
                                       "rounding: visible where every |coord| <= 1 + 1e-5, not 1."),
    ))


# --- 2. sampling the volume ------------------------------------------------------------------------------------


def package_sample(volume: Tensor, coords: Tensor) -> Tensor:
    """:func:`genvs.field.sample_volumes` of one view's ``volume [C, D, h, w]`` at ``coords [N, 3]``: ``[N, C]``."""
    return sample_volumes(volume[None, None], coords[None, None])[0, 0]


def sample_solution(volume: Tensor, coords: Tensor) -> Tensor:
    """Trilinear samples ``[N, C]`` of ``volume [C, D, h, w]`` at normalised ``coords [N, 3]`` (x, y, z)."""
    grid = coords[None, None, None]                                        # [1, 1, 1, N, 3]: grid_sample's 3-D grid
    sampled = F.grid_sample(volume[None], grid, mode="bilinear",           # "bilinear" on 5-D input is trilinear
                            padding_mode="border", align_corners=False)    # -1 and 1 are the volume's outer faces
    return sampled[0, :, 0, 0].T                                           # [C, N] -> [N, C]


def sampled_with(volume: Tensor, coords: Tensor, **options) -> Tensor:
    settings = {"mode": "bilinear", "padding_mode": "border", "align_corners": False, **options}
    return F.grid_sample(volume[None], coords[None, None, None], **settings)[0, :, 0, 0].T


def sample_corners_aligned(volume, coords):
    return sampled_with(volume, coords, align_corners=True)


def sample_zero_padding(volume, coords):
    return sampled_with(volume, coords, padding_mode="zeros")


def sample_nearest(volume, coords):
    return sampled_with(volume, coords, mode="nearest")


def sample_reversed(volume, coords):
    return sampled_with(volume, coords.flip(-1))


def voxel_centres(planes: int, rows: int, columns: int) -> Tensor:
    """Normalised coordinates ``[D h w, 3]`` of every voxel centre: ``(2j + 1)/w - 1``, and so on."""
    d, i, j = torch.meshgrid(torch.arange(planes), torch.arange(rows), torch.arange(columns), indexing="ij")
    centre = lambda index, n: (2 * index.flatten().float() + 1) / n - 1  # noqa: E731
    return torch.stack([centre(j, columns), centre(i, rows), centre(d, planes)], dim=-1)


def sample_cases(generator: torch.Generator) -> list[Case]:
    volume = torch.randn(16, 8, 16, 16, generator=generator)
    lopsided = torch.randn(3, 4, 5, 6, generator=generator)                # D, h, w all different
    inside = torch.rand(32, 3, generator=generator) * 2 - 1
    rim = (0.8 + 0.2 * torch.rand(12, 3, generator=generator)) * torch.sign(torch.randn(12, 3, generator=generator))
    outside = torch.rand(8, 3, generator=generator) * 4 - 2
    return [Case("32 random points of a [16, 8, 16, 16] volume", (volume, inside)),
            Case("every voxel centre of a [3, 4, 5, 6] volume (D, h, w all different)",
                 (lopsided, voxel_centres(4, 5, 6))),
            Case("12 points in the volume's outer half-voxel, inside [-1, 1]", (lopsided, rim)),
            Case("8 points outside the volume (they read the border; the visibility masks them)", (volume, outside))]


SAMPLE_VOLUME = Exercise(
    name="sample_volume", lesson="02", oracle=package_sample, cases=sample_cases, solution=sample_solution,
    hint="F.grid_sample(volume[None], coords[None, None, None], mode='bilinear', padding_mode='border', "
         "align_corners=False) gives [1, C, 1, 1, N]; return it as [N, C]. coords are already (x, y, z).",
    mistakes=(
        Mistake(sample_corners_aligned, "grid_sample is called with align_corners=True: the package's -1 and 1 are "
                                        "the volume's outer faces (align_corners=False), not its outer voxel "
                                        "centres."),
        Mistake(sample_zero_padding, "the padding is zeros: points in the outer half-voxel, and outside, read the "
                                     "border voxel (padding_mode='border'); the visibility masks the outside ones."),
        Mistake(sample_nearest, "the lookup is the nearest voxel: the field reads the volume with trilinear "
                                "interpolation (mode='bilinear', which is trilinear on a 5-D input)."),
        Mistake(sample_reversed, "the coordinates are reversed to (z, y, x): grid_sample takes (x, y, z) = "
                                 "(along w, along h, along D), the reverse of the volume's [D, h, w] order."),
    ))
