"""Lesson 08's "your turn": cross-view attention's grouping of views, and Pluecker rays.

**Cross-view attention** (MVDream, Viewset Diffusion; :class:`genvs.multiview.CrossViewAttnProcessor`): a batch
holds ``V`` consecutive views per object (object-major, ``[B, V]`` flattened to ``B * V``). The tokens of the views
of one object are joined before attending, so that every token attends over all the views of its object and never
over another object's, and are put back afterwards::

    q, k, v: [B * V, N, C] -> [B, V * N, C]      softmax(q k^T / sqrt(d)) v      -> back to [B * V, N, C]

with ``N = H W`` tokens per view and one head, so ``d = C``.

The oracle is the package's processor itself, on an attention layer whose projections return the given ``q``, ``k``,
``v`` (one head) and whose output projection is the identity.

**Pluecker rays** (Pluecker 1865; Light Field Networks, Sitzmann et al. 2021): the ray through a pixel, from the
camera centre ``o`` along the unit direction ``d``, is named by six numbers, ``(d, o x d)``; the moment ``o x d`` is
the same for every point of the ray. The oracle is :func:`genvs.cameras.pluecker_rays` (channels first,
``[..., 6, H, W]``).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genvs.cameras import look_at, make_intrinsics, pixel_rays, pluecker_rays
from genvs.course.checking import Case, Exercise, Mistake
from genvs.multiview import CrossViewAttnProcessor, ViewGroups

__all__ = ["CROSS_VIEW_ATTENTION", "PLUECKER_RAYS"]


# -- cross-view attention -----------------------------------------------------------------------------------------


def package_cross_view_attention(q: Tensor, k: Tensor, v: Tensor, views: int) -> Tensor:
    """:class:`genvs.multiview.CrossViewAttnProcessor` with ``groups.views = views`` on a one-head attention layer
    whose projections return ``q``, ``k``, ``v [B * V, N, C]`` and whose output projection is the identity; the
    ``N`` tokens of a view are an ``N x 1`` feature map. Returns ``[B * V, N, C]``."""
    batch, tokens, channels = q.shape
    layer = SimpleNamespace(group_norm=None, spatial_norm=None, norm_q=None, heads=1, residual_connection=False,
                            rescale_output_factor=1.0, to_q=lambda _: q, to_k=lambda _: k, to_v=lambda _: v,
                            to_out=[nn.Identity(), nn.Identity()])
    groups = ViewGroups()
    groups.views = views
    attended = CrossViewAttnProcessor(groups)(layer, q.new_zeros(batch, channels, tokens, 1))  # [B * V, C, N, 1]
    return attended.flatten(2).transpose(1, 2)


def attention_solution(q: Tensor, k: Tensor, v: Tensor, views: int) -> Tensor:
    """Cross-view attention of ``q, k, v [B * V, N, C]`` (the ``views`` views of an object consecutive):
    ``softmax(q k^T / sqrt(d)) v`` (one head, ``d = C``) over the ``V * N`` tokens of each object; returns
    ``[B * V, N, C]``."""
    batch, tokens, channels = q.shape
    objects = batch // views
    grouped = [x.reshape(objects, views * tokens, channels) for x in (q, k, v)]   # [B, V * N, C]: an object's views
    out = torch.nn.functional.scaled_dot_product_attention(*grouped)              # softmax(q k^T / sqrt(d)) v
    return out.reshape(batch, tokens, channels)                                   # back to [B * V, N, C]


def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over the tokens (axis -2) of ``q, k, v [..., tokens, d]``."""
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v


def per_view(q, k, v, views):
    return attend(q, k, v)


def whole_batch(q, k, v, views):
    batch, tokens, channels = q.shape
    return attend(*(x.reshape(1, batch * tokens, channels) for x in (q, k, v))).reshape(batch, tokens, channels)


def view_major(q, k, v, views):
    batch, tokens, channels = q.shape
    objects = batch // views

    def group(x):  # [V, B] instead of [B, V]: the i-th view of every object together
        return x.reshape(views, objects, tokens, channels).transpose(0, 1).reshape(objects, -1, channels)

    out = attend(group(q), group(k), group(v)).reshape(objects, views, tokens, channels)
    return out.transpose(0, 1).reshape(batch, tokens, channels)


