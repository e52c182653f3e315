"""Procedural toy cars and their exact ray caster.

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
attribute when that fraction is at least :data:`VISIBLE_FRACTION`.

Rendering
---------
Rays come from :func:`genvs.cameras.pixel_rays` (camera-space ``z = 1``, so ``t`` is depth).
Each ray is intersected exactly with every primitive (slab test for boxes, quadratic plus two
cap planes for cylinders) and the nearest hit is shaded with one directional light::

    colour = albedo * (ambient + (1 - ambient) * max(0, n . l))      (lamps: colour = albedo)

with ``ambient = 0.5`` (so the side away from the light still shows its colours); rays that miss get the
white background. Images are anti-aliased by rendering at ``s x s`` sub-pixels per pixel (``K``
rescaled) and averaging, which gives the image composited on white, ``C``, and the coverage ``a``.
For speed, only the pixels inside the projection of the car's bounding box are ray cast, and only
rays that hit that box are tested against the primitives (all rays and primitives at once, as tensors).
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from genvs.cameras import pixel_rays, project, rescale_intrinsics

__all__ = [
    "CarParams",
    "CarPrimitives",
    "sample_car_params",
    "car_primitives",
    "cast_rays",
    "render_car",
    "attribute_coverage",
    "render_car_with_coverage",
    "ATTRIBUTES",
    "VISIBLE_FRACTION",
    "BOUNDING_RADIUS",
    "SUPERSAMPLE",
]

BOUNDING_RADIUS = 0.5
"""Every car fits in this sphere, so for cameras 1.3 from the origin (SRN's, and the synthetic datasets')
hits lie at depths within ``1.3 -+ 0.5 = [0.8, 1.8]``."""
AMBIENT = 0.5
LIGHT_DIRECTION = (0.5, 0.3, 1.0)
"""Direction towards the light (normalised when used): from above, front, left."""
SUPERSAMPLE = 3
"""Sub-pixels per pixel side for anti-aliasing."""
WHEEL_COLOUR = (0.08, 0.08, 0.09)
FRONT_LAMP_COLOUR = (1.0, 0.93, 0.6)
REAR_LAMP_COLOUR = (0.85, 0.04, 0.04)
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
    rgb, alpha, _ = render_car_with_coverage(params, K, c2w, height, width, supersample)
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
    return render_car_with_coverage(params, K, c2w, height, width, supersample)[2]


def render_car_with_coverage(
    params: CarParams, K: Tensor, c2w: Tensor, height: int, width: int, supersample: int = SUPERSAMPLE
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """:func:`render_car`'s image and alpha, and :func:`attribute_coverage`'s fractions, from one ray cast.

    Args: as :func:`render_car`.
    Returns:
        rgb ``[..., H, W, 3]``, alpha ``[..., H, W]`` and ``{attribute name: [...] coverage}``.
    """
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
