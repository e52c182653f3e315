"""Lesson 01's "your turn": the compositing weights of volume rendering (Max 1995; NeRF, Mildenhall et al. 2020).

    w_i = T_i (1 - exp(-sigma_i delta_i)),      T_i = exp(-sum_{j<i} sigma_j delta_j)

The oracle is :func:`genvs.rendering.composite`'s ``weights``, given the sample depths ``t_i = sum_{j<i} delta_j``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genvs.course.checking import Case, Exercise, Mistake
from genvs.rendering import composite

__all__ = ["COMPOSITING_WEIGHTS"]


def package_weights(sigma: Tensor, deltas: Tensor) -> Tensor:
    """:func:`genvs.rendering.composite`'s weights for densities ``sigma [..., S]`` on intervals ``deltas [..., S]``."""
    t = torch.cumsum(deltas, dim=-1) - deltas
    values = torch.zeros(*sigma.shape, 1, dtype=sigma.dtype)
    return composite(sigma, values, t, t_far=t[..., -1] + deltas[..., -1])["weights"]


def solution(sigma: Tensor, deltas: Tensor) -> Tensor:
    """Compositing weights ``[..., S]`` of densities ``sigma [..., S]`` on intervals ``deltas [..., S]``."""
    optical_depth = sigma * deltas                                   # sigma_i delta_i
    alpha = 1 - torch.exp(-optical_depth)                            # the chance the ray stops in interval i
    before = torch.cumsum(optical_depth, dim=-1) - optical_depth     # sum over j < i only
    transmittance = torch.exp(-before)                               # the chance it got that far
    return transmittance * alpha


def inclusive_transmittance(sigma: Tensor, deltas: Tensor) -> Tensor:
    optical_depth = sigma * deltas
    return torch.exp(-torch.cumsum(optical_depth, dim=-1)) * (1 - torch.exp(-optical_depth))


def no_spacing(sigma: Tensor, deltas: Tensor) -> Tensor:
    return solution(sigma, torch.ones_like(deltas))


def no_transmittance(sigma: Tensor, deltas: Tensor) -> Tensor:
    return 1 - torch.exp(-sigma * deltas)


def cases(generator: torch.Generator) -> list[Case]:
    sigma = torch.rand(4, 16, generator=generator) * 3
    deltas = torch.rand(4, 16, generator=generator) * 0.2 + 0.05
    opaque = torch.zeros(1, 8)
    opaque[0, 2] = 1e4
    return [Case("4 random rays of 16 samples", (sigma, deltas)),
            Case("an empty ray (no density)", (torch.zeros(1, 8), torch.full((1, 8), 0.1))),
            Case("a ray with one opaque sample, the third", (opaque + 0.5, torch.full((1, 8), 0.1))),
            Case("a ray of one sample", (torch.tensor([[2.0]]), torch.tensor([[0.3]])))]


COMPOSITING_WEIGHTS = Exercise(
    name="compositing_weights", lesson="01", oracle=package_weights, cases=cases, solution=solution,
    hint="alpha_i = 1 - exp(-sigma_i delta_i); T_i = exp(-sum over j < i of sigma_j delta_j) (torch.cumsum, then "
         "remove sample i's own term); w_i = T_i alpha_i.",
    mistakes=(
        Mistake(inclusive_transmittance, "the transmittance is not exclusive: T_i sums sigma_j delta_j over the "
                                         "samples before i (j < i), without sample i itself."),
        Mistake(no_spacing, "alpha ignores the spacing between samples: alpha_i = 1 - exp(-sigma_i delta_i), "
                            "not 1 - exp(-sigma_i)."),
        Mistake(no_transmittance, "the weights lack the transmittance T_i: a sample behind an opaque one must get "
                                  "(almost) no weight."),
    ))
