"""Lessons 02-04's checkers: each passes its solution and a correct implementation written differently, and names
typical mistakes, written here independently of the checkers' own list, with a sentence that names the mistake."""

import pytest
import torch
import torch.nn.functional as F

from genvs.course.checking import check
from genvs.course.lesson02 import SAMPLE_VOLUME, VOLUME_COORDINATES
from genvs.course.lesson03 import EDM_PRECONDITIONING, EULER_CHURN_STEP
from genvs.course.lesson04 import JOINT_LOSS

EXERCISES = [VOLUME_COORDINATES, SAMPLE_VOLUME, EDM_PRECONDITIONING, EULER_CHURN_STEP, JOINT_LOSS]


def caught(exercise, function, phrase):
    result = check(exercise, function)
    assert not result.passed and result.written and phrase in result.message, result.message


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_the_solution_passes_and_the_stub_is_not_yet_written(exercise):
    result = check(exercise, exercise.solution)
    assert result.passed and result.written, result.message

    def stub(*args):
        raise NotImplementedError("your turn")

    result = check(exercise, stub)
    assert not result.written and "not yet written" in result.message and exercise.hint in result.message


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_every_listed_mistake_differs_from_the_answer_and_from_the_mistakes_before_it(exercise):
    assert len(exercise.mistakes) >= 3
    for mistake in exercise.mistakes:
        assert check(exercise, mistake.wrong).message == f"{exercise.name}: {mistake.message}"


# --- lesson 02: volume coordinates ---------------------------------------------------------------------------------


def homogeneous_camera(points, K, c2w):
    """Camera-space points ``[N, 3]`` through the inverse pose, in homogeneous coordinates."""
    ones = torch.ones(points.shape[0], 1, dtype=points.dtype)
    return (torch.linalg.inv(c2w) @ torch.cat([points, ones], dim=1).T).T[:, :3]


def test_volume_coordinates_mistakes_are_named():
    def no_divide(points, K, c2w, image_size, near, far):
        pixels = (K @ homogeneous_camera(points, K, c2w).T).T  # (f x + c z, f y + c z, z): never divided by z
        coords = torch.stack([pixels[:, 0] * 2 / image_size - 1, pixels[:, 1] * 2 / image_size - 1,
                              (pixels[:, 2] - near) * 2 / (far - near) - 1], dim=1)
        return coords, coords.abs().amax(dim=1) <= 1 + 1e-5

    def corner_pixels(points, K, c2w, image_size, near, far):
        x_cam = homogeneous_camera(points, K, c2w)
        u = K[0, 0] * x_cam[:, 0] / x_cam[:, 2] + K[0, 2]
        v = K[1, 1] * x_cam[:, 1] / x_cam[:, 2] + K[1, 2]
        z = (x_cam[:, 2] - near) / (far - near) * 2 - 1
        coords = torch.stack([(u - 0.5) / (image_size - 1) * 2 - 1, (v - 0.5) / (image_size - 1) * 2 - 1, z], 1)
        return coords, coords.abs().amax(dim=1) <= 1 + 1e-5

    def volume_order(points, K, c2w, image_size, near, far):
        x_cam = homogeneous_camera(points, K, c2w)
        uv = x_cam[:, :2] / x_cam[:, 2:] * K.diagonal()[:2] + K[:2, 2]
        coords = torch.cat([(2 * (x_cam[:, 2:] - near) / (far - near) - 1), (2 * uv / image_size - 1).flip(1)], 1)
        return coords, coords.abs().amax(dim=1) <= 1 + 1e-5

    def inside_the_image(points, K, c2w, image_size, near, far):
        x_cam = homogeneous_camera(points, K, c2w)
        uv = x_cam[:, :2] / x_cam[:, 2:] * K.diagonal()[:2] + K[:2, 2]
        depth = 2 * (x_cam[:, 2:] - near) / (far - near) - 1
        coords = torch.cat([2 * uv / image_size - 1, depth], 1)
        return coords, ((uv >= -1e-5 * image_size / 2) & (uv <= image_size * (1 + 1e-5 / 2))).all(dim=1)

    caught(VOLUME_COORDINATES, no_divide, "perspective divide is missing")
    caught(VOLUME_COORDINATES, corner_pixels, "align_corners=True")
    caught(VOLUME_COORDINATES, volume_order, "(depth, row, column) order")
    caught(VOLUME_COORDINATES, inside_the_image, "only checks the image")


