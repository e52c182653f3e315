import math

import pytest
import torch
from torch import nn

from genvs.cameras import make_intrinsics, pixel_rays, project, spherical_to_c2w, unproject
from genvs.data import SRNDataset, srn_fixture_dir
from genvs.field import (
    PRESETS,
    FeatureField,
    FieldConfig,
    InputViews,
    build_field,
    combine_views,
    field_config,
    sample_rays,
    sample_volumes,
    volume_coordinates,
)

SMOKE = PRESETS["smoke"]  # 32 px images, volume 16 x 8 x 16 x 16, near 0.8, far 1.8
SIZE = SMOKE.encoder.image_size
FIXTURE = srn_fixture_dir()


def _camera(azimuth_deg: float, elevation_deg: float = 20.0, radius: float = 1.3) -> torch.Tensor:
    return spherical_to_c2w(math.radians(azimuth_deg), math.radians(elevation_deg), radius)


def _K(size: int = SIZE) -> torch.Tensor:
    return make_intrinsics(1.0 * size, size / 2, size / 2)


def _index_volume(config: FieldConfig) -> torch.Tensor:
    """[1, 1, 3, D, h, w] volume whose channels hold each voxel's (d, i, j) index."""
    _, planes, rows, columns = config.encoder.volume_shape
    d, i, j = torch.meshgrid(torch.arange(planes), torch.arange(rows), torch.arange(columns), indexing="ij")
    return torch.stack([d, i, j]).float()[None, None]


class _DensityFromChannel0(nn.Module):
    """Stand-in MLP: density raw = scale * (f_0 - 1/2), features passed through."""

    def __init__(self, scale: float = 2000.0):
        super().__init__()
        self.scale = scale

    def forward(self, features):
        return torch.cat([self.scale * (features[..., :1] - 0.5), features], dim=-1)


def test_voxel_centres_land_in_their_own_voxel():
    config = SMOKE
    _, planes, rows, columns = config.encoder.volume_shape
    K, c2w = _K(), _camera(30.0)
    spacing = (config.far - config.near) / planes
    voxels = torch.tensor([[0, 0, 0], [3, 5, 11], [planes - 1, rows - 1, columns - 1], [6, 9, 2]])
    d, i, j = voxels.unbind(-1)
    # centre of voxel (i, j): centre of pixel (i, j) of the h x w grid, scaled to image pixels
    uv = torch.stack([(j + 0.5) * SIZE / columns, (i + 0.5) * SIZE / rows], dim=-1).float()
    depth = config.near + (d.float() + 0.5) * spacing
    points = unproject(uv, depth, K, c2w)
    coords, visible = volume_coordinates(points, K, c2w, SIZE, config.near, config.far)
    assert visible.all()
    sampled = sample_volumes(_index_volume(config), coords[None, None])[0, 0]
    torch.testing.assert_close(sampled, voxels.float(), atol=1e-3, rtol=0)


def test_points_behind_the_camera_outside_the_image_or_depth_range_are_invisible():
    config = SMOKE
    K, c2w = _K(), _camera(-50.0)
    centre = torch.tensor([[SIZE / 2, SIZE / 2]])
    inside = unproject(centre, torch.tensor([1.3]), K, c2w)
    outside = torch.cat([
        unproject(centre, torch.tensor([0.5]), K, c2w),  # in front of near
        unproject(centre, torch.tensor([2.0]), K, c2w),  # beyond far
        unproject(torch.tensor([[-0.5, 16.0]]), torch.tensor([1.3]), K, c2w),  # left of the image
        unproject(torch.tensor([[16.0, SIZE + 0.5]]), torch.tensor([1.3]), K, c2w),  # below the image
        2 * c2w[:3, 3] - inside,  # behind the camera, mirrored through its centre
    ])
    _, visible = volume_coordinates(torch.cat([inside, outside]), K, c2w, SIZE, config.near, config.far)
    assert visible.tolist() == [True, False, False, False, False, False]
    assert project(outside[-1:], K, c2w)[1].item() < 0

    field = build_field(config).eval()
    volume = torch.ones(1, 1, *config.encoder.volume_shape)
    views = InputViews(volume, K[None, None], c2w[None, None])
    with torch.no_grad():
        sigma, features = field(torch.cat([inside, outside])[None], views)
    assert sigma[0, 0] > 0 and features[0, 0].abs().sum() > 0
    assert (sigma[0, 1:] == 0).all() and (features[0, 1:] == 0).all()


