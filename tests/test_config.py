import dataclasses
import json

import pytest
import torch

from genvs.config import config_from_dict, from_preset, with_overrides
from genvs.training import PRESETS, TrainConfig


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_config_survives_json_and_back(preset):
    config = PRESETS[preset]
    stored = json.loads(json.dumps(dataclasses.asdict(config)))  # as a checkpoint stores it: tuples become lists
    assert config_from_dict(TrainConfig, stored) == config
    with pytest.raises(ValueError, match="TrainConfig has no \\['colour'\\]"):
        config_from_dict(TrainConfig, {**stored, "colour": "red"})


def test_overrides_are_parsed_by_the_type_of_each_field():
    config = with_overrides(PRESETS["smoke"], {
        "lr_denoiser": "1e-5", "batch_size": "3", "precision": "bf16",
        "model.rgb_weight": "0.5", "model.denoiser.depths": "2, 3", "model.denoiser.self_attention": "false,true",
    })
    assert config.lr_denoiser == 1e-5 and config.batch_size == 3 and config.precision == "bf16"
    assert config.model.rgb_weight == 0.5
    assert config.model.denoiser.depths == (2, 3) and config.model.denoiser.self_attention == (False, True)
    assert PRESETS["smoke"].lr_denoiser != 1e-5  # presets are left alone


@pytest.mark.parametrize("key, value, message", [
    ("lr", "1", r"unknown config key 'lr': TrainConfig has \['model', 'stage'"),
    ("model.denoiser.colour", "1", r"unknown config key 'model.denoiser.colour': DenoiserConfig has"),
    ("lr_field.x", "1", "lr_field is a value, not a group"),
    ("model.field", "1", "is a group; set one of its keys: .*'model.field.near'"),
    ("batch_size", "two", r"batch_size='two': expected int"),
    ("model.denoiser.self_attention", "false,maybe", "expected true or false"),
    ("precision", "fp8", "unknown precision 'fp8'"),  # the dataclass's own validation
    ("model.denoiser.image_size", "64", "must equal the encoder's"),  # and the model's
])
def test_bad_overrides_say_what_is_wrong(key, value, message):
    with pytest.raises(ValueError, match=message):
        with_overrides(PRESETS["smoke"], {key: value})


def test_unknown_presets_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown training preset 'huge'; valid presets: \['colab-t4', 'cpu'"):
        from_preset(PRESETS, "huge", "training")


def test_profiles_pick_smoke_default_or_cuda(monkeypatch):
    import genvs.config as config

    monkeypatch.setattr(config, "SMOKE", False)
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: True)
    assert config.by_profile(1, 2, cuda=3) == 3 and config.by_profile(1, 2) == 2
    assert config.default_device() == torch.device("cuda")
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: False)
    assert config.by_profile(1, 2, cuda=3) == 2 and config.default_device() == torch.device("cpu")
    monkeypatch.setattr(config, "SMOKE", True)
    assert config.by_profile(1, 2, cuda=3) == 1
