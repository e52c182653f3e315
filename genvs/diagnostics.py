"""Diagnostics of a denoiser and its sampler: where the samples' fine detail comes from (lessons 03-05).

Two measurements on the same clean images ``y`` and conditions ``c``:

* :func:`error_per_sigma`: the denoiser given ``y + sigma n`` at fixed noise levels: how far its estimate is from
  ``y``, how much of the noise it leaves, how much fine detail it keeps;
* one sampling run recorded step by step (:func:`trace_detail`): when its estimates settle on the final sample's
  fine detail (:func:`detail_settling`), between which noise levels most of it is decided
  (:func:`deciding_sigmas`), and whether that detail is the truth's.

Fine detail is the finest band ``h(x) = x - G_sigma * x`` of :func:`genvs.metrics.fine_detail`. The figure and the
numbers as text are :func:`genvs.viz.plot_error_per_sigma` and :func:`genvs.viz.trace_summary`. This module comes
after :mod:`genvs.sampling` in the data flow: it uses the denoiser, the sampler and the metrics, and none of them
uses it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from genvs.metrics import fine_detail, high_frequency_energy
from genvs.sampling import sample_images

__all__ = ["error_per_sigma", "detail_settling", "deciding_sigmas", "trace_detail"]


@torch.no_grad()
def error_per_sigma(denoiser: nn.Module, images: Tensor, cond: Tensor, sigmas: Sequence[float],
                    seed: int = 0, batch_size: int = 64) -> dict[str, Tensor]:
    """How well ``denoiser`` recovers clean ``images`` at each noise level: where its samples' errors come from.

    For each ``sigma`` in ``sigmas``, with ``n ~ N(0, I)`` from ``seed`` (the same draw at every level) and the
    estimate ``D = D(y + sigma n; sigma, c)``:

    * ``rmse``: ``sqrt(mean (D - y)^2)`` over images, channels and pixels; returning the noisy input ``y + sigma n``
      would score ``sigma``, returning the mean image about the images' standard deviation;
    * ``noise_left``: ``mean (D - y)^2 / sigma^2``, the fraction of the added noise's energy still in the estimate
      (1: the denoiser removed none of it);
    * ``detail``: :func:`genvs.metrics.sharpness` of the estimate, ``E(D) / E(y)`` of the finest detail band
      (1: the truth's amount of fine detail; below: blurrier; above: speckle, detail the truth does not have).

    Args:
        denoiser: ``D(x, sigma, unet_cond=c)``, e.g. a ``k_diffusion.layers.Denoiser`` (run in eval mode, given
            back in its mode).
        images: clean ``y [N, 3, H, W]`` in [-1, 1]; cond: their conditions ``[N, cond_channels, H, W]``.
        sigmas: ``S`` noise levels.
    Returns:
        dict of ``sigma``, ``rmse``, ``noise_left`` and ``detail``, each ``[S]``, and ``truth_detail_rms``
        (0-d): ``sqrt(E(y))``, the size of the images' finest detail, to hold ``rmse`` against.
    """
    device = next(denoiser.parameters()).device
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)).to(device)
    images, cond = images.to(device), cond.to(device)
    was_training = denoiser.training
    denoiser.eval()
    truth_energy = high_frequency_energy(images)  # [N]
    rows = []
    for sigma in sigmas:
        squared, energy = 0.0, 0.0
        for start in range(0, len(images), batch_size):
            y, c, n = (t[start:start + batch_size] for t in (images, cond, noise))
            estimate = denoiser(y + sigma * n, torch.full((len(y),), float(sigma), device=device), unet_cond=c)
            squared += (estimate - y).pow(2).mean(dim=(1, 2, 3)).sum().item()
            energy += high_frequency_energy(estimate).sum().item()
        mse = squared / len(images)
        rows.append((float(sigma), mse ** 0.5, mse / sigma ** 2, energy / truth_energy.sum().item()))
    denoiser.train(was_training)
    return {**dict(zip(("sigma", "rmse", "noise_left", "detail"), torch.tensor(rows).T)),
            "truth_detail_rms": truth_energy.mean().sqrt().cpu()}


def detail_settling(estimates: Tensor, final: Tensor, truth: Tensor, sigma: float = 1.0) -> dict[str, Tensor]:
    """When a sampling run decides its final fine detail, and whether that detail is the truth's.

    With ``h(x) = x - G_sigma * x`` the finest detail band (:func:`genvs.metrics.fine_detail`) and ``e_s`` the
    denoiser's estimate of the clean images after sampler step ``s`` (``sample_images``' ``callback["denoised"]``):

    * ``undecided[s] = ||h(e_s) - h(final)||^2 / ||h(final)||^2``: the share of the final sample's fine detail
      not yet in the estimate (1 for an estimate without fine detail, 0 once it is all there);
    * ``agreement[s] = <h(e_s), h(truth)> / (||h(e_s)|| ||h(truth)||)``: the cosine between the estimate's fine
      detail and the truth's (1: the same detail in the same places; near 0: detail invented elsewhere).

    Sums run over the whole batch.

    Args:
        estimates: ``[S, B, C, H, W]`` the estimates of ``S`` steps; final: ``[B, C, H, W]`` the samples;
            truth: ``[B, C, H, W]`` the true images.
    Returns:
        dict of ``undecided`` and ``agreement``, each ``[S]``.
    """
    steps, last, true = (fine_detail(images, sigma).flatten(-4) for images in (estimates, final, truth))
    undecided = (steps - last).pow(2).sum(-1) / last.pow(2).sum().clamp_min(1e-12)
    agreement = (steps @ true) / (steps.norm(dim=-1) * true.norm()).clamp_min(1e-12)
    return {"undecided": undecided, "agreement": agreement}


def deciding_sigmas(sigmas: Tensor, undecided: Tensor, fractions: tuple[float, ...] = (0.25, 0.9)) -> list[float]:
    """The noise levels at which a sampling run has decided given shares of its final fine detail.

    The share decided after step ``s`` is ``1 - undecided[s] / undecided[0]`` (:func:`detail_settling`); for each
    fraction ``f`` this returns ``sigmas[s]`` of the first step whose share reaches ``f``.

    Args:
        sigmas: ``[S]`` the steps' noise levels (``callback["sigma"]``), decreasing; undecided: ``[S]``.
    """
    decided = 1 - undecided / undecided[0].clamp_min(1e-12)
    reached = [torch.nonzero(decided >= fraction).flatten() for fraction in fractions]
    if any(len(steps) == 0 for steps in reached):
        raise ValueError(f"the run never decides {max(fractions):.0%} of its detail (at most {decided.max():.0%})")
    return [float(sigmas[int(steps[0])]) for steps in reached]


def trace_detail(denoiser: nn.Module, images: Tensor, cond: Tensor, noise_levels: Sequence[float], seed: int = 0,
                 **options) -> dict:
    """Where a denoiser's samples get their fine detail (lessons 03-05's speckle figure,
    :func:`genvs.viz.plot_error_per_sigma`).

    Two measurements on the same ``N`` images ``y`` and conditions ``c``:

    * ``errors``: :func:`error_per_sigma` at ``noise_levels``: the denoiser given ``y + sigma n``;
    * one sampling run, ``sample_images(denoiser, c, seed=seed, **options)``, recorded step by step, and
      :func:`detail_settling` of its estimates against the final samples and ``y`` (``settling``), with the noise
      levels between which 25% and 90% of the final fine detail is decided (``band``, :func:`deciding_sigmas`).

    Args:
        images: ``y [N, 3, H, W]`` in [-1, 1]; cond: ``[N, cond_channels, H, W]``.
        options: :func:`genvs.sampling.sample_images`' sampler options.
    Returns:
        dict of ``errors``, ``settling``, ``step_sigmas [S]`` (each step's ``sigma_i``), ``band`` (two floats) and
        ``samples [N, 3, H, W]`` (on the CPU).
    """
    device = next(denoiser.parameters()).device
    images, cond = images.to(device), cond.to(device)
    errors = error_per_sigma(denoiser, images, cond, noise_levels, seed=seed)
    steps = []
    samples = sample_images(denoiser, cond, seed=seed, callback=steps.append, **options)
    estimates = torch.stack([step["denoised"].clamp(-1, 1).cpu() for step in steps])
    settling = detail_settling(estimates, samples.cpu(), images.cpu())
    step_sigmas = torch.tensor([float(step["sigma"]) for step in steps])
    return {"errors": errors, "settling": settling, "step_sigmas": step_sigmas,
            "band": deciding_sigmas(step_sigmas, settling["undecided"]), "samples": samples.cpu()}