def test_combine_views_is_the_mean_over_views_that_see_the_point():
    features = torch.tensor([1.0, 3.0, 8.0]).view(1, 3, 1, 1).expand(1, 3, 4, 2)  # view v has value 1, 3, 8
    visible = torch.tensor([[True, True, False, False],
                            [True, False, True, False],
                            [False, False, False, False]]).unsqueeze(0)  # [B=1, V=3, N=4]
    mean, n_seen = combine_views(features, visible)
    torch.testing.assert_close(mean[0, :, 0], torch.tensor([2.0, 1.0, 3.0, 0.0]))
    torch.testing.assert_close(n_seen[0], torch.tensor([2.0, 1.0, 1.0, 0.0]))


def test_the_field_does_not_depend_on_the_order_of_the_views():
    config = SMOKE
    field = build_field(config, seed=1).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 3, SIZE, SIZE, generator=generator) * 2 - 1
    K = _K().expand(2, 3, 3, 3)
    c2w = torch.stack([torch.stack([_camera(a + 20 * b) for a in (0.0, 100.0, 230.0)]) for b in range(2)])
    points = (torch.rand(2, 500, 3, generator=generator) - 0.5) * 0.8
    with torch.no_grad():
        views = field.encode(images, K, c2w)
        order = torch.tensor([2, 0, 1])
        shuffled = InputViews(views.volumes[:, order], K[:, order], c2w[:, order])
        sigma, features = field(points, views)
        sigma_shuffled, features_shuffled = field(points, shuffled)
    torch.testing.assert_close(sigma_shuffled, sigma)
    torch.testing.assert_close(features_shuffled, features)
    assert (sigma > 0).any()


def test_single_view_from_its_own_camera_each_pixel_reads_only_its_column():
    """From the input camera, the ray through pixel (i, j) stays in the volume's column (i, j)."""
    config = field_config("smoke", n_importance=8)
    field = build_field(config, seed=2).eval()
    _, planes, rows, columns = config.encoder.volume_shape
    K, c2w = _K(), _camera(70.0)
    generator = torch.Generator().manual_seed(1)
    volume = torch.randn(1, 1, *config.encoder.volume_shape, generator=generator)
    changed = volume.clone()
    changed[..., 5, 9] += 3.0 * torch.randn(changed[..., 5, 9].shape, generator=generator)

    def render(v):
        return field.render_image(InputViews(v, K[None, None], c2w[None, None]), K[None, None],
                                  c2w[None, None], size=rows)["features"][0, 0]

    with torch.no_grad():
        before, after = render(volume), render(changed)
    difference = (after - before).abs().sum(dim=0)
    assert difference[5, 9] > 1e-2
    difference[5, 9] = 0
    assert difference.max() < 1e-5


def test_single_view_a_volume_constant_across_pixels_renders_a_constant_image():
    config = SMOKE
    field = build_field(config, seed=3).eval()
    K, c2w = _K(), _camera(200.0)
    profile = torch.randn(1, 1, config.feature_channels, config.encoder.depth_planes, 1, 1,
                          generator=torch.Generator().manual_seed(4))
    volume = profile.expand(1, 1, *config.encoder.volume_shape)
    views = InputViews(volume, K[None, None], c2w[None, None])
    with torch.no_grad():
        result = field.render_image(views, K[None, None], c2w[None, None])
    features = result["features"][0, 0]
    assert features.shape == (config.feature_channels, config.render_size, config.render_size)
    torch.testing.assert_close(features, features[:, :1, :1].expand_as(features), atol=1e-4, rtol=0)


def test_an_opaque_depth_plane_renders_at_its_depth():
    config = field_config("smoke", n_stratified=64, n_importance=64)
    field = build_field(config).eval()
    field.mlp = _DensityFromChannel0()
    spacing = (config.far - config.near) / config.encoder.depth_planes
    K, c2w = _K(), _camera(10.0)
    for plane in (2, 5):
        volume = torch.zeros(1, 1, *config.encoder.volume_shape)
        volume[:, :, 0, plane:] = 1.0  # channel 0 is 1 from plane `plane` on: opaque from its centre's front
        with torch.no_grad():
            depth = field.render_image(InputViews(volume, K[None, None], c2w[None, None]), K[None, None],
                                       c2w[None, None])["depth"]
        # channel 0 crosses 1/2 half way between the centres of planes plane-1 and plane: at near + plane * spacing
        expected = config.near + plane * spacing
        assert (depth - expected).abs().max() < 0.1 * spacing, (plane, depth.mean().item(), expected)


