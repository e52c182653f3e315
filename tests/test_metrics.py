import math

import kornia
import pytest
import torch
import torchvision
from skimage.metrics import structural_similarity

from genvs.cameras import look_at, make_intrinsics, pixel_rays
from genvs.metrics import (
    LPIPS,
    LPIPSUnavailable,
    band_energies,
    detail_score,
    fine_detail,
    high_frequency_energy,
    kernel_distance,
    one_pixel_jitter,
    psnr,
    reprojection_consistency,
    sharpness,
    ssim,
    total_variation,
    tv_to_uniform,
)


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


# --- shifted images, offsets and noise: values known in closed form ------------------------------------


def test_checkerboard_shifted_by_one_pixel_has_zero_db():
    # Every pixel flips between -1 and 1: MSE = 4 = range^2, so PSNR = 0 dB exactly.
    rows, columns = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    board = ((rows + columns) % 2 * 2 - 1).float().expand(3, 16, 16)
    shifted = torch.roll(board, shifts=1, dims=-1)
    assert psnr(shifted, board).item() == 0.0


def test_ssim_of_a_constant_offset_is_the_luminance_term():
    # Flat images a and b: the structure terms are (c2)/(c2) = 1, SSIM = (2ab + c1) / (a^2 + b^2 + c1).
    a, b, c1 = 0.2, 0.5, (0.01 * 2.0) ** 2
    value = ssim(torch.full((3, 16, 16), b), torch.full((3, 16, 16), a))
    assert abs(value.item() - (2 * a * b + c1) / (a**2 + b**2 + c1)) < 1e-5


def test_fine_detail_is_what_a_gaussian_blur_removes_and_its_energy_is_high_frequency_energy():
    images = torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    flat = images.reshape(8, 3, 16, 16)
    expected = flat - kornia.filters.gaussian_blur2d(flat, (7, 7), (1.0, 1.0), border_type="reflect")
    torch.testing.assert_close(fine_detail(images), expected.reshape(images.shape))
    assert fine_detail(images, sigma=2.0).shape == images.shape
    torch.testing.assert_close(high_frequency_energy(images), fine_detail(images).pow(2).mean(dim=(-3, -2, -1)))


def test_white_noise_psnr_and_high_frequency_energy_follow_its_power():
    generator = torch.Generator().manual_seed(0)
    std = 0.1
    noise = std * torch.randn(3, 256, 256, generator=generator)
    assert abs(psnr(noise, torch.zeros_like(noise)).item() - 10 * math.log10(4 / std**2)) < 0.05
    # E(n - G * n)^2 = s^2 sum_k (delta_k - g_k)^2 for white noise n and blur taps g.
    taps = kornia.filters.get_gaussian_kernel2d((7, 7), (1.0, 1.0))[0]
    delta = torch.zeros(7, 7)
    delta[3, 3] = 1.0
    expected = std**2 * (delta - taps).pow(2).sum().item()
    assert abs(high_frequency_energy(noise).item() / expected - 1) < 0.03


def test_sharpness_is_one_for_the_truth_below_one_blurred_above_one_noisy():
    generator = torch.Generator().manual_seed(1)
    truth = kornia.filters.gaussian_blur2d(torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1, (5, 5), (1.0, 1.0))
    blurred = kornia.filters.gaussian_blur2d(truth, (7, 7), (1.5, 1.5))
    noisy = truth + 0.2 * torch.randn(truth.shape, generator=generator)
    torch.testing.assert_close(sharpness(truth, truth), torch.ones(2))
    assert (sharpness(blurred, truth) < 0.5).all()
    assert (sharpness(noisy, truth) > 1.5).all()
    assert sharpness(truth[None].expand(4, -1, -1, -1, -1), truth).shape == (4, 2)


def test_detail_score_is_one_for_the_truth_and_lower_for_noise_blur_and_a_flat_image():
    # The known faults of lesson 06 on a true view of a synthetic car: noise must not pass for detail.
    import numpy as np

    from genvs.data.cars import render_car, sample_car_params
    from genvs.data.synthetic import hemisphere_poses, srn_intrinsics

    rng = np.random.default_rng([0, 0])
    rgb, _ = render_car(sample_car_params(rng), srn_intrinsics(64), hemisphere_poses(rng, 1)[0], 64, 64)
    truth = rgb.permute(2, 0, 1)[None] * 2 - 1
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    faults = {"noisy": (truth + 0.2 * noise).clamp(-1, 1),
              "blurred": kornia.filters.gaussian_blur2d(truth, (9, 9), (2.0, 2.0)),
              "flat": torch.full_like(truth, float(truth.mean()))}
    torch.testing.assert_close(detail_score(truth, truth), torch.ones(1))
    assert sharpness(faults["noisy"], truth) > 1.2  # the old score rates noise above the truth ...
    for name, image in faults.items():
        assert detail_score(image, truth) < 0.9, name  # ... this one rates every fault below it
    assert detail_score(faults["flat"], truth) < 0.01


