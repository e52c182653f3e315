"""The ControlNet route (lesson 07): a pretrained image denoiser, kept frozen, steered by GeNVS's rendered features.

GeNVS trains its denoiser with the 16-channel feature render concatenated to the noisy image. The ControlNet route
(Zhang et al. 2023) keeps a denoiser trained on images alone (the *base*, here a small pixel-space diffusers
``UNet2DConditionModel`` trained unconditionally on synthetic cars) and trains a copy of its encoder half, the
ControlNet (``diffusers.ControlNetModel.from_unet``), that reads the render and adds a residual to each of the base's
skip connections and to its mid block, through zero-initialised convolutions: at step 0 the sum is the base's
prediction exactly, and training moves it only as far as the loss asks.

Both networks sit inside EDM's preconditioning (Karras et al. 2022; :mod:`genvs.denoiser`), with ``F`` the base
U-Net plus the ControlNet's residuals::

    D(x; sigma, c) = c_skip x + c_out F(c_in x; t(sigma), c)       t(sigma) = TIMESTEP_SCALE * ln(sigma) / 4

``ln(sigma) / 4`` is EDM's ``c_noise``; :data:`TIMESTEP_SCALE` puts it on the scale of DDPM's 0-999 timesteps that
diffusers' sinusoidal embedding is made for. ``k_diffusion.layers.Denoiser`` implements the wrapper, so
:func:`genvs.sampling.sample_images`, its samplers, seeds and named modes run this route unchanged, and
``denoiser.loss`` is GeNVS's EDM loss.

Class input (the seed reimplementation's): an embedding of 2 classes added to the ControlNet's timestep embedding,
0 = conditioned on the render, 1 = unconditional. A class-1 sample sees :func:`genvs.denoiser.null_condition` (the
all-zero render) whatever render it was given, so its output cannot depend on the render. Without explicit labels the
class is read from the condition: 1 where it is the null condition, else 0; so training's conditioning dropout
(:func:`genvs.denoiser.drop_condition`) and classifier-free guidance in :func:`genvs.sampling.sample_images` (which
passes the null condition for its unconditional half) give the class with no extra argument.

The conditioning embedding keeps the render at the denoiser's resolution (one 3x3 convolution, no stride-2 steps:
our pixel-space base has no VAE that shrinks the image); the base has a mid block, so the ControlNet passes a
mid-block residual and diffusers takes the residuals for a ControlNet's, not a T2I-Adapter's.

Trained networks are diffusers folders (``config.json`` + ``diffusion_pytorch_model.fp16.safetensors``, no pickle),
loaded offline with ``from_pretrained``; the shipped ones are :func:`genvs.artefacts.shipped` ``("controlnet_base")``
and ``("controlnet")``. Training runs on :class:`genvs.fitting.Fitter` (:func:`fit_network`), whose checkpoints, to
resume from, go to the folder's ``checkpoints/``.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from genvs.artefacts import ARTEFACTS, shipped_path
from genvs.config import from_preset
from genvs.data.batches import StepBatches
from genvs.data.srn import SRNDataset
from genvs.denoiser import denoising_loss, k_diffusion, null_condition, sample_training_sigmas
from genvs.fitting import FitSettings, Fitter, read_log
from genvs.seeding import draw, seeded_rng

with warnings.catch_warnings():  # diffusers warns about optional packages it does not find
    warnings.simplefilter("ignore")
    from diffusers import ControlNetModel, UNet2DConditionModel

__all__ = ["BaseConfig", "BASE_PRESETS", "base_config", "FitConfig", "BASE_FIT", "CONTROLNET_FIT", "TIMESTEP_SCALE",
           "GUIDANCE_SCALE", "build_base", "build_controlnet", "EDMUNet",
           "edm_denoiser", "fit_network", "train_base", "train_controlnet", "save_pretrained", "load_base",
           "load_controlnet", "controlnet_route"]

TIMESTEP_SCALE = 250.0
"""``t = TIMESTEP_SCALE * c_noise``: EDM's ``c_noise = ln(sigma) / 4`` (-1.6 to 1.1 for sigma 0.002 to 80) spread over
-390 to 275, a range like DDPM's timesteps, so all frequencies of diffusers' sinusoidal embedding vary with sigma."""
WEIGHTS_VARIANT = "fp16"
UNCONDITIONAL_CLASS = 1
GUIDANCE_SCALE = 2.0
"""The route's default classifier-free guidance scale ``w`` (the seed reimplementation found 2 best)."""


