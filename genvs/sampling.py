"""Sampling images from a conditional EDM denoiser with k-diffusion's samplers: seeded, guided, in eval mode.

Noise levels follow Karras et al.'s schedule (``k_diffusion.sampling.get_sigmas_karras``), for
``i = 0 .. steps - 1``, then ``sigma_steps = 0``::

    sigma_i = (sigma_max^(1/rho) + i / (steps - 1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho

Starting from ``x_0 = sigma_max * n``, every sampler integrates the probability-flow ODE
``dx / dsigma = (x - D(x; sigma)) / sigma`` down to ``sigma = 0``:

* ``"euler"``, ``"heun"``: Karras et al.'s Algorithm 2 (1 and 2 denoiser calls per step). With
  ``churn > 0`` they are EDM's stochastic sampler: at steps with ``s_tmin <= sigma_i <= s_tmax``
  noise is first added to go up to ``sigma_hat = (1 + churn) sigma_i`` (``churn`` is EDM's per-step
  ``gamma``, ``0 <= churn <= sqrt(2) - 1``): ``x <- x + sqrt(sigma_hat^2 - sigma_i^2) * s_noise * eps``.
  With ``churn = 0`` they are deterministic. (GeNVS's "gamma 0.4 every step" is ``churn = 0.4``;
  k-diffusion's own samplers take it as ``s_churn = k_diffusion_s_churn(0.4, steps)``.)
* ``"euler_ancestral"``: Euler steps down to ``sigma_down``, then fresh noise back up to ``sigma_{i+1}``.
* ``"dpmpp_2m"``: DPM-Solver++(2M), a deterministic second-order multistep solver.

Classifier-free guidance with scale ``w`` replaces the denoiser by
``D_w(x) = D(x; null) + w * (D(x; c) - D(x; null))`` where ``null`` is
:func:`genvs.denoiser.null_condition` (``w = 1``: conditional, ``w = 0``: unconditional).

Random numbers: the start noise ``n`` and every later draw (churn ``eps``, ancestral noise) come from
explicit generators, never from the global RNG. One int seed gives the whole batch one stream (draws of
shape ``[B, C, H, W]``, as ``torch.randn`` under that seed); a list of seeds gives image ``b`` its own
stream from ``seeds[b]`` (draws of ``[1, C, H, W]``), so image ``b`` gets the same numbers as when sampled
alone with ``seed=seeds[b]``, whatever else is in the batch: that is how :func:`generate_trajectory`
batches objects. Euler and Heun steps are therefore written here (:func:`sample_karras`, the arithmetic
of ``k_diffusion.sampling.sample_euler`` / ``sample_heun``, which draw from the global RNG);
``euler_ancestral`` takes its noise through k-diffusion's ``noise_sampler``.

Precision (:data:`PRECISIONS`): ``"bf16"`` runs the denoiser calls under ``torch.autocast`` in bfloat16 (about
3 significant digits) and casts their output back to float32; the sampler's state ``x``, the noise levels and
the ODE arithmetic stay float32.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from genvs.denoiser import k_diffusion, null_condition
from genvs.field import InputViews
from genvs.seeding import derive_seed, draw

__all__ = ["SAMPLERS", "CHURN_SAMPLERS", "MAX_CHURN", "PRECISIONS", "karras_sigmas", "k_diffusion_s_churn",
           "sample_karras", "guided", "seeded_noise", "sample_images", "render_condition", "sample_novel_views",
           "SAMPLING_MODES", "sampling_options", "conditioning_set", "generate_trajectory"]

Noise = Callable[[tuple[int, ...]], Tensor]
"""``noise(shape)``: a draw ``[B, C, H, W] ~ N(0, I)`` from the sampling's seeds (module docstring)."""

MAX_CHURN = 2 ** 0.5 - 1
"""The largest churn, EDM's and k-diffusion's cap on ``gamma``: above it, ``sigma_hat^2 = (1 + churn)^2 sigma_i^2``
would be more than twice ``sigma_i^2`` (a step would more than double the variance)."""


