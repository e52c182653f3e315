"""Routes: one interface for every way to novel views (input views and cameras, target cameras, seeds -> images).

Evaluation (:func:`genvs.evaluation.evaluate`), the turntables (:func:`genvs.turntable.compare_turntables`) and the
generation panel (:class:`genvs.viz.GenerationPanel`) take any :class:`Route`::

    route(images [B, V, 3, H, W], K [B, V, 3, 3], c2w [B, V, 4, 4],
          target_K [B, N, 3, 3], target_c2w [B, N, 4, 4], seeds [B], **options)  ->  [B, N, 3, H, W] on the CPU

``seeds`` holds one int per object; every random number object ``b``'s images need follows from ``seeds[b]``, as
each route says. ``options`` are sampler options for this call, over the route's own (the panel's sliders).

GeNVS's routes are here: :class:`RenderRoute`, every target sampled alone on GeNVS's render of it (with GeNVS's
denoiser or another one of the same render, e.g. lesson 07's ControlNet, :func:`genvs.controlnet.controlnet_route`),
and :class:`TrajectoryRoute`, :func:`genvs.sampling.generate_trajectory`'s frames one after another. The routes
without GeNVS's render (lesson 08's multi-view and 2D-only routes) are in :mod:`genvs.turntable`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from torch import Tensor, nn

from genvs.sampling import generate_trajectory, sample_novel_views
from genvs.seeding import derive_seed

__all__ = ["Route", "frame_seeds", "RenderRoute", "TrajectoryRoute"]


class Route(Protocol):
    """Novel views of ``B`` objects (module docstring)."""

    def __call__(self, images: Tensor, K: Tensor, c2w: Tensor, target_K: Tensor, target_c2w: Tensor,
                 seeds: Sequence[int], **options) -> Tensor:
        """``[B, N, 3, H, W]`` in [-1, 1], on the CPU, from ``B`` objects' input views and ``N`` target cameras each."""


def frame_seeds(seeds: Sequence[int], n_frames: int) -> list[int]:
    """One seed per image of ``B`` objects' ``N`` frames, object-major: frame ``f`` of object ``b`` gets
    ``derive_seed(seeds[b], f)``, as :func:`genvs.sampling.generate_trajectory` seeds its frames."""
    return [derive_seed(seed, frame) for seed in seeds for frame in range(n_frames)]


@dataclass(frozen=True)
class RenderRoute:
    """Every target sampled alone on GeNVS's render of it: :func:`genvs.sampling.sample_novel_views`.

    Attributes:
        model: the :class:`genvs.model.GeNVS` whose field renders the targets from the input views.
        denoiser: what samples the render (default ``model.denoiser``), e.g. lesson 07's ControlNet route.
        options: :func:`genvs.sampling.sample_images`'s options (sampler, steps, churn, guidance_scale, ...).
        per_frame: how the seeds give the noise. False: object ``b``'s ``N`` targets are sampled as one batch from
            ``seeds[b]`` (as ``sample_novel_views(..., seed=seeds[b])`` for that object alone). True: target ``f``
            of object ``b`` from its own seed, :func:`frame_seeds` (each image the same whatever is sampled with it).
    """

    model: nn.Module = field(repr=False)
    denoiser: nn.Module | None = field(default=None, repr=False)
    options: dict = field(default_factory=dict)
    per_frame: bool = False

    def __call__(self, images: Tensor, K: Tensor, c2w: Tensor, target_K: Tensor, target_c2w: Tensor,
                 seeds: Sequence[int], **options) -> Tensor:
        """:data:`Route`'s call (module docstring)."""
        seed = frame_seeds(seeds, target_c2w.shape[1]) if self.per_frame else list(seeds)
        return sample_novel_views(self.model, images, K, c2w, target_K, target_c2w, self.denoiser, seed=seed,
                                  **{**self.options, **options})["samples"].cpu()


@dataclass(frozen=True)
class TrajectoryRoute:
    """The targets as one trajectory per object, frame after frame: :func:`genvs.sampling.generate_trajectory`.

    Object ``b``'s frame ``f`` is sampled from ``derive_seed(seeds[b], f)`` (:func:`frame_seeds`) and its random
    conditioning frames are drawn from ``seeds[b]``.

    Attributes:
        model: a :class:`genvs.model.GeNVS`; denoiser: what samples each frame's render (default ``model.denoiser``).
        autoregressive: every generated frame joins its object's views (GeNVS); False: each frame from the inputs.
        max_random: most random earlier frames conditioning a frame; options: the sampler's.
    """

    model: nn.Module = field(repr=False)
    denoiser: nn.Module | None = field(default=None, repr=False)
    autoregressive: bool = True
    max_random: int = 4
    options: dict = field(default_factory=dict)

    def __call__(self, images: Tensor, K: Tensor, c2w: Tensor, target_K: Tensor, target_c2w: Tensor,
                 seeds: Sequence[int], **options) -> Tensor:
        """:data:`Route`'s call (module docstring)."""
        return generate_trajectory(self.model, images, K, c2w, target_K, target_c2w, self.denoiser,
                                   autoregressive=self.autoregressive, max_random=self.max_random, seed=list(seeds),
                                   progress=False, **{**self.options, **options})["samples"].cpu()