@dataclass(frozen=True)
class BaseConfig:
    """The base U-Net: a pixel-space ``UNet2DConditionModel`` without cross-attention.

    Level ``i`` works at ``image_size / 2^i`` pixels with ``channels[i]`` channels and ``layers_per_block`` residual
    blocks, with self-attention (heads of ``head_dim`` channels) where ``self_attention[i]``; the mid block at the
    lowest resolution has self-attention too.
    """

    image_size: int
    channels: tuple[int, ...]
    self_attention: tuple[bool, ...]
    layers_per_block: int = 2
    head_dim: int = 32
    norm_groups: int = 16

    def __post_init__(self):
        if len(self.self_attention) != len(self.channels):
            raise ValueError(f"channels and self_attention need one entry per level, got {self.channels} and "
                             f"{self.self_attention}")
        if any(channels % self.norm_groups for channels in self.channels):
            raise ValueError(f"every entry of channels {self.channels} must be a multiple of norm_groups "
                             f"{self.norm_groups}")

    def unet_kwargs(self) -> dict:
        """``UNet2DConditionModel``'s arguments for this config."""
        down = tuple("AttnDownBlock2D" if attention else "DownBlock2D" for attention in self.self_attention)
        up = tuple("AttnUpBlock2D" if attention else "UpBlock2D" for attention in reversed(self.self_attention))
        return dict(sample_size=self.image_size, in_channels=3, out_channels=3, block_out_channels=self.channels,
                    layers_per_block=self.layers_per_block, down_block_types=down, up_block_types=up,
                    mid_block_type="UNetMidBlock2D", attention_head_dim=self.head_dim, norm_num_groups=self.norm_groups)


BASE_PRESETS: dict[str, BaseConfig] = {
    # tests and GENVS_SMOKE=1: 152k parameters, at the size of the smoke GeNVS model's images
    "smoke": BaseConfig(image_size=32, channels=(16, 32), self_attention=(False, True), layers_per_block=1,
                        head_dim=16, norm_groups=8),
    # lesson 07 on a CPU: 3.6M parameters at 32x32 (1 s a training step of 32 images on 2 threads)
    "lesson": BaseConfig(image_size=32, channels=(32, 64, 128), self_attention=(False, True, True)),
}
"""Named base U-Net configs; get one with :func:`base_config`."""


def base_config(preset: str, **overrides) -> BaseConfig:
    """The base config of preset ``preset`` with ``overrides``."""
    return from_preset(BASE_PRESETS, preset, "base U-Net", **overrides)


@dataclass(frozen=True)
class FitConfig:
    """How one network trains (the base, or the ControlNet with the base and the field frozen).

    Attributes:
        batch_size: images (base) or objects (ControlNet, ``target_views`` targets each) per step.
        target_views: targets per object (ControlNet only); inputs are 1 to the GeNVS model's ``max_input_views``.
        lr, warmup_steps, min_lr_fraction, weight_decay, grad_clip: AdamW, warmup then cosine decay
            (:func:`genvs.fitting.lr_factor`), gradient-norm clipping.
        noise_mean, noise_std: training noise, ``ln(sigma) ~ N(noise_mean, noise_std^2)``.
        cond_dropout: fraction of samples trained as class 1 with the null render (ControlNet only).
        ema_power, ema_max: k-diffusion's EMA warmup (``decay = min(ema_max, 1 - (1 + step)^-ema_power)``).
        seed: initialisation and every step's randomness.
    """

    batch_size: int = 32
    target_views: int = 1
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    noise_mean: float = -1.2
    noise_std: float = 1.2
    cond_dropout: float = 0.0
    ema_power: float = 0.75
    ema_max: float = 0.999
    seed: int = 0


BASE_FIT = FitConfig()
"""The base's training: EDM's default noise levels, no condition."""
CONTROLNET_FIT = FitConfig(batch_size=8, target_views=4, noise_mean=0.5, noise_std=1.4, cond_dropout=0.1)
"""The ControlNet's: GeNVS's training noise (more weight at high noise, where the render decides), 10% dropout."""


def build_base(config: BaseConfig, seed: int = 0) -> UNet2DConditionModel:
    """The base U-Net of ``config``, initialised from ``seed`` without touching the global RNG."""
    with seeded_rng(seed, torch.device("cpu")):
        return UNet2DConditionModel(**config.unet_kwargs())