def test_band_energies_of_white_noise_follow_its_power():
    # For white noise of variance s^2 each band's energy is s^2 sum_k (g_prev - g_next)_k^2 (kernel taps):
    # so doubling the noise's amplitude multiplies every band by 4, and the finest band is band 0 of sharpness.
    noise = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(band_energies(2 * noise), 4 * band_energies(noise))
    torch.testing.assert_close(band_energies(noise)[..., 0], high_frequency_energy(noise))


def test_kernel_distance_matches_torchmetrics_kid_and_sees_a_shift():
    from torchmetrics.image.kid import KernelInceptionDistance

    generator = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 8, generator=generator), torch.randn(50, 8, generator=generator) + 0.5
    kid = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=20, subset_size=30)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    torch.manual_seed(3)  # torchmetrics draws its subsets from the global generator, in the same order as ours
    expected_mean, expected_std = kid.compute()
    mean, std = kernel_distance(real, fake, subsets=20, subset_size=30, seed=3)
    assert mean == pytest.approx(float(expected_mean), rel=1e-5) and std == pytest.approx(float(expected_std), rel=1e-4)
    # Two samples of one distribution: near 0 (unbiased); a shifted one: clearly above.
    first, second, shifted = (torch.randn(400, 8, generator=generator) + offset for offset in (0.0, 0.0, 0.5))
    same, _ = kernel_distance(first, second)
    different, spread = kernel_distance(first, shifted)
    assert abs(same) < 0.1 * different and different > 5 * spread


def test_total_variation_of_known_distributions():
    uniform = torch.full((3,), 1 / 3)
    assert float(total_variation(uniform, uniform)) == 0
    assert float(total_variation(torch.tensor([1.0, 0.0, 0.0]), uniform)) == pytest.approx(2 / 3)
    assert float(total_variation(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))) == 1


def test_tv_to_uniform_of_known_reads():
    assert float(tv_to_uniform(torch.tensor([2, 2, 2, 2]), 3)) == pytest.approx(2 / 3)  # always one of three values
    assert float(tv_to_uniform(torch.tensor([0, 1, 2, 0, 1, 2]), 3)) == 0  # exactly uniform
    assert float(tv_to_uniform(torch.tensor([0, 1]), 4)) == pytest.approx(0.5)  # two values never read count too


# --- LPIPS: skipped with a reason when its weights are absent; runs when they are on disk --------------