def test_volume_coordinates_written_differently_passes():
    def through_the_inverse_pose(points, K, c2w, image_size, near, far):
        x_cam = homogeneous_camera(points, K, c2w)
        u = K[0, 0] * x_cam[:, 0] / x_cam[:, 2] + K[0, 2]
        v = K[1, 1] * x_cam[:, 1] / x_cam[:, 2] + K[1, 2]
        lows = torch.tensor([0.0, 0.0, near])
        highs = torch.tensor([float(image_size), float(image_size), far])
        coords = (torch.stack([u, v, x_cam[:, 2]], 1) - lows) / (highs - lows) * 2 - 1  # [low, high] -> [-1, 1]
        return coords, ~(coords.abs() > 1 + 1e-5).any(dim=1)

    result = check(VOLUME_COORDINATES, through_the_inverse_pose)
    assert result.passed, result.message


# --- lesson 02: sampling the volume --------------------------------------------------------------------------------


def test_sample_volume_mistakes_are_named():
    def corner_aligned(volume, coords):
        grid = coords.reshape(1, -1, 1, 1, 3)
        out = F.grid_sample(volume.unsqueeze(0), grid, align_corners=True, padding_mode="border")
        return out.reshape(volume.shape[0], -1).T

    def zero_padded(volume, coords):
        grid = coords.reshape(1, 1, -1, 1, 3)
        return F.grid_sample(volume.unsqueeze(0), grid, align_corners=False).flatten(2)[0].T

    def depth_first(volume, coords):
        grid = coords[:, [2, 1, 0]].reshape(1, -1, 1, 1, 3)
        out = F.grid_sample(volume.unsqueeze(0), grid, align_corners=False, padding_mode="border")
        return out.reshape(volume.shape[0], -1).T

    caught(SAMPLE_VOLUME, corner_aligned, "align_corners=True")
    caught(SAMPLE_VOLUME, zero_padded, "padding is zeros")
    caught(SAMPLE_VOLUME, depth_first, "reversed to (z, y, x)")


def test_sample_volume_by_hand_passes():
    def trilinear(volume, coords):
        """Trilinear interpolation written out: voxel-centre positions, clamped to the volume (border padding)."""
        sizes = torch.tensor(volume.shape[1:][::-1], dtype=coords.dtype)   # (w, h, D), the order of (x, y, z)
        position = ((coords + 1) * sizes - 1) / 2                          # align_corners=False: centres at k + 1/2
        position = torch.minimum(position.clamp_min(0), sizes - 1)
        low = position.floor().long()
        high = torch.minimum(low + 1, (sizes - 1).long())
        frac = position - low
        result = 0
        for corner in range(8):
            pick = [(corner >> axis) & 1 for axis in range(3)]
            index = [torch.where(torch.tensor(bool(p)), high[:, axis], low[:, axis]) for axis, p in enumerate(pick)]
            weight = torch.ones(coords.shape[0])
            for axis, p in enumerate(pick):
                weight = weight * (frac[:, axis] if p else 1 - frac[:, axis])
            result = result + weight[:, None] * volume[:, index[2], index[1], index[0]].T
        return result

    result = check(SAMPLE_VOLUME, trilinear)
    assert result.passed, result.message


# --- lesson 03: preconditioning ------------------------------------------------------------------------------------


def test_edm_preconditioning_mistakes_are_named():
    def swapped(sigma, sigma_data):
        total = torch.rsqrt(sigma ** 2 + sigma_data ** 2)
        return sigma * sigma_data * total, (sigma_data * total) ** 2, total, sigma.log() * 0.25

    def input_variance(sigma, sigma_data):
        c_in = (sigma ** 2 + sigma_data ** 2) ** -1
        return (sigma_data * c_in.sqrt()) ** 2, sigma * sigma_data * c_in.sqrt(), c_in, sigma.log() * 0.25

    def half_always(sigma, sigma_data):
        return 1 / (1 + (sigma / 0.5) ** 2), sigma * 0.5 / (sigma ** 2 + 0.25).sqrt(), (sigma ** 2 + 0.25) ** -0.5, \
            sigma.log() / 4

    def unscaled_noise(sigma, sigma_data):
        root = (sigma ** 2 + sigma_data ** 2).sqrt()
        return sigma_data ** 2 / root ** 2, sigma * sigma_data / root, 1 / root, torch.log(sigma)

    caught(EDM_PRECONDITIONING, swapped, "c_skip and c_out are swapped")
    caught(EDM_PRECONDITIONING, input_variance, "c_in lacks its square root")
    caught(EDM_PRECONDITIONING, half_always, "fixed at 0.5")
    caught(EDM_PRECONDITIONING, unscaled_noise, "division by 4")


def test_edm_preconditioning_written_differently_passes():
    def in_ratios(sigma, sigma_data):
        ratio = sigma / sigma_data                               # sigma in units of sigma_data
        c_skip = 1 / (1 + ratio ** 2)
        c_in = torch.rsqrt(sigma ** 2 + sigma_data ** 2)
        return c_skip, sigma * c_in * sigma_data, c_in, torch.log(sigma ** 0.25)

    result = check(EDM_PRECONDITIONING, in_ratios)
    assert result.passed, result.message


# --- lesson 03: one Euler step with churn --------------------------------------------------------------------------


