import dataclasses

import pytest
import torch

from genvs.cameras import make_intrinsics, orbit
from genvs.denoiser import denoiser_config
from genvs.field import field_config
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