def build_controlnet(base: UNet2DConditionModel, cond_channels: int = 16, embedding_channels: int = 32,
                     seed: int = 0) -> ControlNetModel:
    """``ControlNetModel.from_unet(base)`` reading a ``cond_channels`` render at the base's resolution, with a class
    input of 2 classes (module docstring).

    The conditioning embedding is ``conv 3x3 (cond_channels -> embedding_channels), SiLU, zero conv 3x3``: no
    downsampling; its first convolution is initialised from ``seed`` (without touching the global RNG). The encoder
    half (input convolution, time embedding, down and mid blocks) is a copy of the base's; every output convolution
    and the class embedding start at zero, so the ControlNet's residuals are zero at step 0.
    """
    with seeded_rng(seed, torch.device("cpu")):
        controlnet = ControlNetModel.from_unet(base, conditioning_embedding_out_channels=(embedding_channels,),
                                               conditioning_channels=cond_channels)
        with_classes = ControlNetModel.from_config({**controlnet.config, "num_class_embeds": 2})
    missing, unexpected = with_classes.load_state_dict(controlnet.state_dict(), strict=False)
    if missing != ["class_embedding.weight"] or unexpected:
        raise RuntimeError(f"copying the ControlNet into one with a class input: missing {missing}, "
                           f"unexpected {unexpected}")
    nn.init.zeros_(with_classes.class_embedding.weight)
    return with_classes


class EDMUNet(nn.Module):
    """``F(x, sigma, unet_cond, class_labels)``: the base U-Net, plus the ControlNet's residuals when there is one, at
    the timestep ``t(sigma)`` (module docstring). ``k_diffusion.layers.Denoiser`` wraps it (:func:`edm_denoiser`).

    Args:
        base: the base ``UNet2DConditionModel`` (no cross-attention).
        controlnet: a :func:`build_controlnet` model, or None for the base alone (unconditional).
    """

    def __init__(self, base: UNet2DConditionModel, controlnet: ControlNetModel | None = None):
        super().__init__()
        self.base, self.controlnet = base, controlnet
        self.c_in = base.config.in_channels  # read by genvs.sampling, as of k-diffusion's models
        self.unet_cond_dim = controlnet.config.conditioning_channels if controlnet is not None else 0

    def forward(self, x: Tensor, sigma: Tensor, unet_cond: Tensor | None = None,
                class_labels: Tensor | None = None) -> Tensor:
        """``x [B, 3, H, W]`` (already scaled by ``c_in``), ``sigma [B]``, ``unet_cond [B, C, H, W]`` (ignored
        without a ControlNet), ``class_labels [B]`` (default: 1 where ``unet_cond`` is the null condition) ->
        ``F [B, 3, H, W]``."""
        timestep = TIMESTEP_SCALE * sigma.log() / 4
        residuals = {}
        if self.controlnet is not None:
            if unet_cond is None:
                raise ValueError("the ControlNet route needs unet_cond (the rendered features), or the null condition")
            if class_labels is None:
                class_labels = (unet_cond == 0).flatten(1).all(1).long() * UNCONDITIONAL_CLASS
            unconditional = (class_labels == UNCONDITIONAL_CLASS)[:, None, None, None]
            render = torch.where(unconditional, null_condition(unet_cond), unet_cond)
            down, mid = self.controlnet(x, timestep, encoder_hidden_states=None, controlnet_cond=render,
                                        class_labels=class_labels, return_dict=False)
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.base(x, timestep, encoder_hidden_states=None, **residuals).sample


def edm_denoiser(base: UNet2DConditionModel, controlnet: ControlNetModel | None = None,
                 sigma_data: float = 0.5) -> k_diffusion.layers.Denoiser:
    """``D(x, sigma, unet_cond=c)`` of the module docstring: ``k_diffusion.layers.Denoiser(EDMUNet(base, controlnet))``.

    It is what :func:`genvs.sampling.sample_images` samples from (with ``unconditional=True`` for the base alone)
    and ``denoiser.loss(y, n, sigma, unet_cond=c)`` gives the per-sample EDM loss ``[B]``.
    """
    return k_diffusion.layers.Denoiser(EDMUNet(base, controlnet), sigma_data=sigma_data)


# -- training -----------------------------------------------------------------------------------------------------