def test_euler_churn_step_mistakes_are_named():
    def standard_deviations_added(denoise, x, sigma, sigma_next, gamma, noise):
        sigma_hat = sigma + gamma * sigma
        x_hat = x + gamma * sigma * noise
        estimate = denoise(x_hat, sigma_hat)
        return estimate + sigma_next / sigma_hat * (x_hat - estimate)

    def lesson_ode_step_after_churn(denoise, x, sigma, sigma_next, gamma, noise):
        x = x + sigma * ((1 + gamma) ** 2 - 1) ** 0.5 * noise
        return x + (sigma_next / sigma - 1) * (x - denoise(x, sigma))  # the lesson's deterministic step, from sigma

    def length_from_sigma(denoise, x, sigma, sigma_next, gamma, noise):
        sigma_hat = sigma * (1 + gamma)
        x = x + torch.sqrt(sigma_hat ** 2 - sigma ** 2) * noise
        slope = (x - denoise(x, sigma_hat)) / sigma_hat
        return x - (sigma - sigma_next) * slope

    caught(EULER_CHURN_STEP, standard_deviations_added, "sigma_hat - sigma")
    caught(EULER_CHURN_STEP, lesson_ode_step_after_churn, "still starts from sigma")
    caught(EULER_CHURN_STEP, length_from_sigma, "step length is sigma_next - sigma")


def test_euler_churn_step_with_churn_lowering_sigma_gives_nan():
    def lowered(denoise, x, sigma, sigma_next, gamma, noise):  # sigma_hat < sigma: the noise's std is imaginary
        sigma_hat = sigma * (1 - gamma)
        x = x + torch.sqrt(sigma_hat ** 2 - sigma ** 2) * noise
        return x + (sigma_next - sigma_hat) * (x - denoise(x, sigma_hat)) / sigma_hat

    caught(EULER_CHURN_STEP, lowered, "NaN")


def test_euler_churn_step_written_differently_passes():
    def towards_the_estimate(denoise, x, sigma, sigma_next, gamma, noise):
        sigma_hat = sigma * (1 + gamma)
        x_hat = x + sigma * (gamma * (2 + gamma)) ** 0.5 * noise  # sigma_hat^2 - sigma^2 = sigma^2 gamma (2 + gamma)
        estimate = denoise(x_hat, sigma_hat * torch.ones(x.shape[0]))  # one level per image, as k-diffusion calls it
        return estimate + sigma_next / sigma_hat * (x_hat - estimate)  # keep the fraction sigma_next / sigma_hat

    result = check(EULER_CHURN_STEP, towards_the_estimate)
    assert result.passed, result.message


# --- lesson 04: the joint loss -------------------------------------------------------------------------------------


def area_target(rendered, images):
    factor = images.shape[-1] // rendered.shape[-1]
    return F.avg_pool2d(images.flatten(0, 1), factor).unflatten(0, images.shape[:2])


def test_joint_loss_mistakes_are_named():
    def plain_mse(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
        return F.mse_loss(denoised, target) + rgb_weight * F.mse_loss(rendered[:, :, :3], area_target(rendered, images))

    def c_out_squared(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
        weight = sigma ** 2 * sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
        denoising = torch.stack([weight[i] * F.mse_loss(denoised[i], target[i]) for i in range(len(sigma))]).mean()
        return denoising + rgb_weight * F.mse_loss(rendered[:, :, :3], area_target(rendered, images))

    def weight_forgotten(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
        weight = 1 / sigma ** 2 + 1 / sigma_data ** 2
        denoising = (weight[:, None, None, None] * (denoised - target) ** 2).mean()
        return denoising + F.mse_loss(rendered[:, :, :3], area_target(rendered, images))

    def summed(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
        weight = 1 / sigma ** 2 + 1 / sigma_data ** 2
        denoising = (weight[:, None, None, None] * (denoised - target) ** 2).sum() / len(sigma)
        return denoising + rgb_weight * F.mse_loss(rendered[:, :, :3], area_target(rendered, images))

    caught(JOINT_LOSS, plain_mse, "lacks EDM's weighting")
    caught(JOINT_LOSS, c_out_squared, "weighting is inverted")
    caught(JOINT_LOSS, weight_forgotten, "RGB loss is not weighted")
    caught(JOINT_LOSS, summed, "sums the squared errors")


def test_joint_loss_written_differently_passes():
    def pooled(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
        weight = 1 / sigma ** 2 + 1 / sigma_data ** 2  # (sigma^2 + sd^2) / (sigma sd)^2, split in two
        denoising = (weight[:, None, None, None] * (denoised - target) ** 2).mean()  # same pixel count per image
        return denoising + rgb_weight * F.mse_loss(rendered[:, :, :3], area_target(rendered, images))

    result = check(JOINT_LOSS, pooled)
    assert result.passed, result.message
