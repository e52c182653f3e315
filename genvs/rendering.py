"""Volume rendering: samples along rays and alpha compositing.

Compositing convention (DESIGN.md): sample ``i`` at depth ``t_i`` covers ``[t_i, t_{i+1})``,
the last one ``[t_{S-1}, t_far)``.

    delta_i = t_{i+1} - t_i
    alpha_i = 1 - exp(-sigma_i * delta_i)
    T_i     = prod_{j<i} (1 - alpha_j)            (transmittance)
    w_i     = alpha_i * T_i                       (weights)
    C       = sum_i w_i c_i + (1 - sum_i w_i) * background

Rays come from :func:`genvs.cameras.pixel_rays`, whose directions have camera-space z = 1, so
``t`` is depth along the optical axis and ``near``/``far`` are depths.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from genvs.cameras import pixel_rays
from genvs.seeding import draw

__all__ = ["as_tensor_on", "image_rays", "stratified_samples", "importance_samples", "composite", "render_rays",
           "render_in_chunks"]

FieldFn = Callable[[Tensor], tuple[Tensor, Tensor]]


def image_rays(images: Tensor, K: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every pixel of every view as a ray (:func:`genvs.cameras.pixel_rays`) with its colour.

    Args:
        images: ``[..., V, C, H, W]``; K: ``[..., V, 3, 3]`` and c2w: ``[..., V, 4, 4]``
            (broadcastable to the images' leading dims).
    Returns:
        origins, directions ``[..., V*H*W, 3]`` and colours ``[..., V*H*W, C]``, pixels in
        (view, row, column) order.
    """
    channels, height, width = images.shape[-3:]
    batch_shape = images.shape[:-4]
    origins, directions = pixel_rays(K, c2w, height, width)  # [..., V, H, W, 3]
    colours = images.movedim(-3, -1)  # [..., V, H, W, C]
    return (origins.reshape(*batch_shape, -1, 3), directions.reshape(*batch_shape, -1, 3),
            colours.reshape(*batch_shape, -1, channels))


def as_tensor_on(value: float | Sequence[float] | Tensor, dtype: torch.dtype,
                 device: torch.device | str | None) -> Tensor:
    """``value`` as a ``dtype`` tensor on ``device``; a Python number is filled there (``torch.full``).

    ``torch.as_tensor(0.8, device="cuda")`` builds the number on the host and copies it over, and a
    copy from ordinary host memory waits for the GPU to finish its queue: one stall per call in
    the middle of a training step. Tensors are moved as usual, sequences copied.
    """
    if isinstance(value, (int, float)):
        return torch.full((), value, dtype=dtype, device=device)
    return torch.as_tensor(value, dtype=dtype, device=device)


