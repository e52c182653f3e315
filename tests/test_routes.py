import copy

import pytest
import torch
from test_sampling import _trajectory_inputs, perturbed

from genvs.routes import RenderRoute, TrajectoryRoute, frame_seeds
from genvs.sampling import sample_novel_views, sampling_options
from genvs.seeding import derive_seed

OPTIONS = sampling_options("stochastic", steps=3)


@pytest.fixture(scope="module")
def model():
    """The smoke GeNVS with its denoiser :func:`test_sampling.perturbed` (untrained, D would ignore its condition)."""
    from genvs.model import PRESETS, GeNVS

    model = GeNVS(PRESETS["smoke"], seed=0)
    perturbed(model.denoiser)
    return model


def test_frame_seeds_are_each_objects_seed_derived_per_frame_object_major():
    assert frame_seeds([4, 9], 3) == [derive_seed(4, 0), derive_seed(4, 1), derive_seed(4, 2),
                                      derive_seed(9, 0), derive_seed(9, 1), derive_seed(9, 2)]


def test_a_render_route_is_each_object_sampled_alone_with_its_seed(model):
    """RenderRoute(model) on 2 objects with seeds [4, 9] gives object b what sample_novel_views gives it alone with
    seed=s_b (to float rounding: batched matrix products), on the CPU."""
    inputs = _trajectory_inputs(2, 3)
    images = RenderRoute(model, options=OPTIONS)(*inputs, [4, 9])
    assert images.shape == (2, 3, 3, 32, 32) and images.device.type == "cpu"
    for b, seed in enumerate((4, 9)):
        alone = sample_novel_views(model, *(tensor[b:b + 1] for tensor in inputs), seed=seed, **OPTIONS)
        torch.testing.assert_close(images[b], alone["samples"][0], atol=1e-5, rtol=0)


def test_a_render_route_per_frame_is_the_independent_trajectory(model):
    """per_frame=True seeds frame f of object b with derive_seed(s_b, f): the frames generate_trajectory samples
    one by one from the inputs alone (to float rounding), with the same other denoiser."""
    inputs = _trajectory_inputs(2, 3)
    other = perturbed(copy.deepcopy(model.denoiser))
    per_frame = RenderRoute(model, other, OPTIONS, per_frame=True)(*inputs, [4, 9])
    independent = TrajectoryRoute(model, other, autoregressive=False, options=OPTIONS)(*inputs, [4, 9])
    torch.testing.assert_close(per_frame, independent, atol=1e-5, rtol=0)
    own = RenderRoute(model, options=OPTIONS, per_frame=True)(*inputs, [4, 9])
    assert (own - per_frame).abs().max() > 1e-2  # the denoiser is the route's


@pytest.mark.parametrize("route_of", [lambda model, options: RenderRoute(model, options=options),
                                      lambda model, options: TrajectoryRoute(model, options=options)],
                         ids=["render", "trajectory"])
def test_a_calls_options_replace_the_routes_own(model, route_of):
    inputs = _trajectory_inputs(1, 2)
    two_steps = route_of(model, {**OPTIONS, "steps": 2})(*inputs, [4])
    assert torch.equal(route_of(model, OPTIONS)(*inputs, [4], steps=2), two_steps)
    assert (route_of(model, OPTIONS)(*inputs, [4]) - two_steps).abs().max() > 1e-3
