import math

import torch

from genvs.metrics import psnr


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
