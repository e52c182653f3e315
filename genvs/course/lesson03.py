"""Lesson 03's "your turn": EDM's preconditioning and one step of its stochastic sampler (Karras et al. 2022).

1. Preconditioning (EDM's table 1; :mod:`genvs.denoiser`'s docstring), ``sd = sigma_data``::

       D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)
       c_skip = sd^2 / (sigma^2 + sd^2)     c_out = sigma sd / sqrt(sigma^2 + sd^2)
       c_in   = 1 / sqrt(sigma^2 + sd^2)    c_noise = ln(sigma) / 4

   The oracle is the package's denoiser (:func:`genvs.denoiser.build_denoiser`): k-diffusion's
   ``Denoiser.get_scalings`` for ``c_skip, c_out, c_in``, and the ``c_noise`` its U-Net feeds to its noise embedding.

2. One Euler step with churn (EDM's Algorithm 2, the stochastic sampler; :mod:`genvs.sampling`'s docstring)::

       sigma_hat = (1 + gamma) sigma                                  raise the noise level ...
       x_hat = x + sqrt(sigma_hat^2 - sigma^2) eps                    ... by adding fresh noise
       d = (x_hat - D(x_hat; sigma_hat)) / sigma_hat                  the ODE's slope at sigma_hat
       x_next = x_hat + (sigma_next - sigma_hat) d                    Euler step down to sigma_next

   The oracle is :func:`genvs.sampling.sample_karras` (k-diffusion's ``sample_euler`` with
   ``s_churn = k_diffusion_s_churn(gamma, steps)``, step for step) over the two noise levels, given ``eps``.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from genvs.course.checking import Case, Exercise, Mistake
from genvs.denoiser import build_denoiser, denoiser_config
from genvs.sampling import MAX_CHURN, sample_karras

__all__ = ["EDM_PRECONDITIONING", "EULER_CHURN_STEP"]


# --- 1. preconditioning ----------------------------------------------------------------------------------------


SMOKE = denoiser_config("smoke")  # the package's smallest denoiser: every preset has the same preconditioning


@functools.lru_cache(maxsize=4)
def package_denoiser(sigma_data: float):
    """The package's ``smoke`` denoiser with ``sigma_data``, in eval mode."""
    return build_denoiser(denoiser_config("smoke", sigma_data=sigma_data)).eval()


@torch.no_grad()
def package_scalings(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)``, each ``[N]``, at noise levels ``sigma [N]``, read from the package's
    denoiser: k-diffusion's ``get_scalings`` and the ``c_noise`` its U-Net embeds (caught on the way in)."""
    denoiser = package_denoiser(float(sigma_data))
    c_skip, c_out, c_in = denoiser.get_scalings(sigma)
    seen = []
    hook = denoiser.inner_model.timestep_embed.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        images = torch.zeros(len(sigma), SMOKE.image_channels, 8, 8)  # any image: only the noise level is read
        denoiser(images, sigma, unet_cond=torch.zeros(len(sigma), SMOKE.cond_channels, 8, 8))
    finally:
        hook.remove()
    return c_skip, c_out, c_in, seen[0][:, 0]


