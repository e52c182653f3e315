import dataclasses
import math

import pytest
import torch

from genvs.cameras import look_at, make_intrinsics
from genvs.controlnet import CONTROLNET_FIT, base_config, build_base
from genvs.data.synthetic import make_dataset
from genvs.raycond import RAY_CHANNELS, pluecker_rays, ray_condition, train_raycond

SIZE = 8


def camera(eye):
    K_cam = make_intrinsics(10.0, 4.5, 3.5)  # the principal point on the centre of pixel (4, 3)
    return K_cam, look_at(torch.tensor(eye), torch.zeros(3))


def test_pluecker_rays_name_the_ray_through_each_pixel():
    K_cam, c2w = camera([0.3, -1.2, 0.5])
    rays = pluecker_rays(K_cam, c2w, SIZE, SIZE)  # [6, H, W]
    direction, moment = rays[:3], rays[3:]
    torch.testing.assert_close(direction.norm(dim=0), torch.ones(SIZE, SIZE))
    # the ray through the principal point is the optical axis, through the origin: direction = the camera's z axis
    torch.testing.assert_close(direction[:, 3, 4], c2w[:3, 2])
    torch.testing.assert_close(moment[:, 3, 4], torch.zeros(3), atol=1e-6, rtol=0)
    # elsewhere |o x d| is the ray's distance from the origin: |o - (o . d) d| computed independently
    centre = c2w[:3, 3]
    along = (direction * centre[:, None, None]).sum(0)
    distance = (centre[:, None, None] - along * direction).norm(dim=0)
    torch.testing.assert_close(moment.norm(dim=0), distance, atol=1e-6, rtol=1e-5)
    assert (moment * direction).sum(0).abs().max() < 1e-6  # the moment is perpendicular to the direction
    # pixel (0, 0) looks up-left of the axis: its angle to the axis is atan(|offset| / focal)
    offset = math.hypot(4.5 - 0.5, 3.5 - 0.5)
    angle = torch.acos((direction[:, 0, 0] * c2w[:3, 2]).sum())
    assert math.isclose(float(angle), math.atan(offset / 10.0), rel_tol=1e-5)


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