def _check_churn(churn: float) -> None:
    if not 0 <= churn <= MAX_CHURN:
        raise ValueError(f"churn={churn} is outside [0, sqrt(2) - 1 = {MAX_CHURN:.4f}]: churn is EDM's per-step "
                         f"gamma (sigma_hat = (1 + churn) sigma); above sqrt(2) - 1 a step would more than double the "
                         f"variance")


def k_diffusion_s_churn(churn: float, steps: int) -> float:
    """k-diffusion's ``s_churn`` for EDM's per-step ``churn`` over ``steps`` steps: ``churn * steps``.

    k-diffusion's ``sample_euler`` / ``sample_heun`` take the churn summed over the steps and compute
    ``gamma = min(s_churn / steps, sqrt(2) - 1)``; so ``s_churn = churn * steps`` gives ``gamma = churn``
    (``0 <= churn <= sqrt(2) - 1``). For calling k-diffusion's own samplers; this module takes ``churn`` itself.
    """
    _check_churn(churn)
    return churn * steps


@torch.no_grad()
def sample_karras(denoise: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigmas: Tensor, noise: Noise, *,
                  heun: bool = False, callback: Callable[[dict], None] | None = None, churn: float = 0.0,
                  s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0) -> Tensor:
    """Karras et al.'s Algorithm 2 from ``x [B, C, H, W]`` at ``sigmas[0]`` down to ``sigmas[-1] = 0``: Euler steps,
    or Heun steps (the last one Euler) when ``heun``; returns ``x`` at sigma 0 (module docstring).

    The arithmetic, step for step, of ``k_diffusion.sampling.sample_euler`` and ``sample_heun`` (tested equal),
    which draw ``eps`` with ``torch.randn_like``; here ``eps = noise(x.shape) * s_noise`` is drawn at every step
    (used where ``s_tmin <= sigma_i <= s_tmax``), as they draw it, so one seed gives both the same numbers.
    ``denoise(x, sigma [B])`` is ``D``; ``callback`` gets k-diffusion's dict after each step's first call.
    ``churn``: EDM's per-step ``gamma`` (``sigma_hat = (1 + churn) sigma_i`` where ``s_tmin <= sigma_i <= s_tmax``),
    ``0 <= churn <= sqrt(2) - 1``; k-diffusion's samplers take it as :func:`k_diffusion_s_churn`.
    """
    _check_churn(churn)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        gamma = churn if s_tmin <= sigmas[i] <= s_tmax else 0.0
        eps = noise(x.shape) * s_noise
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
        denoised = denoise(x, sigma_hat * s_in)
        d = k_diffusion.sampling.to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
        dt = sigmas[i + 1] - sigma_hat
        if not heun or sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = k_diffusion.sampling.to_d(x_2, sigmas[i + 1], denoise(x_2, sigmas[i + 1] * s_in))
            x = x + (d + d_2) / 2 * dt
    return x


def _sample_euler_ancestral(denoise, x: Tensor, sigmas: Tensor, noise: Noise, **options) -> Tensor:
    """k-diffusion's Euler ancestral sampler, its noise drawn by ``noise``."""
    return k_diffusion.sampling.sample_euler_ancestral(
        denoise, x, sigmas, disable=True, noise_sampler=lambda sigma, sigma_next: noise(x.shape), **options)


def _sample_dpmpp_2m(denoise, x: Tensor, sigmas: Tensor, noise: Noise, **options) -> Tensor:
    """k-diffusion's DPM-Solver++(2M): deterministic, ``noise`` is not used."""
    return k_diffusion.sampling.sample_dpmpp_2m(denoise, x, sigmas, disable=True, **options)


SAMPLERS: dict[str, Callable] = {
    "euler": sample_karras,
    "heun": functools.partial(sample_karras, heun=True),
    "euler_ancestral": _sample_euler_ancestral,
    "dpmpp_2m": _sample_dpmpp_2m,
}
"""Sampler names and their functions ``sampler(denoise, x, sigmas, noise, callback=..., **options)``."""
CHURN_SAMPLERS = ("euler", "heun")
"""Samplers that take EDM's churn options (``churn``, ``s_tmin``, ``s_tmax``)."""
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
"""Precisions of the denoiser calls during sampling (module docstring), by name."""


