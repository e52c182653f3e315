"""A feature field from input views: encode each view, sample its volume, combine views, decode.

Given ``V`` posed input images of an object, :class:`FeatureField` encodes each into a
frustum-aligned volume (:mod:`genvs.encoder`) and answers, for any world point ``x``:

1. **project** ``x`` into input camera ``v``: ``(u, v) = K x_cam / z``, depth ``z``;
2. **voxel coordinates**: ``(2u/W - 1, 2v/H - 1, 2(z - near)/(far - near) - 1)``, grid_sample's
   normalised ``(x, y, z)`` in ``[-1, 1]`` (``align_corners=False``: voxel ``(d, i, j)`` has its
   centre at the centre of pixel ``(i, j)`` of an ``h x w`` image and at depth
   ``near + (d + 1/2)(far - near)/D``). Points outside ``[-1, 1]^3`` -- outside the image, in
   front of ``near``, beyond ``far`` or behind the camera -- are *invisible* to that view;
   they are not clamped to border voxels;
3. **sample** the view's volume there with trilinear interpolation: ``f_v(x)`` (``C`` channels);
4. **combine** the views that see ``x``: ``f(x) = sum_v m_v f_v(x) / sum_v m_v`` with visibility
   ``m_v in {0, 1}`` -- a mean, so the order of the views does not matter;
5. **decode** with one small MLP, once per point: ``[s, g] = MLP(f(x))``,
   ``sigma(x) = softplus(s)``, ``features(x) = tanh(g)`` (``C`` channels in (-1, 1)).
   Points no view sees have ``sigma = 0`` and zero features.

Depth planes are spaced linearly in depth, not in disparity. Disparity spacing pays off when
the scene spans depths from near the camera to far away (forward-facing scenes); here an object
sits in a bounded box around the origin with the camera at about 1.3 units, so surfaces are
equally likely anywhere in ``[near, far] = [0.8, 1.8]``, a range of only 2.25x in depth: linear
spacing gives them equally fine planes, which disparity spacing would move towards the near
end, in front of the object. (The seed reimplementation also spaces planes linearly.)

Rendering (:meth:`FeatureField.render_rays`, :meth:`FeatureField.render_image`) composites
``sigma`` and the ``C`` features along target rays with :mod:`genvs.rendering` over a background
of ``config.background`` in every channel. The first 3 feature channels are read as RGB in
[-1, 1] (white background = 1): the auxiliary RGB loss and the regression baseline use them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genvs import rendering
from genvs.cameras import full_precision, pixel_rays, project, rescale_intrinsics
from genvs.config import from_preset
from genvs.encoder import ENCODER_PRESETS, EncoderConfig, VolumeEncoder
from genvs.seeding import draw, seeded_rng

__all__ = [
    "FieldConfig",
    "PRESETS",
    "field_config",
    "InputViews",
    "plane_depths",
    "volume_coordinates",
    "sample_volumes",
    "combine_views",
    "decode",
    "FeatureField",
    "build_field",
    "sample_rays",
]

BOUNDARY_TOLERANCE = 1e-5  # in normalised volume coordinates (the volume spans [-1, 1])


@dataclass(frozen=True)
class FieldConfig:
    """Encoder, field MLP and feature rendering settings.

    Attributes:
        encoder: the image encoder and volume sizes (:class:`genvs.encoder.EncoderConfig`).
        near, far: depth range of the input cameras' volumes and of the samples along target
            rays (SRN cars: 0.8 and 1.8, as pixelNeRF).
        mlp_hidden: width of the MLP's two hidden layers.
        render_size: side of the rendered feature image (GeNVS: 64, half the image size).
        n_stratified, n_importance: samples per ray (stratified, then importance).
        background: value of every channel where rays hit nothing (1 = white in RGB).
    """

    encoder: EncoderConfig
    near: float = 0.8
    far: float = 1.8
    mlp_hidden: int = 64
    render_size: int = 32
    n_stratified: int = 32
    n_importance: int = 32
    background: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        for name in ("mlp_hidden", "render_size", "n_stratified"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_importance < 0:
            raise ValueError(f"n_importance must be >= 0, got {self.n_importance}")

    @property
    def feature_channels(self) -> int:
        """``C``, channels of the volumes, of the field's features and of the rendered image."""
        return self.encoder.feature_channels


PRESETS: dict[str, FieldConfig] = {
    "smoke": FieldConfig(ENCODER_PRESETS["smoke"], mlp_hidden=32, render_size=16, n_stratified=8, n_importance=8),
    "cpu": FieldConfig(ENCODER_PRESETS["cpu"], render_size=32, n_stratified=32, n_importance=32),
    "paper": FieldConfig(ENCODER_PRESETS["paper"], render_size=64, n_stratified=64, n_importance=64),
}
"""Named field configs; get one with :func:`field_config`."""


def field_config(preset: str, **overrides) -> FieldConfig:
    """The config of preset ``preset`` with ``overrides``, e.g. ``field_config("cpu", n_importance=0)``."""
    return from_preset(PRESETS, preset, "field", **overrides)


