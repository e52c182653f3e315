"""Procedural toy cars, rendered exactly and written in the SRN layout.

The scene
---------
A car is a handful of primitives in a z-up world, long axis along world ``x`` (front at
``+x``), centred on the origin and inside a sphere of radius :data:`BOUNDING_RADIUS`:

* body: a box in the paint colour, raised ``ground_clearance`` above the ground plane
  ``z = z_ground`` (the plane itself is not drawn);
* cabin: a narrower box in a dark glass colour on top of the body, shifted front or back,
  under a thin painted roof box slightly larger than it;
* four wheels: dark cylinders with their axis along ``y``, touching the ground;
* two front lamps (pale yellow) on the ``+x`` face and two rear lamps (red) on the ``-x`` face:
  thin boxes standing out of the body, so one view never shows both ends alike;
* a side panel on each side (``+y`` is the car's left, ``-y`` its right): a thin box standing out of
  the body side, covering most of it.

Proportions and colours are random per object (:func:`sample_car_params`), and so are three
**hidden-side attributes** (:data:`ATTRIBUTES`), each drawn independently and uniformly: the colour
of the left panel, of the right panel (paint, white or black) and of the roof (paint or white).
No camera sees both sides at once, so no view shows all three, and what one side shows tells
nothing about the other: one photo does not determine the car, as one photo of a real car does
not. Which attributes a view shows is measured by the ray caster: the fraction of the image whose
nearest hit is the attribute's primitive (:func:`attribute_coverage`); a view *shows* an
attribute when that fraction is at least :data:`VISIBLE_FRACTION`. ``attributes.json`` in each
object folder records the values and, per view, the fractions and the attributes shown.

Rendering
---------
Rays come from :func:`genvs.cameras.pixel_rays` (camera-space ``z = 1``, so ``t`` is depth).
Each ray is intersected exactly with every primitive (slab test for boxes, quadratic plus two
cap planes for cylinders) and the nearest hit is shaded with one directional light::

    colour = albedo * (ambient + (1 - ambient) * max(0, n . l))      (lamps: colour = albedo)

with ``ambient = 0.5`` (so the side away from the light still shows its colours); rays that miss get the
white background. Images are anti-aliased by rendering at ``s x s`` sub-pixels per pixel (``K``
rescaled) and averaging, which gives the image composited on white, ``C``, and the coverage ``a``. For speed, only the pixels inside the
projection of the car's bounding box are ray cast, and only rays that hit that box are tested
against the primitives (all rays and primitives at once, as tensors).

Files
-----
PNGs are RGBA with straight (not premultiplied) colour, as PNG specifies::

    c = (C - (1 - a)) / a   where a > 0, else 1 (white)

so compositing on white, ``c * a + (1 - a)``, gives back ``C`` (to 8-bit rounding: ``c`` is
computed from the 8-bit alpha), which is what :func:`genvs.data.srn.read_image` does. Pixels
fully covered (``a = 1``) and background pixels (``a = 0``) have ``c = C``; only edge pixels
differ between "drop alpha" and "composite on white".

Everything is deterministic: object ``i`` of seed ``k`` draws from
``numpy.random.default_rng([k, i])``, so it is the same car whatever the number of objects.
"""

from __future__ import annotations

import colorsys
import contextlib
import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from genvs.cameras import make_intrinsics, pixel_rays, project, rescale_intrinsics, spherical_to_c2w, spiral

__all__ = [
    "CarParams",
    "CarPrimitives",
    "sample_car_params",
    "car_primitives",
    "cast_rays",
    "render_car",
    "attribute_coverage",
    "read_attributes",
    "ATTRIBUTES",
    "to_straight_rgba",
    "srn_intrinsics",
    "hemisphere_poses",
    "spiral_poses",
    "split_names",
    "make_dataset",
]