SAMPLING_MODES = ("stochastic", "deterministic", "unconditional", "guided")
"""Named ways to sample a GeNVS view; :func:`sampling_options` turns one into sampler options."""


def sampling_options(mode: str = "stochastic", steps: int = 25, churn: float = 0.4,
                     guidance_scale: float = 2.0) -> dict:
    """:func:`sample_images` options for a named sampling mode (:data:`SAMPLING_MODES`).

    * ``"stochastic"`` (default, the seed reimplementation's): Euler with EDM churn, noise raised
      to ``(1 + churn) sigma`` at every step (EDM's per-step ``gamma = churn``) and ``s_noise = 1.003``;
    * ``"deterministic"``: Euler without churn (the seed's "deterministic");
    * ``"unconditional"``: deterministic Euler with the null condition (what 10% dropout taught);
    * ``"guided"``: deterministic Euler with classifier-free guidance ``guidance_scale``.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; valid modes: {SAMPLING_MODES}")
    options = {"sampler": "euler", "steps": steps}
    if mode == "stochastic":
        _check_churn(churn)
        return {**options, "churn": churn, "s_noise": 1.003}
    if mode == "unconditional":
        return {**options, "unconditional": True}
    if mode == "guided":
        return {**options, "guidance_scale": guidance_scale}
    return options


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                  device: torch.device | None = None) -> Tensor:
    """Karras et al.'s noise levels ``[steps + 1]``, from ``sigma_max`` down to ``sigma_min``, then 0
    (module docstring)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return k_diffusion.sampling.get_sigmas_karras(steps, sigma_min, sigma_max, rho, device=device or "cpu")


