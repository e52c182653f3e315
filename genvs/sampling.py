"""Sampling images from a conditional EDM denoiser with k-diffusion's samplers: seeded, guided, in eval mode.

Noise levels follow Karras et al.'s schedule (``k_diffusion.sampling.get_sigmas_karras``), for
``i = 0 .. steps - 1``, then ``sigma_steps = 0``::

    sigma_i = (sigma_max^(1/rho) + i / (steps - 1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho

Starting from ``x_0 = sigma_max * n``, every sampler integrates the probability-flow ODE
``dx / dsigma = (x - D(x; sigma)) / sigma`` down to ``sigma = 0``:

* ``"euler"``, ``"heun"``: Karras et al.'s Algorithm 2 (1 and 2 denoiser calls per step). With
  ``s_churn > 0`` they are EDM's stochastic sampler: at steps with ``s_tmin <= sigma_i <= s_tmax``
  noise is first added to go up to ``sigma_hat = (1 + gamma) sigma_i``, with
  ``gamma = min(s_churn / steps, sqrt(2) - 1)``: ``x <- x + sqrt(sigma_hat^2 - sigma_i^2) * s_noise * eps``.
  With ``s_churn = 0`` they are deterministic. (GeNVS's "gamma 0.4 every step" is ``s_churn = 0.4 * steps``.)
* ``"euler_ancestral"``: Euler steps down to ``sigma_down``, then fresh noise back up to ``sigma_{i+1}``.
* ``"dpmpp_2m"``: DPM-Solver++(2M), a deterministic second-order multistep solver.

Classifier-free guidance with scale ``w`` replaces the denoiser by
``D_w(x) = D(x; null) + w * (D(x; c) - D(x; null))`` where ``null`` is
:func:`genvs.denoiser.null_condition` (``w = 1``: conditional, ``w = 0``: unconditional).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from genvs.denoiser import K, null_condition  # K: k_diffusion, imported there without its warnings
from genvs.field import InputViews
from genvs.seeding import derive_seed, seeded_rng

__all__ = ["SAMPLERS", "CHURN_SAMPLERS", "karras_sigmas", "eval_mode", "sample_images", "sample_novel_views",
           "SAMPLING_MODES", "sampling_options", "conditioning_set", "generate_trajectory"]

SAMPLERS: dict[str, Callable] = {
    "euler": K.sampling.sample_euler,
    "heun": K.sampling.sample_heun,
    "euler_ancestral": K.sampling.sample_euler_ancestral,
    "dpmpp_2m": K.sampling.sample_dpmpp_2m,
}
"""Sampler names and the k-diffusion functions behind them."""
CHURN_SAMPLERS = ("euler", "heun")
"""Samplers that take EDM's churn options (``s_churn``, ``s_tmin``, ``s_tmax``)."""


SAMPLING_MODES = ("stochastic", "deterministic", "unconditional", "guided")
"""Named ways to sample a GeNVS view; :func:`sampling_options` turns one into sampler options."""


def sampling_options(mode: str = "stochastic", steps: int = 25, churn: float = 0.4,
                     guidance_scale: float = 2.0) -> dict:
    """:func:`sample_images` options for a named sampling mode (:data:`SAMPLING_MODES`).

    * ``"stochastic"`` (default, the seed reimplementation's): Euler with EDM churn, noise raised
      by ``gamma = churn`` at every step (``s_churn = churn * steps``) and ``s_noise = 1.003``;
    * ``"deterministic"``: Euler without churn (the seed's "deterministic");
    * ``"unconditional"``: deterministic Euler with the null condition (what 10% dropout taught);
    * ``"guided"``: deterministic Euler with classifier-free guidance ``guidance_scale``.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; valid modes: {SAMPLING_MODES}")
    options = {"sampler": "euler", "steps": steps}
    if mode == "stochastic":
        return {**options, "s_churn": churn * steps, "s_noise": 1.003}
    if mode == "unconditional":
        return {**options, "unconditional": True}
    if mode == "guided":
        return {**options, "guidance_scale": guidance_scale}
    return options


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  device: torch.device | None = None) -> Tensor:
    """Karras et al.'s noise levels ``[steps + 1]``, from ``sigma_max`` down to ``sigma_min``, then 0 (module docstring)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return K.sampling.get_sigmas_karras(steps, sigma_min, sigma_max, rho, device=device or "cpu")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` and all its submodules in eval mode; on exit give each back the mode it had."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for submodule, training in modes:
            submodule.training = training