def test_gradients_reach_the_encoder_through_rendering():
    config = SMOKE
    field = build_field(config)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 2, 3, SIZE, SIZE, generator=generator) * 2 - 1
    K = _K().expand(2, 2, 3, 3)
    c2w = torch.stack([torch.stack([_camera(0.0), _camera(90.0)]), torch.stack([_camera(45.0), _camera(180.0)])])
    views = field.encode(images[:, :1], K[:, :1], c2w[:, :1])
    origins, directions, colours = sample_rays(images[:, 1:], K[:, 1:], c2w[:, 1:], 64, generator)
    result = field.render_rays(views, origins, directions, perturb=True, generator=generator)
    assert result["values"].shape == (2, 64, config.feature_channels)
    (result["values"][..., :3] - colours).square().mean().backward()
    for parameter in (field.encoder.backbone.conv1.weight, field.encoder.head.weight, field.mlp[0].weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_feature_image_shapes_for_every_preset(preset):
    config = PRESETS[preset]
    size = config.encoder.image_size
    with torch.device("meta"):  # shapes only
        field = FeatureField(config).eval()
        views = field.encode(torch.empty(2, 2, 3, size, size), torch.empty(2, 2, 3, 3), torch.empty(2, 2, 4, 4))
        result = field.render_image(views, torch.empty(2, 3, 3, 3), torch.empty(2, 3, 4, 4), chunk=10**6)
    assert views.volumes.shape == (2, 2, *config.encoder.volume_shape)
    side = config.render_size
    assert result["features"].shape == (2, 3, config.feature_channels, side, side)
    assert result["depth"].shape == result["opacity"].shape == (2, 3, side, side)


def test_chunked_rendering_matches_one_pass():
    config = SMOKE
    field = build_field(config, seed=5).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 1, 3, SIZE, SIZE, generator=generator) * 2 - 1
    K, c2w = _K()[None, None], _camera(15.0)[None, None]
    target_K, target_c2w = _K().expand(1, 2, 3, 3), torch.stack([_camera(40.0), _camera(-60.0)])[None]
    with torch.no_grad():
        views = field.encode(images, K, c2w)
        whole = field.render_image(views, target_K, target_c2w, chunk=10**6)
        chunked = field.render_image(views, target_K, target_c2w, chunk=100)
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key])


@pytest.mark.skipif(FIXTURE is None, reason="SRN fixture not found")
def test_sampled_rays_pass_through_their_pixels_of_a_real_image():
    item = SRNDataset(FIXTURE, views_per_item=None)[0]
    images, K, c2w = item["images"][None], item["K"][None], item["c2w"][None]
    origins, directions, colours = sample_rays(images, K, c2w, 200, torch.Generator().manual_seed(0))
    height, width = images.shape[-2:]
    all_origins, all_directions = pixel_rays(K[0], c2w[0], height, width)
    matches = 0
    for origin, direction, colour in zip(origins[0], directions[0], colours[0]):
        hits = ((all_directions - direction).abs().sum(-1) < 1e-6) & ((all_origins - origin).abs().sum(-1) < 1e-6)
        view, row, column = hits.nonzero()[0].tolist()
        torch.testing.assert_close(colour, images[0, view, :, row, column])
        matches += 1
    assert matches == 200


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="near < far"):
        field_config("cpu", near=2.0, far=1.0)
    with pytest.raises(ValueError, match="valid presets"):
        field_config("giant")
    with pytest.raises(ValueError, match="n_importance"):
        field_config("smoke", n_importance=-1)
    assert PRESETS["paper"].render_size == 64 and PRESETS["paper"].feature_channels == 16


def test_volume_coordinates_stay_float32_under_bf16_autocast():
    """The paper's geometry (128 px, 64 depth planes): where points fall in the volume, read back
    through grid_sample from an index volume, moves by less than 0.05 pixel / plane under bf16
    autocast (about a pixel without full precision)."""
    config = field_config("paper")
    _, planes, rows, columns = config.encoder.volume_shape
    size = config.encoder.image_size
    K, c2w = make_intrinsics(131.25, size / 2, size / 2), _camera(40.0)
    points = torch.rand(1, 4096, 3, generator=torch.Generator().manual_seed(0)) - 0.5

    def voxel_positions():
        coords, visible = volume_coordinates(points, K, c2w, size, config.near, config.far)
        return sample_volumes(_index_volume(config), coords[None]), visible

    exact, exact_visible = voxel_positions()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, visible = voxel_positions()
    assert torch.equal(visible, exact_visible) and visible.float().mean() > 0.5
    # (d, i, j) index errors in planes and in image pixels (a volume voxel spans size / columns pixels)
    error = (autocast - exact).abs()[0, 0][visible[0]].amax(dim=0)
    assert error[0] < 0.05 and error[1] * size / rows < 0.05 and error[2] * size / columns < 0.05, error
