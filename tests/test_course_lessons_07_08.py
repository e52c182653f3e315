"""Lessons 07 and 08's checkers: each passes its solution and a correct implementation written differently, and
catches typical mistakes, written here independently of the checkers' own list, with a sentence that names them;
each oracle is the package's (diffusers') computation."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from genvs.controlnet import base_config, build_base, build_controlnet
from genvs.course.checking import check
from genvs.course.lesson07 import CONTROLLED_SKIP
from genvs.course.lesson08 import CROSS_VIEW_ATTENTION, PLUECKER_RAYS
from genvs.multiview import CrossViewAttnProcessor, ViewGroups

EXERCISES = [CONTROLLED_SKIP, CROSS_VIEW_ATTENTION, PLUECKER_RAYS]


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_the_solution_passes(exercise):
    result = check(exercise, exercise.solution)
    assert result.passed and result.written, result.message


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_every_listed_mistake_is_told_apart_by_its_own_sentence(exercise):
    assert len(exercise.mistakes) >= 3
    for mistake in exercise.mistakes:  # differs from the oracle on a case, and from every mistake tried before it
        assert check(exercise, mistake.wrong).message == f"{exercise.name}: {mistake.message}"


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_an_untouched_stub_gets_the_hint(exercise):
    def stub(*args):
        raise NotImplementedError("your turn")

    result = check(exercise, stub)
    assert not result.passed and not result.written and exercise.hint in result.message


# -- lesson 07: the residual path of ControlNet ----------------------------------------------------------------------


def one_by_one(features, weight, bias=None, transposed=False):
    """A 1x1 convolution written as a sum over input channels: ``sum_i W[o, i] x_i (+ b_o)`` at every pixel."""
    matrix = weight[:, :, 0, 0]
    mixed = torch.einsum("io,bihw->bohw" if transposed else "oi,bihw->bohw", matrix, features)
    return mixed if bias is None else mixed + bias[:, None, None]


def test_controlled_skip_mistakes_are_named():
    def gated(skip, control, weight, bias, scale):  # the ControlNet as a gate on the base
        return skip * scale * one_by_one(control, weight, bias)

    def base_through_the_convolution(skip, control, weight, bias, scale):
        conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], 1)
        conv.load_state_dict({"weight": weight, "bias": bias})
        return skip + scale * conv(skip).detach()

    def scale_in_the_weights_and_after(skip, control, weight, bias, scale):
        return skip + scale * F.conv2d(control, scale * weight, scale * bias)

    def unscaled(skip, control, weight, bias, scale):
        return skip + one_by_one(control, weight, bias)

    def without_bias(skip, control, weight, bias, scale):
        return torch.addcmul(skip, torch.tensor(scale), one_by_one(control, weight))

    def rows_for_columns(skip, control, weight, bias, scale):
        return skip + scale * one_by_one(control, weight, bias, transposed=True)

    named = {gated: "multiplies the base's features", base_through_the_convolution: "reads the base's features",
             scale_in_the_weights_and_after: "applied twice", unscaled: "conditioning scale is missing",
             without_bias: "bias is missing", rows_for_columns: "weight is transposed"}
    for wrong, phrase in named.items():
        result = check(CONTROLLED_SKIP, wrong)
        assert not result.passed and phrase in result.message, (wrong.__name__, result.message)


def test_controlled_skip_passes_a_sum_over_channels():
    def einsum_form(skip, control, weight, bias, scale):
        return skip + scale * one_by_one(control, weight, bias)

    assert check(CONTROLLED_SKIP, einsum_form).passed


def test_controlled_skip_names_a_residual_on_the_wrong_level_by_its_shape():
    result = check(CONTROLLED_SKIP, lambda skip, control, weight, bias, scale: F.avg_pool2d(skip, 1, 2))
    assert not result.passed and "shape (2, 4, 3, 3), expected (2, 4, 5, 6)" in result.message


@torch.no_grad()
def test_the_controlled_skip_oracle_is_what_diffusers_adds_to_the_base():
    """Run a real ControlNet (trained-looking: random zero convolutions) beside its base: each skip and the mid block's
    output, as the base's up blocks receive them, is the oracle of the base's own and the ControlNet's features."""
    base = build_base(base_config("smoke"), seed=0).eval()
    controlnet = build_controlnet(base).eval()
    blocks = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    generator = torch.Generator().manual_seed(0)
    for block in blocks:
        block.weight.copy_(0.3 * torch.randn(block.weight.shape, generator=generator))
        block.bias.copy_(0.3 * torch.randn(block.bias.shape, generator=generator))
    x, render = torch.randn(1, 3, 8, 8, generator=generator), torch.randn(1, 16, 8, 8, generator=generator)
    timestep, scale = torch.tensor([40.0]), 0.5

    features = []
    hooks = [block.register_forward_pre_hook(lambda module, args: features.append(args[0])) for block in blocks]
    down, mid = controlnet(x, timestep, encoder_hidden_states=None, controlnet_cond=render,
                           class_labels=torch.zeros(1, dtype=torch.long), conditioning_scale=scale, return_dict=False)
    for hook in hooks:
        hook.remove()

    def up_block_inputs(**residuals):  # the skips in the down path's order, then the mid block's output
        seen = []
        hooks = [block.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append((kwargs["hidden_states"], kwargs["res_hidden_states_tuple"])),
            with_kwargs=True) for block in base.up_blocks]
        base(x, timestep, encoder_hidden_states=None, **residuals)
        for hook in hooks:
            hook.remove()
        return [skip for _, skips in reversed(seen) for skip in skips] + [seen[0][0]]

    plain = up_block_inputs()
    steered = up_block_inputs(down_block_additional_residuals=down, mid_block_additional_residual=mid)
    assert len(plain) == len(steered) == len(features) == len(blocks)
    for skip, control, block, received in zip(plain, features, blocks, steered):
        expected = CONTROLLED_SKIP.oracle(skip, control, block.weight, block.bias, scale)
        assert not torch.allclose(received, skip)  # the residual is there, and the oracle adds it
        assert torch.allclose(received, expected, atol=1e-5), float((received - expected).abs().max())


