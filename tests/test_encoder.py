import pytest
import torch
import torchvision

from genvs.encoder import (
    ENCODER_PRESETS,
    EncoderConfig,
    VolumeEncoder,
    build_encoder,
    encoder_config,
    parameter_count,
)

RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")


def _images(config: EncoderConfig, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, config.image_size, config.image_size, generator=generator) * 2 - 1


@pytest.mark.parametrize("preset", sorted(ENCODER_PRESETS))
def test_volume_shape_for_every_preset(preset):
    config = ENCODER_PRESETS[preset]
    with torch.device("meta"):  # shapes only: no memory, no compute
        volume = VolumeEncoder(config)(torch.empty(2, 3, config.image_size, config.image_size))
    assert volume.shape == (2, *config.volume_shape)


def test_documented_preset_sizes():
    assert ENCODER_PRESETS["cpu"].volume_shape == (16, 32, 32, 32) and ENCODER_PRESETS["cpu"].image_size == 64
    assert ENCODER_PRESETS["paper"].volume_shape == (16, 64, 64, 64) and ENCODER_PRESETS["paper"].image_size == 128
    assert ENCODER_PRESETS["paper"].backbone == "resnet34"


def test_smoke_encoder_runs_and_counts_its_parameters():
    config = ENCODER_PRESETS["smoke"]
    encoder = build_encoder(config)
    volume = encoder(_images(config))
    assert volume.shape == (2, *config.volume_shape) and torch.isfinite(volume).all()
    assert parameter_count(config) == sum(p.numel() for p in encoder.parameters())


def test_parameter_count_includes_the_resnet34_backbone():
    backbone = sum(p.numel() for name, p in torchvision.models.resnet34().named_parameters()
                   if not name.startswith("fc."))
    assert parameter_count(ENCODER_PRESETS["cpu"]) > backbone > 21_000_000


def test_head_channel_c_times_D_plus_d_is_feature_c_of_plane_d():
    config = ENCODER_PRESETS["smoke"]
    encoder = build_encoder(config).eval()
    channels, planes = config.feature_channels, config.depth_planes
    with torch.no_grad():
        encoder.head.weight.zero_()
        encoder.head.bias.copy_(torch.arange(channels * planes, dtype=torch.float32))
        volume = encoder(_images(config, batch=1))
    c, d = torch.meshgrid(torch.arange(channels), torch.arange(planes), indexing="ij")
    expected = (c * planes + d).float()[None, :, :, None, None].expand_as(volume)
    torch.testing.assert_close(volume, expected)


def test_same_seed_same_weights():
    config = ENCODER_PRESETS["smoke"]
    first, second, other = build_encoder(config, seed=3), build_encoder(config, seed=3), build_encoder(config, seed=4)
    torch.testing.assert_close(first.state_dict(), second.state_dict())
    assert not torch.equal(first.head.weight, other.head.weight)


def test_output_depends_on_the_image_and_gradients_reach_the_backbone():
    config = ENCODER_PRESETS["smoke"]
    encoder = build_encoder(config)
    images = _images(config, batch=2)
    volume = encoder(images)
    volume.square().mean().backward()
    assert encoder.backbone.conv1.weight.grad.abs().sum() > 0
    encoder.eval()
    with torch.no_grad():
        assert not torch.allclose(encoder(images[:1]), encoder(images[1:]))


def test_clear_errors_for_bad_inputs_and_configs():
    config = ENCODER_PRESETS["smoke"]
    encoder = build_encoder(config)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        encoder(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="at least 2 images"):
        encoder(_images(config, batch=1))
    assert encoder.eval()(_images(config, batch=1)).shape[0] == 1
    with pytest.raises(ValueError, match="unknown backbone"):
        EncoderConfig(image_size=64, backbone="vgg")
    with pytest.raises(ValueError, match="volume_size"):
        EncoderConfig(image_size=64, volume_size=24)
    with pytest.raises(ValueError, match="multiple of the trunk's stride 32"):
        EncoderConfig(image_size=48, volume_size=24)
    with pytest.raises(ValueError, match="trunk_stride must be one of"):
        EncoderConfig(image_size=32, trunk_stride=4)
    with pytest.raises(ValueError, match=r"one of \(2, 4\) \(trunk_stride 8\)"):
        EncoderConfig(image_size=32, volume_size=4, trunk_stride=8)
    with pytest.raises(ValueError, match="valid presets"):
        encoder_config("huge")
    assert encoder_config("cpu", depth_planes=16).depth_planes == 16


def test_imagenet_weights_load_from_a_local_file(tmp_path):
    config = ENCODER_PRESETS["smoke"]  # resnet18 backbone
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    encoder = VolumeEncoder(config, imagenet_weights=path)
    torch.testing.assert_close(encoder.backbone.conv1.weight, reference.conv1.weight)
    last = encoder.trunk_layers[-1]
    torch.testing.assert_close(getattr(encoder.backbone, last)[1].bn2.running_var,
                               getattr(reference, last)[1].bn2.running_var)


@pytest.mark.parametrize("trunk_stride, last_layer", [(8, "layer2"), (16, "layer3"), (32, "layer4")])
def test_a_cut_trunk_is_torchvisions_resnet_up_to_its_last_layer(tmp_path, trunk_stride, last_layer):
    config = encoder_config("smoke", trunk_stride=trunk_stride)
    reference = torchvision.models.resnet18().eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    encoder = VolumeEncoder(config, imagenet_weights=tmp_path / "resnet18.pth").eval()
    seen = []
    encoder.aspp.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    images = _images(config, batch=2)
    with torch.no_grad():
        encoder(images)
        x = ((images + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        kept_layers = RESNET_LAYERS[:RESNET_LAYERS.index(last_layer) + 1]
        for name in kept_layers:
            x = getattr(reference, name)(x)
    side = config.image_size // trunk_stride
    assert seen[0].shape[-2:] == (side, side)
    torch.testing.assert_close(seen[0], x)
    kept = sum(p.numel() for name, p in reference.named_parameters()
               if name.split(".")[0] in ("conv1", "bn1", *kept_layers))
    assert sum(p.numel() for p in encoder.backbone.parameters()) == kept


def test_missing_or_wrong_imagenet_weights_name_the_file(tmp_path):
    config = ENCODER_PRESETS["smoke"]
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth.*downloads nothing"):
        VolumeEncoder(config, imagenet_weights=missing)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth: not a state dict of torchvision's resnet18"):
        VolumeEncoder(config, imagenet_weights=wrong)