@dataclass
class InputViews:
    """Encoded input views of a batch of objects.

    Attributes:
        volumes: ``[B, V, C, D, h, w]`` feature volumes.
        K: ``[B, V, 3, 3]`` intrinsics in pixels of the input images (side ``image_size``).
        c2w: ``[B, V, 4, 4]`` camera-to-world poses.
    """

    volumes: Tensor
    K: Tensor
    c2w: Tensor


def plane_depths(near: float, far: float, n_planes: int) -> Tensor:
    """Depths of the centres of a volume's depth planes: ``z_d = near + (d + 1/2)(far - near) / D``. Returns ``[D]``."""
    return near + (torch.arange(n_planes, dtype=torch.float32) + 0.5) * (far - near) / n_planes


@full_precision
def volume_coordinates(points: Tensor, K: Tensor, c2w: Tensor, image_size: int, near: float,
                       far: float) -> tuple[Tensor, Tensor]:
    """Where world points fall in input views' frustum volumes, and whether they fall inside.

    ``coords = (2u/W - 1, 2v/H - 1, 2(z - near)/(far - near) - 1)`` with ``(u, v), z`` from
    :func:`genvs.cameras.project` and ``W = H = image_size``; ``visible = all(|coords| <= 1 + 1e-5)``
    (the tolerance keeps points exactly on the boundary, such as unjittered samples at ``near``,
    visible despite rounding; they read the border voxel). Computed in float32 under any autocast
    (:func:`genvs.cameras.full_precision`); ``F.grid_sample`` samples in float32 under autocast too.

    Args:
        points: ``[..., N, 3]`` world points.
        K: ``[..., 3, 3]`` intrinsics of the input images; c2w: ``[..., 4, 4]`` their poses.
        image_size: side of the input images ``K`` belongs to.
        near, far: depths of the volume's first and last plane boundaries.
    Returns:
        coords ``[..., N, 3]`` in grid_sample's ``(x, y, z)`` order and visible ``[..., N]`` (bool).
    """
    uv, depth = project(points, K, c2w)
    coords = torch.cat([2.0 * uv / image_size - 1.0, (2.0 * (depth - near) / (far - near) - 1.0).unsqueeze(-1)], dim=-1)
    visible = (coords.abs() <= 1.0 + BOUNDARY_TOLERANCE).all(dim=-1)
    return coords, visible