def fit_network(network: nn.Module, loss_of: Callable[[dict, torch.Generator], Tensor], batches: StepBatches,
                steps: int, config: FitConfig, out: Path, device: torch.device, save_every: int, progress: bool, *,
                resume: bool = False, until: int | None = None) -> dict:
    """Train ``network`` for ``steps`` AdamW steps on ``loss_of(batch, generator)`` with :class:`genvs.fitting.Fitter`.

    Writes its EMA to ``out`` (a diffusers folder, every ``save_every`` steps and at the end, with the checkpoint
    to resume from in ``out/checkpoints/``), the loss of every step to ``out/log.csv`` and the run's record to
    ``out/training.json``. Batch ``i`` is ``batches[i]``; its randomness comes from a generator seeded
    ``derive_seed(config.seed, i)``.

    Args:
        resume: continue the run in ``out`` from its checkpoint (exactly as if it had not stopped).
        until: stop after this step, as if interrupted there (a checkpoint is written; ``resume`` continues).
    Returns:
        the run's record: steps, seconds (of this call), steps/s, the mean loss of the first and last 20 steps.
    """
    out.mkdir(parents=True, exist_ok=True)
    network.train()
    settings = FitSettings(steps, config.warmup_steps, config.min_lr_fraction, config.weight_decay, config.grad_clip,
                           ema_power=config.ema_power, ema_max=config.ema_max, seed=config.seed)
    fitter = Fitter(network, {"network": (network, config.lr)},
                    lambda batch, generator: {"loss": loss_of(batch, generator)}, batches, settings,
                    out / "checkpoints", {"fit": asdict(config)}, device=device, resume=resume,
                    log_every=1, checkpoint_every=save_every, keep_checkpoints=1, log_path=out / "log.csv",
                    on_save=lambda step: save_pretrained(fitter.ema, out), progress=progress)
    start, done = time.perf_counter(), fitter.step
    fitter.run(until)
    seconds = time.perf_counter() - start
    losses = [row["loss"] for row in read_log(out)]
    window = min(20, len(losses))
    record = {"steps": fitter.step, "seconds": seconds, "steps_per_second": (fitter.step - done) / seconds,
              "loss_first": sum(losses[:window]) / window, "loss_last": sum(losses[-window:]) / window,
              "fit": asdict(config), "device": str(device), "torch": torch.__version__}
    (out / "training.json").write_text(json.dumps(record, indent=1))
    return record


def train_base(data: str | Path, out: str | Path, steps: int, config: BaseConfig = BASE_PRESETS["lesson"],
               fit: FitConfig = BASE_FIT, device: torch.device | str = "cpu", save_every: int = 200,
               progress: bool = True, resume: bool = False,
               until: int | None = None) -> tuple[UNet2DConditionModel, dict]:
    """Train the base U-Net unconditionally on the training views of SRN-format ``data`` (EDM loss, module
    docstring); write its EMA weights to ``out`` (a diffusers folder, fp16) with ``log.csv`` and ``training.json``.

    Step ``i`` sees one random view of each of ``fit.batch_size`` random training objects; ``resume`` and ``until``
    are :func:`fit_network`'s. Returns the EMA U-Net (float32, on ``device``) and the run's record.
    """
    device = torch.device(device)
    dataset = SRNDataset(data, split="train", views_per_item=None, image_size=config.image_size)
    batches = StepBatches(dataset, fit.batch_size, max_inputs=1, target_views=0, seed=fit.seed)
    base = build_base(config, fit.seed).to(device)
    denoiser = edm_denoiser(base)

    def loss_of(batch: dict, generator: torch.Generator) -> Tensor:
        images = batch["images"].flatten(0, 1)
        sigma = sample_training_sigmas(images.shape[0], fit.noise_mean, fit.noise_std, generator, device)
        noise = draw(torch.randn, tuple(images.shape), generator, device)
        return denoiser.loss(images, noise, sigma).mean()

    record = fit_network(base, loss_of, batches, steps, fit, Path(out), device, save_every, progress,
                         resume=resume, until=until)
    return load_base(out, device), record