# -- lesson 08: cross-view attention ---------------------------------------------------------------------------------


def sdpa(q, k, v, scale=None):
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def test_cross_view_attention_mistakes_are_named():
    def views_alone(q, k, v, views):
        return sdpa(q, k, v)

    def one_pool(q, k, v, views):
        return sdpa(q.flatten(0, 1)[None], k.flatten(0, 1)[None], v.flatten(0, 1)[None]).view(q.shape)

    def batch_read_view_major(q, k, v, views):  # as if the batch were [V, B]: views of different objects meet
        batch, n, c = q.shape
        join = lambda x: x.view(views, batch // views, n, c).permute(1, 0, 2, 3).flatten(1, 2)  # noqa: E731
        out = sdpa(join(q), join(k), join(v)).view(batch // views, views, n, c)
        return out.permute(1, 0, 2, 3).flatten(0, 1)

    def interleaved(q, k, v, views):  # tokens of a group ordered (N, V), put back as if they were (V, N)
        batch, n, c = q.shape
        join = lambda x: x.view(batch // views, views, n, c).transpose(1, 2).flatten(1, 2)  # noqa: E731
        return sdpa(join(q), join(k), join(v)).view(batch, n, c)

    def no_temperature(q, k, v, views):
        batch, n, c = q.shape
        join = lambda x: x.view(batch // views, views * n, c)  # noqa: E731
        return sdpa(join(q), join(k), join(v), scale=1.0).view(batch, n, c)

    named = {views_alone: "only over its own tokens", one_pool: "over the whole batch",
             batch_read_view_major: "grouped along the wrong axis", interleaved: "wrong order",
             no_temperature: "not scaled"}
    for wrong, phrase in named.items():
        result = check(CROSS_VIEW_ATTENTION, wrong)
        assert not result.passed and phrase in result.message, (wrong.__name__, result.message)


def test_cross_view_attention_left_grouped_is_named_by_its_shape():
    def never_ungrouped(q, k, v, views):
        batch, n, c = q.shape
        return sdpa(*(x.reshape(batch // views, views * n, c) for x in (q, k, v)))

    result = check(CROSS_VIEW_ATTENTION, never_ungrouped)
    assert not result.passed and "shape (2, 12, 8), expected (6, 4, 8)" in result.message


def test_cross_view_attention_passes_a_loop_over_objects():
    def object_by_object(q, k, v, views):
        outputs = []
        for start in range(0, q.shape[0], views):  # the views of one object: rows start .. start + V - 1
            qs, ks, vs = (x[start:start + views].flatten(0, 1) for x in (q, k, v))  # [V * N, C]
            weights = torch.softmax(qs @ ks.T / qs.shape[-1] ** 0.5, dim=-1)
            outputs.append((weights @ vs).unflatten(0, (views, -1)))
        return torch.cat(outputs)

    assert check(CROSS_VIEW_ATTENTION, object_by_object).passed


@torch.no_grad()
def test_the_cross_view_oracle_is_the_processor_on_a_real_attention_layer():
    """The oracle's stand-in layer (projections returning q, k, v) against diffusers' ``Attention`` with random
    projections: the processor's output is the oracle of the projected tokens, projected out."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        attn = Attention(query_dim=8, heads=1, dim_head=8, bias=True)
    hidden = torch.randn(6, 8, 2, 3, generator=torch.Generator().manual_seed(1))  # 2 objects x 3 views, 2x3 pixels
    groups = ViewGroups()
    groups.views = 3
    out = CrossViewAttnProcessor(groups)(attn, hidden)
    tokens = hidden.flatten(2).transpose(1, 2)  # [6, 6 tokens, 8]
    attended = CROSS_VIEW_ATTENTION.oracle(attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens), 3)
    expected = attn.to_out[0](attended).transpose(1, 2).reshape(hidden.shape)
    assert torch.allclose(out, expected, atol=1e-5)


# -- lesson 08: Pluecker rays ----------------------------------------------------------------------------------------


def rays_by_hand(K, c2w, height, width, unit=True, moment_sign=1.0, direction_first=True, channels_last=False):
    """Pluecker rays from first principles (no genvs.cameras): pixel centres, ``d = R K^-1 (u, v, 1)``, ``o = t``;
    the keyword arguments make the typical mistakes."""
    rows, columns = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pixels = torch.stack([columns, rows, torch.ones_like(rows)], dim=-1)  # [H, W, 3]
    through = torch.linalg.inv(K) @ pixels.flatten(0, 1).T  # [..., 3, H * W]
    d = (c2w[..., :3, :3] @ through).transpose(-1, -2).unflatten(-2, (height, width))  # [..., H, W, 3]
    if unit:
        d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    o = c2w[..., None, None, :3, 3].expand_as(d)
    m = moment_sign * torch.stack([o[..., 1] * d[..., 2] - o[..., 2] * d[..., 1],
                                   o[..., 2] * d[..., 0] - o[..., 0] * d[..., 2],
                                   o[..., 0] * d[..., 1] - o[..., 1] * d[..., 0]], dim=-1)  # o x d
    rays = torch.cat([d, m] if direction_first else [m, d], dim=-1)
    return rays if channels_last else rays.permute(*range(rays.dim() - 3), -1, -3, -2)


def test_pluecker_rays_mistakes_are_named():
    named = {"direction is not normalised": dict(unit=False), "sign is flipped": dict(moment_sign=-1.0),
             "halves are swapped": dict(direction_first=False)}
    for phrase, mistake in named.items():
        result = check(PLUECKER_RAYS, lambda K, c2w, height, width: rays_by_hand(K, c2w, height, width, **mistake))
        assert not result.passed and phrase in result.message, (phrase, result.message)


def test_pluecker_rays_channels_last_is_named_by_its_shape():
    result = check(PLUECKER_RAYS, lambda K, c2w, height, width: rays_by_hand(K, c2w, height, width,
                                                                            channels_last=True))
    assert not result.passed and "shape (2, 4, 5, 6), expected (2, 6, 4, 5)" in result.message


def test_pluecker_rays_passes_rays_by_hand():
    assert check(PLUECKER_RAYS, rays_by_hand).passed