def sample_volumes(volumes: Tensor, coords: Tensor) -> Tensor:
    """Trilinear samples of each view's volume at normalised coordinates.

    Args:
        volumes: ``[B, V, C, D, h, w]``.
        coords: ``[B, V, N, 3]`` from :func:`volume_coordinates`; coordinates outside ``[-1, 1]``
            read the border (mask them with the visibility).
    Returns:
        ``[B, V, N, C]`` features.
    """
    batch, views, channels = volumes.shape[:3]
    n_points = coords.shape[-2]
    grid = coords.reshape(batch * views, 1, 1, n_points, 3)
    sampled = F.grid_sample(volumes.flatten(0, 1), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled.reshape(batch, views, channels, n_points).transpose(-1, -2)


def combine_views(features: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over the views that see each point: ``f = sum_v m_v f_v / max(1, sum_v m_v)``.

    Args:
        features: ``[B, V, N, C]``; visible: ``[B, V, N]`` (bool).
    Returns:
        mean features ``[B, N, C]`` (zero where no view sees the point) and the number of views
        that see each point ``[B, N]``.
    """
    weights = visible.to(features.dtype)
    n_seen = weights.sum(dim=1)
    total = (features * weights.unsqueeze(-1)).sum(dim=1)
    return total / n_seen.clamp_min(1.0).unsqueeze(-1), n_seen


def decode(raw: Tensor) -> tuple[Tensor, Tensor]:
    """MLP outputs ``[..., 1 + C]`` to density ``softplus(raw_0)`` ``[...]`` and features ``tanh(raw_1:)``
    ``[..., C]``."""
    return F.softplus(raw[..., 0]), torch.tanh(raw[..., 1:])


class FeatureField(nn.Module):
    """Encoder + field MLP: input views to a density and feature field, rendered at any camera.

    Args:
        config: :class:`FieldConfig`.
        imagenet_weights: optional local ImageNet checkpoint of the encoder's backbone.
    """

    def __init__(self, config: FieldConfig, imagenet_weights=None):
        super().__init__()
        self.config = config
        self.encoder = VolumeEncoder(config.encoder, imagenet_weights)
        channels, hidden = config.feature_channels, config.mlp_hidden
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 1 + channels)
        )

    def encode(self, images: Tensor, K: Tensor, c2w: Tensor) -> InputViews:
        """Encode ``[B, V, 3, H, W]`` images in [-1, 1] with ``K [B, V, 3, 3]`` and ``c2w [B, V, 4, 4]``."""
        volumes = self.encoder(images.flatten(0, 1))
        return InputViews(volumes.unflatten(0, images.shape[:2]), K, c2w)

    def forward(self, points: Tensor, views: InputViews) -> tuple[Tensor, Tensor]:
        """Density and features at world points (steps 1-5 of the module docstring).

        Args:
            points: ``[B, N, 3]`` world points, one set per object.
            views: the objects' encoded input views.
        Returns:
            sigma ``[B, N]`` (>= 0) and features ``[B, N, C]``; both zero where no view sees the point.
        """
        config = self.config
        coords, visible = volume_coordinates(points.unsqueeze(1), views.K, views.c2w, config.encoder.image_size,
                                             config.near, config.far)  # [B, V, N, 3], [B, V, N]
        mean, n_seen = combine_views(sample_volumes(views.volumes, coords), visible)
        sigma, features = decode(self.mlp(mean))
        seen = n_seen > 0
        return sigma * seen, features * seen.unsqueeze(-1)

    def render_rays(self, views: InputViews, origins: Tensor, directions: Tensor, perturb: bool = False,
                    generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Render rays of each object through its field.

        Args:
            views: encoded input views of ``B`` objects.
            origins, directions: ``[B, R, 3]`` rays (directions with camera-space z = 1, as from
                :func:`genvs.cameras.pixel_rays`).
            perturb: jitter the samples (training) or not (evaluation).
        Returns:
            :func:`genvs.rendering.render_rays`' dict: ``values [B, R, C]`` (features composited
            over the background), ``depth``, ``opacity [B, R]``, ``weights``, ``t [B, R, S]``.
        """
        batch = origins.shape[0]

        def field(points: Tensor) -> tuple[Tensor, Tensor]:  # [B, R, S, 3] -> [B, R, S], [B, R, S, C]
            sigma, features = self(points.reshape(batch, -1, 3), views)
            return sigma.reshape(points.shape[:-1]), features.reshape(points.shape[:-1] + (-1,))

        config = self.config
        return rendering.render_rays(field, origins, directions, config.near, config.far, config.n_stratified,
                                     config.n_importance, config.background, perturb, generator)

    def render_image(self, views: InputViews, K: Tensor, c2w: Tensor, size: int | None = None,
                     chunk: int = 8192, perturb: bool = False,
                     generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Render feature images of each object from target cameras.

        Args:
            views: encoded input views of ``B`` objects.
            K: ``[B, T, 3, 3]`` target intrinsics in pixels of ``image_size`` images (rescaled
                here to ``size``); c2w: ``[B, T, 4, 4]`` target poses.
            size: side of the rendered images (default ``config.render_size``).
            chunk: rays per object rendered together; bounds memory.
        Returns:
            dict with ``features [B, T, C, s, s]`` (channels 0-2: RGB in [-1, 1]),
            ``depth [B, T, s, s]`` and ``opacity [B, T, s, s]``.
        """
        size = size or self.config.render_size
        batch, n_targets = c2w.shape[:2]
        K = rescale_intrinsics(K, size / self.config.encoder.image_size)
        origins, directions = (rays.reshape(batch, -1, 3) for rays in pixel_rays(K, c2w, size, size))
        result = rendering.render_in_chunks(lambda o, d: self.render_rays(views, o, d, perturb, generator),
                                            origins, directions, chunk)
        image_shape = (batch, n_targets, size, size)
        return {
            "features": result["values"].reshape(image_shape + (-1,)).permute(0, 1, 4, 2, 3),
            "depth": result["depth"].reshape(image_shape),
            "opacity": result["opacity"].reshape(image_shape),
        }


def build_field(config: FieldConfig, seed: int = 0, imagenet_weights=None) -> FeatureField:
    """A :class:`FeatureField` initialised from ``seed`` without touching the global RNG."""
    with seeded_rng(seed, torch.device("cpu")):
        return FeatureField(config, imagenet_weights)


def sample_rays(images: Tensor, K: Tensor, c2w: Tensor, n_rays: int,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Random pixels of each object's target views, as rays with their colours.

    Each object gets ``n_rays`` pixels drawn uniformly (with replacement) from all its target views.

    Args:
        images: ``[B, T, 3, H, W]`` target images in [-1, 1]; K ``[B, T, 3, 3]`` (for ``H x W``);
            c2w ``[B, T, 4, 4]``.
        n_rays: ``R``, rays per object.
    Returns:
        origins ``[B, R, 3]``, directions ``[B, R, 3]`` and colours ``[B, R, 3]`` in [-1, 1].
    """
    origins, directions, colours = rendering.image_rays(images, K, c2w)  # [B, T*H*W, 3]
    batch = images.shape[0]
    index = (draw(torch.rand, (batch, n_rays), generator, images.device) * colours.shape[1]).long()
    index = index.clamp_max(colours.shape[1] - 1).unsqueeze(-1).expand(-1, -1, 3)
    return origins.gather(1, index), directions.gather(1, index), colours.gather(1, index)