def train_controlnet(model, data: str | Path, out: str | Path, steps: int, base: UNet2DConditionModel,
                     fit: FitConfig = CONTROLNET_FIT, device: torch.device | str = "cpu", save_every: int = 200,
                     progress: bool = True, resume: bool = False,
                     until: int | None = None) -> tuple[ControlNetModel, dict]:
    """Train a ControlNet (:func:`build_controlnet` on ``base``) on the renders of GeNVS ``model``'s field.

    The field and the base stay frozen. Each step: ``fit.batch_size`` training objects, 1 to
    ``model.config.max_input_views`` input views encoded by the field, ``fit.target_views`` targets rendered
    (:meth:`genvs.model.GeNVS.condition`), then the EDM loss of the ControlNet route on the targets, with a fraction
    ``fit.cond_dropout`` of the targets given the null render (class 1). Writes the ControlNet's EMA weights to
    ``out`` (a diffusers folder, fp16) with ``log.csv`` and ``training.json``; ``resume`` and ``until`` are
    :func:`fit_network`'s.

    Returns:
        the EMA ControlNet (float32, on ``device``) and the run's record.
    """
    device = torch.device(device)
    model = model.to(device).eval().requires_grad_(False)
    base = base.to(device).eval().requires_grad_(False)
    image_size = model.config.field.encoder.image_size
    if base.config.sample_size != image_size:
        raise ValueError(f"the base U-Net is for {base.config.sample_size} px images, the GeNVS model for "
                         f"{image_size} px: train a base at the model's size")
    dataset = SRNDataset(data, split="train", views_per_item=None, image_size=image_size)
    batches = StepBatches(dataset, fit.batch_size, model.config.max_input_views, fit.target_views, fit.seed)
    controlnet = build_controlnet(base, model.config.field.feature_channels, seed=fit.seed).to(device)
    denoiser = edm_denoiser(base, controlnet)

    def loss_of(batch: dict, generator: torch.Generator) -> Tensor:
        n_inputs = int(batch["n_inputs"])
        images, K_all, c2w = batch["images"], batch["K"], batch["c2w"]
        with torch.no_grad():
            views = model.field.encode(images[:, :n_inputs], K_all[:, :n_inputs], c2w[:, :n_inputs])
            cond, _ = model.condition(views, K_all[:, n_inputs:], c2w[:, n_inputs:])
        return denoising_loss(denoiser, images[:, n_inputs:].flatten(0, 1), cond, fit, generator)

    record = fit_network(controlnet, loss_of, batches, steps, fit, Path(out), device, save_every, progress,
                         resume=resume, until=until)
    return load_controlnet(out, device), record


# -- checkpoints --------------------------------------------------------------------------------------------------


def save_pretrained(network: UNet2DConditionModel | ControlNetModel, out: str | Path) -> Path:
    """Write ``network`` to the diffusers folder ``out`` in fp16 (``config.json`` +
    ``diffusion_pytorch_model.fp16.safetensors``), leaving ``network`` unchanged."""
    copy.deepcopy(network).half().save_pretrained(out, safe_serialization=True, variant=WEIGHTS_VARIANT)
    return Path(out)


def _load(cls, path: str | Path | None, artefact: str, device: torch.device | str):
    """``cls.from_pretrained`` of the diffusers folder ``path`` (default: shipped ``artefact``), float32, eval mode."""
    path = shipped_path(artefact) if path is None else Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no {cls.__name__} here (no config.json); the shipped one is "
                                f"{ARTEFACTS[artefact]}, with --out {path}")
    return cls.from_pretrained(path, variant=WEIGHTS_VARIANT, torch_dtype=torch.float32).to(device).eval()


def load_base(path: str | Path | None = None, device: torch.device | str = "cpu") -> UNet2DConditionModel:
    """The base U-Net saved in the diffusers folder ``path`` (default: the shipped one), float32, in eval mode.

    Raises:
        FileNotFoundError: naming ``path`` and the command that makes a base.
    """
    return _load(UNet2DConditionModel, path, "controlnet_base", device)


def load_controlnet(path: str | Path | None = None, device: torch.device | str = "cpu",
                    artefact: str = "controlnet") -> ControlNetModel:
    """The ControlNet saved in the diffusers folder ``path`` (default: shipped ``artefact``, one of "controlnet",
    "multiview", "raycond"), float32, in eval mode.

    Raises:
        FileNotFoundError: naming ``path`` and the ``python -m genvs`` command that makes this ControlNet.
    """
    return _load(ControlNetModel, path, artefact, device)


def controlnet_route(base: str | Path | None = None, controlnet: str | Path | None = None,
                     device: torch.device | str = "cpu") -> k_diffusion.layers.Denoiser:
    """The shipped (or given) base and ControlNet as one denoiser ``D(x, sigma, unet_cond=c)`` (:func:`edm_denoiser`),
    on ``device``, in eval mode."""
    return edm_denoiser(load_base(base, device), load_controlnet(controlnet, device)).eval()