def stratified_samples(
    near: float | Tensor,
    far: float | Tensor,
    n_samples: int,
    batch_shape: tuple[int, ...] = (),
    perturb: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Stratified depths: one sample in each of ``n_samples`` equal bins of ``[near, far)``.

    ``t_i = near + (i + u_i) (far - near) / S`` with ``u_i ~ U[0, 1)`` when ``perturb``, else
    ``u_i = 0`` (bin starts, so the samples tile ``[near, far)`` exactly).

    Args:
        near, far: floats or tensors broadcastable to ``batch_shape``.
        n_samples: ``S``.
        batch_shape: leading shape, e.g. ``(B, H, W)``.
        perturb: jitter within each bin (training) or not (evaluation).
        generator: random source for the jitter (same seed, same samples).
    Returns:
        ``[*batch_shape, S]`` increasing depths.
    """
    near = as_tensor_on(near, torch.float32, device)
    far = as_tensor_on(far, torch.float32, device)
    device = near.device
    bins = torch.arange(n_samples, dtype=torch.float32, device=device)
    shape = tuple(batch_shape) + (n_samples,)
    if perturb:
        bins = bins + draw(torch.rand, shape, generator, device)
    else:
        bins = bins.expand(shape)
    step = (far - near).unsqueeze(-1) / n_samples
    return near.unsqueeze(-1) + bins * step


def importance_samples(
    t: Tensor,
    weights: Tensor,
    t_far: float | Tensor,
    n_samples: int,
    perturb: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Inverse-CDF resampling of depths in proportion to compositing weights.

    The intervals ``[t_i, t_{i+1})`` (last one ending at ``t_far``) form a piecewise-constant
    pdf ``p_i = (w'_i + eps) / sum_j (w'_j + eps)``; ``u ~ U[0, 1)`` (or evenly spaced when not
    ``perturb``) is mapped through the inverse CDF, linear inside each interval. Weights are
    detached: sample positions carry no gradient.

    The weights are first dilated as in mip-NeRF,
    ``w'_i = (max(w_{i-1}, w_i) + max(w_i, w_{i+1})) / 2``: each sample reads the density at its
    interval's start, so a surface that begins inside interval ``i`` puts its weight on
    ``i + 1``; without dilation no new sample would land where the surface starts.

    Args:
        t: ``[..., S]`` increasing coarse depths; weights: ``[..., S]`` their weights.
        t_far: end of the last interval (float or ``[...]``).
        n_samples: number of new depths ``N``.
    Returns:
        ``[..., N]`` new depths, sorted (not merged with ``t``).
    """
    t = t.detach()
    t_far = as_tensor_on(t_far, t.dtype, t.device).expand(t.shape[:-1]).unsqueeze(-1)
    edges = torch.cat([t, t_far], dim=-1)  # [..., S+1]
    pdf = _dilate(weights.detach()) + 1e-5
    pdf = pdf / pdf.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # [..., S+1]
    # in place from a Python scalar: `cdf[..., -1] = 1.0` builds a tensor from host data on torch 2.14
    cdf[..., -1].fill_(1.0)
    shape = t.shape[:-1] + (n_samples,)
    if perturb:
        u = draw(torch.rand, shape, generator, t.device, t.dtype)
    else:
        u = ((torch.arange(n_samples, dtype=t.dtype, device=t.device) + 0.5) / n_samples).expand(shape)
    u = u.contiguous()
    index = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, cdf.shape[-1] - 1)
    cdf_low, cdf_high = cdf.gather(-1, index - 1), cdf.gather(-1, index)
    edge_low, edge_high = edges.gather(-1, index - 1), edges.gather(-1, index)
    fraction = (u - cdf_low) / (cdf_high - cdf_low).clamp_min(1e-8)
    return torch.sort(edge_low + fraction * (edge_high - edge_low), dim=-1).values


def _dilate(weights: Tensor) -> Tensor:
    """``w'_i = (max(w_{i-1}, w_i) + max(w_i, w_{i+1})) / 2`` along the last axis (edges repeated)."""
    padded = torch.cat([weights[..., :1], weights, weights[..., -1:]], dim=-1)
    maxima = torch.maximum(padded[..., :-1], padded[..., 1:])
    return 0.5 * (maxima[..., :-1] + maxima[..., 1:])


def composite(
    sigma: Tensor,
    values: Tensor,
    t: Tensor,
    background: Tensor | float | None = None,
    t_far: float | Tensor | None = None,
) -> dict[str, Tensor]:
    """Alpha-composite samples along rays (the convention in the module docstring).

    Args:
        sigma: ``[..., S]`` densities (>= 0).
        values: ``[..., S, C]`` per-sample values (colours or features).
        t: ``[..., S]`` increasing sample depths.
        background: ``[C]``, ``[..., C]`` or a float, filling ``1 - opacity``; None adds nothing.
        t_far: end of the last sample's interval; default repeats the previous spacing.
    Returns:
        dict with ``values [..., C]``, ``depth [...]`` (expected depth of the surface hit,
        ``sum w_i t_i / opacity``; ``t_far`` where nothing is hit), ``opacity [...]``
        (``sum w_i``) and ``weights [..., S]``.
    """
    if t_far is None:
        last = t[..., -1:] + (t[..., -1:] - t[..., -2:-1])
    else:
        last = as_tensor_on(t_far, t.dtype, t.device).expand(t.shape[:-1]).unsqueeze(-1)
    deltas = torch.cat([t[..., 1:], last], dim=-1) - t
    optical_depth = sigma * deltas
    alpha = 1.0 - torch.exp(-optical_depth)
    # T_i = exp(-sum_{j<i} sigma_j delta_j): exclusive cumulative sum, stable in log space.
    transmittance = torch.exp(-(torch.cumsum(optical_depth, dim=-1) - optical_depth))
    weights = alpha * transmittance
    opacity = weights.sum(dim=-1)
    composited = (weights.unsqueeze(-1) * values).sum(dim=-2)
    if background is not None:
        background = as_tensor_on(background, composited.dtype, composited.device)
        composited = composited + (1.0 - opacity).unsqueeze(-1) * background
    depth_sum = (weights * t).sum(dim=-1)
    depth = torch.where(opacity > 1e-6, depth_sum / opacity.clamp_min(1e-6), last.squeeze(-1))
    return {"values": composited, "depth": depth, "opacity": opacity, "weights": weights}


