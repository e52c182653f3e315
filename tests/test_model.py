import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genvs.cameras import make_intrinsics, orbit
from genvs.denoiser import denoiser_config
from genvs.field import InputViews, field_config
from genvs.model import PRESETS, GeNVS, GeNVSConfig, genvs_config, rgb_loss

SMOKE = PRESETS["smoke"]
SIZE = SMOKE.field.encoder.image_size


def _batch(n_objects: int = 2, n_views: int = 3, seed: int = 0):
    """Random images with cameras on an orbit: images [B, V, 3, H, W], K [B, V, 3, 3], c2w [B, V, 4, 4]."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n_objects, n_views, 3, SIZE, SIZE, generator=generator) * 2 - 1
    K = make_intrinsics(1.0 * SIZE, SIZE / 2, SIZE / 2).expand(n_objects, n_views, 3, 3)
    c2w = orbit(n_views, sweep_deg=270.0).expand(n_objects, n_views, 4, 4)
    return images, K, c2w


def test_config_checks_that_field_and_denoiser_fit_together():
    with pytest.raises(ValueError, match="image_size"):
        GeNVSConfig(field_config("smoke"), denoiser_config("smoke"))  # 32 px images, 16 px denoiser
    with pytest.raises(ValueError, match="cond_channels"):
        GeNVSConfig(field_config("smoke"), denoiser_config("smoke", image_size=32, cond_channels=8))
    with pytest.raises(ValueError, match="valid presets"):
        genvs_config("huge")
    assert genvs_config("cpu", rgb_weight=0.5).rgb_weight == 0.5


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_condition_has_the_denoisers_shape_for_every_preset(preset):
    config = PRESETS[preset]
    size = config.field.encoder.image_size
    with torch.device("meta"):
        model = GeNVS(config).eval()
        views = model.field.encode(torch.empty(2, 1, 3, size, size), torch.empty(2, 1, 3, 3), torch.empty(2, 1, 4, 4))
        cond, rendered = model.condition(views, torch.empty(2, 3, 3, 3), torch.empty(2, 3, 4, 4))
        denoised = model.denoiser(torch.empty(6, 3, size, size), torch.empty(6), unet_cond=cond)
    assert cond.shape == (6, config.denoiser.cond_channels, size, size)
    assert rendered["features"].shape[-1] == config.field.render_size
    assert denoised.shape == (6, 3, size, size)


def _upsample_2x_bilinear(image):
    """Bilinear 2x upsampling with half-pixel centres, written out: output pixel 2i sits at source
    coordinate i - 1/4 and 2i + 1 at i + 1/4, so they mix 3/4 of pixel i with 1/4 of its neighbour
    (edges repeated). Separable: rows, then columns."""
    def along(x, dim):
        dim = dim % x.dim()
        before = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, x.shape[dim] - 1)], dim)
        after = torch.cat([x.narrow(dim, 1, x.shape[dim] - 1), x.narrow(dim, x.shape[dim] - 1, 1)], dim)
        even, odd = 0.75 * x + 0.25 * before, 0.75 * x + 0.25 * after
        return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)
    return along(along(image, -2), -1)


def test_upsampling_reference_by_hand():
    torch.testing.assert_close(_upsample_2x_bilinear(torch.tensor([[0.0, 4.0]])[None]),
                               torch.tensor([[[0.0, 1.0, 3.0, 4.0]] * 2]))


def test_condition_is_object_major_and_upsamples_each_objects_own_render():
    """cond [B*T, C, H, W]: entry b*T + t is object b's field rendered from object b's target t
    (computed here one object and one target at a time), upsampled bilinearly to the image size."""
    model = GeNVS(SMOKE, seed=0).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a less smooth MLP, so that the input images matter more to the render
        for parameter in model.field.mlp.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    images, K, c2w = _batch(n_objects=2, n_views=3, seed=1)
    c2w = torch.stack([c2w[0], orbit(3, sweep_deg=120.0, start_azimuth_deg=50.0)])  # other cameras for object 1
    inputs, targets = slice(0, 1), slice(1, 3)
    with torch.no_grad():
        views = model.field.encode(images[:, inputs], K[:, inputs], c2w[:, inputs])
        cond, rendered = model.condition(views, K[:, targets], c2w[:, targets])
        assert cond.shape == (4, SMOKE.denoiser.cond_channels, SIZE, SIZE)
        for b in range(2):
            alone = model.field.encode(images[b:b + 1, inputs], K[b:b + 1, inputs], c2w[b:b + 1, inputs])
            for t in range(2):
                target = slice(1 + t, 2 + t)
                render = model.field.render_image(alone, K[b:b + 1, target], c2w[b:b + 1, target])["features"][0]
                torch.testing.assert_close(cond[b * 2 + t], _upsample_2x_bilinear(render)[0], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(rendered["features"][b, t], render[0], atol=1e-5, rtol=1e-5)
        # teeth: the four conditions differ, and object 1's images under object 0's cameras change the render
        distances = (cond[:, None] - cond[None]).abs().flatten(2).amax(-1)
        assert (distances + torch.eye(4)).min() > 0.05
        swapped = model.condition(InputViews(views.volumes.flip(0), views.K, views.c2w), K[:, targets],
                                  c2w[:, targets])[0]
        assert (swapped - cond).abs().max() > 1e-2


def test_the_rgb_render_alone_can_condition_the_denoiser_and_is_the_first_three_channels():
    rgb_only = dataclasses.replace(SMOKE, denoiser=dataclasses.replace(SMOKE.denoiser, cond_channels=3))
    full, ablated = GeNVS(SMOKE, seed=0).eval(), GeNVS(rgb_only, seed=0).eval()
    ablated.field.load_state_dict(full.field.state_dict())  # the same field
    images, K, c2w = _batch(n_objects=1, n_views=3, seed=2)
    with torch.no_grad():
        views = full.field.encode(images[:, :1], K[:, :1], c2w[:, :1])
        cond, rendered = full.condition(views, K[:, 1:], c2w[:, 1:])
        rgb, same_render = ablated.condition(views, K[:, 1:], c2w[:, 1:])
    assert cond.shape[1] == SMOKE.field.feature_channels and rgb.shape[1] == 3
    torch.testing.assert_close(rgb, cond[:, :3])  # the channels the RGB loss supervises
    torch.testing.assert_close(same_render["features"], rendered["features"])
    losses = ablated.losses(images, K, c2w, 1, torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss"]) and "denoising" in losses
    with pytest.raises(ValueError, match="or 3"):
        GeNVSConfig(SMOKE.field, dataclasses.replace(SMOKE.denoiser, cond_channels=8))


def test_rgb_loss_compares_each_object_with_its_own_views():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 3, 8, 8, generator=generator) * 2 - 1  # two objects, three views each
    rendered = torch.cat([images, torch.zeros(2, 3, 13, 8, 8)], dim=2)  # perfect RGB, 13 more channels
    assert rgb_loss(rendered, images).item() == 0.0
    assert rgb_loss(rendered.flip(0), images).item() > 0.1  # another object's render is wrong
    with pytest.raises(ValueError, match="same B and T"):
        rgb_loss(rendered[:, 0], images[:, :1])  # the seed's [B, C, H, W] vs [B, 1, 3, H, W]
    half = torch.nn.functional.avg_pool2d(rendered.flatten(0, 1), 2).unflatten(0, (2, 3))
    assert rgb_loss(half, images).item() < 1e-12  # a half-size render is compared with 2x2 pixel means


def test_losses_are_finite_and_reach_every_part():
    model = GeNVS(dataclasses.replace(SMOKE, input_rgb_weight=1.0, opacity_weight=0.01), seed=0)
    images, K, c2w = _batch()
    losses = model.losses(images, K, c2w, n_inputs=2, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "denoising", "rgb", "input_rgb", "opacity"}
    assert all(torch.isfinite(value) for value in losses.values())
    expected = losses["denoising"] + losses["rgb"] + losses["input_rgb"] + 0.01 * losses["opacity"]
    torch.testing.assert_close(losses["loss"], expected)
    losses["loss"].backward()
    for parameter in (model.field.encoder.backbone.conv1.weight, model.field.mlp[0].weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    # k-diffusion zero-initialises its output layers: at first only they receive gradients
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.denoiser.parameters())
    with pytest.raises(ValueError, match="n_inputs"):
        model.losses(images, K, c2w, n_inputs=3, generator=torch.Generator())


def test_same_seed_same_model():
    first, second = GeNVS(SMOKE, seed=4), GeNVS(SMOKE, seed=4)
    torch.testing.assert_close(first.state_dict(), second.state_dict())
    assert not torch.equal(first.field.mlp[0].weight, GeNVS(SMOKE, seed=5).field.mlp[0].weight)


def test_overfitting_one_small_batch_drives_the_joint_loss_down():
    model = GeNVS(SMOKE, seed=0)
    images, K, c2w = _batch(n_objects=2, n_views=2)
    optimiser = torch.optim.Adam(model.parameters(), lr=4e-3)
    history = []
    for _ in range(40):
        # the same generator seed every step: the same noise, sigmas and jitter, a fixed objective
        losses = model.losses(images, K, c2w, n_inputs=1, generator=torch.Generator().manual_seed(0))
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        history.append(losses["loss"].item())
    assert history[-1] < 0.5 * history[0], history


class _TensorsFromHostData(TorchDispatchMode):
    """Counts tensors built from Python data (``torch.tensor``, ``as_tensor`` of numbers: ``aten.lift_fresh``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten.lift_fresh.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("input_rgb_weight", [0.0, 1.0])  # with and without the input views' RGB render
def test_a_training_step_builds_no_tensor_from_host_data(input_rgb_weight):
    """On a GPU such a tensor is a copy from host memory that waits for the GPU's queue: a stall inside the step
    (the H200 profile counted 15 stream syncs per step before rendering and intrinsics stopped making them)."""
    model = GeNVS(dataclasses.replace(SMOKE, input_rgb_weight=input_rgb_weight), seed=0)
    images, K, c2w = _batch()
    with _TensorsFromHostData() as host_data:
        losses = model.losses(images, K, c2w, n_inputs=2, generator=torch.Generator().manual_seed(0))
        losses["loss"].backward()
    assert host_data.count == 0
