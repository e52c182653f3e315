import math

import pytest
import torch
from skimage.metrics import structural_similarity

from genvs.metrics import psnr, ssim


def test_identical_images_have_infinite_psnr():
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.isinf(psnr(image, image)).all()


def test_noise_of_known_power_gives_known_psnr():
    # A constant error of 0.1 in [-1, 1] is 0.05 in [0, 1]: PSNR = -10 log10(0.05^2) = 26.02 dB.
    target = torch.zeros(4, 3, 16, 16)
    value = psnr(target + 0.1, target)
    torch.testing.assert_close(value, torch.full((4,), -10 * math.log10(0.05**2)))


def test_psnr_in_model_range_equals_psnr_in_unit_range():
    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.rand(2, 3, 3, 8, 8, generator=generator).unbind(0)
    unit = psnr((prediction + 1) / 2, (target + 1) / 2, data_range=1.0)
    torch.testing.assert_close(psnr(prediction, target), unit)
    assert psnr(prediction, target).shape == (3,)


def test_ssim_matches_scikit_image():
    generator = torch.Generator().manual_seed(1)
    target = torch.rand(3, 3, 32, 40, generator=generator) * 2 - 1
    prediction = (target + 0.3 * torch.randn(target.shape, generator=generator)).clamp(-1, 1)
    ours = ssim(prediction, target)
    for index in range(3):
        reference = structural_similarity(
            prediction[index].numpy(), target[index].numpy(), data_range=2.0, channel_axis=0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert abs(ours[index].item() - reference) < 1e-4
    assert 0.1 < ours.min() and ours.max() < 0.9


def test_ssim_is_one_for_identical_images_and_keeps_batch_shape():
    image = torch.rand(2, 4, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(ssim(image, image), torch.ones(2, 4))


def test_ssim_rejects_mismatched_or_tiny_images():
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