def _in_precision(denoiser: nn.Module, precision: str, device: torch.device) -> Callable[..., Tensor]:
    """``denoiser(x, sigma, unet_cond=c)`` under autocast to ``precision`` (none for fp32), its output in float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {tuple(PRECISIONS)}")

    def call(x: Tensor, sigma: Tensor, unet_cond: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=PRECISIONS[precision], enabled=precision != "fp32"):
            return denoiser(x, sigma, unet_cond=unet_cond).float()

    return call


def guided(denoiser: Callable[..., Tensor], cond: Tensor, guidance_scale: float) -> Callable[[Tensor, Tensor], Tensor]:
    """``D_w(x, sigma)`` of the module docstring for ``denoiser(x, sigma, unet_cond=c)`` and ``cond [B, C, H, W]``:
    ``denoiser`` itself given ``cond`` when ``guidance_scale`` is 1, else its conditional and unconditional
    (:func:`genvs.denoiser.null_condition`) calls in one batch of ``2B``."""
    if guidance_scale == 1.0:
        return lambda x, sigma: denoiser(x, sigma, unet_cond=cond)
    both_conds = torch.cat([cond, null_condition(cond)])

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        conditional, unconditional = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                                              unet_cond=both_conds).chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    return denoise


def _sampler_options(sampler: str, churn: float, s_tmin: float, s_tmax: float, s_noise: float) -> dict:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {sorted(SAMPLERS)}")
    _check_churn(churn)
    if sampler in CHURN_SAMPLERS:
        return {"churn": churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise}
    if churn:
        raise ValueError(f"churn={churn} applies to the samplers {CHURN_SAMPLERS} only, not {sampler!r}")
    return {"s_noise": s_noise} if sampler == "euler_ancestral" else {}


def _seed_value(seed: int | torch.Generator | None) -> int:
    """An int seed: ``seed`` itself, or drawn from the generator (or, for None, the global RNG)."""
    if isinstance(seed, int):
        return seed
    device = seed.device if seed is not None else "cpu"
    return int(torch.randint(2**62, (1,), generator=seed, device=device))


def seeded_noise(seed: int | torch.Generator | Sequence[int] | None, batch: int, device: torch.device) -> Noise:
    """``noise(shape)`` drawing ``[B, ...] ~ N(0, I)`` on ``device`` (the module docstring's random numbers).

    ``seed`` an int (or a generator to draw one from, or None: from the global RNG): one generator for the whole
    batch. A sequence of ``G`` ints, ``G`` dividing ``B``: the batch is ``G`` consecutive groups of ``B / G`` images,
    group ``g`` drawn from its own generator seeded with ``seed[g]`` (``G = B``: one generator per image), so that a
    group gets the numbers it gets when drawn alone with that seed.
    """
    if not isinstance(seed, Sequence):
        generator = torch.Generator(device).manual_seed(_seed_value(seed))
        return lambda shape: draw(torch.randn, shape, generator)
    if not seed or batch % len(seed):
        raise ValueError(f"{len(seed)} seeds for a batch of {batch} images: give one seed per image, one per group "
                         f"of as many images, or one int")
    generators = [torch.Generator(device).manual_seed(group_seed) for group_seed in seed]
    return lambda shape: torch.cat([draw(torch.randn, (shape[0] // len(generators), *shape[1:]), generator)
                                    for generator in generators])


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
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    guidance_scale: float = 1.0,
    unconditional: bool = False,
    seed: int | torch.Generator | Sequence[int] | None = None,
    precision: str = "fp32",
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
        sigma_min, sigma_max, rho: the Karras schedule; churn, s_tmin, s_tmax, s_noise: EDM's
            stochasticity (euler and heun; ``s_noise`` also scales euler_ancestral's noise): ``churn`` is EDM's
            per-step ``gamma``, ``sigma_hat = (1 + churn) sigma_i`` at steps with ``s_tmin <= sigma_i <= s_tmax``,
            ``0 <= churn <= sqrt(2) - 1`` (k-diffusion's ``s_churn`` is :func:`k_diffusion_s_churn`).
        guidance_scale: ``w`` of classifier-free guidance (1: plain conditional sampling).
        unconditional: sample with :func:`genvs.denoiser.null_condition` as the condition.
        seed: an int, or a generator to draw one from; every random number of the sampling (start
            noise, churn, ancestral noise) follows from it, and the caller's global RNG is left
            unchanged. None draws the seed from the global RNG. A sequence of ``B`` ints: image ``b``'s
            random numbers follow from ``seed[b]`` alone, exactly as when it is sampled alone with that seed; of
            ``G`` ints (``G`` dividing ``B``): those of each group of ``B / G`` consecutive images follow from its
            seed alone (:func:`seeded_noise`).
        precision: of the denoiser calls, one of :data:`PRECISIONS` (module docstring).
        callback: called after each step's first denoiser call with k-diffusion's dict:
            ``x`` (current noisy images), ``i`` (step), ``sigma``, ``sigma_hat`` and ``denoised``
            (the guided estimate ``D(x; sigma_hat)`` of the clean images, ``[B, C, H, W]``).
    Returns:
        the final images, clamped to [-1, 1].
    """
    device = next(denoiser.parameters()).device
    options = _sampler_options(sampler, churn, s_tmin, s_tmax, s_noise)
    shape = _image_shape(denoiser, cond, shape, noise, unconditional)
    if unconditional:
        if guidance_scale != 1.0:
            raise ValueError(f"guidance_scale={guidance_scale} needs conditional sampling (unconditional=False)")
        cond = null_condition(torch.empty(shape[0], denoiser.inner_model.unet_cond_dim, *shape[2:], device=device))
    denoise = guided(_in_precision(denoiser, precision, device), cond, guidance_scale)
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho, device)
    draw_noise = seeded_noise(seed, shape[0], device)
    with k_diffusion.utils.eval_mode(denoiser):
        x = (draw_noise(shape) if noise is None else noise.to(device)) * sigmas[0]
        x = SAMPLERS[sampler](denoise, x, sigmas, draw_noise, callback=callback, **options)
    return x.clamp(-1.0, 1.0)


