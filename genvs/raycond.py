"""What the 3D field buys (lesson 08): a 2D-only route, conditioned on the input image and the cameras' rays.

3DiM and Zero-1-to-3 condition an image denoiser on the input view and the target camera directly, with no 3D
representation in between. Here the condition of lesson 07's ControlNet is, instead of the field's render, the
input image and both cameras as per-pixel Pluecker ray coordinates (Pluecker 1865; Sitzmann et al.'s Light Field
Networks, 2021), concatenated as channels::

    c = [ y_input (3),  pluecker(K_target, c2w_target) (6),  pluecker(K_input, c2w_input) (6) ]      [15, H, W]

    pluecker(pixel) = (d, o x d)      d = the pixel's unit ray direction, o = the camera centre

``(d, o x d)`` names the ray itself, not one point on it: the moment ``o x d`` is the same for every point ``o`` of
the ray. Every pixel of the target knows which ray it sees, every pixel of the input which ray it saw; where they
meet in 3D the network must find out on its own, which is what the field does by construction. Same base, same
ControlNet architecture, same recipe (:data:`genvs.controlnet.CONTROLNET_FIT`). Lesson 07's route stands on GeNVS's
field (96,000 target images of training), the base (48,000) and its own 2000 steps (64,000): 208,000 in all. The
shipped 2D-only ControlNet takes 5000 steps (160,000 images; 208,000 with the base), so that the comparison isolates
the field at equal training images (:func:`genvs.turntable.route_compute` reads these counts from the records).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from genvs.cameras import pluecker_rays
from genvs.controlnet import (
    CONTROLNET_FIT,
    FitConfig,
    build_controlnet,
    edm_denoiser,
    fit_network,
    load_base,
    load_controlnet,
)
from genvs.data.batches import StepBatches
from genvs.data.srn import SRNDataset
from genvs.denoiser import denoising_loss, k_diffusion

__all__ = ["RAY_CHANNELS", "ray_condition", "train_raycond", "raycond_route"]

RAY_CHANNELS = 3 + 6 + 6


def ray_condition(image: Tensor, K_in: Tensor, c2w_in: Tensor, target_K: Tensor, target_c2w: Tensor) -> Tensor:
    """The 2D-only route's condition for ``T`` targets of ``B`` objects (module docstring).

    Args:
        image: ``[B, 3, H, W]`` the input view; K_in ``[B, 3, 3]``; c2w_in ``[B, 4, 4]``.
        target_K: ``[B, T, 3, 3]``; target_c2w: ``[B, T, 4, 4]``.
    Returns:
        ``[B * T, 15, H, W]``, object-major (the layout of :meth:`genvs.model.GeNVS.condition`).
    """
    n_targets, (height, width) = target_c2w.shape[1], image.shape[-2:]
    per_object = torch.cat([image, pluecker_rays(K_in, c2w_in, height, width)], dim=1)  # [B, 9, H, W]
    targets = pluecker_rays(target_K, target_c2w, height, width)  # [B, T, 6, H, W]
    per_object = per_object[:, None].expand(-1, n_targets, -1, -1, -1)
    return torch.cat([per_object[:, :, :3], targets, per_object[:, :, 3:]], dim=2).flatten(0, 1)


def train_raycond(data: str | Path, out: str | Path, steps: int, base, fit: FitConfig = CONTROLNET_FIT,
                  device: torch.device | str = "cpu", save_every: int = 200, progress: bool = True,
                  resume: bool = False, until: int | None = None):
    """Train the 2D-only route's ControlNet (:func:`genvs.controlnet.build_controlnet` on ``base``, 15 condition
    channels) on :func:`ray_condition`, as lesson 07's ControlNet is trained on the render: each step
    ``fit.batch_size`` training objects, one input view and ``fit.target_views`` targets each, EDM's loss with a
    fraction ``fit.cond_dropout`` of targets given the null condition. The base stays frozen.

    Writes the EMA weights to ``out`` (a diffusers folder, fp16) with ``log.csv`` and ``training.json``; ``resume``
    and ``until`` are :func:`genvs.controlnet.fit_network`'s. Returns the EMA ControlNet (float32, on ``device``)
    and the run's record.
    """
    device = torch.device(device)
    base = base.to(device).eval().requires_grad_(False)
    dataset = SRNDataset(data, split="train", views_per_item=None, image_size=base.config.sample_size)
    batches = StepBatches(dataset, fit.batch_size, 1, fit.target_views, fit.seed)
    controlnet = build_controlnet(base, RAY_CHANNELS, seed=fit.seed).to(device)
    denoiser = edm_denoiser(base, controlnet)

    def loss_of(batch: dict, generator: torch.Generator) -> Tensor:
        images, intrinsics, c2w = batch["images"], batch["K"], batch["c2w"]
        cond = ray_condition(images[:, 0], intrinsics[:, 0], c2w[:, 0], intrinsics[:, 1:], c2w[:, 1:])
        return denoising_loss(denoiser, images[:, 1:].flatten(0, 1), cond, fit, generator)

    record = fit_network(controlnet, loss_of, batches, steps, fit, Path(out), device, save_every, progress,
                         resume=resume, until=until)
    return load_controlnet(out, device), record


def raycond_route(base: str | Path | None = None, controlnet: str | Path | None = None,
                  device: torch.device | str = "cpu") -> k_diffusion.layers.Denoiser:
    """The shipped (or given) 2D-only route as one denoiser ``D(x, sigma, unet_cond=ray_condition(...))``, eval mode."""
    return edm_denoiser(load_base(base, device), load_controlnet(controlnet, device, "raycond")).eval()
