import copy
import dataclasses

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from test_controlnet import trained_looking

from genvs.cameras import look_at, make_intrinsics
from genvs.controlnet import CONTROLNET_FIT, base_config, build_base, build_controlnet, edm_denoiser
from genvs.data.synthetic import make_dataset
from genvs.model import GeNVS, genvs_config
from genvs.multiview import (
    CAMERA_FILE,
    CameraEmbedding,
    CrossViewAttnProcessor,
    generate_orbit,
    load_multiview,
    multiview_denoiser,
    orbit_plan,
    relative_rays,
    sample_jointly,
    train_multiview,
)

SIZE, VIEWS = 32, 4


def networks(seed=1):
    base = build_base(base_config("smoke"), seed=0).eval()
    return base, trained_looking(build_controlnet(base), seed)


def batch(objects=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(objects * VIEWS, 3, SIZE, SIZE, generator=generator)
    sigma = torch.full((objects * VIEWS,), 2.0)
    render = torch.randn(objects * VIEWS, 16, SIZE, SIZE, generator=generator)
    return x, sigma, render


@torch.no_grad()
def test_one_view_per_group_is_diffusers_own_attention():
    base, controlnet = networks()
    x, sigma, render = batch()
    assert all(isinstance(p, AttnProcessor2_0) for p in base.attn_processors.values())  # the oracle: diffusers' own
    plain = edm_denoiser(copy.deepcopy(base), copy.deepcopy(controlnet))(x, sigma, unet_cond=render)
    joint = multiview_denoiser(base, controlnet)
    assert all(isinstance(p, CrossViewAttnProcessor) for p in [*base.attn_processors.values(),
                                                               *controlnet.attn_processors.values()])
    torch.testing.assert_close(joint(x, sigma, unet_cond=render, views=1), plain, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_views_of_one_object_attend_to_each_other_and_never_to_another_object():
    denoiser = multiview_denoiser(*networks())
    x, sigma, render = batch(objects=2)
    changed = x.clone()
    changed[2] += 1.0  # view 2 of object 0
    for views, others_change in ((VIEWS, True), (1, False)):
        before = denoiser(x, sigma, unet_cond=render, views=views)
        after = denoiser(changed, sigma, unet_cond=render, views=views)
        others = [0, 1, 3]
        assert (not torch.allclose(after[others], before[others], atol=1e-4)) == others_change, views
        torch.testing.assert_close(after[VIEWS:], before[VIEWS:], atol=1e-5, rtol=1e-5)  # object 1 never sees it
    with pytest.raises(ValueError, match="not whole groups"):
        denoiser(x[:6], sigma[:6], unet_cond=render[:6], views=VIEWS)


class ViewsSeen:
    """Records the group size every cross-view attention call sees."""

    def __init__(self, monkeypatch):
        self.views = []
        original = CrossViewAttnProcessor.__call__

        def spy(processor, attn, hidden_states, *args, **kwargs):
            self.views.append(processor.groups.views)
            return original(processor, attn, hidden_states, *args, **kwargs)

        monkeypatch.setattr(CrossViewAttnProcessor, "__call__", spy)


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cars"), n_objects=4, n_views=8, image_size=SIZE, seed=0,
                        progress=False)


def test_training_attends_across_the_group_and_moves_the_controlnet_alone(cars, tmp_path, monkeypatch):
    model = GeNVS(genvs_config("smoke"), seed=0)
    base, controlnet = networks()
    frozen = {name: tensor.clone() for name, tensor in [*base.state_dict().items(), *model.state_dict().items()]}
    seen = ViewsSeen(monkeypatch)
    fit = dataclasses.replace(CONTROLNET_FIT, batch_size=2, target_views=2, lr=1e-2, warmup_steps=1)
    trained, record = train_multiview(model, cars, tmp_path / "run", 2, base, controlnet, fit, max_clean=2,
                                      save_every=0, progress=False)
    assert seen.views and set(seen.views) <= {3, 4}  # 1-2 clean + 2 noisy views, never one view alone
    after = [*base.state_dict().items(), *model.state_dict().items()]
    assert all(torch.equal(tensor, frozen[name]) for name, tensor in after)
    assert not torch.equal(trained.inner_model.controlnet.controlnet_mid_block.weight,
                           controlnet.controlnet_mid_block.weight.half().float())
    assert record["steps"] == 2
    assert not (tmp_path / "run" / CAMERA_FILE).exists() and load_multiview(tmp_path / "run")[1] is None


def group_cameras(objects=2, moved_view=None):
    """``K [objects, VIEWS, 3, 3]``, ``c2w [objects, VIEWS, 4, 4]``: cameras around the origin, 40 degrees apart;
    ``moved_view`` of object 0 raised and turned further."""
    K = make_intrinsics(1.2 * SIZE, SIZE / 2, SIZE / 2).expand(objects, VIEWS, 3, 3)
    poses = []
    for view in range(VIEWS):
        angle = torch.tensor(40.0 * view).deg2rad()
        poses.append(look_at(torch.stack([1.5 * angle.cos(), 1.5 * angle.sin(), torch.tensor(0.5)]), torch.zeros(3)))
    c2w = torch.stack(poses).expand(objects, -1, -1, -1).clone()
    if moved_view is not None:
        c2w[0, moved_view] = look_at(torch.tensor([-0.9, 1.1, 1.0]), torch.zeros(3))
    return K, c2w


def test_relative_rays_are_those_of_the_first_camera_and_ignore_where_the_group_stands():
    K, c2w = group_cameras()
    rays = relative_rays(K, c2w, SIZE, SIZE)  # [objects * V, 6, H, W]
    assert rays.shape == (2 * VIEWS, 6, SIZE, SIZE)
    assert rays[0, 3:].abs().max() < 1e-6  # the first camera is the origin: its rays have no moment
    torch.testing.assert_close(rays[0, :3, SIZE // 2, SIZE // 2], torch.tensor([0.0, 0.0, 1.0]), atol=0.05, rtol=0)
    turn = look_at(torch.tensor([0.3, -2.0, 0.7]), torch.tensor([0.1, 0.2, 0.0]))  # any rigid motion of the world
    torch.testing.assert_close(relative_rays(K, turn @ c2w, SIZE, SIZE), rays, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(relative_rays(K, group_cameras(moved_view=2)[1], SIZE, SIZE)[2], rays[2], atol=1e-2)


@torch.no_grad()
def test_the_camera_aware_route_sees_each_views_camera_and_starts_as_the_camera_blind_one():
    base, controlnet = networks()
    x, sigma, render = batch(objects=2)
    K, c2w = group_cameras()
    rays = relative_rays(K, c2w, SIZE, SIZE)
    moved = relative_rays(*group_cameras(moved_view=2), SIZE, SIZE)  # view 2 of object 0 elsewhere
    blind = multiview_denoiser(copy.deepcopy(base), copy.deepcopy(controlnet))
    cameras = CameraEmbedding.for_networks(base, controlnet)
    assert len(cameras.layers) == len(base.attn_processors) + len(controlnet.attn_processors)
    aware = multiview_denoiser(base, controlnet, cameras=cameras)
    before = blind(x, sigma, unet_cond=render, views=VIEWS, rays=rays)
    torch.testing.assert_close(aware(x, sigma, unet_cond=render, views=VIEWS, rays=rays), before)  # zero-initialised
    torch.testing.assert_close(blind(x, sigma, unet_cond=render, views=VIEWS, rays=moved), before)  # blind to cameras
    generator = torch.Generator().manual_seed(0)
    for parameter in cameras.parameters():  # as after training
        parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    joint = aware(x, sigma, unet_cond=render, views=VIEWS, rays=rays)
    joint_moved = aware(x, sigma, unet_cond=render, views=VIEWS, rays=moved)
    for view in range(VIEWS):  # every view of object 0 sees that view 2's camera moved, through joint attention
        assert not torch.allclose(joint_moved[view], joint[view], atol=1e-4), view
    torch.testing.assert_close(joint_moved[VIEWS:], joint[VIEWS:])  # object 1's cameras did not move
    alone = aware(x, sigma, unet_cond=render, views=1, rays=rays)
    alone_moved = aware(x, sigma, unet_cond=render, views=1, rays=moved)
    assert not torch.allclose(alone_moved[2], alone[2], atol=1e-4)
    torch.testing.assert_close(alone_moved[[0, 1, 3]], alone[[0, 1, 3]])  # per view: only view 2 itself


def test_camera_aware_training_trains_the_embedding_and_saves_it_beside_the_controlnet(cars, tmp_path):
    model = GeNVS(genvs_config("smoke"), seed=0)
    base, controlnet = networks()
    fit = dataclasses.replace(CONTROLNET_FIT, batch_size=2, target_views=2, lr=1e-2, warmup_steps=1)
    route, record = train_multiview(model, cars, tmp_path / "run", 2, base, controlnet, fit, save_every=0,
                                    progress=False, cameras=True)
    assert (tmp_path / "run" / CAMERA_FILE).is_file() and record["steps"] == 2
    _, cameras = load_multiview(tmp_path / "run")
    assert any(parameter.abs().max() > 0 for parameter in cameras.parameters())  # moved away from zero
    for (name, saved), (_, used) in zip(cameras.state_dict().items(), route.inner_model.cameras.state_dict().items()):
        torch.testing.assert_close(saved, used, msg=name)  # the returned route carries the saved embedding


def guide_inputs(objects=2, n_guides=1, n_new=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    views = 1 + n_guides + n_new
    cond = torch.randn(objects, views, 16, SIZE, SIZE, generator=generator)
    clean = torch.rand(objects, 1, 3, SIZE, SIZE, generator=generator) * 2 - 1
    guides = torch.rand(objects, n_guides, 3, SIZE, SIZE, generator=generator) * 2 - 1
    return cond, clean, guides


@torch.no_grad()
def test_joint_sampling_uses_guides_keeps_objects_apart_and_is_seeded_per_object(monkeypatch):
    denoiser = multiview_denoiser(*networks())
    cond, clean, guides = guide_inputs()
    options = {"steps": 3, "churn": 0.4, "guidance_scale": 2.0}
    seen = ViewsSeen(monkeypatch)
    both = sample_jointly(denoiser, cond, clean, guides, seed=[5, 6], **options)
    assert both.shape == (2, 2, 3, SIZE, SIZE) and set(seen.views) == {4}  # the whole group, guidance halves apart
    alone = sample_jointly(denoiser, cond[1:], clean[1:], guides[1:], seed=[6], **options)
    torch.testing.assert_close(alone, both[1:], atol=1e-5, rtol=1e-5)  # object 1 alone: same seed, same views
    other_guide = guides.clone()
    other_guide[0] = -other_guide[0]
    changed = sample_jointly(denoiser, cond, clean, other_guide, seed=[5, 6], **options)
    assert not torch.allclose(changed[0], both[0], atol=1e-4)  # the guide steers its object's new views
    torch.testing.assert_close(changed[1], both[1], atol=1e-5, rtol=1e-5)  # and nobody else's
    assert not torch.allclose(sample_jointly(denoiser, cond, clean, guides, seed=[7, 6], **options)[0], both[0])


def test_orbit_plans_cover_every_frame_once_guided_by_earlier_frames():
    generator = torch.Generator().manual_seed(0)
    for mode, chunk in (("chunked", 3), ("autoregressive", 1)):
        plan = orbit_plan(10, mode, chunk, 2, generator)
        assert sorted(frame for new, _ in plan for frame in new) == list(range(10))
        for new, guides in plan:
            assert len(new) <= chunk and all(guide < min(new) for guide in guides)
            if min(new) > 0:
                assert min(new) - 1 in guides  # the frame just before is always a guide
        if mode == "autoregressive":
            assert max(len(guides) for _, guides in plan) == 3  # 2 random earlier frames + the previous one
    assert orbit_plan(7, "chunked", 3, 2, generator) == [([0, 1, 2], []), ([3, 4, 5], [0, 1, 2]), ([6], [3, 4, 5])]
    with pytest.raises(ValueError, match="unknown orbit mode"):
        orbit_plan(4, "spiral", 1, 2, generator)


@torch.no_grad()
def test_an_orbit_is_seeded_per_object_and_starts_from_the_input(cars, monkeypatch):
    from genvs.cameras import trajectory_from
    from genvs.data.srn import SRNDataset

    model = GeNVS(genvs_config("smoke"), seed=0).eval()
    denoiser = multiview_denoiser(*networks())
    dataset = SRNDataset(cars, split="train", views_per_item=None)
    views = [dataset.load_views(index, [0]) for index in range(2)]
    images, K_in, c2w = (torch.stack([view[key] for view in views]) for key in ("images", "K", "c2w"))
    target_c2w = torch.stack([trajectory_from(view["c2w"][0], 4) for view in views])
    target_K = K_in.expand(-1, 4, -1, -1)
    seen = ViewsSeen(monkeypatch)
    options = {"steps": 2, "churn": 0.4, "guidance_scale": 2.0, "chunk": 2, "progress": False}
    orbit = generate_orbit(model, denoiser, images, K_in, c2w, target_K, target_c2w, seed=[3, 4], **options)
    assert orbit["samples"].shape == (2, 4, 3, SIZE, SIZE) and orbit["guides"] == [[], [0, 1]]
    assert set(seen.views) == {3, 5}  # input + 2 new; input + 2 guides + 2 new
    alone = generate_orbit(model, denoiser, images[1:], K_in[1:], c2w[1:], target_K[1:], target_c2w[1:], seed=[4],
                           **options)
    # the same random numbers; the images equal up to the rounding of batched matrix products (sampling.py)
    torch.testing.assert_close(alone["samples"][0], orbit["samples"][1], atol=2e-4, rtol=0)


@torch.no_grad()
def test_recorded_attention_is_each_groups_softmax_and_matches_torchs_attention():
    from genvs.multiview import attention_heads, attention_weights, recording

    base, controlnet = networks()
    denoiser = multiview_denoiser(base, controlnet)
    x, sigma, render = batch(objects=2)
    with recording(denoiser) as calls:
        denoiser(x, sigma, unet_cond=render, views=VIEWS)
    assert len(calls) == len(base.attn_processors) + len(controlnet.attn_processors)  # every layer, base and ControlNet
    attn, hidden_states, views, position = calls[-1]
    assert position is None  # a camera-blind route
    weights = attention_weights(attn, hidden_states, views)
    tokens = hidden_states.shape[-1] * hidden_states.shape[-2]
    assert weights.shape == (2, attn.heads, VIEWS * tokens, VIEWS * tokens)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    query, key, value = attention_heads(attn, hidden_states, views)
    torch.testing.assert_close(weights @ value, torch.nn.functional.scaled_dot_product_attention(query, key, value),
                               atol=1e-5, rtol=1e-4)
    assert denoiser.inner_model.groups.recorded is None  # recording stops with the block
