"""Lesson 05's "your turn": classifier-free guidance (Ho & Salimans 2022) and GeNVS's autoregressive conditioning set.

Guidance mixes the denoiser's conditional and unconditional predictions, the unconditional one given the null
condition (:func:`genvs.denoiser.null_condition`, the all-zero feature image that conditioning dropout trained)::

    D_w(x; sigma) = D_null + w (D_c - D_null),      D_c = D(x; sigma, c),  D_null = D(x; sigma, null)

(``w = 0``: unconditional, ``w = 1``: conditional, ``w > 1``: the condition counts more).

The oracle is :func:`genvs.sampling.guided`. The conditioning set of generated frame ``f`` of a trajectory is every
real input, up to ``max_random`` frames drawn at random among frames ``0 .. f - 2``, and the previous frame
``f - 1``, in a pool where the ``n_inputs`` inputs come first and frame ``j`` is index ``n_inputs + j``. The oracle
is :func:`genvs.sampling.conditioning_set`, its random picks from a generator seeded with the case's ``seed``, and
its set given as a mask over the pool (so that a set with a view too many or too few is still the same shape, and
the checker can name the mistake).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from genvs.course.checking import Case, Exercise, Mistake
from genvs.denoiser import null_condition
from genvs.sampling import conditioning_set, guided

__all__ = ["CLASSIFIER_FREE_GUIDANCE", "CONDITIONING_MASK"]

Denoiser = Callable[..., Tensor]
"""``denoiser(x [B, C, H, W], sigma [B], unet_cond=c [B, C_c, H, W]) -> D [B, C, H, W]``, the model's call."""


# Classifier-free guidance.

def toy_denoiser(x: Tensor, sigma: Tensor, *, unet_cond: Tensor) -> Tensor:
    """A stand-in for the EDM denoiser, called like it: ``D(x; sigma, c) = c_skip x + (1 - c_skip) tanh(g(c))`` with
    ``c_skip = 1/4 / (sigma^2 + 1/4)`` and ``g(c) = c[:, :3] + mean over the other channels of c - 1/2``, per image.

    ``x [B, 3, H, W]``, ``sigma [B]``, ``unet_cond [B, C_c, H, W]`` (``C_c >= 4``, keyword only, as the model's).
    """
    c_skip = (0.25 / (sigma ** 2 + 0.25)).view(-1, 1, 1, 1)
    guess = torch.tanh(unet_cond[:, :3] + unet_cond[:, 3:].mean(1, keepdim=True) - 0.5)
    return c_skip * x + (1 - c_skip) * guess


def package_guided(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Tensor, w: float) -> Tensor:
    """:func:`genvs.sampling.guided`'s ``D_w(x, sigma) [B, C, H, W]`` for ``x [B, C, H, W]``, ``sigma [B]``,
    ``cond [B, C_c, H, W]`` and the guidance weight ``w``."""
    return guided(denoiser, cond, w)(x, sigma)


def guidance_solution(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Tensor, w: float) -> Tensor:
    """``D_w(x; sigma) [B, C, H, W]`` of ``x [B, C, H, W]`` at ``sigma [B]`` given ``cond [B, C_c, H, W]``."""
    conditional = denoiser(x, sigma, unet_cond=cond)                           # D(x; sigma, c)
    unconditional = denoiser(x, sigma, unet_cond=null_condition(cond))         # D(x; sigma, null): zeros
    return unconditional + w * (conditional - unconditional)                   # D_null + w (D_c - D_null)


def predictions(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
    """The conditional and unconditional predictions ``(D_c, D_null)``, each ``[B, C, H, W]``."""
    return denoiser(x, sigma, unet_cond=cond), denoiser(x, sigma, unet_cond=null_condition(cond))


def swapped_weights(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Tensor, w: float) -> Tensor:
    conditional, unconditional = predictions(denoiser, x, sigma, cond)
    return conditional + w * (unconditional - conditional)


def no_difference(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Tensor, w: float) -> Tensor:
    conditional, unconditional = predictions(denoiser, x, sigma, cond)
    return unconditional + w * conditional


def ho_salimans_weight(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Tensor, w: float) -> Tensor:
    conditional, unconditional = predictions(denoiser, x, sigma, cond)
    return (1 + w) * conditional - w * unconditional


def condition_kept(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Tensor, w: float) -> Tensor:
    return denoiser(x, sigma, unet_cond=cond)


def ones_as_null(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Tensor, w: float) -> Tensor:
    conditional, unconditional = denoiser(x, sigma, unet_cond=cond), denoiser(x, sigma, unet_cond=torch.ones_like(cond))
    return unconditional + w * (conditional - unconditional)


def guidance_case(name: str, generator: torch.Generator, batch: int, w: float) -> Case:
    """``batch`` noisy images ``[batch, 3, 8, 8]`` at noise levels ``ln(sigma) ~ N(-1.2, 1.2^2)`` (the training
    ones), conditions ``[batch, 16, 8, 8]``, the toy denoiser and the weight ``w``."""
    x = torch.randn(batch, 3, 8, 8, generator=generator)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn(batch, generator=generator))
    cond = torch.randn(batch, 16, 8, 8, generator=generator)
    return Case(name, (toy_denoiser, x, sigma, cond, w))


