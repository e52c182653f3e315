"""Image -> frustum-aligned feature volume: GeNVS's image encoder (DeepLabV3+ style).

A 2D network sees one input image and predicts, for every pixel of a ``h x w`` grid over the
image, a column of ``D`` feature vectors of ``C`` channels, one per depth plane along that
pixel's ray. Reshaping its ``C * D`` output channels gives a volume ``[B, C, D, h, w]`` aligned
with the camera's viewing frustum (:mod:`genvs.field` says where each voxel sits in space)::

    image [B, 3, H, W] in [-1, 1]
      -> ImageNet normalisation
      -> ResNet backbone: stem (H/2), layer1 (H/4), layer2 (H/8), layer3 (H/16), layer4 (H/32),
         or a trunk cut after layer2 or layer3 (``trunk_stride`` 8 or 16)
      -> ASPP on the trunk's last map (parallel atrous convolutions + global pooling: context at several scales)
      -> decoder: upsample x2, concatenate the backbone's feature map of that size (skip
         connection, projected to half the decoder width), 3x3 conv; repeat down to h x w
      -> concatenate the image itself, average-pooled to h x w
      -> 1x1 conv to C * D channels -> reshape [B, C, D, h, w]

DeepLabV3+ (Chen et al. 2018) has one skip connection at stride 4; going down to stride 2
(``h = H / 2``, as GeNVS's 64x64 volume for 128x128 images) needs the earlier ones too. The
last skip, the pooled image, hands the input colours straight to every depth plane: without it
a randomly initialised backbone took hundreds of steps to pass on anything but the mean car.
Small images want a shorter trunk (``trunk_stride``): at 32 px, layer4 sees a 1 x 1 map (ASPP's atrous
branches see one pixel, batch norm normalises 2 values per channel) yet holds 8.4M of ResNet-18's 11.2M
weights; the trunk cut after layer2 sees 4 x 4 and keeps 0.7M. The backbone is torchvision's ResNet,
randomly initialised unless you pass ImageNet weights that are already on your disk: genvs never
downloads anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from genvs.config import from_preset
from genvs.seeding import seeded_rng

__all__ = ["EncoderConfig", "ENCODER_PRESETS", "encoder_config", "VolumeEncoder", "build_encoder", "parameter_count"]

BACKBONES = {"resnet18": torchvision.models.resnet18, "resnet34": torchvision.models.resnet34}
IMAGENET_FILES = {  # torchvision's file names, for the message when weights are missing
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDES = (2, 4, 8, 16)  # of the backbone's stem, layer1, layer2, layer3 outputs (layer4: 32)
CHANNELS = (64, 64, 128, 256, 512)  # stem, layer1..layer4 for resnet18 and resnet34
TRUNK_STRIDES = (8, 16, 32)  # the trunk ends after layer2, layer3 or layer4
LAYERS = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of the image encoder and of the feature volume it predicts.

    Attributes:
        image_size: side ``H = W`` of the square input images.
        feature_channels: ``C``, features per voxel (16 in GeNVS).
        depth_planes: ``D``, planes along the depth axis of the frustum.
        volume_size: ``h = w``, the volume's side; ``image_size / volume_size`` must be one of
            the backbone's strides 2, 4, 8 or 16 below ``trunk_stride`` (the decoder stops at that feature map).
        backbone: ``"resnet34"`` (GeNVS) or ``"resnet18"``.
        trunk_stride: where the ResNet trunk ends: 32 (through layer4, GeNVS), 16 (layer3) or 8 (layer2);
            the layers after it are not built.
        aspp_rates: dilation rates of ASPP's atrous branches, in pixels of the trunk's last map
            (``image_size / trunk_stride`` of them per side).
        decoder_channels: width of the decoder.
    """

    image_size: int
    feature_channels: int = 16
    depth_planes: int = 32
    volume_size: int = 32
    backbone: str = "resnet34"
    trunk_stride: int = 32
    aspp_rates: tuple[int, ...] = (1, 2)
    decoder_channels: int = 128

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; valid backbones: {sorted(BACKBONES)}")
        if self.trunk_stride not in TRUNK_STRIDES:
            raise ValueError(f"trunk_stride must be one of {TRUNK_STRIDES}, got {self.trunk_stride}")
        if self.image_size % self.trunk_stride:
            raise ValueError(f"image_size must be a multiple of the trunk's stride {self.trunk_stride}, "
                             f"got {self.image_size}")
        volume_strides = tuple(stride for stride in STRIDES if stride < self.trunk_stride)
        if (self.volume_size <= 0 or self.image_size % self.volume_size
                or self.image_size // self.volume_size not in volume_strides):
            raise ValueError(f"image_size / volume_size must be one of {volume_strides} (trunk_stride "
                             f"{self.trunk_stride}), got {self.image_size} / {self.volume_size}")
        for name in ("feature_channels", "depth_planes", "decoder_channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def volume_shape(self) -> tuple[int, int, int, int]:
        """``(C, D, h, w)`` of one view's volume."""
        return (self.feature_channels, self.depth_planes, self.volume_size, self.volume_size)


ENCODER_PRESETS: dict[str, EncoderConfig] = {
    # tests, GENVS_SMOKE=1 and the 32 px reference model: the ResNet-18 trunk through layer2 (4 x 4 at 32 px)
    "smoke": EncoderConfig(image_size=32, depth_planes=8, volume_size=16, backbone="resnet18", trunk_stride=8,
                           aspp_rates=(1,), decoder_channels=32),
    # lessons on a laptop CPU: 64x64 images, volume 16 x 32 x 32 x 32
    "cpu": EncoderConfig(image_size=64, depth_planes=32, volume_size=32, aspp_rates=(1, 2), decoder_channels=96),
    # GeNVS: 128x128 images, volume 16 x 64 x 64 x 64
    "paper": EncoderConfig(image_size=128, depth_planes=64, volume_size=64, aspp_rates=(1, 2, 3),
                           decoder_channels=256),
}
"""Named encoder configs; get one with :func:`encoder_config`."""


def encoder_config(preset: str, **overrides) -> EncoderConfig:
    """The config of preset ``preset`` with ``overrides``, e.g. ``encoder_config("cpu", depth_planes=16)``."""
    return from_preset(ENCODER_PRESETS, preset, "encoder", **overrides)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate the projected skip, fuse with a 3x3 conv."""

    def __init__(self, channels: int, skip_channels: int):
        super().__init__()
        self.project_skip = _conv_bn_relu(skip_channels, channels // 2, 1)
        self.fuse = _conv_bn_relu(channels + channels // 2, channels, 3)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, self.project_skip(skip)], dim=1))


class VolumeEncoder(nn.Module):
    """DeepLabV3+-style network from an image to a frustum-aligned feature volume.

    Args:
        config: sizes (:class:`EncoderConfig`).
        imagenet_weights: optional path to torchvision's ImageNet checkpoint of the backbone
            (e.g. ``resnet34-b627a593.pth``) already on disk; default: random initialisation.
    Raises:
        FileNotFoundError: ``imagenet_weights`` does not exist (nothing is downloaded).
        ValueError: the file is not a state dict of that backbone.
    """

    def __init__(self, config: EncoderConfig, imagenet_weights: str | Path | None = None):
        super().__init__()
        self.config = config
        backbone = BACKBONES[config.backbone](weights=None)
        if imagenet_weights is not None:
            _load_imagenet_weights(backbone, Path(imagenet_weights), config.backbone)
        backbone.fc = nn.Identity()  # classification head: unused
        self.trunk_layers = LAYERS[:TRUNK_STRIDES.index(config.trunk_stride) + 2]
        for name in LAYERS[len(self.trunk_layers):]:
            setattr(backbone, name, nn.Identity())  # past the trunk: not built
        self.backbone = backbone
        trunk_level = len(self.trunk_layers)  # index of the trunk's last map in CHANNELS
        n_skips = STRIDES.index(config.image_size // config.volume_size) + 1  # stem .. the volume's stride
        self.aspp = ASPP(CHANNELS[trunk_level], config.aspp_rates, config.decoder_channels)
        # decoder blocks from coarse to fine: the level below the trunk's last, ..., down to the volume's stride
        self.decoder = nn.ModuleList(
            _UpBlock(config.decoder_channels, CHANNELS[level]) for level in reversed(range(n_skips - 1, trunk_level))
        )
        self.head = nn.Conv2d(config.decoder_channels + 3, config.feature_channels * config.depth_planes, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """Encode images into feature volumes.

        Args:
            images: ``[B, 3, H, W]`` in [-1, 1], ``H = W = config.image_size``.
        Returns:
            ``[B, C, D, h, w]`` volumes; channel ``c * D + d`` of the head's output is feature
            ``c`` of depth plane ``d``.
        """
        size = self.config.image_size
        if images.shape[-3:] != (3, size, size):
            raise ValueError(f"expected images [B, 3, {size}, {size}], got {list(images.shape)}")
        if self.training and images.shape[0] < 2:
            raise ValueError("training the encoder needs at least 2 images per batch (BatchNorm statistics); "
                             "call .eval() to encode a single image")
        features = self._backbone_features((images + 1.0) / 2.0)
        x = self.aspp(features[-1])
        for block, skip in zip(self.decoder, reversed(features[-1 - len(self.decoder):-1])):
            x = block(x, skip)
        pooled = F.avg_pool2d(images, self.config.image_size // self.config.volume_size)
        volume = self.head(torch.cat([x, pooled], dim=1))
        return volume.reshape(images.shape[0], *self.config.volume_shape)

    def _backbone_features(self, images01: Tensor) -> list[Tensor]:
        """ResNet feature maps ``[stem, layer1, ...]`` of images in [0, 1], through the trunk's last layer."""
        net = self.backbone
        x = net.relu(net.bn1(net.conv1((images01 - self.mean) / self.std)))
        features = [x]
        x = net.maxpool(x)
        for name in self.trunk_layers:
            x = getattr(net, name)(x)
            features.append(x)
        return features


def _load_imagenet_weights(backbone: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet weights for {name} not found at {path}. genvs downloads nothing at run time: fetch "
            f"{IMAGENET_FILES[name]} yourself (or find it in torch's hub cache, {torch.hub.get_dir()}/checkpoints/) "
            f"and pass its path, or pass imagenet_weights=None to start from random weights."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of torchvision's {name}, found a {type(state).__name__}")
    try:
        backbone.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path}: not a state dict of torchvision's {name}: {error}") from None


def build_encoder(config: EncoderConfig, seed: int = 0, imagenet_weights: str | Path | None = None) -> VolumeEncoder:
    """A :class:`VolumeEncoder` initialised from ``seed`` (the same seed gives the same weights)."""
    with seeded_rng(seed, torch.device("cpu")):
        return VolumeEncoder(config, imagenet_weights)


def parameter_count(config: EncoderConfig) -> int:
    """Number of trainable parameters of the encoder for ``config`` (built on the meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in VolumeEncoder(config).parameters())
