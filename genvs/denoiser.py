"""The EDM denoiser: k-diffusion's U-Net inside Karras et al.'s preconditioning, with presets.

GeNVS denoises a noisy target image ``x = y + sigma * n`` given a 16-channel feature image
rendered from the target camera; the features are concatenated to the U-Net's input channels
(``unet_cond``). EDM (Karras et al. 2022, table 1) wraps the raw network ``F`` as::

    D(x; sigma, c) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x; c_noise(sigma), c)
    c_skip = sd^2 / (sigma^2 + sd^2)      c_out = sigma * sd / sqrt(sigma^2 + sd^2)
    c_in   = 1 / sqrt(sigma^2 + sd^2)     c_noise = log(sigma) / 4

with ``sd = sigma_data`` (0.5 for images in [-1, 1]). ``k_diffusion.layers.Denoiser`` applies ``c_skip``, ``c_out``
and ``c_in`` (its ``get_scalings``); ``c_noise`` is computed inside k-diffusion's U-Net, from the ``sigma`` it is
given. Training draws ``ln(sigma) ~ N(noise_mean, noise_std^2)`` and minimises::

    L = E || F(c_in * x; sigma, c) - (y - c_skip * x) / c_out ||^2  =  E lambda(sigma) || D(x; sigma, c) - y ||^2

with ``lambda = 1 / c_out^2``, EDM's loss weighting.

Conditioning dropout: a fraction of the batch trains without its condition, so that one network is
both conditional and unconditional (classifier-free guidance). "Without" is the all-zero feature
image, :func:`null_condition`; the samplers in :mod:`genvs.sampling` use the same function. Zeros
need no random numbers at sampling time, and a real condition is hardly ever zero everywhere
(GeNVS's rendered features include a white background; lesson 03's condition has constant
channels of ones). The seed reimplementation used uniform noise instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import types
import warnings
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from genvs.config import from_preset
from genvs.seeding import draw, seeded_rng


def _import_k_diffusion():
    """``import k_diffusion``, whatever setuptools is installed.

    k-diffusion imports clip-anytorch, whose one use of setuptools is ``from pkg_resources import packaging``
    (to compare torch versions). setuptools 82 removed ``pkg_resources``; where it is missing, a module that holds
    just ``packaging`` stands in for it during this import and is removed afterwards, so genvs needs no
    particular setuptools (Colab's stays). Where ``pkg_resources`` exists, its deprecation warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        if importlib.util.find_spec("pkg_resources") is not None:  # setuptools < 82
            return importlib.import_module("k_diffusion")
        import packaging.version

        stand_in = types.ModuleType("pkg_resources")
        stand_in.packaging = packaging
        sys.modules["pkg_resources"] = stand_in
        try:
            return importlib.import_module("k_diffusion")
        finally:
            del sys.modules["pkg_resources"]


k_diffusion = _import_k_diffusion()
"""The k-diffusion package, imported once here (without its warnings) for every module of genvs."""

__all__ = [
    "DenoiserConfig",
    "PRESETS",
    "TRAINING_NOISE",
    "denoiser_config",
    "build_denoiser",
    "parameter_count",
    "null_condition",
    "sample_training_sigmas",
    "drop_condition",
    "TrainingNoise",
    "denoising_loss",
]


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture and training-noise settings of a conditional EDM denoiser.

    U-Net level ``i`` works at ``image_size / 2^i`` pixels with ``channels[i]`` channels,
    ``depths[i]`` residual blocks, and self-attention when ``self_attention[i]``.

    Attributes:
        image_size: side of the square images it is meant for (a multiple of ``2^(levels - 1)``).
        channels, depths, self_attention: one entry per U-Net level.
        image_channels: channels of the image being denoised (3, RGB).
        cond_channels: channels of the conditioning image (16 for GeNVS's rendered features).
        mapping_features: width of the noise-level embedding (k-diffusion's ``feats_in``).
        dropout: dropout rate inside residual blocks and attention (training only).
        sigma_data: standard deviation of the data, ``sd`` in the EDM formulas.
        noise_mean, noise_std: training noise levels, ``ln(sigma) ~ N(noise_mean, noise_std^2)``.
        cond_dropout: probability that a training sample sees :func:`null_condition` instead.
    """

    image_size: int
    channels: tuple[int, ...]
    depths: tuple[int, ...]
    self_attention: tuple[bool, ...]
    image_channels: int = 3
    cond_channels: int = 16
    mapping_features: int = 256
    dropout: float = 0.0
    sigma_data: float = 0.5
    noise_mean: float = -1.2
    noise_std: float = 1.2
    cond_dropout: float = 0.1

    def __post_init__(self):
        n_levels = len(self.channels)
        if not n_levels or len(self.depths) != n_levels or len(self.self_attention) != n_levels:
            raise ValueError(f"channels, depths and self_attention need one entry per U-Net level, got "
                             f"{self.channels}, {self.depths}, {self.self_attention}")
        if self.image_size % 2 ** (n_levels - 1):
            raise ValueError(f"image_size {self.image_size} must be a multiple of 2^{n_levels - 1} "
                             f"for a {n_levels}-level U-Net")
        for name in ("dropout", "cond_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def attention_resolutions(self) -> tuple[int, ...]:
        """Feature-map sides (pixels) at which the U-Net uses self-attention."""
        return tuple(self.image_size // 2**i for i, on in enumerate(self.self_attention) if on)


TRAINING_NOISE: dict[str, tuple[float, float]] = {
    "edm": (-1.2, 1.2),  # EDM's default (Karras et al. 2022)
    "genvs": (0.5, 1.4),  # the seed GeNVS reimplementation ("mid")
    "genvs_high": (1.0, 1.4),  # the seed GeNVS reimplementation ("high")
}
"""Named ``(noise_mean, noise_std)`` of the log-normal training noise distribution."""

PRESETS: dict[str, DenoiserConfig] = {
    # tests and GENVS_SMOKE=1: ~65k parameters
    "smoke": DenoiserConfig(image_size=16, channels=(16, 32), depths=(1, 1), self_attention=(False, True),
                            mapping_features=32),
    # lessons on a laptop CPU: ~3.5M parameters at 32x32 (also runs at 64x64)
    "cpu": DenoiserConfig(image_size=32, channels=(32, 64, 96, 128), depths=(2, 2, 2, 2),
                          self_attention=(False, False, True, True), mapping_features=128),
    # GeNVS as in the seed reimplementation: ~115M parameters, attention at 16^2 and 8^2
    "paper": DenoiserConfig(image_size=128, channels=(128, 128, 256, 512, 512), depths=(2, 2, 2, 4, 4),
                            self_attention=(False, False, False, True, True), dropout=0.05,
                            noise_mean=TRAINING_NOISE["genvs"][0], noise_std=TRAINING_NOISE["genvs"][1]),
}
"""Named denoiser configs; get one with :func:`denoiser_config`."""


def denoiser_config(preset: str, noise: str | None = None, **overrides) -> DenoiserConfig:
    """The config of preset ``preset``, with training noise ``noise`` (a :data:`TRAINING_NOISE` name) and overrides.

    Example: ``denoiser_config("cpu", noise="genvs", image_size=64, cond_dropout=0.2)``.
    """
    config = from_preset(PRESETS, preset, "denoiser")
    if noise is not None:
        if noise not in TRAINING_NOISE:
            raise ValueError(f"unknown training noise {noise!r}; valid names: {sorted(TRAINING_NOISE)}")
        overrides = {"noise_mean": TRAINING_NOISE[noise][0], "noise_std": TRAINING_NOISE[noise][1], **overrides}
    return dataclasses.replace(config, **overrides)


class _TrainingOnlyRate(nn.Module):
    """Stands in for the ``nn.Dropout`` of k-diffusion's attention layers.

    k-diffusion 0.1.1's attention passes ``dropout_p=self.dropout.p`` to
    ``scaled_dot_product_attention`` whatever the mode, so attention dropout stays on in eval
    mode; here ``p`` is the rate in training mode and 0 in eval mode.
    """

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    @property
    def p(self) -> float:
        return self.rate if self.training else 0.0


def _build_unet(config: DenoiserConfig) -> k_diffusion.layers.Denoiser:
    inner = k_diffusion.models.ImageDenoiserModelV1(
        c_in=config.image_channels,
        feats_in=config.mapping_features,
        depths=list(config.depths),
        channels=list(config.channels),
        self_attn_depths=list(config.self_attention),
        unet_cond_dim=config.cond_channels,
        dropout_rate=config.dropout,
    )
    for module in inner.modules():
        if isinstance(module, (k_diffusion.layers.SelfAttention2d, k_diffusion.layers.CrossAttention2d)):
            module.dropout = _TrainingOnlyRate(module.dropout.p)
    return k_diffusion.layers.Denoiser(inner, sigma_data=config.sigma_data)


def build_denoiser(config: DenoiserConfig, seed: int = 0) -> k_diffusion.layers.Denoiser:
    """``k_diffusion.layers.Denoiser(ImageDenoiserModelV1(...), sigma_data)`` for ``config``, on the CPU.

    Weights are initialised from ``seed`` without touching the global RNG. Call it as
    ``denoiser(x [B, C, H, W], sigma [B], unet_cond=c [B, cond_channels, H, W]) -> D(x; sigma, c)``;
    ``denoiser.loss(y, n, sigma, unet_cond=c)`` gives the per-sample EDM loss ``[B]``.
    Attention dropout is active in training mode only (see :class:`_TrainingOnlyRate`).
    """
    with seeded_rng(seed, torch.device("cpu")):
        return _build_unet(config)


def parameter_count(config: DenoiserConfig) -> int:
    """Number of trainable parameters of :func:`build_denoiser`'s model, counted on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in _build_unet(config).parameters())


def null_condition(cond: Tensor) -> Tensor:
    """The "no condition" stand-in for ``cond [B, C, H, W]``: zeros of the same shape.

    Used for conditioning dropout in training and for unconditional / guided sampling.
    """
    return torch.zeros_like(cond)


def sample_training_sigmas(n: int, mean: float, std: float, generator: torch.Generator,
                           device: torch.device | None = None) -> Tensor:
    """Training noise levels ``[n]``: ``sigma = exp(mean + std * z)``, ``z ~ N(0, 1)`` (log-normal)."""
    return (mean + std * draw(torch.randn, (n,), generator, device)).exp()


def drop_condition(cond: Tensor, fraction: float, generator: torch.Generator) -> Tensor:
    """``cond [B, C, H, W]`` with each sample replaced by :func:`null_condition` with probability ``fraction``."""
    dropped = draw(torch.rand, (cond.shape[0],), generator, cond.device) < fraction
    return torch.where(dropped[:, None, None, None], null_condition(cond), cond)


class TrainingNoise(Protocol):
    """What :func:`denoising_loss` reads of a config: a :class:`DenoiserConfig` (GeNVS's denoiser) or a
    :class:`genvs.controlnet.FitConfig` (lesson 07's ControlNet)."""

    noise_mean: float
    noise_std: float
    cond_dropout: float


def denoising_loss(denoiser: k_diffusion.layers.Denoiser, images: Tensor, cond: Tensor, config: TrainingNoise,
                   generator: torch.Generator) -> Tensor:
    """Mean EDM loss of one batch (see the module docstring), with conditioning dropout.

    Draws, in this order from ``generator``: ``sigma [B] ~ exp(N(noise_mean, noise_std^2))``,
    noise ``n [B, C, H, W] ~ N(0, I)``, and which samples lose their condition (``cond_dropout``).

    Args:
        denoiser: ``D(x, sigma, unet_cond=c)`` wrapped by ``k_diffusion.layers.Denoiser`` (its ``loss``).
        images: clean targets ``y [B, C, H, W]`` in [-1, 1].
        cond: conditioning ``[B, cond_channels, H, W]``.
    Returns:
        scalar ``mean_b lambda(sigma_b) * mean_pixels (D(y_b + sigma_b n_b; sigma_b, c_b) - y_b)^2``.
    """
    sigma = sample_training_sigmas(images.shape[0], config.noise_mean, config.noise_std, generator, images.device)
    noise = draw(torch.randn, tuple(images.shape), generator, images.device)
    cond = drop_condition(cond, config.cond_dropout, generator)
    return denoiser.loss(images, noise, sigma, unet_cond=cond).mean()