def guidance_cases(generator: torch.Generator) -> list[Case]:
    return [guidance_case("w = 2 on 3 random images (the lesson's guided mode)", generator, 3, 2.0),
            guidance_case("w = 1.5 on 2 random images (the sweep's best)", generator, 2, 1.5),
            guidance_case("w = 0 (unconditional)", generator, 2, 0.0),
            guidance_case("w = 1 (conditional: no guidance)", generator, 2, 1.0),
            guidance_case("w = 5 on one image (strong guidance)", generator, 1, 5.0)]


CLASSIFIER_FREE_GUIDANCE = Exercise(
    name="classifier_free_guidance", lesson="05", oracle=package_guided, cases=guidance_cases,
    solution=guidance_solution,
    hint="call the denoiser twice, D_c = denoiser(x, sigma, unet_cond=cond) and D_null = denoiser(x, sigma, "
         "unet_cond=null_condition(cond)) (genvs.denoiser.null_condition: zeros); return D_null + w (D_c - D_null).",
    mistakes=(
        Mistake(swapped_weights, "the two predictions are swapped: D_w = D_null + w (D_c - D_null) starts from the "
                                 "unconditional prediction and moves w times towards the conditional one."),
        Mistake(no_difference, "w scales the conditional prediction alone: it scales the difference, D_w = D_null + "
                               "w (D_c - D_null), so that w = 1 gives D_c."),
        Mistake(ho_salimans_weight, "this is Ho & Salimans' convention (1 + w) D_c - w D_null, where w = 0 is "
                                    "conditional; the package's w counts from the unconditional prediction: D_w = "
                                    "D_null + w (D_c - D_null), w = 1 conditional."),
        Mistake(condition_kept, "the unconditional call was given the condition, so guidance does nothing: call the "
                                "denoiser again with unet_cond=null_condition(cond)."),
        Mistake(ones_as_null, "the unconditional call's condition is not the null one: "
                              "genvs.denoiser.null_condition(cond) is all zeros (what conditioning dropout trained), "
                              "not ones."),
    ))


# The autoregressive conditioning set.

def package_conditioning(frame: int, n_inputs: int, n_frames: int, max_random: int, seed: int) -> Tensor:
    """:func:`genvs.sampling.conditioning_set` of ``frame``, its random frames from a generator seeded with ``seed``,
    as a mask ``[n_inputs + n_frames]`` over the pool (True: the view conditions ``frame``)."""
    chosen = conditioning_set(frame, n_inputs, max_random, torch.Generator().manual_seed(seed))
    views = torch.zeros(n_inputs + n_frames, dtype=torch.bool)
    views[chosen] = True
    return views


def conditioning_solution(frame: int, n_inputs: int, n_frames: int, max_random: int, seed: int) -> Tensor:
    """The views ``[n_inputs + n_frames]`` (a mask over the pool: inputs, then frames) that condition ``frame``."""
    generator = torch.Generator().manual_seed(seed)                  # the random picks come from the seed
    views = torch.zeros(n_inputs + n_frames, dtype=torch.bool)
    views[:n_inputs] = True                                          # every real input
    if frame > 0:
        n_random = min(max_random, frame - 1)                        # at most max_random of frames 0 .. f - 2
        picks = torch.randperm(frame - 1, generator=generator)[:n_random]
        views[n_inputs + picks] = True
        views[n_inputs + frame - 1] = True                           # the previous frame, f - 1
    return views


def drawn_set(frame: int, n_inputs: int, n_frames: int, picks: Tensor, *, inputs: bool = True,
              previous: bool = True) -> Tensor:
    """A mask ``[n_inputs + n_frames]`` of the inputs (if ``inputs``), the frames ``picks`` and (if ``previous``
    and ``frame > 0``) frame ``frame - 1``."""
    views = torch.zeros(n_inputs + n_frames, dtype=torch.bool)
    views[:n_inputs] = inputs
    views[n_inputs + picks] = True
    if previous and frame > 0:
        views[n_inputs + frame - 1] = True
    return views


