"""Lesson 07's "your turn": the zero-initialised residual path of ControlNet (Zhang et al. 2023).

The ControlNet's features ``r`` at one level of the encoder pass through a 1x1 convolution ``(W, b)`` (a *zero
convolution*: ``W = 0, b = 0`` at initialisation), are scaled by the conditioning scale ``s`` and added to the frozen
base U-Net's skip features ``h`` at the same level (or its mid-block output)::

    h' = h + s (W r + b)        (W r)_o = sum_i W[o, i] r_i  at every pixel

so at step 0, ``W = b = 0``, the base's features pass unchanged and the route is the base, to the last bit.

The oracle is what diffusers does in :func:`genvs.controlnet.build_controlnet`'s networks: ``ControlNetModel.forward``
applies ``controlnet_down_blocks[i]`` (an ``nn.Conv2d`` with ``kernel_size=1``) and multiplies by
``conditioning_scale``; ``UNet2DConditionModel.forward`` adds the result to its skip
(``down_block_res_sample + down_block_additional_residual``; the mid block likewise).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genvs.course.checking import Case, Exercise, Mistake

__all__ = ["CONTROLLED_SKIP"]


def package_controlled_skip(skip: Tensor, control: Tensor, weight: Tensor, bias: Tensor,
                            conditioning_scale: float) -> Tensor:
    """diffusers' residual path for one skip: ``skip [B, C, H, W]`` of the base, ``control [B, C, H, W]`` of the
    ControlNet, the 1x1 convolution's ``weight [C, C, 1, 1]`` and ``bias [C]`` -> ``[B, C, H, W]``."""
    residual = F.conv2d(control, weight, bias) * conditioning_scale  # ControlNetModel: controlnet_block, scaling
    return skip + residual  # UNet2DConditionModel: down_block_res_sample + down_block_additional_residual


def solution(skip: Tensor, control: Tensor, weight: Tensor, bias: Tensor, conditioning_scale: float) -> Tensor:
    """The base's ``skip [B, C, H, W]`` plus the zero convolution ``(weight [C, C, 1, 1], bias [C])`` of the
    ControlNet's ``control [B, C, H, W]``, scaled: ``h + s (W r + b)`` ``[B, C, H, W]``."""
    residual = torch.nn.functional.conv2d(control, weight, bias)   # W r + b, a 1x1 convolution of the ControlNet's
    return skip + conditioning_scale * residual                    # h + s (W r + b): the base plus a scaled residual


def multiplied(skip, control, weight, bias, conditioning_scale):
    return skip * (conditioning_scale * F.conv2d(control, weight, bias))


def convolves_the_base(skip, control, weight, bias, conditioning_scale):
    return skip + conditioning_scale * F.conv2d(skip, weight, bias)


def convolves_the_sum(skip, control, weight, bias, conditioning_scale):
    return conditioning_scale * F.conv2d(skip + control, weight, bias)


def scaled_twice(skip, control, weight, bias, conditioning_scale):
    return skip + conditioning_scale ** 2 * F.conv2d(control, weight, bias)


def not_scaled(skip, control, weight, bias, conditioning_scale):
    return skip + F.conv2d(control, weight, bias)


def scales_the_base(skip, control, weight, bias, conditioning_scale):
    return conditioning_scale * (skip + F.conv2d(control, weight, bias))


def no_bias(skip, control, weight, bias, conditioning_scale):
    return skip + conditioning_scale * F.conv2d(control, weight)


def transposed_weight(skip, control, weight, bias, conditioning_scale):
    return skip + conditioning_scale * F.conv2d(control, weight.transpose(0, 1), bias)


def features(generator: torch.Generator, batch: int, channels: int, height: int, width: int) -> tuple:
    """Random ``skip``, ``control`` ``[B, C, H, W]``, ``weight [C, C, 1, 1]`` and ``bias [C]``, as after training."""
    skip = torch.randn(batch, channels, height, width, generator=generator)
    control = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(channels, channels, 1, 1, generator=generator) * 0.5
    bias = torch.randn(channels, generator=generator) * 0.5
    return skip, control, weight, bias


def cases(generator: torch.Generator) -> list[Case]:
    level = features(generator, 2, 4, 5, 6)
    halved = features(generator, 2, 4, 5, 6)
    mid = features(generator, 3, 8, 1, 1)
    skip, control, weight, bias = features(generator, 2, 4, 3, 3)
    return [Case("2 random skips of 4 channels at 5x6 pixels (scale 1)", (*level, 1.0)),
            Case("2 random skips at conditioning scale 0.5", (*halved, 0.5)),
            Case("a mid block of 8 channels at 1x1 pixel (scale 1.5)", (*mid, 1.5)),
            Case("step 0 (zero convolution: W = 0, b = 0)",
                 (skip, control, torch.zeros_like(weight), torch.zeros_like(bias), 1.0)),
            Case("conditioning scale 0 (the ControlNet switched off)", (skip, control, weight, bias, 0.0))]


CONTROLLED_SKIP = Exercise(
    name="controlled_skip", lesson="07", oracle=package_controlled_skip, cases=cases, solution=solution,
    hint="the residual is a 1x1 convolution of the ControlNet's features, W r + b "
         "(torch.nn.functional.conv2d(control, weight, bias)); scale it by s and add it to the base's skip: "
         "h + s (W r + b).",
    mistakes=(
        Mistake(multiplied, "the residual multiplies the base's features: ControlNet adds it, h + s (W r + b), so "
                            "that a zero convolution leaves the base unchanged."),
        Mistake(convolves_the_base, "the zero convolution reads the base's features: it reads the ControlNet's, "
                                    "h + s (W r + b) with r the ControlNet's features."),
        Mistake(convolves_the_sum, "the zero convolution is applied to the sum, which loses the base at step 0: "
                                   "convolve the ControlNet's features alone and add the result to the base's."),
        Mistake(scaled_twice, "the conditioning scale is applied twice (s^2): the residual is scaled once, "
                              "h + s (W r + b)."),
        Mistake(not_scaled, "the conditioning scale is missing: the residual is scaled by s, h + s (W r + b)."),
        Mistake(scales_the_base, "the conditioning scale multiplies the base's features too: it scales the "
                                 "residual only, h + s (W r + b)."),
        Mistake(no_bias, "the zero convolution's bias is missing: the residual is W r + b."),
        Mistake(transposed_weight, "the 1x1 convolution's weight is transposed: output channel o is "
                                   "sum_i W[o, i] r_i (weight [C_out, C_in, 1, 1])."),
    ))
