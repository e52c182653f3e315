"""Lesson 04's "your turn": GeNVS's joint loss, the denoising loss plus the weighted RGB loss of the field's render.

With ``N = B T`` target views, the denoiser's estimates ``D = D(y + sigma n; sigma, c)`` of the clean targets ``y``
and the field's rendered features ``r`` (channels 0-2 read as RGB) at the render size ``s``::

    L_denoise = mean_b lambda(sigma_b) mean_pixels (D_b - y_b)^2,     lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2
    L_rgb     = mean (r[:, :, :3] - area_downsample(images, s))^2
    L         = L_denoise + rgb_weight L_rgb

(:mod:`genvs.model`'s docstring; ``lambda = 1 / c_out^2`` is EDM's loss weighting, :mod:`genvs.denoiser`). The
oracle is built from the package's parts as :meth:`genvs.model.GeNVS.losses` combines them: the denoising loss is
k-diffusion's ``Denoiser.loss`` (what :func:`genvs.denoiser.denoising_loss` averages), given a stand-in network whose
estimate is ``D``; the RGB loss is :func:`genvs.model.rgb_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genvs.course.checking import Case, Exercise, Mistake
from genvs.denoiser import k_diffusion
from genvs.model import rgb_loss

__all__ = ["JOINT_LOSS"]


def estimate_denoiser(denoised: Tensor, target: Tensor, sigma_data: float):
    """k-diffusion's ``Denoiser`` (as :func:`genvs.denoiser.build_denoiser` wraps the U-Net) around a stand-in network
    whose output ``F`` gives ``D(target; sigma) = c_skip target + c_out F = denoised`` (for zero noise)."""
    def network(scaled_input: Tensor, sigma: Tensor) -> Tensor:
        c_skip, c_out, _ = (value[:, None, None, None] for value in wrapper.get_scalings(sigma))
        return (denoised - c_skip * target) / c_out

    wrapper = k_diffusion.layers.Denoiser(network, sigma_data=sigma_data)
    return wrapper


def package_loss(denoised: Tensor, target: Tensor, sigma: Tensor, sigma_data: float, rendered: Tensor,
                 images: Tensor, rgb_weight: float) -> Tensor:
    """:meth:`genvs.model.GeNVS.losses`' total, ``denoising + rgb_weight * rgb``, from the package's parts."""
    denoising = estimate_denoiser(denoised, target, sigma_data).loss(target, torch.zeros_like(target), sigma).mean()
    return denoising + rgb_weight * rgb_loss(rendered, images)


def solution(denoised: Tensor, target: Tensor, sigma: Tensor, sigma_data: float, rendered: Tensor, images: Tensor,
             rgb_weight: float) -> Tensor:
    """GeNVS's joint loss (a scalar) of the denoiser's estimates ``denoised [N, 3, H, W]`` of the clean targets
    ``target [N, 3, H, W]`` at noise levels ``sigma [N]``, and of the field's rendered features
    ``rendered [B, T, C, s, s]`` of the same views ``images [B, T, 3, H, W]`` (``N = B T``)."""
    weight = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2          # lambda = 1 / c_out^2
    error = ((denoised - target) ** 2).mean(dim=(1, 2, 3))                      # mean over pixels, per image
    denoising = (weight * error).mean()                                         # mean over the images
    size = rendered.shape[-1]
    small = F.interpolate(images.flatten(0, 1), size=(size, size), mode="area")  # the targets at the render size
    rgb = ((rendered[:, :, :3].flatten(0, 1) - small) ** 2).mean()             # channels 0-2 are RGB
    return denoising + rgb_weight * rgb                                         # L = L_denoise + w L_rgb


def edm_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def per_image_error(denoised: Tensor, target: Tensor) -> Tensor:
    return (denoised - target).pow(2).flatten(1).mean(1)


def unweighted_denoising(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
    return per_image_error(denoised, target).mean() + rgb_weight * rgb_loss(rendered, images)


def inverted_weighting(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
    weight = 1 / edm_weight(sigma, sigma_data)
    return (weight * per_image_error(denoised, target)).mean() + rgb_weight * rgb_loss(rendered, images)


def unweighted_rgb(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
    return package_loss(denoised, target, sigma, sigma_data, rendered, images, 1.0)


def summed_pixels(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
    error = (denoised - target).pow(2).flatten(1).sum(1)
    return (edm_weight(sigma, sigma_data) * error).mean() + rgb_weight * rgb_loss(rendered, images)


def subsampled_target(denoised, target, sigma, sigma_data, rendered, images, rgb_weight):
    step = images.shape[-1] // rendered.shape[-1]
    every_kth = images[..., ::step, ::step]
    return package_loss(denoised, target, sigma, sigma_data, rendered, every_kth, rgb_weight)


def views(generator: torch.Generator, objects: int, targets: int, size: int, render: int, channels: int = 16):
    """Clean targets ``images [B, T, 3, H, W]`` in [-1, 1] and rendered features ``[B, T, C, s, s]``."""
    images = torch.rand(objects, targets, 3, size, size, generator=generator) * 2 - 1
    rendered = torch.tanh(torch.randn(objects, targets, channels, render, render, generator=generator))
    return images, rendered


def estimates(generator: torch.Generator, images: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The targets ``y [N, 3, H, W]`` and estimates ``D`` that miss them by about ``0.1 + 0.2 sigma / (1 + sigma)``."""
    target = images.flatten(0, 1)
    miss = (0.1 + 0.2 * sigma / (1 + sigma))[:, None, None, None]
    return target, target + miss * torch.randn(target.shape, generator=generator)