def random_picks(frame: int, max_random: int, generator: torch.Generator, among: int | None = None) -> Tensor:
    """``min(max_random, frame - 1)`` frames drawn without repeats among ``0 .. among - 1`` (default ``frame - 1``)."""
    n_random = max(min(max_random, frame - 1), 0)
    return torch.randperm(max(frame - 1, 0) if among is None else among, generator=generator)[:n_random]


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def no_inputs(frame: int, n_inputs: int, n_frames: int, max_random: int, seed: int) -> Tensor:
    return drawn_set(frame, n_inputs, n_frames, random_picks(frame, max_random, seeded(seed)), inputs=False)


def frame_itself(frame: int, n_inputs: int, n_frames: int, max_random: int, seed: int) -> Tensor:
    views = drawn_set(frame, n_inputs, n_frames, random_picks(frame, max_random, seeded(seed)))
    views[n_inputs + frame] = True
    return views


def future_frames(frame: int, n_inputs: int, n_frames: int, max_random: int, seed: int) -> Tensor:
    return drawn_set(frame, n_inputs, n_frames, random_picks(frame, max_random, seeded(seed), among=n_frames))


def unseeded_generator(frame: int, n_inputs: int, n_frames: int, max_random: int, seed: int) -> Tensor:
    return drawn_set(frame, n_inputs, n_frames, random_picks(frame, max_random, torch.Generator()))


def every_earlier_frame(frame: int, n_inputs: int, n_frames: int, max_random: int, seed: int) -> Tensor:
    return drawn_set(frame, n_inputs, n_frames, torch.arange(max(frame - 1, 0)))


def no_previous(frame: int, n_inputs: int, n_frames: int, max_random: int, seed: int) -> Tensor:
    return drawn_set(frame, n_inputs, n_frames, random_picks(frame, max_random, seeded(seed)), previous=False)


def conditioning_cases(generator: torch.Generator) -> list[Case]:
    """Four frames of a 24-frame trajectory, their frames and seeds drawn from ``generator``, and edge cases."""
    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high, (), generator=generator))

    drawn = [Case(f"frame {frame} of 24 from {n_inputs} input(s), max_random 4, seed {seed}",
                  (frame, n_inputs, 24, 4, seed))
             for n_inputs in (1, 2, 3, 1) for frame, seed in [(draw(7, 24), draw(0, 2 ** 31))]]
    return [*drawn,
            Case("frame 0 (the input alone)", (0, 1, 24, 4, 3)),
            Case("frame 1 (the input and frame 0)", (1, 1, 24, 4, 3)),
            Case("frame 3 (two earlier frames, fewer than max_random)", (3, 2, 24, 4, 3)),
            Case("frame 9 with max_random 0 (the input and the previous frame)", (9, 1, 24, 0, 3)),
            Case("the last frame of 8, max_random 2", (7, 1, 8, 2, 11))]


CONDITIONING_MASK = Exercise(
    name="conditioning_mask", lesson="05", oracle=package_conditioning, cases=conditioning_cases,
    solution=conditioning_solution,
    hint="a bool mask of n_inputs + n_frames views: True for every input (0 .. n_inputs - 1); for frame > 0 also "
         "for the previous frame (n_inputs + frame - 1) and for n_inputs + torch.randperm(frame - 1, "
         "generator=torch.Generator().manual_seed(seed))[:min(max_random, frame - 1)].",
    mistakes=(
        Mistake(no_inputs, "the real input views are missing: every frame, frame 0 too, is conditioned on all "
                           "n_inputs inputs (pool indices 0 .. n_inputs - 1)."),
        Mistake(frame_itself, "the set includes the frame being generated (pool index n_inputs + frame): only "
                              "earlier frames, up to the previous one, condition it."),
        Mistake(future_frames, "the random frames include frames not generated yet: draw them among frames "
                               "0 .. f - 2 only, torch.randperm(frame - 1, generator=...)."),
        Mistake(unseeded_generator, "the random frames do not come from the seed: draw them with "
                                    "torch.Generator().manual_seed(seed), so that one seed always picks the same "
                                    "frames (an unseeded generator or the global RNG is not reproducible)."),
        Mistake(every_earlier_frame, "every earlier frame is in the set: at most max_random of frames 0 .. f - 2, "
                                     "drawn at random, besides the inputs and the previous frame."),
        Mistake(no_previous, "the previous frame f - 1 is missing: it is always in the set (pool index "
                             "n_inputs + frame - 1), besides the inputs and the random earlier frames."),
    ))