def tokens_transposed(q, k, v, views):
    batch, tokens, channels = q.shape
    objects = batch // views

    def group(x):  # [B, N, V] order inside a group, and not undone on the way back
        return x.reshape(objects, views, tokens, channels).transpose(1, 2).reshape(objects, -1, channels)

    return attend(group(q), group(k), group(v)).reshape(batch, tokens, channels)


def unscaled(q, k, v, views):
    return attention_solution(q * q.shape[-1] ** 0.5, k, v, views)


def softmax_over_queries(q, k, v, views):
    batch, tokens, channels = q.shape
    grouped = [x.reshape(batch // views, views * tokens, channels) for x in (q, k, v)]
    scores = grouped[0] @ grouped[1].transpose(-1, -2) / channels ** 0.5
    return (torch.softmax(scores, dim=-2) @ grouped[2]).reshape(batch, tokens, channels)


def attention_cases(generator: torch.Generator) -> list[Case]:
    def tokens(objects: int, views: int, n: int, channels: int, scale: float = 1.0) -> tuple:
        return tuple(torch.randn(objects * views, n, channels, generator=generator) * scale for _ in range(3))

    q, k, v = tokens(2, 3, 4, 8)
    return [Case("2 objects x 3 views of 4 tokens of 8 channels", (*tokens(2, 3, 4, 8, 1.5), 3)),
            Case("3 objects x 2 views with sharp scores", (*tokens(3, 2, 5, 4, 2.5), 2)),
            Case("one object of 4 views", (*tokens(1, 4, 3, 8), 4)),
            Case("one view per object (V = 1: ordinary self-attention)", (*tokens(3, 1, 6, 8), 1)),
            Case("zero keys (each token takes the mean of its object's values)", (q, torch.zeros_like(k), v, 3))]


CROSS_VIEW_ATTENTION = Exercise(
    name="cross_view_attention", lesson="08", oracle=package_cross_view_attention, cases=attention_cases,
    solution=attention_solution,
    hint="the batch is object-major ([B, V] flattened), so x.reshape(B, V * N, C) joins an object's views; attend "
         "(softmax(q k^T / sqrt(d)) v with d = C, or torch.nn.functional.scaled_dot_product_attention), then "
         "reshape back to [B * V, N, C].",
    mistakes=(
        Mistake(per_view, "each view attends only over its own tokens: join the V views of an object first, "
                          "[B * V, N, C] -> [B, V * N, C], so that a token sees its object's other views."),
        Mistake(whole_batch, "the tokens attend over the whole batch, other objects' views included: group them "
                             "per object, [B, V * N, C], so that objects never meet."),
        Mistake(view_major, "the views are grouped along the wrong axis, which mixes objects: the batch is "
                            "object-major (the V views of an object are consecutive), so x.reshape(B, V * N, C), "
                            "not through [V, B, N, C]."),
        Mistake(tokens_transposed, "the tokens come back in the wrong order (N and V swapped on one side): "
                                   "ungroup exactly as you grouped, [B, V * N, C] -> [B * V, N, C]."),
        Mistake(unscaled, "the scores are not scaled: softmax(q k^T / sqrt(d)) v, with d = C the channels of the "
                          "head."),
        Mistake(softmax_over_queries, "the softmax runs over the queries: each query's scores are normalised over "
                                      "the keys (the last axis)."),
    ))


# -- Pluecker rays ------------------------------------------------------------------------------------------------


def rays_solution(K: Tensor, c2w: Tensor, height: int, width: int) -> Tensor:
    """Pluecker coordinates ``(d, o x d)`` ``[..., 6, H, W]`` of the ray through every pixel centre, for intrinsics
    ``K [..., 3, 3]`` and poses ``c2w [..., 4, 4]``: ``d`` the unit direction, ``o`` the camera centre."""
    origins, directions = pixel_rays(K, c2w, height, width)    # o and R K^-1 (u, v, 1): [..., H, W, 3] each
    d = directions / directions.norm(dim=-1, keepdim=True)      # d: the unit direction
    moment = torch.linalg.cross(origins, d, dim=-1)             # m = o x d
    return torch.cat([d, moment], dim=-1).movedim(-1, -3)       # (d, o x d), channels first: [..., 6, H, W]


def unit(directions: Tensor) -> Tensor:
    return F.normalize(directions, dim=-1)


def channels_first(rays: Tensor) -> Tensor:
    return rays.movedim(-1, -3)


def not_normalised(K, c2w, height, width):
    o, d = pixel_rays(K, c2w, height, width)
    return channels_first(torch.cat([d, torch.linalg.cross(o, d, dim=-1)], -1))


def moment_of_raw_direction(K, c2w, height, width):
    o, d = pixel_rays(K, c2w, height, width)
    return channels_first(torch.cat([unit(d), torch.linalg.cross(o, d, dim=-1)], -1))


def moment_flipped(K, c2w, height, width):
    o, d = pixel_rays(K, c2w, height, width)
    return channels_first(torch.cat([unit(d), torch.linalg.cross(unit(d), o, dim=-1)], -1))


def halves_swapped(K, c2w, height, width):
    o, d = pixel_rays(K, c2w, height, width)
    return channels_first(torch.cat([torch.linalg.cross(o, unit(d), dim=-1), unit(d)], -1))


def origin_for_direction(K, c2w, height, width):
    o, d = pixel_rays(K, c2w, height, width)
    return channels_first(torch.cat([o, torch.linalg.cross(o, unit(d), dim=-1)], -1))


def ray_cases(generator: torch.Generator) -> list[Case]:
    def cameras(*shape: int) -> tuple[Tensor, Tensor]:
        """Random intrinsics ``[*shape, 3, 3]`` and cameras ``[*shape, 4, 4]`` around the origin, looking at it."""
        eye = torch.randn(*shape, 3, generator=generator) * 1.5
        eye[..., 2] = eye[..., 2].abs() + 0.5  # above the ground: never looking along +-z (look_at's up)
        focal = 3 + 4 * torch.rand(*shape, generator=generator)
        K = make_intrinsics(1.0, 0.0, 0.0).expand(*shape, 3, 3).clone()
        K[..., 0, 0], K[..., 1, 1] = focal, focal
        K[..., 0, 2], K[..., 1, 2] = 2.5, 2.0
        return K, look_at(eye, torch.zeros(3))

    K, c2w = cameras(2)
    at_origin = c2w.clone()
    at_origin[:, :3, 3] = 0
    centred = make_intrinsics(2.0, 0.5, 0.5)
    K_grid, c2w_grid = cameras(2, 3)
    return [Case("2 random cameras at 4x5 pixels", (K, c2w, 4, 5)),
            Case("a 2 x 3 grid of cameras (two leading axes) at 4x5 pixels", (K_grid, c2w_grid, 4, 5)),
            Case("2 cameras at the world origin (zero moments)", (K, at_origin, 4, 5)),
            Case("a one-pixel image: its ray is the optical axis",
                 (centred, look_at(torch.tensor([2.0, 1.0, 1.0]), torch.zeros(3)), 1, 1))]


PLUECKER_RAYS = Exercise(
    name="pluecker_rays", lesson="08", oracle=pluecker_rays, cases=ray_cases, solution=rays_solution,
    hint="o, d = genvs.cameras.pixel_rays(K, c2w, height, width) ([..., H, W, 3], d not unit); normalise d; the "
         "moment is o x d (torch.linalg.cross(o, d, dim=-1)); concatenate (d, o x d) on the last axis, then move "
         "it to the channels' place, [..., 6, H, W].",
    mistakes=(
        Mistake(not_normalised, "the direction is not normalised: d is the unit direction, d / |d|, in both "
                                "halves, (d, o x d)."),
        Mistake(moment_of_raw_direction, "the moment uses the unnormalised direction: m = o x d with the unit d."),
        Mistake(moment_flipped, "the moment's sign is flipped (d x o): the moment is o x d, origin first."),
        Mistake(halves_swapped, "the two halves are swapped: the direction d comes first (channels 0-2), then the "
                                "moment o x d (3-5)."),
        Mistake(origin_for_direction, "the origin stands where the direction belongs: the first three channels "
                                      "are the unit direction d, not the camera centre o."),
    ))