def case(name: str, generator: torch.Generator, sigma: Tensor, objects: int, targets: int, size: int, render: int,
         rgb_weight: float, sigma_data: float = 0.5, perfect: bool = False) -> Case:
    images, rendered = views(generator, objects, targets, size, render)
    target, denoised = estimates(generator, images, sigma)
    denoised = target.clone() if perfect else denoised
    return Case(name, (denoised, target, sigma, sigma_data, rendered, images, rgb_weight))


def cases(generator: torch.Generator) -> list[Case]:
    training = (0.5 + 1.4 * torch.randn(4, generator=generator)).exp().clamp(0.05, 80.0)  # ln(sigma) ~ N(0.5, 1.4^2)
    return [case("2 objects x 2 targets, 8 px images, 4 px renders, rgb_weight 0.5", generator, training, 2, 2, 8, 4,
                 0.5),
            case("sigma = sigma_data for all 3 targets (lambda = 8), rgb_weight 2", generator,
                 torch.full((3,), 0.5), 1, 3, 8, 4, 2.0),
            case("rgb_weight 0 (the denoising loss alone), sigma_data 1", generator,
                 torch.tensor([0.3, 4.0]), 2, 1, 8, 2, 0.0, sigma_data=1.0),
            case("a perfect denoiser (D = y): the RGB loss alone, renders 4 times smaller", generator,
                 torch.tensor([1.0, 20.0]), 1, 2, 16, 4, 1.5, perfect=True),
            case("renders 4 times smaller than 16 px images, rgb_weight 1", generator,
                 torch.tensor([0.2, 2.0, 9.0]), 3, 1, 16, 4, 1.0)]


JOINT_LOSS = Exercise(
    name="joint_loss", lesson="04", oracle=package_loss, cases=cases, solution=solution,
    hint="lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2; L_denoise = mean over images of lambda times the "
         "mean squared error over each image's pixels; L_rgb = mean of (rendered[:, :, :3] - images area-downsampled "
         "to the render size)^2 (F.interpolate(..., mode='area')); return L_denoise + rgb_weight L_rgb.",
    mistakes=(
        Mistake(unweighted_denoising, "the denoising loss lacks EDM's weighting: each image's squared error is "
                                      "multiplied by lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2."),
        Mistake(inverted_weighting, "EDM's weighting is inverted: lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 "
                                    "= 1 / c_out^2, not c_out^2."),
        Mistake(unweighted_rgb, "the RGB loss is not weighted: L = L_denoise + rgb_weight L_rgb."),
        Mistake(summed_pixels, "the denoising loss sums the squared errors over each image's pixels: it is their "
                               "mean (then lambda-weighted and averaged over the images)."),
        Mistake(subsampled_target, "the RGB target keeps every k-th pixel: the images are area-downsampled to the "
                                   "render size (each rendered pixel against the mean of its block of pixels)."),
    ))