def render_rays(
    field: FieldFn,
    origins: Tensor,
    directions: Tensor,
    near: float | Tensor,
    far: float | Tensor,
    n_stratified: int = 64,
    n_importance: int = 0,
    background: Tensor | float | None = None,
    perturb: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Render rays through a field with stratified then (optionally) importance samples.

    Points are ``x = o + t d``. The coarse pass evaluates ``field`` at ``n_stratified``
    stratified depths; if ``n_importance > 0`` its weights (no gradient) drive inverse-CDF
    resampling and the field is evaluated once more at the merged, sorted set of depths. The
    returned composite is that of the final set of samples.

    Args:
        field: maps points ``[..., S, 3]`` to ``(sigma [..., S], values [..., S, C])``.
        origins, directions: ``[..., 3]`` rays (e.g. ``[B, H, W, 3]`` from ``pixel_rays``).
        near, far: depth range (floats or ``[...]``).
    Returns:
        :func:`composite`'s dict plus ``t [..., S_total]``.
    """
    batch_shape = origins.shape[:-1]
    t = stratified_samples(near, far, n_stratified, batch_shape, perturb, generator, origins.device)
    t = t.to(origins.dtype)
    if n_importance > 0:
        with torch.no_grad():
            sigma, values = field(_points(origins, directions, t))
            coarse = composite(sigma, values, t, t_far=far)
        t_fine = importance_samples(t, coarse["weights"], far, n_importance, perturb, generator)
        t = torch.sort(torch.cat([t, t_fine], dim=-1), dim=-1).values
    sigma, values = field(_points(origins, directions, t))
    result = composite(sigma, values, t, background=background, t_far=far)
    result["t"] = t
    return result


def render_in_chunks(render: Callable[[Tensor, Tensor], dict[str, Tensor]], origins: Tensor, directions: Tensor,
                     chunk: int) -> dict[str, Tensor]:
    """``render(origins, directions)`` on ``chunk`` rays at a time, to bound memory.

    Args:
        render: e.g. ``lambda o, d: render_rays(field, o, d, near, far)``.
        origins, directions: ``[..., R, 3]``, split along the ray axis ``R``.
    Returns:
        ``values [..., R, C]``, ``depth [..., R]`` and ``opacity [..., R]`` of all chunks, concatenated.
    """
    pieces = [render(origins[..., start:start + chunk, :], directions[..., start:start + chunk, :])
              for start in range(0, origins.shape[-2], chunk)]
    return {"values": torch.cat([piece["values"] for piece in pieces], dim=-2),
            "depth": torch.cat([piece["depth"] for piece in pieces], dim=-1),
            "opacity": torch.cat([piece["opacity"] for piece in pieces], dim=-1)}


def _points(origins: Tensor, directions: Tensor, t: Tensor) -> Tensor:
    """``x = o + t d``: ``[..., 3]`` rays and ``[..., S]`` depths to ``[..., S, 3]`` points."""
    return origins.unsqueeze(-2) + t.unsqueeze(-1) * directions.unsqueeze(-2)