def preconditioning_solution(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM's ``c_skip, c_out, c_in, c_noise`` (each ``[N]``) at noise levels ``sigma [N]``."""
    variance = sigma ** 2 + sigma_data ** 2              # the noisy image's variance, sigma^2 + sd^2
    c_skip = sigma_data ** 2 / variance                  # sd^2 / (sigma^2 + sd^2): how much of x passes through
    c_out = sigma * sigma_data / variance.sqrt()         # sigma sd / sqrt(sigma^2 + sd^2): the network's output scale
    c_in = 1 / variance.sqrt()                           # 1 / sqrt(sigma^2 + sd^2): the network's input at unit scale
    c_noise = torch.log(sigma) / 4                       # ln(sigma) / 4: the noise level the network is told
    return c_skip, c_out, c_in, c_noise


def skip_and_out_swapped(sigma, sigma_data):
    c_skip, c_out, c_in, c_noise = preconditioning_solution(sigma, sigma_data)
    return c_out, c_skip, c_in, c_noise


def output_scale_without_root(sigma, sigma_data):
    c_skip, _, c_in, c_noise = preconditioning_solution(sigma, sigma_data)
    return c_skip, sigma * sigma_data / (sigma ** 2 + sigma_data ** 2), c_in, c_noise


def input_scale_without_root(sigma, sigma_data):
    c_skip, c_out, _, c_noise = preconditioning_solution(sigma, sigma_data)
    return c_skip, c_out, 1 / (sigma ** 2 + sigma_data ** 2), c_noise


def data_scale_one(sigma, sigma_data):
    return preconditioning_solution(sigma, 1.0)


def data_scale_half(sigma, sigma_data):
    return preconditioning_solution(sigma, 0.5)


def noise_level_unscaled(sigma, sigma_data):
    c_skip, c_out, c_in, _ = preconditioning_solution(sigma, sigma_data)
    return c_skip, c_out, c_in, torch.log(sigma)


def noise_level_log10(sigma, sigma_data):
    c_skip, c_out, c_in, _ = preconditioning_solution(sigma, sigma_data)
    return c_skip, c_out, c_in, torch.log10(sigma) / 4


def preconditioning_cases(generator: torch.Generator) -> list[Case]:
    training = (0.5 + 1.4 * torch.randn(16, generator=generator)).exp()   # GeNVS's ln(sigma) ~ N(0.5, 1.4^2)
    return [Case("16 noise levels drawn as GeNVS trains (ln sigma ~ N(0.5, 1.4^2)), sigma_data 0.5", (training, 0.5)),
            Case("the sampler's extremes, sigma 0.002 and 80", (torch.tensor([0.002, 80.0]), 0.5)),
            Case("sigma = sigma_data = 0.5 (c_skip = 1/2)", (torch.tensor([0.5]), 0.5)),
            Case("sigma_data 1 (k-diffusion's default) at 6 noise levels",
                 (torch.tensor([0.01, 0.2, 1.0, 2.5, 10.0, 50.0]), 1.0))]


EDM_PRECONDITIONING = Exercise(
    name="edm_preconditioning", lesson="03", oracle=package_scalings, cases=preconditioning_cases,
    solution=preconditioning_solution,
    hint="with v = sigma^2 + sigma_data^2: c_skip = sigma_data^2 / v, c_out = sigma sigma_data / sqrt(v), "
         "c_in = 1 / sqrt(v), c_noise = ln(sigma) / 4 (torch.log); return the four, in that order.",
    mistakes=(
        Mistake(skip_and_out_swapped, "c_skip and c_out are swapped: c_skip = sd^2 / (sigma^2 + sd^2) scales the "
                                      "skip path x, c_out = sigma sd / sqrt(sigma^2 + sd^2) the network's output."),
        Mistake(output_scale_without_root, "c_out lacks its square root: c_out = sigma sd / sqrt(sigma^2 + sd^2)."),
        Mistake(input_scale_without_root, "c_in lacks its square root: c_in = 1 / sqrt(sigma^2 + sd^2), which gives "
                                          "the network an input of unit variance."),
        Mistake(data_scale_one, "sigma_data is ignored (taken as 1): every coefficient uses sd = sigma_data, "
                                "e.g. c_skip = sd^2 / (sigma^2 + sd^2)."),
        Mistake(data_scale_half, "sigma_data is fixed at 0.5: use the argument sigma_data, which is 1 in one case."),
        Mistake(noise_level_unscaled, "c_noise lacks the division by 4: c_noise = ln(sigma) / 4."),
        Mistake(noise_level_log10, "c_noise uses log10: c_noise = ln(sigma) / 4, the natural logarithm (torch.log)."),
    ))


# --- 2. one Euler step with churn ------------------------------------------------------------------------------


def package_step(denoise, x: Tensor, sigma: Tensor, sigma_next: Tensor, gamma: float, noise: Tensor) -> Tensor:
    """:func:`genvs.sampling.sample_karras` (Euler, ``churn = gamma``, ``s_noise = 1``) from ``sigma`` down to
    ``sigma_next``, its one draw of ``eps`` being ``noise [B, C, H, W]``. Returns ``x_next [B, C, H, W]``."""
    return sample_karras(denoise, x, torch.stack([sigma, sigma_next]), lambda shape: noise, churn=gamma)


def step_solution(denoise, x: Tensor, sigma: Tensor, sigma_next: Tensor, gamma: float, noise: Tensor) -> Tensor:
    """One Euler step with churn of ``x [B, C, H, W]`` from noise level ``sigma`` to ``sigma_next`` (0-d tensors),
    with the denoiser ``denoise(x, sigma) -> D(x; sigma)``, EDM's ``gamma`` and the fresh noise ``noise``
    ``[B, C, H, W]``. Returns ``x_next [B, C, H, W]``."""
    sigma_hat = (1 + gamma) * sigma                                  # sigma_hat = (1 + gamma) sigma >= sigma
    x = x + (sigma_hat ** 2 - sigma ** 2).sqrt() * noise             # add the variance sigma_hat^2 - sigma^2
    d = (x - denoise(x, sigma_hat)) / sigma_hat                      # dx/dsigma = (x - D(x; sigma_hat)) / sigma_hat
    return x + (sigma_next - sigma_hat) * d                          # Euler: x + (sigma_next - sigma_hat) d


def churned(x, sigma, gamma, noise):
    sigma_hat = (1 + gamma) * sigma
    return sigma_hat, x + (sigma_hat ** 2 - sigma ** 2).sqrt() * noise


def noise_std_difference(denoise, x, sigma, sigma_next, gamma, noise):
    sigma_hat = (1 + gamma) * sigma
    x = x + (sigma_hat - sigma) * noise
    return x + (sigma_next - sigma_hat) * (x - denoise(x, sigma_hat)) / sigma_hat


def no_fresh_noise(denoise, x, sigma, sigma_next, gamma, noise):
    sigma_hat = (1 + gamma) * sigma
    return x + (sigma_next - sigma_hat) * (x - denoise(x, sigma_hat)) / sigma_hat


def ode_step_from_sigma(denoise, x, sigma, sigma_next, gamma, noise):
    _, x = churned(x, sigma, gamma, noise)
    return x + (sigma_next - sigma) * (x - denoise(x, sigma)) / sigma


def slope_over_sigma(denoise, x, sigma, sigma_next, gamma, noise):
    sigma_hat, x = churned(x, sigma, gamma, noise)
    return x + (sigma_next - sigma_hat) * (x - denoise(x, sigma_hat)) / sigma


def step_length_from_sigma(denoise, x, sigma, sigma_next, gamma, noise):
    sigma_hat, x = churned(x, sigma, gamma, noise)
    return x + (sigma_next - sigma) * (x - denoise(x, sigma_hat)) / sigma_hat


def step_backwards(denoise, x, sigma, sigma_next, gamma, noise):
    sigma_hat, x = churned(x, sigma, gamma, noise)
    return x + (sigma_hat - sigma_next) * (x - denoise(x, sigma_hat)) / sigma_hat


def gaussian_denoiser(mean: Tensor, std: float):
    """The exact denoiser of Gaussian data ``y ~ N(mean, std^2 I)``: ``D(x; sigma) = mean + std^2 / (std^2 + sigma^2)
    (x - mean)``, for ``sigma`` a number, a 0-d tensor or one level per image ``[B]``."""
    def denoise(x: Tensor, sigma) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        sigma = sigma.reshape(-1, *[1] * (x.dim() - 1)) if sigma.dim() else sigma
        return mean + std ** 2 / (std ** 2 + sigma ** 2) * (x - mean)

    return denoise


def step_cases(generator: torch.Generator) -> list[Case]:
    mean = torch.rand(3, 4, 4, generator=generator) * 2 - 1
    denoise = gaussian_denoiser(mean, 0.5)
    draw = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    level = lambda value: torch.tensor(value)  # noqa: E731
    return [Case("2 images at sigma 2 -> 1.5, gamma 0.4", (denoise, mean + 2.0 * draw(2, 3, 4, 4), level(2.0),
                                                          level(1.5), 0.4, draw(2, 3, 4, 4))),
            Case("gamma 0 (a deterministic Euler step), sigma 1 -> 0.6",
                 (denoise, mean + draw(2, 3, 4, 4), level(1.0), level(0.6), 0.0, draw(2, 3, 4, 4))),
            Case("the last step, sigma 0.05 -> 0, gamma 0.2", (denoise, mean + 0.05 * draw(1, 3, 4, 4), level(0.05),
                                                              level(0.0), 0.2, draw(1, 3, 4, 4))),
            Case("the first step, sigma 80 -> 57, gamma sqrt(2) - 1 (EDM's cap)",
                 (denoise, 80.0 * draw(3, 3, 4, 4), level(80.0), level(57.0), MAX_CHURN, draw(3, 3, 4, 4)))]


EULER_CHURN_STEP = Exercise(
    name="euler_churn_step", lesson="03", oracle=package_step, cases=step_cases, solution=step_solution,
    hint="sigma_hat = (1 + gamma) sigma; x_hat = x + sqrt(sigma_hat^2 - sigma^2) noise; "
         "d = (x_hat - denoise(x_hat, sigma_hat)) / sigma_hat; return x_hat + (sigma_next - sigma_hat) d.",
    mistakes=(
        Mistake(noise_std_difference, "the fresh noise has standard deviation sigma_hat - sigma: variances add, so "
                                      "it is sqrt(sigma_hat^2 - sigma^2)."),
        Mistake(no_fresh_noise, "no fresh noise is added: raising the level to sigma_hat means adding noise of "
                                "standard deviation sqrt(sigma_hat^2 - sigma^2) first."),
        Mistake(ode_step_from_sigma, "after the churn the ODE step still starts from sigma: it starts from "
                                     "sigma_hat, d = (x - D(x; sigma_hat)) / sigma_hat and dt = sigma_next - "
                                     "sigma_hat."),
        Mistake(slope_over_sigma, "the Euler derivative divides by sigma: d = (x - D(x; sigma_hat)) / sigma_hat, "
                                  "at the raised level."),
        Mistake(step_length_from_sigma, "the step length is sigma_next - sigma: the step starts from the raised "
                                        "level, dt = sigma_next - sigma_hat."),
        Mistake(step_backwards, "the Euler step goes the wrong way: dt = sigma_next - sigma_hat is negative "
                                "(sigma falls), x_next = x + (sigma_next - sigma_hat) d."),
    ))