def test_lpips_without_backbone_weights_says_why_and_where(tmp_path):
    with pytest.raises(LPIPSUnavailable, match="LPIPS skipped") as error:
        LPIPS(hub_dir=tmp_path)
    assert str(tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth") in str(error.value)


def test_lpips_runs_with_local_backbone_weights(tmp_path):
    # No ImageNet weights here: a randomly initialised AlexNet stands in for the file, so this checks the
    # plumbing (local file found, nothing downloaded, shapes, zero for identical images), not the numbers.
    (tmp_path / "checkpoints").mkdir()
    torch.save(torchvision.models.alexnet(weights=None).state_dict(),
               tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth")
    hub_before = torch.hub.get_dir()
    metric = LPIPS(hub_dir=tmp_path)
    assert torch.hub.get_dir() == hub_before
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 3, 64, 64, generator=generator) * 2 - 1
    small = (images + 0.05 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
    large = (images + 0.5 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
    assert metric(images, images).shape == (2, 3)
    assert metric(images, images).abs().max() < 1e-6
    assert (metric(small, images) < metric(large, images)).all()


# --- reprojection consistency: a textured ground plane seen from two cameras ---------------------------


def _plane_views(azimuths_deg, texture_phase=0.0, size=64):
    """Views of the textured plane z = 0 (world z up) from cameras at radius 1.3, 50 degrees up: exact depth."""
    K = make_intrinsics(focal=1.2 * size, cx=size / 2, cy=size / 2)
    frames, depths, poses = [], [], []
    for azimuth in torch.tensor(azimuths_deg, dtype=torch.float32).deg2rad():
        elevation = torch.tensor(50.0).deg2rad()
        eye = 1.3 * torch.stack([elevation.cos() * azimuth.cos(), elevation.cos() * azimuth.sin(), elevation.sin()])
        c2w = look_at(eye, torch.zeros(3), up=torch.tensor([0.0, 0.0, 1.0]))
        origins, directions = pixel_rays(K, c2w, size, size)
        t = -origins[..., 2] / directions[..., 2]  # ray parameter = camera depth (d_cam.z = 1)
        x, y, _ = (origins + t[..., None] * directions).unbind(-1)
        texture = torch.stack([torch.sin(5 * x + texture_phase), torch.cos(4 * y), torch.sin(3 * (x + y))])
        frames.append(0.8 * texture)
        depths.append(t)
        poses.append(c2w)
    return torch.stack(frames), torch.stack(depths), K.expand(len(poses), 3, 3), torch.stack(poses)


def test_consistency_of_true_views_with_exact_depth_is_high():
    frames, depth, K, c2w = _plane_views([0.0, 8.0, 16.0])
    result = reprojection_consistency(frames, depth, torch.ones_like(depth), K, c2w)
    assert result["psnr"].shape == (2,) and (result["psnr"] > 55).all()  # measured: 60 and 59 dB
    assert (result["coverage"] > 0.6).all()
    same = reprojection_consistency(frames[:1].expand(2, -1, -1, -1), depth[:1].expand(2, -1, -1),
                                    torch.ones(2, 64, 64), K[:2], c2w[:1].expand(2, 4, 4))
    assert same["psnr"].item() > 60 and same["coverage"].item() == 1.0 and same["compared"].all()
    torch.testing.assert_close(same["warped"], frames[:1], atol=1e-3, rtol=0)


def test_consistency_drops_for_views_that_disagree_or_wrong_depth():
    frames, depth, K, c2w = _plane_views([0.0, 8.0])
    opacity = torch.ones_like(depth)
    good = reprojection_consistency(frames, depth, opacity, K, c2w)["psnr"].item()
    other_texture = torch.stack([frames[0], _plane_views([8.0], texture_phase=1.5)[0][0]])
    assert reprojection_consistency(other_texture, depth, opacity, K, c2w)["psnr"].item() < good - 10
    wrong_depth = reprojection_consistency(frames, depth * 1.1, opacity, K, c2w)
    assert wrong_depth["psnr"].item() < good - 15  # measured: 41 dB against 60


def test_consistency_ignores_uncovered_pixels_and_checks_shapes():
    frames, depth, K, c2w = _plane_views([0.0, 8.0])
    empty = reprojection_consistency(frames, depth, torch.zeros_like(depth), K, c2w)
    assert empty["psnr"].isnan().all() and empty["coverage"].item() == 0.0
    with pytest.raises(ValueError, match="must be"):
        reprojection_consistency(frames, depth[:, :32], torch.ones_like(depth), K, c2w)


def test_one_pixel_jitter_of_a_ramp_flat_image_and_white_noise():
    ramp = (0.1 * torch.arange(8.0)).expand(1, 3, 8, 8)  # rises by 0.1 per column, constant down the rows
    jitter, valid = one_pixel_jitter(ramp)
    torch.testing.assert_close(jitter[0, :-1, :-1], torch.full((7, 7), 0.01 / 2))  # right: 0.01, down: 0
    torch.testing.assert_close(jitter[0, -1, :-1], torch.full((7,), 0.01))  # last row: right only
    torch.testing.assert_close(jitter[0, :-1, -1], torch.zeros(7))  # last column: down only
    assert valid.sum() == 63 and not valid[0, -1, -1]
    assert one_pixel_jitter(torch.zeros(1, 3, 8, 8))[0].abs().max() == 0
    noise = 0.2 * torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert one_pixel_jitter(noise)[0].mean().item() == pytest.approx(2 * 0.04, rel=0.03)


def test_consistency_gain_is_highest_for_the_true_views():
    frames, depth, K, c2w = _plane_views([0.0, 8.0, 16.0])
    opacity = torch.ones_like(depth)

    def scores(images):
        result = reprojection_consistency(images, depth, opacity, K, c2w)
        return result["psnr"].mean().item(), result["gain"].mean().item()

    true_psnr, true_gain = scores(frames)
    blurred = kornia.filters.gaussian_blur2d(frames, (9, 9), (1.5, 1.5))
    noisy = frames + 0.05 * torch.randn(frames.shape, generator=torch.Generator().manual_seed(0))
    frozen = frames.clone()
    frozen[2] = frozen[1]  # the last frame does not turn
    assert true_gain > 20  # the exact warp predicts a frame far better than a one-pixel move of it (measured: 26 dB)
    for other in (blurred, noisy, frozen):  # measured: 13, 2.7 and 8.5 dB
        assert scores(other)[1] < true_gain - 10
    assert scores(noisy)[1] < 5  # independent noise dominates both errors: toward 0 dB
    empty = reprojection_consistency(frames, depth, torch.zeros_like(depth), K, c2w)
    assert empty["gain"].isnan().all()
