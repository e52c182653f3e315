import dataclasses
import math

import pytest
import torch
from torch import nn

from genvs.denoiser import (
    PRESETS,
    TRAINING_NOISE,
    DenoiserConfig,
    build_denoiser,
    denoiser_config,
    denoising_loss,
    drop_condition,
    null_condition,
    parameter_count,
    sample_training_sigmas,
)

SIGMAS = torch.tensor([0.002, 0.05, 0.5, 1.0, 3.0, 80.0])


def _edm_scalings(sigma, sd):
    """EDM table 1, written as the paper writes it."""
    return sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt(), 1 / (sigma**2 + sd**2).sqrt()


def _randomise(module: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Perturb every parameter (k-diffusion zero-initialises output layers, which would hide the network)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return module


class _Probe(nn.Module):
    """An inner model that records its input and returns a fixed output F."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, input, sigma, unet_cond=None):
        self.seen_input, self.seen_sigma, self.seen_cond = input, sigma, unet_cond
        return self.output


def test_kdiffusion_scalings_match_edm_formulas():
    denoiser = build_denoiser(PRESETS["smoke"])
    assert denoiser.sigma_data == 0.5
    for got, expected in zip(denoiser.get_scalings(SIGMAS), _edm_scalings(SIGMAS, 0.5)):
        torch.testing.assert_close(got, expected)


def test_preconditioning_seen_through_the_inner_model():
    """D(x) = c_skip x + c_out F(c_in x): the inner model sees c_in x, the output mixes x and F."""
    denoiser = build_denoiser(PRESETS["smoke"])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(len(SIGMAS), 3, 4, 4, generator=generator)
    output = torch.randn(x.shape, generator=generator)
    cond = torch.randn(len(SIGMAS), 16, 4, 4, generator=generator)
    denoiser.inner_model = _Probe(output)
    denoised = denoiser(x, SIGMAS, unet_cond=cond)
    c_skip, c_out, c_in = (s[:, None, None, None] for s in _edm_scalings(SIGMAS, 0.5))
    torch.testing.assert_close(denoiser.inner_model.seen_input, c_in * x)
    torch.testing.assert_close(denoiser.inner_model.seen_sigma, SIGMAS)
    assert denoiser.inner_model.seen_cond is cond
    torch.testing.assert_close(denoised, c_skip * x + c_out * output)


def test_loss_is_edm_weighted_denoising_error():
    """L = mean_b (D(y + sigma n) - y)^2 / c_out^2 with the draws of the generator, in their documented order."""
    config = denoiser_config("smoke", cond_dropout=0.0)
    denoiser = _randomise(build_denoiser(config))
    images, cond = torch.rand(3, 3, 16, 16) * 2 - 1, torch.randn(3, 16, 16, 16)
    loss = denoising_loss(denoiser, images, cond, config, torch.Generator().manual_seed(5))

    generator = torch.Generator().manual_seed(5)
    sigma = sample_training_sigmas(3, config.noise_mean, config.noise_std, generator)
    noise = torch.randn(images.shape, generator=generator)
    denoised = denoiser(images + sigma[:, None, None, None] * noise, sigma, unet_cond=cond)
    c_out = _edm_scalings(sigma, 0.5)[1]
    expected = ((denoised - images) ** 2).flatten(1).mean(1) / c_out**2
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-4, atol=1e-6)


def test_loss_decreases_when_overfitting_one_batch():
    torch.manual_seed(0)
    config = denoiser_config("smoke", cond_dropout=0.0)
    denoiser = build_denoiser(config)
    images, cond = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 16, 16, 16)
    optimiser = torch.optim.Adam(denoiser.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = denoising_loss(denoiser, images, cond, config, torch.Generator().manual_seed(1))  # same draws
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_training_sigmas_are_log_normal_and_seeded():
    for name, (mean, std) in TRAINING_NOISE.items():
        sigma = sample_training_sigmas(20_000, mean, std, torch.Generator().manual_seed(0))
        assert abs(sigma.log().mean() - mean) < 0.05 and abs(sigma.log().std() - std) < 0.05, name
    a, b = (sample_training_sigmas(8, 0.5, 1.4, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)
    assert TRAINING_NOISE["edm"] == (-1.2, 1.2) and TRAINING_NOISE["genvs"] == (0.5, 1.4)


def test_condition_dropout_replaces_whole_samples_by_the_null_condition():
    cond = torch.rand(400, 2, 3, 3) + 0.5
    dropped = drop_condition(cond, 0.25, torch.Generator().manual_seed(0))
    is_null = (dropped == 0).flatten(1).all(1)
    assert torch.equal(dropped[~is_null], cond[~is_null])
    assert 0.18 < is_null.float().mean() < 0.32
    assert torch.equal(drop_condition(cond, 0.0, torch.Generator()), cond)
    assert torch.equal(null_condition(cond), torch.zeros_like(cond))


def test_presets_have_the_expected_sizes():
    counts = {name: parameter_count(config) for name, config in PRESETS.items()}
    assert counts["smoke"] < 200_000
    assert 2e6 <= counts["cpu"] <= 5e6
    assert 90e6 <= counts["paper"] <= 116e6
    paper = PRESETS["paper"]
    assert paper.image_size == 128 and paper.attention_resolutions == (16, 8) and paper.cond_channels == 16
    assert paper.depths == (2, 2, 2, 4, 4) and paper.channels == (128, 128, 256, 512, 512)
    for name in ("smoke", "cpu"):
        assert sum(p.numel() for p in build_denoiser(PRESETS[name]).parameters()) == counts[name]


def test_denoiser_is_near_identity_at_low_noise_sees_its_condition_and_treats_samples_independently():
    denoiser = _randomise(build_denoiser(PRESETS["smoke"])).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 16, 16, generator=generator)
    cond, other_cond = torch.randn(2, 3, 16, 16, 16, generator=generator)
    with torch.no_grad():
        # sigma -> 0: c_skip -> 1 and c_out -> 0, so D(x) stays within c_out max|F| (+ (1 - c_skip) max|x|) of x
        sigma = torch.full((3,), 0.002)
        c_skip, c_out, c_in = (s[0].item() for s in _edm_scalings(sigma, 0.5))
        raw = denoiser.inner_model(c_in * x, sigma, unet_cond=cond)  # F
        assert raw.abs().max() > 0.1  # the randomised network's output is not negligible
        bound = c_out * raw.abs().max() + (1 - c_skip) * x.abs().max()
        assert c_out < 0.0021 and (denoiser(x, sigma, unet_cond=cond) - x).abs().max() <= bound + 1e-6
        # the condition reaches the network: at sigma = 1, D depends on it
        one = torch.ones(3)
        denoised = denoiser(x, one, unet_cond=cond)
        assert (denoiser(x, one, unet_cond=other_cond) - denoised).abs().max() > 1e-2
        # samples in a batch are independent (no batch statistics, no mixing across the batch)
        sigmas = torch.tensor([0.1, 1.0, 10.0])
        together = denoiser(x, sigmas, unet_cond=cond)
        for b in range(3):
            alone = denoiser(x[b:b + 1], sigmas[b:b + 1], unet_cond=cond[b:b + 1])
            torch.testing.assert_close(together[b:b + 1], alone, atol=1e-5, rtol=1e-5)
        changed = x.clone()
        changed[0] = torch.randn(3, 16, 16, generator=generator)  # changing sample 0 leaves the others alone
        torch.testing.assert_close(denoiser(changed, sigmas, unet_cond=cond)[1:], together[1:], atol=1e-5, rtol=1e-5)


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = (build_denoiser(PRESETS["smoke"], seed=1), build_denoiser(PRESETS["smoke"], seed=1),
               build_denoiser(PRESETS["smoke"], seed=2))
    assert torch.equal(torch.get_rng_state(), state)
    for (name, p), q, r in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, r) for p, r in zip(a.state_dict().values(), c.state_dict().values()))


def test_attention_dropout_only_in_training_mode():
    """k-diffusion's attention applies its dropout in eval mode too; ours must not."""
    denoiser = _randomise(build_denoiser(denoiser_config("smoke", dropout=0.5)), scale=0.2)
    x, sigma, cond = torch.randn(2, 3, 16, 16), torch.tensor([1.0, 2.0]), torch.randn(2, 16, 16, 16)
    denoiser.eval()
    with torch.no_grad():
        assert torch.equal(denoiser(x, sigma, unet_cond=cond), denoiser(x, sigma, unet_cond=cond))
    attention = [m for m in denoiser.modules() if type(m).__name__ == "SelfAttention2d"]
    assert attention and all(m.dropout.p == 0.0 for m in attention)
    denoiser.train()
    assert all(m.dropout.p == 0.5 for m in attention)


def test_bad_names_and_values_are_reported():
    with pytest.raises(ValueError, match="valid presets: \\['cpu', 'paper', 'smoke'\\]"):
        denoiser_config("huge")
    with pytest.raises(ValueError, match="valid names"):
        denoiser_config("cpu", noise="loud")
    with pytest.raises(ValueError, match="multiple of 2\\^3"):
        denoiser_config("cpu", image_size=36)
    with pytest.raises(ValueError, match="one entry per U-Net level"):
        DenoiserConfig(image_size=16, channels=(8, 8), depths=(1,), self_attention=(False, False))
    with pytest.raises(ValueError, match="cond_dropout"):
        denoiser_config("smoke", cond_dropout=1.0)


def test_named_noise_overrides_the_preset():
    config = denoiser_config("cpu", noise="genvs", image_size=64)
    assert (config.noise_mean, config.noise_std, config.image_size) == (0.5, 1.4, 64)
    assert dataclasses.replace(config, noise_mean=0.0).noise_mean == 0.0
    assert math.isclose(denoiser_config("paper").noise_mean, 0.5)
