"""GeNVS: the feature field renders a condition for the EDM denoiser; one loss trains both.

For each object, ``V_in`` input views are encoded into the feature field (:mod:`genvs.field`),
which is rendered from each target camera into a ``C``-channel feature image at ``render_size``
and upsampled (bilinear) to the image size: the denoiser's ``unet_cond``
(:mod:`genvs.denoiser`). Training minimises::

    L = L_denoise + rgb_weight * L_rgb + input_rgb_weight * L_rgb_input + opacity_weight * mean(opacity)

* ``L_denoise``: EDM's loss on the target views, given their rendered features (with
  conditioning dropout), :func:`genvs.denoiser.denoising_loss`;
* ``L_rgb``: mean squared error between the first 3 rendered channels and the target images
  area-downsampled to ``render_size``, object by object and view by view (:func:`rgb_loss`);
* ``L_rgb_input``: the same on the first input view rendered from its own camera (optional; one
  view keeps its cost constant however many inputs there are);
* ``mean(opacity)``: a small push towards empty space where the views allow it (optional).

Targets are never among the inputs: of the views of each object, the first ``V_in`` are inputs
and the rest targets. Training can also go in stages (:data:`STAGES`, the seed reimplementation's
recipe): the encoder and field alone on the RGB losses, then the denoiser alone given the
field's features, then everything jointly.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genvs.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from genvs.config import config_from_dict, from_preset
from genvs.denoiser import DenoiserConfig, build_denoiser, denoiser_config, denoising_loss
from genvs.field import FieldConfig, InputViews, build_field, field_config

__all__ = ["GeNVSConfig", "PRESETS", "STAGES", "TRAINING_SETTINGS", "architecture", "genvs_config", "GeNVS", "rgb_loss",
           "load_model"]

STAGES = ("joint", "field", "denoiser")
"""Training stages: everything, the encoder and field alone (RGB losses), the denoiser alone."""
STAGE_PARTS = {"joint": {"encoder", "field", "denoiser"}, "field": {"encoder", "field"}, "denoiser": {"denoiser"}}
TRAINING_SETTINGS = ("rgb_weight", "input_rgb_weight", "opacity_weight", "max_input_views", "denoiser.dropout",
                     "denoiser.noise_mean", "denoiser.noise_std", "denoiser.cond_dropout")
"""Settings of :class:`GeNVSConfig` (dotted paths) that change how the model trains, not what its weights compute:
a stage may change them from the one before (GeNVS raises the training noise from "mid" to "high" between stages)."""


def architecture(config: dict) -> dict:
    """A :class:`GeNVSConfig` as a dict (``dataclasses.asdict``) less its :data:`TRAINING_SETTINGS`: what two
    checkpoints must share for the weights of one to start the other."""
    kept = copy.deepcopy(config)
    for path in TRAINING_SETTINGS:
        *parents, name = path.split(".")
        node = kept
        for parent in parents:
            node = node.get(parent, {})
        node.pop(name, None)
    return kept


@dataclass(frozen=True)
class GeNVSConfig:
    """The whole model and the weights of its losses.

    Attributes:
        field: encoder, field MLP and feature rendering (:class:`genvs.field.FieldConfig`).
        denoiser: the EDM denoiser (:class:`genvs.denoiser.DenoiserConfig`); its ``image_size``
            is the input/target image size and its ``cond_channels`` how many of the render's ``C`` channels
            condition it: all of them (GeNVS's feature image), or 3, the RGB render alone (channels 0-2, those the
            RGB loss supervises; an ablation).
        rgb_weight, input_rgb_weight, opacity_weight: loss weights (module docstring).
        max_input_views: most input views per object in training (GeNVS: up to 3).
    """

    field: FieldConfig
    denoiser: DenoiserConfig
    rgb_weight: float = 1.0
    input_rgb_weight: float = 0.0
    opacity_weight: float = 0.0
    max_input_views: int = 3

    def __post_init__(self):
        image_size = self.field.encoder.image_size
        if self.denoiser.image_size != image_size:
            raise ValueError(f"the denoiser's image_size ({self.denoiser.image_size}) must equal the encoder's "
                             f"({image_size}): both see the same images")
        if self.denoiser.cond_channels not in (3, self.field.feature_channels):
            raise ValueError(f"the denoiser's cond_channels ({self.denoiser.cond_channels}) must be the field's "
                             f"feature_channels ({self.field.feature_channels}) or 3 (its RGB render alone)")
        if image_size % self.field.render_size:
            raise ValueError(f"render_size {self.field.render_size} must divide image_size {image_size}")
        if self.max_input_views < 1:
            raise ValueError(f"max_input_views must be >= 1, got {self.max_input_views}")


PRESETS: dict[str, GeNVSConfig] = {
    # training noise as the seed reimplementation (more high noise than EDM's default: lesson 03
    # measured that a conditional denoiser gains from it)
    "smoke": GeNVSConfig(field_config("smoke"), denoiser_config("smoke", noise="genvs", image_size=32)),
    "cpu": GeNVSConfig(field_config("cpu"), denoiser_config("cpu", noise="genvs", image_size=64), input_rgb_weight=1.0),
    # the seed reimplementation's weights: RGB 1 on novel views, opacity 0.001
    "paper": GeNVSConfig(field_config("paper"), denoiser_config("paper"), opacity_weight=0.001),
}
"""Named GeNVS configs; get one with :func:`genvs_config`."""


def genvs_config(preset: str, **overrides) -> GeNVSConfig:
    """The config of preset ``preset`` with top-level ``overrides`` (e.g. ``rgb_weight=0.5``)."""
    return from_preset(PRESETS, preset, "GeNVS", **overrides)


def rgb_loss(rendered: Tensor, images: Tensor) -> Tensor:
    """Mean squared error between rendered RGB and images, object by object and view by view.

    Args:
        rendered: ``[B, T, C, s, s]`` feature images (channels 0-2 are RGB).
        images: ``[B, T, 3, H, W]`` the same views, in [-1, 1]; area-downsampled to ``s`` here.
    Returns:
        scalar loss.
    Raises:
        ValueError: if the leading ``[B, T]`` differ -- never broadcast one object's render
            against another object's image (the seed reimplementation's bug).
    """
    if rendered.shape[:2] != images.shape[:2] or rendered.dim() != 5 or images.dim() != 5:
        raise ValueError(f"rgb_loss needs rendered [B, T, C, s, s] and images [B, T, 3, H, W] with the same B and T, "
                         f"got {list(rendered.shape)} and {list(images.shape)}")
    size = rendered.shape[-1]
    target = F.interpolate(images.flatten(0, 1), size=(size, size), mode="area").unflatten(0, images.shape[:2])
    return F.mse_loss(rendered[:, :, :3], target)


class GeNVS(nn.Module):
    """Feature field + EDM denoiser, initialised from ``seed`` without touching the global RNG.

    The model owns its files: :meth:`save_pretrained` writes its config and weights (a :mod:`genvs.checkpoint`
    folder: safetensors + JSON, no pickle), :meth:`from_pretrained` (or :func:`load_model`) reads them back, and
    reads a training run's checkpoints too; neither imports the trainer.

    Args:
        config: :class:`GeNVSConfig`.
        seed: the field is built from ``seed``, the denoiser from ``seed + 1``.
        imagenet_weights: optional local ImageNet checkpoint of the encoder's backbone.
    """

    def __init__(self, config: GeNVSConfig, seed: int = 0, imagenet_weights=None):
        super().__init__()
        self.config = config
        self.field = build_field(config.field, seed, imagenet_weights)
        self.denoiser = build_denoiser(config.denoiser, seed + 1)

    def condition(self, views: InputViews, K: Tensor, c2w: Tensor, perturb: bool = False,
                  generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The denoiser's condition for target cameras: rendered features upsampled to the image size, its first
        ``denoiser.cond_channels`` channels (all ``C``; or the RGB render alone, :class:`GeNVSConfig`).

        Args:
            views: encoded input views of ``B`` objects.
            K: ``[B, T, 3, 3]`` target intrinsics (for image-size images); c2w: ``[B, T, 4, 4]``.
        Returns:
            cond ``[B * T, cond_channels, H, W]`` and :meth:`FeatureField.render_image`'s dict at ``render_size``
            (all ``C`` channels).
        """
        rendered = self.field.render_image(views, K, c2w, perturb=perturb, generator=generator)  # [B, T, C, s, s]
        size, channels = self.config.field.encoder.image_size, self.config.denoiser.cond_channels
        cond = F.interpolate(rendered["features"][:, :, :channels].flatten(0, 1), size=(size, size), mode="bilinear",
                             align_corners=False)
        return cond, rendered

    def losses(self, images: Tensor, K: Tensor, c2w: Tensor, n_inputs: int, generator: torch.Generator,
               stage: str = "joint") -> dict[str, Tensor]:
        """All training losses for a batch of objects.

        Args:
            images: ``[B, V, 3, H, W]`` views in [-1, 1]; K ``[B, V, 3, 3]``; c2w ``[B, V, 4, 4]``.
            n_inputs: the first ``n_inputs`` views are inputs, the other ``V - n_inputs`` targets.
            generator: sample jitter, training noise and conditioning dropout.
            stage: what trains (:data:`STAGES`): ``"joint"`` everything; ``"field"`` the encoder
                and field on the RGB losses (no denoiser); ``"denoiser"`` the denoiser on the
                denoising loss, given the field's features (no gradient reaches the field).
        Returns:
            dict with ``loss`` (the weighted total of the parts this stage trains, for
            ``backward``) and the unweighted parts ``denoising`` (not in stage "field"),
            ``rgb``, ``input_rgb`` (if weighted) and ``opacity``.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; valid stages: {STAGES}")
        if not 1 <= n_inputs < images.shape[1]:
            raise ValueError(f"need 1 <= n_inputs < views ({images.shape[1]}), got {n_inputs}")
        config = self.config
        inputs, targets = slice(0, n_inputs), slice(n_inputs, None)
        with torch.set_grad_enabled(torch.is_grad_enabled() and stage != "denoiser"):
            views = self.field.encode(images[:, inputs], K[:, inputs], c2w[:, inputs])
            cond, rendered = self.condition(views, K[:, targets], c2w[:, targets], perturb=True, generator=generator)
            parts = {"rgb": rgb_loss(rendered["features"], images[:, targets]), "opacity": rendered["opacity"].mean()}
            if config.input_rgb_weight > 0:
                own = self.field.render_image(views, K[:, :1], c2w[:, :1], perturb=True, generator=generator)
                parts["input_rgb"] = rgb_loss(own["features"], images[:, :1])
        weights = {} if stage == "denoiser" else {"rgb": config.rgb_weight, "input_rgb": config.input_rgb_weight,
                                                  "opacity": config.opacity_weight}
        if stage != "field":
            parts["denoising"] = denoising_loss(self.denoiser, images[:, targets].flatten(0, 1), cond,
                                                config.denoiser, generator)
            weights["denoising"] = 1.0
        total = sum(weight * parts[name] for name, weight in weights.items() if name in parts)
        return {"loss": total, **parts}

    def forward(self, images: Tensor, K: Tensor, c2w: Tensor, n_inputs: int, generator: torch.Generator,
                stage: str = "joint") -> dict[str, Tensor]:
        """:meth:`losses`, called through ``nn.Module.__call__`` so that DDP's hooks see it."""
        return self.losses(images, K, c2w, n_inputs, generator, stage)

    def trainable_parts(self, stage: str) -> dict[str, nn.Module]:
        """The parts ``stage`` trains, by name: ``encoder``, ``field`` (the field's MLP) and ``denoiser``."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; valid stages: {STAGES}")
        parts = {"encoder": self.field.encoder, "field": self.field.mlp, "denoiser": self.denoiser}
        return {name: part for name, part in parts.items() if name in STAGE_PARTS[stage]}

    def save_pretrained(self, folder: str | Path, step: int = 0, dtype: torch.dtype = torch.float16,
                        training: dict | None = None) -> Path:
        """Write the model to ``folder``: its config and its weights, floating-point tensors in ``dtype``.

        The files are a :mod:`genvs.checkpoint` (``step_N.safetensors``, ``step_N.json``, ``latest.json``) whose state
        is ``{"ema": weights}`` (the weights sampling uses) and whose config is ``{"model": GeNVSConfig, "training":
        training}``: the model's config rebuilds the network, ``training`` (optional) says how it was trained. In
        fp16 the weights take ``2 x parameters`` bytes.

        Returns:
            the path of the written ``step_N.json``.
        """
        weights = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor
                   for name, tensor in self.state_dict().items()}
        config = {"model": dataclasses.asdict(self.config), **({"training": training} if training is not None else {})}
        return save_checkpoint(folder, step, {"ema": weights}, config)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str = "cpu", ema: bool = True) -> GeNVS:
        """The model saved at ``path`` (:meth:`save_pretrained`, or a training run's folder or ``step_N.json``),
        float32, in eval mode, on ``device``; :func:`load_model` also returns what the files say about it."""
        return load_model(path, device, ema)[0]


def load_model(path: str | Path, device: torch.device | str = "cpu", ema: bool = True) -> tuple[GeNVS, dict]:
    """A trained GeNVS from a saved model or a training run: a folder (its latest checkpoint) or a ``step_N.json``.

    Args:
        ema: the EMA weights (what sampling should use); ``False``: a training checkpoint's raw weights.
    Returns:
        the model in eval mode on ``device`` (float32, whatever the stored dtype), and the stored config as a
        dict with the checkpoint's ``step`` added.
    Raises:
        CheckpointError: nothing readable at ``path``, no model config in it, or no ``ema``/raw weights as asked.
    """
    step, state, config = load_checkpoint(path, device=device)
    weights = "ema" if ema else "model"
    if weights not in state:
        raise CheckpointError(f"{path}: this checkpoint holds only {sorted(state)} weights, not {weights!r} "
                              f"(a saved model keeps the EMA weights only: load it with ema=True)")
    if "model" not in config:
        raise CheckpointError(f"{path}: no GeNVS model config in this checkpoint (its config has {sorted(config)})")
    model = GeNVS(config_from_dict(GeNVSConfig, config["model"]))
    model.load_state_dict(state[weights])  # copies into the model's float32 parameters, whatever the stored dtype
    return model.to(device).eval(), {**config, "step": step}
