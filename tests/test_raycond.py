import dataclasses

import pytest
import torch

from genvs.cameras import look_at, make_intrinsics, pluecker_rays
from genvs.controlnet import CONTROLNET_FIT, base_config, build_base
from genvs.data.synthetic import make_dataset
from genvs.raycond import RAY_CHANNELS, ray_condition, train_raycond

SIZE = 8


def camera(eye):
    K_cam = make_intrinsics(10.0, 4.5, 3.5)  # the principal point on the centre of pixel (4, 3)
    return K_cam, look_at(torch.tensor(eye), torch.zeros(3))


def test_the_condition_stacks_the_input_image_the_target_rays_and_the_input_rays_per_target():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, SIZE, SIZE, generator=generator)
    K_in, c2w_in = camera([0.0, -1.3, 0.4])
    K_t, c2w_t = camera([1.3, 0.0, 0.4])
    targets_c2w = torch.stack([c2w_t, c2w_in])[None].expand(2, -1, -1, -1)
    cond = ray_condition(image, K_in.expand(2, 3, 3), c2w_in.expand(2, 4, 4), K_t.expand(2, 2, 3, 3), targets_c2w)
    assert cond.shape == (4, RAY_CHANNELS, SIZE, SIZE)
    assert torch.equal(cond[2, :3], image[1]) and torch.equal(cond[3, :3], image[1])  # object-major: [B * T]
    torch.testing.assert_close(cond[0, 3:9], pluecker_rays(K_t, c2w_t, SIZE, SIZE))
    torch.testing.assert_close(cond[0, 9:], pluecker_rays(K_in, c2w_in, SIZE, SIZE))
    torch.testing.assert_close(cond[1, 3:9], cond[1, 9:])  # a target at the input camera sees the input's rays


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cars"), n_objects=4, n_views=6, image_size=32, seed=0, progress=False)


def test_training_moves_a_fifteen_channel_controlnet_and_leaves_the_base(cars, tmp_path):
    base = build_base(base_config("smoke"), seed=0)
    frozen = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    fit = dataclasses.replace(CONTROLNET_FIT, batch_size=2, target_views=2, lr=1e-2, warmup_steps=1)
    controlnet, record = train_raycond(cars, tmp_path / "run", 2, base, fit, save_every=0, progress=False)
    assert controlnet.config.conditioning_channels == RAY_CHANNELS
    assert controlnet.controlnet_mid_block.weight.abs().max() > 0
    assert all(torch.equal(tensor, frozen[name]) for name, tensor in base.state_dict().items())
    assert record["steps"] == 2