@torch.no_grad()
def render_condition(model: nn.Module, images: Tensor, K: Tensor, c2w: Tensor, target_K: Tensor,
                     target_c2w: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """GeNVS's condition for ``T`` target cameras of ``B`` objects: the field of the input views rendered at them.

    Args:
        model: a :class:`genvs.model.GeNVS` (run in eval mode, given back in its modes).
        images: ``[B, V, 3, H, W]`` input views in [-1, 1]; K ``[B, V, 3, 3]``; c2w ``[B, V, 4, 4]``.
        target_K: ``[B, T, 3, 3]``; target_c2w: ``[B, T, 4, 4]``.
    Returns:
        :meth:`genvs.model.GeNVS.condition`'s ``cond [B * T, C, H, W]`` and render (``features [B, T, C, s, s]``,
        ``depth`` and ``opacity [B, T, s, s]``), on the model's device (the inputs are moved there).
    """
    device = next(model.parameters()).device
    images, K, c2w, target_K, target_c2w = (tensor.to(device) for tensor in (images, K, c2w, target_K, target_c2w))
    with k_diffusion.utils.eval_mode(model):
        return model.condition(model.field.encode(images, K, c2w), target_K, target_c2w)


@torch.no_grad()
def sample_novel_views(model: nn.Module, images: Tensor, K: Tensor, c2w: Tensor, target_K: Tensor,
                       target_c2w: Tensor, denoiser: nn.Module | None = None, **options) -> dict[str, Tensor]:
    """Sample novel views of ``B`` objects: encode the input views, render features, denoise.

    Args:
        model: a :class:`genvs.model.GeNVS` (run in eval mode, given back in its modes).
        images: ``[B, V, 3, H, W]`` input views in [-1, 1]; K ``[B, V, 3, 3]``; c2w ``[B, V, 4, 4]``.
        target_K: ``[B, T, 3, 3]``; target_c2w: ``[B, T, 4, 4]`` the cameras to sample.
        denoiser: what denoises the render (default ``model.denoiser``; e.g. lesson 07's ControlNet route,
            :func:`genvs.controlnet.controlnet_route`).
        options: :func:`sample_images`'s keyword arguments (sampler, steps, seed, guidance_scale, precision, ...).
    Returns:
        ``samples [B, T, 3, H, W]`` and the field's render at ``render_size``: ``features
        [B, T, C, s, s]`` (channels 0-2 are its RGB guess), ``depth`` and ``opacity [B, T, s, s]``, on the
        device of ``images`` (the inputs are moved to the model's device for the computation).
    """
    cond, rendered = render_condition(model, images, K, c2w, target_K, target_c2w)
    samples = sample_images(model.denoiser if denoiser is None else denoiser, cond, **options)
    result = {"samples": samples.unflatten(0, tuple(target_c2w.shape[:2])), **rendered}
    return {name: value.to(images.device) for name, value in result.items()}


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
                        target_c2w: Tensor, denoiser: nn.Module | None = None, *, autoregressive: bool = True,
                        max_random: int = 4, seed: int | Sequence[int] = 0, progress: bool = True, **options) -> dict:
    """Generate the views of ``B`` objects along their trajectories, frame ``f`` of every object in one batch.

    Autoregressive (GeNVS): every generated frame joins its object's pool of views, and frame ``f`` is
    sampled given :func:`conditioning_set`'s views, so that later frames can agree with earlier ones
    (with the shipped 32 px model they do not, measurably: lesson 06, docs/RESULTS.md). Otherwise every
    frame is sampled from the real inputs alone (to compare). Each view is encoded once.

    Seeds: object ``b`` has one seed ``s_b``; its frame ``f``'s sampling noise comes from
    ``derive_seed(s_b, f)`` (:func:`sample_images` with one seed per image) and its random conditioning
    frames from a generator seeded with ``s_b``. So object ``b``'s random numbers are those of generating it
    alone with seed ``s_b``, whatever the batch; its images equal those up to the float rounding of batched
    matrix products (which may sum in another order for another batch size), bitwise where the model's
    arithmetic does not depend on the batch size.

    Args:
        model: a :class:`genvs.model.GeNVS` (run in eval mode, given back in its modes).
        images: ``[B, V, 3, H, W]`` real input views in [-1, 1]; K ``[B, V, 3, 3]``; c2w ``[B, V, 4, 4]``.
            One object's ``[V, 3, H, W]``, ``[V, 3, 3]``, ``[V, 4, 4]`` also works: the outputs then have no
            leading ``B`` either.
        target_K: ``[B, N, 3, 3]``; target_c2w: ``[B, N, 4, 4]`` the trajectories, e.g.
            :func:`genvs.cameras.trajectory_from` of each input camera (``[N, 3, 3]``, ``[N, 4, 4]`` for one object).
        denoiser: what denoises each frame's render (default ``model.denoiser``), as in :func:`sample_novel_views`.
        max_random: most random earlier frames in a conditioning set (the seed: 4).
        seed: one int per object (a sequence of ``B``); or one int, which is the seed of a single unbatched
            object, and for a batch gives object ``b`` the seed ``derive_seed(seed, b)``.
        options: :func:`sample_images`'s sampler options (sampler, steps, churn, guidance_scale, precision, ...).
    Returns:
        dict with ``samples [B, N, 3, H, W]``; the field's ``features [B, N, C, s, s]``, ``depth`` and
        ``opacity [B, N, s, s]`` for the same cameras (from the views that conditioned each frame);
        and ``conditioning``, per object the pool indices used for each frame (``B`` lists of ``N`` lists).
    """
    if images.dim() == 4:
        seeds = [seed] if isinstance(seed, int) else seed
        result = generate_trajectory(model, images[None], K[None], c2w[None], target_K[None], target_c2w[None],
                                     denoiser, autoregressive=autoregressive, max_random=max_random, seed=seeds,
                                     progress=progress, **options)
        return {name: value[0] for name, value in result.items()}
    device = next(model.parameters()).device
    (n_objects, n_inputs), n_frames = images.shape[:2], target_c2w.shape[1]
    seeds = [derive_seed(seed, index) for index in range(n_objects)] if isinstance(seed, int) else list(seed)
    if len(seeds) != n_objects:
        raise ValueError(f"{len(seeds)} seeds for {n_objects} objects: give one seed per object, or one int")
    choices = [torch.Generator().manual_seed(object_seed) for object_seed in seeds]
    pool_K, pool_c2w = torch.cat([K, target_K], 1).to(device), torch.cat([c2w, target_c2w], 1).to(device)
    objects = torch.arange(n_objects, device=device)[:, None]
    outputs = {"samples": [], "features": [], "depth": [], "opacity": []}
    conditioning = [[] for _ in range(n_objects)]
    with k_diffusion.utils.eval_mode(model):
        inputs = model.field.encode(images.to(device), K.to(device), c2w.to(device)).volumes  # [B, V, C, D, h, w]
        volumes = inputs.new_empty(n_objects, n_inputs + (n_frames if autoregressive else 0), *inputs.shape[2:])
        volumes[:, :n_inputs] = inputs
        for frame in tqdm(range(n_frames), desc="generating", disable=not progress):
            chosen = [conditioning_set(frame, n_inputs, max_random, generator) if autoregressive
                      else list(range(n_inputs)) for generator in choices]
            index = torch.tensor(chosen, device=device)  # [B, V_f]: every object conditions on as many views
            views = InputViews(volumes[objects, index], pool_K[objects, index], pool_c2w[objects, index])
            target = slice(n_inputs + frame, n_inputs + frame + 1)
            cond, rendered = model.condition(views, pool_K[:, target], pool_c2w[:, target])
            frame_seeds = [derive_seed(object_seed, frame) for object_seed in seeds]
            sample = sample_images(model.denoiser if denoiser is None else denoiser, cond, seed=frame_seeds,
                                   **options)
            if autoregressive:
                volumes[:, target] = model.field.encode(sample[:, None], pool_K[:, target], pool_c2w[:, target]).volumes
            for name, value in (("samples", sample), *((key, rendered[key][:, 0]) for key in
                                                       ("features", "depth", "opacity"))):
                outputs[name].append(value.cpu())
            for object_sets, object_chosen in zip(conditioning, chosen):
                object_sets.append(object_chosen)
    return {**{name: torch.stack(values, dim=1) for name, values in outputs.items()}, "conditioning": conditioning}


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