CAMERA_RADIUS = 1.3
"""Distance of every camera from the origin (as in SRN cars)."""
BOUNDING_RADIUS = 0.5
"""Every car fits in this sphere, so hits lie at depths within ``1.3 -+ 0.5 = [0.8, 1.8]``."""
SRN_FOCAL_128 = 131.25
"""SRN cars' focal length in pixels at 128x128; scaled with the image size."""
ELEVATION_RANGE_DEG = (5.0, 75.0)
"""Train/val cameras: uniform on the spherical band between these elevations."""
AMBIENT = 0.5
LIGHT_DIRECTION = (0.5, 0.3, 1.0)
"""Direction towards the light (normalised when used): from above, front, left."""
SUPERSAMPLE = 3
"""Sub-pixels per pixel side for anti-aliasing."""
WHEEL_COLOUR = (0.08, 0.08, 0.09)
FRONT_LAMP_COLOUR = (1.0, 0.93, 0.6)
REAR_LAMP_COLOUR = (0.85, 0.04, 0.04)
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "genvs_synthetic.json"
"""Written last by :func:`make_dataset`: its arguments, to reuse or replace a dataset safely."""
MANIFEST_VERSION = 2
"""Bumped whenever the rendering changes, so older datasets are rendered anew (2: hidden-side attributes)."""
ATTRIBUTES = {
    "left_panel": ("paint", "white", "black"),
    "right_panel": ("paint", "white", "black"),
    "roof": ("paint", "white"),
}
"""Hidden-side attributes and their values; each is drawn uniformly and independently of everything else."""
ATTRIBUTE_COLOURS = {"white": (0.92, 0.92, 0.92), "black": (0.05, 0.05, 0.06)}
"""Colour of each attribute value other than ``"paint"`` (which is the car's paint)."""
VISIBLE_FRACTION = 0.01
"""A view shows an attribute when at least this fraction of its pixels see the attribute's primitive."""
ATTRIBUTES_NAME = "attributes.json"


@dataclass(frozen=True)
class CarParams:
    """Shape and colours of one toy car (world units; colours RGB in [0, 1]).

    The car's bounding box is centred on the origin; ``z_ground`` is the ground plane the
    wheels touch.
    """

    length: float  # body, along x
    width: float  # body, along y
    body_height: float
    ground_clearance: float  # ground to the bottom of the body
    wheel_radius: float
    wheel_width: float
    wheelbase: float  # distance between front and rear axles
    cabin_length: float
    cabin_width: float
    cabin_height: float
    cabin_offset: float  # x of the cabin centre; > 0 is towards the front
    paint: tuple[float, float, float]
    glass: tuple[float, float, float]
    left_panel: str = "paint"  # hidden-side attributes: values from ATTRIBUTES
    right_panel: str = "paint"
    roof: str = "paint"

    def __post_init__(self):
        for name, values in ATTRIBUTES.items():
            if getattr(self, name) not in values:
                raise ValueError(f"{name} must be one of {values}, got {getattr(self, name)!r}")

    def attributes(self) -> dict[str, str]:
        """The hidden-side attributes, ``{name: value}`` in :data:`ATTRIBUTES`' order."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def attribute_colour(self, name: str) -> tuple[float, float, float]:
        """RGB of attribute ``name``'s primitive: the paint, or its value's colour."""
        value = getattr(self, name)
        return self.paint if value == "paint" else ATTRIBUTE_COLOURS[value]

    @property
    def height(self) -> float:
        """Ground to the cabin roof."""
        return self.ground_clearance + self.body_height + self.cabin_height

    @property
    def z_ground(self) -> float:
        """Height of the ground plane, chosen so the car's bounding box is centred on the origin."""
        return -0.5 * self.height


COLOUR_FIELDS = ("paint", "glass")
LENGTH_FIELDS = tuple(f.name for f in dataclasses.fields(CarParams) if f.name not in COLOUR_FIELDS + tuple(ATTRIBUTES))