def _guided(denoiser: nn.Module, cond: Tensor, guidance_scale: float) -> Callable[[Tensor, Tensor], Tensor]:
    """``D_w(x, sigma)`` of the module docstring; conditional and unconditional calls share one batch."""
    if guidance_scale == 1.0:
        return lambda x, sigma: denoiser(x, sigma, unet_cond=cond)
    both_conds = torch.cat([cond, null_condition(cond)])

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        conditional, unconditional = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                                              unet_cond=both_conds).chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    return denoise


def _sampler_options(sampler: str, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> dict:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {sorted(SAMPLERS)}")
    if sampler in CHURN_SAMPLERS:
        return {"s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    if s_churn:
        raise ValueError(f"s_churn={s_churn} applies to the samplers {CHURN_SAMPLERS} only, not {sampler!r}")
    return {"s_noise": s_noise} if sampler == "euler_ancestral" else {}


def _seed_value(seed: int | torch.Generator | None) -> int:
    """An int seed: ``seed`` itself, or drawn from the generator (or, for None, the global RNG)."""
    if isinstance(seed, int):
        return seed
    device = seed.device if seed is not None else "cpu"
    return int(torch.randint(2**62, (1,), generator=seed, device=device))


@torch.no_grad()
def sample_images(
    denoiser: nn.Module,
    cond: Tensor | None = None,
    *,
    shape: tuple[int, int, int, int] | None = None,
    noise: Tensor | None = None,
    sampler: str = "heun",
    steps: int = 25,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    guidance_scale: float = 1.0,
    unconditional: bool = False,
    seed: int | torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Sample images ``[B, C, H, W]`` in [-1, 1] from ``denoiser`` given ``cond`` (see the module docstring).

    Args:
        denoiser: a :func:`genvs.denoiser.build_denoiser` model, called as ``D(x, sigma, unet_cond=c)``;
            it runs in eval mode and is given back in the mode(s) it had.
        cond: conditioning ``[B, cond_channels, H, W]`` on the model's device; ignored (and optional)
            when ``unconditional``.
        shape: ``(B, C, H, W)`` of the images; default: ``noise``'s shape, else ``cond``'s batch and size.
        noise: the starting noise ``n [B, C, H, W] ~ N(0, I)`` (``x_0 = sigma_max * n``); drawn from
            ``seed`` when None.
        sampler: one of :data:`SAMPLERS`; steps: number of noise levels (denoiser calls: ``steps`` for
            euler, euler_ancestral and dpmpp_2m, ``2 * steps - 1`` for heun).
        sigma_min, sigma_max, rho: the Karras schedule; s_churn, s_tmin, s_tmax, s_noise: EDM's
            stochasticity (euler and heun; ``s_noise`` also scales euler_ancestral's noise).
        guidance_scale: ``w`` of classifier-free guidance (1: plain conditional sampling).
        unconditional: sample with :func:`genvs.denoiser.null_condition` as the condition.
        seed: an int, or a generator to draw one from; every random number of the sampling (start
            noise, churn, ancestral noise) follows from it, and the caller's global RNG is left
            unchanged. None draws the seed from the global RNG.
        callback: called after each step's first denoiser call with k-diffusion's dict:
            ``x`` (current noisy images), ``i`` (step), ``sigma``, ``sigma_hat`` and ``denoised``
            (the guided estimate ``D(x; sigma_hat)`` of the clean images, ``[B, C, H, W]``).
    Returns:
        the final images, clamped to [-1, 1].
    """
    device = next(denoiser.parameters()).device
    options = _sampler_options(sampler, s_churn, s_tmin, s_tmax, s_noise)
    shape = _image_shape(denoiser, cond, shape, noise, unconditional)
    if unconditional:
        if guidance_scale != 1.0:
            raise ValueError(f"guidance_scale={guidance_scale} needs conditional sampling (unconditional=False)")
        cond = null_condition(torch.empty(shape[0], denoiser.inner_model.unet_cond_dim, *shape[2:], device=device))
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho, device)
    with eval_mode(denoiser), seeded_rng(_seed_value(seed), device):
        x = (torch.randn(shape, device=device) if noise is None else noise.to(device)) * sigmas[0]
        x = SAMPLERS[sampler](_guided(denoiser, cond, guidance_scale), x, sigmas, callback=callback,
                              disable=True, **options)
    return x.clamp(-1.0, 1.0)


@torch.no_grad()
def sample_novel_views(model: nn.Module, images: Tensor, K: Tensor, c2w: Tensor, target_K: Tensor,
                       target_c2w: Tensor, **options) -> dict[str, Tensor]:
    """Sample novel views of ``B`` objects: encode the input views, render features, denoise.

    Args:
        model: a :class:`genvs.model.GeNVS` (run in eval mode, given back in its modes).
        images: ``[B, V, 3, H, W]`` input views in [-1, 1]; K ``[B, V, 3, 3]``; c2w ``[B, V, 4, 4]``.
        target_K: ``[B, T, 3, 3]``; target_c2w: ``[B, T, 4, 4]`` the cameras to sample.
        options: :func:`sample_images`'s keyword arguments (sampler, steps, seed, guidance_scale, ...).
    Returns:
        ``samples [B, T, 3, H, W]`` and the field's render at ``render_size``: ``features
        [B, T, C, s, s]`` (channels 0-2 are its RGB guess), ``depth`` and ``opacity [B, T, s, s]``.
    """
    with eval_mode(model):
        views = model.field.encode(images, K, c2w)
        cond, rendered = model.condition(views, target_K, target_c2w)
        samples = sample_images(model.denoiser, cond, **options)
    return {"samples": samples.unflatten(0, tuple(target_c2w.shape[:2])), **rendered}


def conditioning_set(frame: int, n_inputs: int, max_random: int, generator: torch.Generator) -> list[int]:
    """Views that condition generated frame ``frame`` of an autoregressive trajectory.

    The pool of views is the ``n_inputs`` real inputs (indices ``0 .. n_inputs - 1``) followed by
    the frames generated so far (frame ``j`` is index ``n_inputs + j``). As in the seed
    reimplementation, frame ``f`` is conditioned on every real input, up to ``max_random`` frames
    drawn at random (without repeats, from ``generator``) among frames ``0 .. f - 2``, and the
    previous frame ``f - 1``. Returns sorted pool indices.
    """
    if frame == 0:
        return list(range(n_inputs))
    previous = n_inputs + frame - 1  # frames 0 .. f-2 sit at pool indices n_inputs .. previous - 1
    n_random = min(max_random, frame - 1)
    chosen = (n_inputs + torch.randperm(frame - 1, generator=generator)[:n_random]).tolist()
    return list(range(n_inputs)) + sorted(chosen) + [previous]


@torch.no_grad()
def generate_trajectory(model: nn.Module, images: Tensor, K: Tensor, c2w: Tensor, target_K: Tensor,
                        target_c2w: Tensor, *, autoregressive: bool = True, max_random: int = 4, seed: int = 0,
                        progress: bool = True, **options) -> dict:
    """Generate one object's views along a trajectory, one frame after the other.

    Autoregressive (GeNVS): every generated frame joins the pool of views, and frame ``f`` is
    sampled given :func:`conditioning_set`'s views, so later frames stay consistent with earlier
    ones. Otherwise every frame is sampled from the real inputs alone (to compare). Each view is
    encoded once; frame ``f``'s sampling noise comes from ``derive_seed(seed, f)`` and its random
    conditioning frames from a generator seeded with ``seed``: the same seed gives the same
    trajectory.

    Args:
        model: a :class:`genvs.model.GeNVS` (run in eval mode, given back in its modes).
        images: ``[V, 3, H, W]`` real input views in [-1, 1]; K ``[V, 3, 3]``; c2w ``[V, 4, 4]``.
        target_K: ``[N, 3, 3]``; target_c2w: ``[N, 4, 4]`` the trajectory, e.g.
            :func:`genvs.cameras.trajectory_from` of the input camera.
        max_random: most random earlier frames in a conditioning set (the seed: 4).
        options: :func:`sample_images`'s sampler options (sampler, steps, s_churn, guidance_scale, ...).
    Returns:
        dict with ``samples [N, 3, H, W]``; the field's ``features [N, C, s, s]``, ``depth`` and
        ``opacity [N, s, s]`` for the same cameras (from the views that conditioned each frame);
        and ``conditioning``, the pool indices used for each frame.
    """
    device = next(model.parameters()).device
    n_inputs, n_frames = images.shape[0], target_c2w.shape[0]
    choices = torch.Generator().manual_seed(seed)
    pool_K, pool_c2w = torch.cat([K, target_K]).to(device), torch.cat([c2w, target_c2w]).to(device)
    outputs = {"samples": [], "features": [], "depth": [], "opacity": [], "conditioning": []}
    with eval_mode(model):
        volumes = list(model.field.encode(images[None].to(device), K[None].to(device), c2w[None].to(device))
                       .volumes.unbind(1))
        for frame in tqdm(range(n_frames), desc="generating", disable=not progress):
            chosen = conditioning_set(frame, n_inputs, max_random, choices) if autoregressive else list(range(n_inputs))
            views = InputViews(torch.stack([volumes[index] for index in chosen], dim=1), pool_K[None, chosen],
                               pool_c2w[None, chosen])
            target = slice(n_inputs + frame, n_inputs + frame + 1)
            cond, rendered = model.condition(views, pool_K[None, target], pool_c2w[None, target])
            sample = sample_images(model.denoiser, cond, seed=derive_seed(seed, frame), **options)
            if autoregressive:
                volumes.append(model.field.encode(sample[None], pool_K[None, target], pool_c2w[None, target])
                               .volumes[:, 0])
            for name, value in (("samples", sample), *((key, rendered[key][:, 0]) for key in
                                                       ("features", "depth", "opacity"))):
                outputs[name].append(value.cpu())
            outputs["conditioning"].append(chosen)
    return {name: torch.cat(values) if name != "conditioning" else values for name, values in outputs.items()}


def _image_shape(denoiser: nn.Module, cond: Tensor | None, shape, noise: Tensor | None,
                 unconditional: bool) -> tuple[int, ...]:
    """The sampled images' ``(B, C, H, W)`` from ``shape``, ``noise`` or ``cond``; checks they agree."""
    if cond is None and not unconditional:
        raise ValueError("cond is None: pass the conditioning [B, cond_channels, H, W], or unconditional=True")
    if noise is not None and shape is not None and tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)} but shape={tuple(shape)}")
    if noise is not None:
        shape = tuple(noise.shape)
    elif shape is None:
        if cond is None:
            raise ValueError("unconditional sampling needs shape=(B, C, H, W) or noise")
        shape = (cond.shape[0], denoiser.inner_model.c_in, *cond.shape[2:])
    if cond is not None and not unconditional and (cond.shape[0], *cond.shape[2:]) != (shape[0], *shape[2:]):
        raise ValueError(f"cond {tuple(cond.shape)} and images {tuple(shape)} differ in batch or size")
    return tuple(shape)
