from types import SimpleNamespace

import kornia
import pytest
import torch
from torch import nn

from genvs.diagnostics import deciding_sigmas, detail_settling, error_per_sigma, trace_detail
from genvs.metrics import high_frequency_energy
from genvs.sampling import karras_sigmas

STEPS = 4


def _detail(images: torch.Tensor) -> torch.Tensor:
    """The finest detail band ``x - G_1 x``, written out with kornia (7 taps, reflected borders)."""
    return images - kornia.filters.gaussian_blur2d(images, (7, 7), (1.0, 1.0), border_type="reflect")


class _Scaling(nn.Module):
    """A stand-in denoiser ``D(x; sigma) = a * x``: 0 returns nothing, 1 returns the noisy input."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x, sigma, unet_cond=None):
        return self.a * x


class _Constant(nn.Module):
    """A stand-in denoiser that answers ``D(x; sigma, c) = z`` whatever it is given (``z [B, 3, H, W]``, repeated
    for a batch of ``n * B``). ``sample_images`` reads the device from its dummy parameter and the channels from
    ``inner_model``, as from a k-diffusion ``Denoiser``."""

    def __init__(self, z, cond_channels=2):
        super().__init__()
        self.z = z
        self.dummy = nn.Parameter(torch.zeros(()))
        self.inner_model = SimpleNamespace(unet_cond_dim=cond_channels, c_in=z.shape[1])

    def forward(self, x, sigma, unet_cond=None):
        return self.z.repeat(x.shape[0] // self.z.shape[0], 1, 1, 1)


def test_error_per_sigma_of_oracle_denoisers():
    """Returning zeros errs by the images' RMS at every level and keeps no detail; returning the noisy input
    errs by sigma and keeps all of the noise (its detail added to the images'); the batch size changes nothing."""
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    cond, sigmas = torch.zeros(6, 16, 32, 32), [0.01, 0.3, 5.0]
    zero = error_per_sigma(_Scaling(0.0), images, cond, sigmas)
    assert torch.allclose(zero["rmse"], images.pow(2).mean().sqrt().expand(3), rtol=1e-5)
    assert torch.equal(zero["detail"], torch.zeros(3))
    assert torch.allclose(zero["noise_left"], images.pow(2).mean() / torch.tensor(sigmas) ** 2, rtol=1e-5)
    assert torch.allclose(zero["truth_detail_rms"], high_frequency_energy(images).mean().sqrt())
    identity = error_per_sigma(_Scaling(1.0), images, cond, sigmas, batch_size=4)
    assert torch.allclose(identity["rmse"], torch.tensor(sigmas), rtol=0.02)
    assert torch.allclose(identity["noise_left"], torch.ones(3), rtol=0.04)
    # images and noise are both white (variances 1/3 and sigma^2): the detail energy grows by (1/3 + sigma^2) / (1/3)
    assert torch.allclose(identity["detail"], 1 + 3 * torch.tensor(sigmas) ** 2, rtol=0.05)
    assert torch.allclose(error_per_sigma(_Scaling(1.0), images, cond, sigmas, batch_size=6)["rmse"], identity["rmse"])


def test_detail_settling_of_a_run_that_moves_linearly_from_noise_to_its_sample():
    """Estimates e_s = (1 - t_s) n + t_s y: the undecided share of y's fine detail is (1 - t)^2 ||h(n) - h(y)||^2 /
    ||h(y)||^2 in closed form, and the agreement with y's detail is 1 at the end; the 25% / 90% levels follow."""
    generator = torch.Generator().manual_seed(0)
    final, start = torch.rand(4, 3, 24, 24, generator=generator), torch.rand(4, 3, 24, 24, generator=generator)
    t = torch.linspace(0, 1, 11)
    estimates = (1 - t)[:, None, None, None, None] * start + t[:, None, None, None, None] * final
    settling = detail_settling(estimates, final, final)
    expected = (1 - t) ** 2 * (_detail(start) - _detail(final)).pow(2).sum() / _detail(final).pow(2).sum()
    assert torch.allclose(settling["undecided"], expected, rtol=1e-4, atol=1e-7)
    assert settling["agreement"][-1] == pytest.approx(1.0, abs=1e-6) and settling["agreement"][0] < 0.5
    sigmas = torch.logspace(1, -2, 11)  # decided share 1 - (1 - t)^2 reaches 0.25 at t = 0.2, 0.9 at t = 0.7
    assert deciding_sigmas(sigmas, settling["undecided"]) == [float(sigmas[2]), float(sigmas[7])]
    with pytest.raises(ValueError, match="never decides"):
        deciding_sigmas(sigmas, torch.ones(11))


def test_trace_detail_of_an_oracle_that_always_answers_z(clean_images, oracle_cond):
    """D = z whatever x: every estimate is z, so the samples are z and all their detail is decided at the first
    step; against images z the denoiser's error is 0 at every level, against y it is the RMS of z - y, and the
    estimate's detail agrees with y's by the cosine of their fine details."""
    y, z = clean_images(1), clean_images(2)
    options = {"sampler": "euler", "steps": STEPS}
    same = trace_detail(_Constant(z), z, oracle_cond(), noise_levels=[0.01, 1.0, 10.0], **options)
    torch.testing.assert_close(same["samples"], z, atol=1e-5, rtol=0)
    assert torch.all(same["errors"]["rmse"] < 1e-6) and torch.all(same["settling"]["undecided"] < 1e-10)
    assert same["band"] == [float(karras_sigmas(STEPS)[0])] * 2
    assert torch.equal(same["step_sigmas"], karras_sigmas(STEPS)[:-1])
    other = trace_detail(_Constant(z), y, oracle_cond(), noise_levels=[0.01, 1.0, 10.0], **options)
    torch.testing.assert_close(other["errors"]["rmse"], (z - y).pow(2).mean().sqrt().expand(3), atol=1e-6, rtol=0)
    cosine = _detail(z).flatten() @ _detail(y).flatten() / (_detail(z).norm() * _detail(y).norm())
    torch.testing.assert_close(other["settling"]["agreement"], cosine.expand(STEPS), atol=1e-5, rtol=0)