@dataclass(frozen=True)
class CarPrimitives:
    """A car as tensors, ready for ray casting.

    Primitive ``p`` is box ``p`` for ``p < B``, else wheel ``p - B``; ``attribute_primitive`` says which
    primitive carries each hidden-side attribute.

    Attributes:
        box_min, box_max: ``[B, 3]`` opposite corners of axis-aligned boxes.
        wheel_centres: ``[W, 3]`` centres of cylinders with axis along ``y``.
        wheel_radius, wheel_half_width: cylinder radius and half length along ``y``.
        albedo: ``[B + W, 3]`` colour of each primitive.
        emissive: ``[B + W]`` bool, True for lamps (not shaded).
        attribute_primitive: ``{attribute name: primitive index}``.
    """

    box_min: Tensor
    box_max: Tensor
    wheel_centres: Tensor
    wheel_radius: float
    wheel_half_width: float
    albedo: Tensor
    emissive: Tensor
    attribute_primitive: dict[str, int]

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Corners ``[3]``, ``[3]`` of the axis-aligned box around the whole car."""
        wheel_extent = self.wheel_centres.new_tensor(
            [self.wheel_radius, self.wheel_half_width, self.wheel_radius]
        )
        low = torch.minimum(self.box_min.amin(0), (self.wheel_centres - wheel_extent).amin(0))
        high = torch.maximum(self.box_max.amax(0), (self.wheel_centres + wheel_extent).amax(0))
        return low, high


def _random_colour(
    rng: np.random.Generator,
    hue: tuple[float, float],
    saturation: tuple[float, float],
    value: tuple[float, float],
) -> tuple[float, float, float]:
    """An RGB colour from HSV ranges ``(low, high)``; hue wraps around 1."""
    h = rng.uniform(*hue) % 1.0
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value)))


def _raw_car_params(rng: np.random.Generator) -> CarParams:
    """Proportions, colours and attributes, drawn before fitting the car into the bounding sphere."""
    length = rng.uniform(0.72, 0.92)
    width = length * rng.uniform(0.40, 0.50)
    wheel_radius = rng.uniform(0.065, 0.095)
    ground_clearance = wheel_radius * rng.uniform(0.5, 0.9)
    body_height = 2 * wheel_radius - ground_clearance + rng.uniform(0.04, 0.10)  # above wheel tops
    wheelbase = min(length * rng.uniform(0.55, 0.70), length - 2.2 * wheel_radius)
    cabin_length = length * rng.uniform(0.35, 0.60)
    cabin_offset = 0.5 * (length - cabin_length) * rng.uniform(-0.7, 0.7)
    return CarParams(
        length=float(length),
        width=float(width),
        body_height=float(body_height),
        ground_clearance=float(ground_clearance),
        wheel_radius=float(wheel_radius),
        wheel_width=float(width * rng.uniform(0.16, 0.22)),
        wheelbase=float(wheelbase),
        cabin_length=float(cabin_length),
        cabin_width=float(width * rng.uniform(0.75, 0.92)),
        cabin_height=float(rng.uniform(0.08, 0.15)),
        cabin_offset=float(cabin_offset),
        paint=_random_colour(rng, hue=(0.0, 1.0), saturation=(0.55, 0.95), value=(0.55, 0.95)),
        glass=_random_colour(rng, hue=(0.5, 0.7), saturation=(0.15, 0.4), value=(0.12, 0.28)),
        **{name: str(values[rng.integers(len(values))]) for name, values in ATTRIBUTES.items()},
    )


def _scale_lengths(params: CarParams, scale: float) -> CarParams:
    return dataclasses.replace(params, **{name: getattr(params, name) * scale for name in LENGTH_FIELDS})


def sample_car_params(rng: np.random.Generator) -> CarParams:
    """A random car, shrunk where needed so it fits inside the sphere of radius 0.5.

    Args:
        rng: numpy random generator (e.g. ``np.random.default_rng([seed, index])``).
    Returns:
        :class:`CarParams`.
    """
    params = _raw_car_params(rng)
    low, high = car_primitives(params).bounds()
    half_diagonal = 0.5 * float((high - low).norm())
    return _scale_lengths(params, min(1.0, BOUNDING_RADIUS / half_diagonal))


def _box(centre: tuple[float, float, float], size: tuple[float, float, float]) -> tuple[list, list]:
    """Corners (min, max) of the box with this centre and full size."""
    return ([c - 0.5 * s for c, s in zip(centre, size)], [c + 0.5 * s for c, s in zip(centre, size)])


def car_primitives(params: CarParams) -> CarPrimitives:
    """Place the body, cabin, roof, side panels, lamps and wheels of a car in the world (float32 tensors).

    The side panels stand ``0.01 * width`` out of the body sides and cover 90% of the body's length and 80% of
    its height (the wheels, standing further out, hide part of them); the roof is the thin painted box on the cabin.
    """
    p = params
    body_bottom = p.z_ground + p.ground_clearance
    body_top = body_bottom + p.body_height
    roof_top, roof_height = body_top + p.cabin_height, 0.2 * p.cabin_height
    glass_height = 0.9 * p.cabin_height  # ends inside the roof, so the roof's top face is paint
    lamp_size = (0.015 * p.length, 0.18 * p.width, 0.3 * p.body_height)  # depth, width, height
    lamp_y = 0.35 * p.width  # lamp centres: lamps end 0.06 * width in from the sides
    lamp_z = body_top - 0.15 * p.body_height - 0.5 * lamp_size[2]
    front_x = 0.5 * (p.length + lamp_size[0])
    panel_size = (0.9 * p.length, 0.02 * p.width, 0.8 * p.body_height)  # stands 0.01 * width out of the side
    panel_z = body_bottom + 0.5 * p.body_height
    boxes = [
        (_box((0.0, 0.0, body_bottom + 0.5 * p.body_height), (p.length, p.width, p.body_height)), p.paint),
        (_box((p.cabin_offset, 0.0, body_top + 0.5 * glass_height),
              (p.cabin_length, p.cabin_width, glass_height)), p.glass),
        (_box((p.cabin_offset, 0.0, roof_top - 0.5 * roof_height),
              (1.03 * p.cabin_length, 1.03 * p.cabin_width, roof_height)), p.attribute_colour("roof")),
        (_box((0.0, 0.5 * p.width, panel_z), panel_size), p.attribute_colour("left_panel")),
        (_box((0.0, -0.5 * p.width, panel_z), panel_size), p.attribute_colour("right_panel")),
    ]
    lamps = [
        (_box((sign_x * front_x, sign_y * lamp_y, lamp_z), lamp_size), colour)
        for sign_x, colour in ((1.0, FRONT_LAMP_COLOUR), (-1.0, REAR_LAMP_COLOUR))
        for sign_y in (1.0, -1.0)
    ]
    wheel_y = 0.5 * p.width - 0.35 * p.wheel_width  # the outer 15% of each wheel stands out of the body
    wheel_centres = [
        (sign_x * 0.5 * p.wheelbase, sign_y * wheel_y, p.z_ground + p.wheel_radius)
        for sign_x in (1.0, -1.0)
        for sign_y in (1.0, -1.0)
    ]
    all_boxes = boxes + lamps
    colours = [colour for _, colour in all_boxes] + [WHEEL_COLOUR] * len(wheel_centres)
    emissive = [False] * len(boxes) + [True] * len(lamps) + [False] * len(wheel_centres)
    return CarPrimitives(
        box_min=torch.tensor([corners[0] for corners, _ in all_boxes], dtype=torch.float32),
        box_max=torch.tensor([corners[1] for corners, _ in all_boxes], dtype=torch.float32),
        wheel_centres=torch.tensor(wheel_centres, dtype=torch.float32),
        wheel_radius=p.wheel_radius,
        wheel_half_width=0.5 * p.wheel_width,
        albedo=torch.tensor(colours, dtype=torch.float32),
        emissive=torch.tensor(emissive),
        attribute_primitive={"roof": 2, "left_panel": 3, "right_panel": 4},
    )


def _intersect_boxes(origins: Tensor, inv_directions: Tensor, box_min: Tensor, box_max: Tensor) -> Tensor:
    """Slab test: entry depth of each ray into each box.

    A ray enters the box at ``t_near = max_axis min(t0, t1)`` and leaves at
    ``t_far = min_axis max(t0, t1)``, where ``t0, t1 = (corner - o) / d`` per axis; it hits
    when ``0 < t_near <= t_far``.

    Args:
        origins, inv_directions: ``[N, 3]`` ray origins and ``1 / d``.
        box_min, box_max: ``[B, 3]``.
    Returns:
        ``[N, B]`` hit depths, ``inf`` where the ray misses.
    """
    t0 = (box_min - origins[:, None]) * inv_directions[:, None]  # [N, B, 3]
    t1 = (box_max - origins[:, None]) * inv_directions[:, None]
    t_near = torch.minimum(t0, t1).amax(-1)
    t_far = torch.maximum(t0, t1).amin(-1)
    hit = (t_near <= t_far) & (t_near > 0)
    return torch.where(hit, t_near, torch.inf)


def _intersect_wheels(
    origins: Tensor, directions: Tensor, inv_directions: Tensor, centres: Tensor, radius: float, half_width: float
) -> Tensor:
    """Entry depth of each ray into each capped cylinder with axis along ``y``.

    The infinite cylinder ``(x - cx)^2 + (z - cz)^2 = r^2`` gives ``a t^2 + 2 b t + c = 0`` with
    ``a = dx^2 + dz^2``, ``b = ox dx + oz dz``, ``c = ox^2 + oz^2 - r^2`` (origin relative to the
    centre); its interval ``(-b -+ sqrt(b^2 - a c)) / a`` is clipped by the slab
    ``|y - cy| <= half_width`` (the caps).

    Args:
        origins, directions, inv_directions: ``[N, 3]``.
        centres: ``[W, 3]`` cylinder centres.
    Returns:
        ``[N, W]`` hit depths, ``inf`` where the ray misses.
    """
    relative = origins[:, None] - centres  # [N, W, 3]
    dx, dz = directions[:, None, 0], directions[:, None, 2]  # [N, 1]
    a = (dx * dx + dz * dz).clamp(min=1e-12)
    b = relative[..., 0] * dx + relative[..., 2] * dz
    c = relative[..., 0] ** 2 + relative[..., 2] ** 2 - radius**2
    discriminant = b * b - a * c
    root = discriminant.clamp(min=0).sqrt()
    t_side_in, t_side_out = (-b - root) / a, (-b + root) / a
    t_cap0 = (-half_width - relative[..., 1]) * inv_directions[:, None, 1]
    t_cap1 = (half_width - relative[..., 1]) * inv_directions[:, None, 1]
    t_near = torch.maximum(t_side_in, torch.minimum(t_cap0, t_cap1))
    t_far = torch.minimum(t_side_out, torch.maximum(t_cap0, t_cap1))
    hit = (discriminant >= 0) & (t_near <= t_far) & (t_near > 0)
    return torch.where(hit, t_near, torch.inf)


def _surface_normals(car: CarPrimitives, points: Tensor, primitive: Tensor) -> Tensor:
    """Outward unit normals ``[M, 3]`` at hit ``points [M, 3]`` on primitives ``primitive [M]``.

    Box: the axis where the point is furthest out relative to the half size. Cylinder: the
    cap normal ``+-y`` if the point is further out along the axis than radially, else radial.
    """
    n_boxes = car.box_min.shape[0]
    box = primitive.clamp(max=n_boxes - 1)
    box_centre = 0.5 * (car.box_min[box] + car.box_max[box])
    box_half = 0.5 * (car.box_max[box] - car.box_min[box])
    local = (points - box_centre) / box_half
    axis = local.abs().argmax(-1, keepdim=True)
    box_normal = torch.zeros_like(points).scatter_(-1, axis, local.gather(-1, axis).sign())

    relative = points - car.wheel_centres[(primitive - n_boxes).clamp(min=0)]
    radial = relative * relative.new_tensor([1.0, 0.0, 1.0]) / car.wheel_radius
    on_cap = relative[:, 1].abs() / car.wheel_half_width >= radial.norm(dim=-1)
    cap = relative.new_tensor([0.0, 1.0, 0.0]) * relative[:, 1:2].sign()
    wheel_normal = torch.where(on_cap[:, None], cap, torch.nn.functional.normalize(radial, dim=-1))
    return torch.where((primitive < n_boxes)[:, None], box_normal, wheel_normal)


def _shade(car: CarPrimitives, normals: Tensor, primitive: Tensor) -> Tensor:
    """Lambertian colour ``albedo * (ambient + (1 - ambient) max(0, n . l))``, lamps unshaded."""
    light = torch.nn.functional.normalize(normals.new_tensor(LIGHT_DIRECTION), dim=0)
    brightness = AMBIENT + (1.0 - AMBIENT) * (normals @ light).clamp(min=0)
    brightness = torch.where(car.emissive[primitive], 1.0, brightness)
    return car.albedo[primitive] * brightness[:, None]


def _hits_box(origins: Tensor, inv_directions: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Whether each of ``N`` rays hits the box with corners ``low, high [3]``. Returns ``[N]`` bool."""
    return torch.isfinite(_intersect_boxes(origins, inv_directions, low[None], high[None])[:, 0])


def cast_rays(car: CarPrimitives, origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Nearest hit of each ray with the car, shaded; white where the ray misses.

    Only rays that hit the car's bounding box are intersected with its primitives.

    Args:
        car: from :func:`car_primitives`.
        origins, directions: ``[..., 3]`` rays, e.g. from :func:`genvs.cameras.pixel_rays`.
    Returns:
        colour ``[..., 3]`` in [0, 1] (background 1), hit ``[...]`` bool, depth ``[...]``: the ray
        parameter ``t`` of the hit (camera depth for ``pixel_rays``), ``inf`` on a miss, and primitive
        ``[...]`` (int64): the index of the primitive hit (:class:`CarPrimitives`), -1 on a miss.
    """
    shape = origins.shape[:-1]
    origins = origins.reshape(-1, 3).float()
    directions = directions.reshape(-1, 3).float()
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    inv_directions = 1.0 / safe

    colour = torch.ones_like(origins)
    depth = torch.full_like(origins[:, 0], torch.inf)
    primitive_hit = torch.full_like(origins[:, 0], -1, dtype=torch.long)
    candidates = _hits_box(origins, inv_directions, *car.bounds()).nonzero().squeeze(-1)
    o, d, inv_d = origins[candidates], directions[candidates], inv_directions[candidates]
    t_all = torch.cat(
        [
            _intersect_boxes(o, inv_d, car.box_min, car.box_max),
            _intersect_wheels(o, d, inv_d, car.wheel_centres, car.wheel_radius, car.wheel_half_width),
        ],
        dim=-1,
    )
    t, primitive = t_all.min(-1)
    hit = torch.isfinite(t)
    rays, t, primitive = candidates[hit], t[hit], primitive[hit]
    normals = _surface_normals(car, o[hit] + t[:, None] * d[hit], primitive)
    colour[rays] = _shade(car, normals, primitive)
    depth[rays] = t
    primitive_hit[rays] = primitive
    return (colour.reshape(*shape, 3), torch.isfinite(depth).reshape(shape), depth.reshape(shape),
            primitive_hit.reshape(shape))


def _pixel_window(car: CarPrimitives, K: Tensor, c2w: Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel rectangle ``rows [top, bottom) x columns [left, right)`` holding the car in every view.

    The projection of the car's bounding box's 8 corners; the whole image if a corner is
    behind a camera. Pixels outside it see only background.
    """
    low, high = car.bounds()
    corners = torch.cartesian_prod(*torch.stack([low, high], dim=-1))  # [8, 3]
    uv, depth = project(corners, K, c2w)  # [..., 8, 2], [..., 8]
    if bool((depth <= 0).any()):
        return 0, height, 0, width
    u, v = uv[..., 0], uv[..., 1]
    left, right = max(0, math.floor(u.min())), min(width, math.ceil(u.max()))
    top, bottom = max(0, math.floor(v.min())), min(height, math.ceil(v.max()))
    return top, max(top, bottom), left, max(left, right)


def render_car(
    params: CarParams, K: Tensor, c2w: Tensor, height: int, width: int, supersample: int = SUPERSAMPLE
) -> tuple[Tensor, Tensor]:
    """Anti-aliased image of a car composited on white, and its coverage.

    Renders ``supersample^2`` sub-pixels per pixel (``K`` rescaled by ``supersample``) and
    averages them: ``C = mean(sub-pixel colours)``, ``a = mean(sub-pixel hits)``. Only the
    pixels inside the projection of the car's bounding box are ray cast (``K``'s centre
    shifted to that window); the rest is background.

    Args:
        params: the car.
        K: ``[3, 3]`` intrinsics; c2w: ``[..., 4, 4]`` camera-to-world poses (OpenCV axes).
        height, width: image size in pixels.
        supersample: sub-pixels per pixel side (1 = one ray through each pixel centre).
    Returns:
        rgb ``[..., H, W, 3]`` in [0, 1] (already composited on white) and alpha ``[..., H, W]``.
    """
    rgb, alpha, _ = _render(params, K, c2w, height, width, supersample)
    return rgb, alpha


def attribute_coverage(
    params: CarParams, K: Tensor, c2w: Tensor, height: int, width: int, supersample: int = SUPERSAMPLE
) -> dict[str, Tensor]:
    """Fraction of each view's image that sees each hidden-side attribute's primitive.

    ``coverage_a = (1 / (H W s^2)) * #{sub-pixels whose nearest hit is attribute a's primitive}``, from the
    same rays as :func:`render_car`. A view shows ``a`` when ``coverage_a >= VISIBLE_FRACTION``.

    Args: as :func:`render_car`.
    Returns:
        ``{attribute name: [...] coverage in [0, 1]}`` for the poses' leading shape.
    """
    return _render(params, K, c2w, height, width, supersample)[2]


def _render(params: CarParams, K: Tensor, c2w: Tensor, height: int, width: int,
            supersample: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """:func:`render_car`'s image and alpha, and :func:`attribute_coverage`'s fractions, from one ray cast."""
    s, K, c2w = supersample, K.float(), c2w.float()
    car = car_primitives(params)
    top, bottom, left, right = _pixel_window(car, K, c2w, height, width)
    window_height, window_width = bottom - top, right - left
    K_window = K - K.new_tensor([[0.0, 0.0, left], [0.0, 0.0, top], [0.0, 0.0, 0.0]])
    origins, directions = pixel_rays(rescale_intrinsics(K_window, s), c2w, s * window_height, s * window_width)
    colour, hit, _, primitive = cast_rays(car, origins, directions)
    lead = c2w.shape[:-2]
    rgb = torch.ones(*lead, height, width, 3)
    alpha = torch.zeros(*lead, height, width)
    rgb[..., top:bottom, left:right, :] = colour.reshape(*lead, window_height, s, window_width, s, 3).mean((-4, -2))
    alpha[..., top:bottom, left:right] = hit.float().reshape(*lead, window_height, s, window_width, s).mean((-3, -1))
    n_subpixels = height * width * s * s
    coverage = {name: (primitive == index).flatten(len(lead)).sum(-1) / n_subpixels
                for name, index in car.attribute_primitive.items()}
    return rgb, alpha, {name: coverage[name] for name in ATTRIBUTES}


def to_straight_rgba(rgb: Tensor, alpha: Tensor) -> np.ndarray:
    """8-bit RGBA with straight colour ``c = (C - (1 - a)) / a`` (white where ``a = 0``).

    ``c`` is computed from the 8-bit alpha, so ``c * a + (1 - a)`` matches ``C`` to 8-bit rounding.

    Args:
        rgb: ``[H, W, 3]`` image composited on white; alpha: ``[H, W]`` coverage.
    Returns:
        ``[H, W, 4]`` uint8 array.
    """
    alpha_8bit = torch.round(alpha * 255.0)
    a = (alpha_8bit / 255.0)[..., None]
    straight = torch.where(a > 0, (rgb - (1.0 - a)) / a.clamp(min=1.0 / 255.0), 1.0).clamp(0.0, 1.0)
    rgba = torch.cat([torch.round(straight * 255.0), alpha_8bit[..., None]], dim=-1)
    return rgba.to(torch.uint8).numpy()


def srn_intrinsics(image_size: int) -> Tensor:
    """SRN cars' intrinsics at ``image_size``: ``f = 131.25 * size / 128``, centre ``size / 2``.

    ``f`` is rounded to the 6 decimals ``intrinsics.txt`` keeps (exact for sizes divisible by 8),
    so the file and the renders agree. Returns ``[3, 3]``.
    """
    focal = round(SRN_FOCAL_128 * image_size / 128, 6)
    return make_intrinsics(focal, image_size / 2, image_size / 2)


def hemisphere_poses(rng: np.random.Generator, n_views: int, radius: float = CAMERA_RADIUS) -> Tensor:
    """Cameras uniform on the sphere band ``elevation in [5, 75]`` degrees, looking at the origin.

    Uniform in area: ``sin(elevation)`` uniform, azimuth uniform. Returns ``[n_views, 4, 4]``.
    """
    azimuth = rng.uniform(0.0, 2.0 * math.pi, n_views)
    low, high = (math.sin(math.radians(e)) for e in ELEVATION_RANGE_DEG)
    elevation = np.arcsin(rng.uniform(low, high, n_views))
    return spherical_to_c2w(azimuth, elevation, radius)


def spiral_poses(n_views: int) -> Tensor:
    """Test cameras: :func:`genvs.cameras.spiral` at radius 1.3 (SRN-like). Returns ``[n, 4, 4]``."""
    return spiral(n_views, radius=CAMERA_RADIUS)


def split_names(n_objects: int, split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> list[str]:
    """Split of each object index: contiguous blocks train, then val, then test.

    ``n_val = round(n * f_val)`` and ``n_test = round(n * f_test)``, each at least 1 when
    ``n >= 3``; the rest is train.
    """
    _, val_fraction, test_fraction = split_fractions
    minimum = 1 if n_objects >= 3 else 0
    n_val = max(minimum, round(n_objects * val_fraction))
    n_test = max(minimum, round(n_objects * test_fraction))
    n_train = n_objects - n_val - n_test
    if n_train < minimum:
        raise ValueError(f"split_fractions {split_fractions} leave no training objects out of {n_objects}")
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def _format_intrinsics(K: Tensor, image_size: int) -> str:
    focal, cx, cy = float(K[0, 0]), float(K[0, 2]), float(K[1, 2])
    return f"{focal:f} {cx:f} {cy:f} 0.\n0. 0. 0.\n1.\n{image_size} {image_size}\n"


def _format_pose(c2w: Tensor) -> str:
    """16 floats on one line, row-major, the float32 values printed exactly (as SRN does)."""
    return " ".join(repr(float(value)) for value in c2w.reshape(-1).tolist()) + "\n"


def _write_object(folder: Path, params: CarParams, K: Tensor, poses: Tensor, image_size: int) -> None:
    """Render every pose and write ``rgb/``, ``pose/``, ``intrinsics.txt`` and ``attributes.json`` into ``folder``."""
    (folder / "rgb").mkdir(parents=True, exist_ok=True)
    (folder / "pose").mkdir(exist_ok=True)
    (folder / "intrinsics.txt").write_text(_format_intrinsics(K, image_size))
    views = []
    for view, c2w in enumerate(poses):
        rgb, alpha, coverage = _render(params, K, c2w, image_size, image_size, SUPERSAMPLE)
        Image.fromarray(to_straight_rgba(rgb, alpha)).save(folder / "rgb" / f"{view:06d}.png")
        (folder / "pose" / f"{view:06d}.txt").write_text(_format_pose(c2w))
        fractions = {name: round(float(value), 6) for name, value in coverage.items()}
        views.append({"view": f"{view:06d}", "coverage": fractions,
                      "shows": [name for name, value in fractions.items() if value >= VISIBLE_FRACTION]})
    record = {"attributes": params.attributes(), "values": {name: list(values) for name, values in ATTRIBUTES.items()},
              "visible_fraction": VISIBLE_FRACTION, "views": views}
    (folder / ATTRIBUTES_NAME).write_text(json.dumps(record, indent=1) + "\n")


def read_attributes(folder: str | Path) -> dict | None:
    """An object folder's ``attributes.json`` (see :func:`make_dataset`), or None if it has none (e.g. real SRN cars).

    Returns:
        ``{"attributes": {name: value}, "values": {name: [values]}, "visible_fraction": float,
        "views": [{"view": "000000", "coverage": {name: fraction}, "shows": [names]}, ...]}`` (views in file order).
    """
    path = Path(folder) / ATTRIBUTES_NAME
    return json.loads(path.read_text()) if path.is_file() else None


@contextlib.contextmanager
def _single_torch_thread():
    """Run torch on one thread, then restore the previous count.

    One image's tensors are small: splitting them over threads gains little, and when the
    cores are busy with other work torch's thread pool stalls (measured on 2 shared cores:
    ~150 images/s on one thread, 3-8 images/s on two).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_dataset(
    out_dir: str | Path,
    n_objects: int = 20,
    n_views: int = 50,
    image_size: int = 64,
    seed: int = 0,
    test_views: int | None = None,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    progress: bool = True,
) -> Path:
    """Render synthetic cars into ``out_dir/cars_{train,val,test}/car_NNNNN/`` (SRN layout, plus ``attributes.json``).

    Object ``i`` (folder ``car_{i:05d}``) is the car drawn from ``default_rng([seed, i])``;
    its split comes from :func:`split_names`. Train and val objects get ``n_views`` cameras
    from :func:`hemisphere_poses` (same generator, after the car); test objects get
    ``test_views`` (default ``n_views``) cameras on :func:`spiral_poses`' spiral.

    A ``genvs_synthetic.json`` manifest of the arguments is written last. Called again with the
    same arguments, the existing dataset is reused at once; with other arguments, the old
    ``cars_*`` folders are removed and the dataset is rendered anew (so no stale views or objects
    remain). A folder holding ``cars_*`` data without a manifest is not ours and is refused.

    Args:
        out_dir: dataset root (created).
        n_objects, n_views: number of cars and of views per train/val car.
        image_size: square image side in pixels.
        seed: dataset seed.
        test_views: views per test car.
        split_fractions: (train, val, test) fractions; train takes what val and test leave.
        progress: show a tqdm bar over objects.
    Returns:
        ``out_dir`` as a :class:`pathlib.Path`.
    """
    out_dir = Path(out_dir)
    manifest = {"generator": "genvs.data.synthetic", "version": MANIFEST_VERSION, "n_objects": n_objects,
                "n_views": n_views, "image_size": image_size, "seed": seed, "test_views": test_views,
                "split_fractions": list(split_fractions)}
    if _read_manifest(out_dir) == manifest:
        return out_dir
    _clear_previous_dataset(out_dir)
    for split in SPLITS:
        (out_dir / f"cars_{split}").mkdir(parents=True, exist_ok=True)
    K = srn_intrinsics(image_size)
    splits = split_names(n_objects, split_fractions)
    with _single_torch_thread():
        for index in tqdm(range(n_objects), desc="synthetic cars", unit="car", disable=not progress):
            rng = np.random.default_rng([seed, index])
            params = sample_car_params(rng)
            if splits[index] == "test":
                poses = spiral_poses(n_views if test_views is None else test_views)
            else:
                poses = hemisphere_poses(rng, n_views)
            folder = out_dir / f"cars_{splits[index]}" / f"car_{index:05d}"
            _write_object(folder, params, K, poses, image_size)
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return out_dir


def _read_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def _clear_previous_dataset(out_dir: Path) -> None:
    """Remove the split folders of an earlier synthetic dataset in ``out_dir`` (ours only)."""
    split_folders = [out_dir / f"cars_{split}" for split in SPLITS if (out_dir / f"cars_{split}").exists()]
    if not split_folders:
        return
    if not (out_dir / MANIFEST_NAME).is_file():
        raise FileExistsError(
            f"{out_dir} already holds cars_* folders that genvs did not write (no {MANIFEST_NAME}): "
            "choose an empty or new output folder"
        )
    (out_dir / MANIFEST_NAME).unlink()
    for folder in split_folders:
        shutil.rmtree(folder)
