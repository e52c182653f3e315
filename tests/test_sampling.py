import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from genvs.denoiser import build_denoiser, denoiser_config
from genvs.sampling import CHURN_SAMPLERS, SAMPLERS, eval_mode, karras_sigmas, sample_images

STEPS = 4


@pytest.fixture(scope="module")
def denoiser() -> nn.Module:
    """A smoke-sized denoiser with every weight perturbed, so the condition matters (k-diffusion
    zero-initialises output layers) and dropout would show if left on."""
    model = build_denoiser(denoiser_config("smoke", dropout=0.3))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def cond() -> torch.Tensor:
    return torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(1))


def _sample(denoiser, cond, **options):
    return sample_images(denoiser, cond, steps=STEPS, **options)


class _Oracle(nn.Module):
    """A perfect denoiser of a known data set: ``D(x; sigma, c) = y`` where the condition ``c`` is all
    zeros (checked sample by sample, independently of ``null_condition``) and ``z`` otherwise.

    ``y``, ``z``: ``[B, 3, H, W]``; a batch of ``n * B`` (guidance stacks two) gets them repeated.
    It records every condition it is given. ``sample_images`` reads the device from its dummy
    parameter and the channels from ``inner_model``, as from a k-diffusion ``Denoiser``.
    """

    def __init__(self, y, z=None, cond_channels=2):
        super().__init__()
        self.y, self.z = y, y if z is None else z
        self.dummy = nn.Parameter(torch.zeros(()))
        self.inner_model = SimpleNamespace(unet_cond_dim=cond_channels, c_in=y.shape[1])
        self.seen_conds = []

    def forward(self, x, sigma, unet_cond=None):
        self.seen_conds.append(unet_cond)
        repeats = x.shape[0] // self.y.shape[0]
        is_null = (unet_cond == 0).flatten(1).all(1)[:, None, None, None]
        return torch.where(is_null, self.y.repeat(repeats, 1, 1, 1), self.z.repeat(repeats, 1, 1, 1))


def _clean_images(seed, scale=0.9):
    """Two 3 x 8 x 8 images with values in [-scale, scale]."""
    return (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * scale


def _oracle_cond():
    """A condition that is non-zero in every sample (but zero in places, as real features may be)."""
    cond = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(7))
    cond[:, 1, :4] = 0.0
    return cond


SAMPLER_VARIANTS = [pytest.param(name, {}, id=name) for name in sorted(SAMPLERS)] \
    + [pytest.param(name, {"s_churn": 1.0}, id=f"{name}-churn") for name in CHURN_SAMPLERS] \
    + [pytest.param("euler_ancestral", {"s_noise": 1.5}, id="euler_ancestral-s_noise")]


@pytest.mark.parametrize("sampler,options", SAMPLER_VARIANTS)
def test_every_sampler_lands_on_a_perfect_denoisers_image(sampler, options):
    """With D(x; sigma) = y for every x and sigma, the probability-flow ODE (and the churn / ancestral
    noise, which it removes again) ends exactly at y, whatever the start noise."""
    y = _clean_images(0)
    oracle = _Oracle(y)
    for seed in range(3):
        out = sample_images(oracle, _oracle_cond(), sampler=sampler, steps=STEPS, seed=seed, **options)
        torch.testing.assert_close(out, y, atol=1e-5, rtol=0)


def test_unconditional_conditional_and_guided_sampling_use_the_right_denoiser():
    """The oracle answers y to the all-zero condition and z to any other: unconditional sampling must
    land on y, conditional on z, guided with scale w on y + w (z - y)."""
    y, z = _clean_images(1, scale=0.3), _clean_images(2, scale=0.3)
    cond = _oracle_cond()
    for sampler in ("euler", "heun"):
        oracle = _Oracle(y, z)
        unconditional = sample_images(oracle, shape=(2, 3, 8, 8), unconditional=True, sampler=sampler, steps=STEPS,
                                      seed=5)
        torch.testing.assert_close(unconditional, y, atol=1e-5, rtol=0)
        assert all(seen.shape == (2, 2, 8, 8) and torch.all(seen == 0) for seen in oracle.seen_conds)
        oracle.seen_conds.clear()
        ignored = sample_images(oracle, cond, unconditional=True, sampler=sampler, steps=STEPS, seed=5)
        torch.testing.assert_close(ignored, y, atol=1e-5, rtol=0)  # the given condition is not used
        assert all(torch.all(seen == 0) for seen in oracle.seen_conds)
        torch.testing.assert_close(sample_images(oracle, cond, sampler=sampler, steps=STEPS, seed=5), z,
                                   atol=1e-5, rtol=0)
        for w in (0.0, 0.5, 2.0):  # |y + w (z - y)| <= (|1 - w| + w) 0.3 < 1: never clamped
            guided = sample_images(oracle, cond, sampler=sampler, steps=STEPS, seed=5, guidance_scale=w)
            torch.testing.assert_close(guided, y + w * (z - y), atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_seed_reproduces_and_different_seeds_differ(denoiser, cond, sampler):
    churn = {"s_churn": 1.0} if sampler in CHURN_SAMPLERS else {}
    a = _sample(denoiser, cond, sampler=sampler, seed=3, **churn)
    b = _sample(denoiser, cond, sampler=sampler, seed=3, **churn)
    c = _sample(denoiser, cond, sampler=sampler, seed=4, **churn)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    # Every sampler's last step goes to sigma = 0: the result is its last denoised estimate, clamped.
    steps = []
    d = _sample(denoiser, cond, sampler=sampler, seed=3, callback=steps.append, **churn)
    assert torch.equal(d, a) and [info["i"] for info in steps] == list(range(STEPS))
    torch.testing.assert_close(a, steps[-1]["denoised"].clamp(-1, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["euler", "heun", "euler_ancestral"])
def test_sampler_noise_follows_the_seed(denoiser, cond, sampler):
    """With the start noise fixed, churn / ancestral noise still comes from the seed."""
    churn = {"s_churn": 1.0} if sampler in CHURN_SAMPLERS else {}
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a, b, c = (_sample(denoiser, cond, sampler=sampler, noise=noise, seed=s, **churn) for s in (1, 1, 2))
    assert torch.equal(a, b) and (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m"])
def test_deterministic_samplers_depend_on_the_start_noise_only(denoiser, cond, sampler):
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_sample(denoiser, cond, sampler=sampler, noise=noise, seed=1),
                       _sample(denoiser, cond, sampler=sampler, noise=noise, seed=2))


def test_seeded_sampling_leaves_the_global_rng_unchanged(denoiser, cond):
    state = torch.get_rng_state()
    _sample(denoiser, cond, sampler="euler", s_churn=1.0, seed=0)
    _sample(denoiser, cond, sampler="euler_ancestral", seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_generator_as_seed(denoiser, cond):
    a = _sample(denoiser, cond, seed=torch.Generator().manual_seed(9))
    b = _sample(denoiser, cond, seed=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_guidance(denoiser, cond):
    conditional = _sample(denoiser, cond, seed=6)
    assert torch.equal(_sample(denoiser, cond, seed=6, guidance_scale=1.0), conditional)
    # w = 0 is the unconditional denoiser (computed in a batch of two, so only close)
    torch.testing.assert_close(_sample(denoiser, cond, seed=6, guidance_scale=0.0),
                               _sample(denoiser, cond, seed=6, unconditional=True), atol=1e-4, rtol=0)
    guided = _sample(denoiser, cond, seed=6, guidance_scale=3.0)
    assert torch.isfinite(guided).all() and (guided - conditional).abs().max() > 1e-3


@pytest.mark.parametrize("training", [True, False])
def test_sampling_runs_in_eval_mode_and_restores_the_mode(denoiser, cond, training):
    denoiser.train(training)
    seen = []
    _sample(denoiser, cond, callback=lambda info: seen.append(any(m.training for m in denoiser.modules())))
    assert seen == [False] * STEPS
    assert all(m.training == training for m in denoiser.modules())


def test_eval_mode_restores_mixed_modes():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model.train()
    model[0].eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, False, True]


def test_callback_gives_each_steps_denoised_estimate(denoiser, cond):
    steps = []
    out = _sample(denoiser, cond, sampler="euler", seed=0, callback=steps.append)
    assert [info["i"] for info in steps] == list(range(STEPS))
    assert all(info["denoised"].shape == (2, 3, 16, 16) for info in steps)
    # Euler's last step lands on its denoised estimate (sigma_next = 0)
    torch.testing.assert_close(out, steps[-1]["denoised"].clamp(-1, 1))


def test_karras_sigmas():
    sigmas = karras_sigmas(5, 0.01, 10.0, rho=7.0)
    assert sigmas.shape == (6,) and sigmas[-1] == 0
    torch.testing.assert_close(sigmas[[0, 4]], torch.tensor([10.0, 0.01]))
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_bad_arguments_are_reported(denoiser, cond):
    with pytest.raises(ValueError, match="valid samplers: \\['dpmpp_2m', 'euler', 'euler_ancestral', 'heun'\\]"):
        _sample(denoiser, cond, sampler="ddim")
    with pytest.raises(ValueError, match="s_churn=1.0 applies to"):
        _sample(denoiser, cond, sampler="dpmpp_2m", s_churn=1.0)
    with pytest.raises(ValueError, match="cond is None"):
        sample_images(denoiser, shape=(2, 3, 16, 16))
    with pytest.raises(ValueError, match="guidance_scale=2.0 needs conditional"):
        _sample(denoiser, cond, unconditional=True, guidance_scale=2.0)
    with pytest.raises(ValueError, match="differ in batch or size"):
        _sample(denoiser, cond, shape=(3, 3, 16, 16))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        sample_images(denoiser, cond, steps=0)


def test_the_conditioning_set_follows_the_seed_rule():
    from genvs.sampling import conditioning_set

    generator = torch.Generator().manual_seed(0)
    assert conditioning_set(0, 2, 4, generator) == [0, 1]  # the real inputs only
    assert conditioning_set(1, 2, 4, generator) == [0, 1, 2]  # + the previous frame (frame 0 = pool index 2)
    for frame in range(2, 30):
        chosen = conditioning_set(frame, 2, 4, generator)
        previous = 2 + frame - 1
        random_frames = chosen[2:-1]
        assert chosen[:2] == [0, 1] and chosen[-1] == previous
        assert len(random_frames) == min(4, frame - 1) and len(set(random_frames)) == len(random_frames)
        assert all(2 <= index < previous for index in random_frames) and random_frames == sorted(random_frames)
    sets = {tuple(conditioning_set(20, 1, 4, torch.Generator().manual_seed(seed))) for seed in range(20)}
    assert len(sets) > 10  # the earlier frames really are drawn at random
    assert conditioning_set(20, 1, 4, torch.Generator().manual_seed(3)) == \
        conditioning_set(20, 1, 4, torch.Generator().manual_seed(3))


def test_trajectories_are_seeded_and_autoregressive_frames_join_the_inputs():
    from genvs.cameras import make_intrinsics, orbit, trajectory_from
    from genvs.model import PRESETS as MODEL_PRESETS
    from genvs.model import GeNVS
    from genvs.sampling import generate_trajectory

    model = GeNVS(MODEL_PRESETS["smoke"], seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # k-diffusion zero-initialises its output layer: untrained, D would ignore its condition
        for parameter in model.denoiser.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    size = MODEL_PRESETS["smoke"].field.encoder.image_size
    K, c2w = make_intrinsics(1.0 * size, size / 2, size / 2)[None], orbit(1)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    poses = trajectory_from(c2w[0], 5, sweep_deg=90.0)

    def generate(**options):
        return generate_trajectory(model, image, K, c2w, K.expand(5, 3, 3), poses, steps=3, progress=False, **options)

    state = torch.get_rng_state()
    first, again, other = generate(seed=1), generate(seed=1), generate(seed=2)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first["samples"], other["samples"])
    assert first["samples"].shape == (5, 3, size, size) and first["depth"].shape == (5, 16, 16)
    assert first["conditioning"] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
    independent = generate(seed=1, autoregressive=False)
    assert independent["conditioning"] == [[0]] * 5
    torch.testing.assert_close(independent["samples"][0], first["samples"][0])  # frame 0: same views, same seed
    assert not torch.equal(independent["samples"][1], first["samples"][1])  # later frames see generated views


def test_sampling_modes_name_the_seeds_settings():
    from genvs.sampling import SAMPLING_MODES, sampling_options

    assert sampling_options("stochastic", steps=50) == {"sampler": "euler", "steps": 50, "s_churn": 20.0,
                                                        "s_noise": 1.003}  # gamma = 20 / 50 = 0.4 per step
    assert sampling_options("deterministic", steps=10) == {"sampler": "euler", "steps": 10}
    assert sampling_options("unconditional")["unconditional"] is True
    assert sampling_options("guided", guidance_scale=3.0)["guidance_scale"] == 3.0
    with pytest.raises(ValueError, match="valid modes"):
        sampling_options("fast")
    y, z = _clean_images(3, scale=0.2), _clean_images(4, scale=0.2)
    expected = {"stochastic": z, "deterministic": z, "unconditional": y, "guided": y + 2.5 * (z - y)}
    assert expected["guided"].abs().max() < 1  # not clamped
    for mode in SAMPLING_MODES:  # with a perfect denoiser each mode lands on its own answer
        oracle, steps = _Oracle(y, z), []
        out = sample_images(oracle, _oracle_cond(), seed=0, callback=steps.append,
                            **sampling_options(mode, steps=STEPS, guidance_scale=2.5))
        torch.testing.assert_close(out, expected[mode], atol=1e-5, rtol=0, msg=lambda m: f"{mode}: {m}")
        if mode == "unconditional":  # the network saw the all-zero condition only
            assert all(torch.all(seen == 0) for seen in oracle.seen_conds)
        if mode == "guided":  # ... and every guided call saw the condition and the all-zero one
            assert all(torch.equal(seen[:2], _oracle_cond()) and torch.all(seen[2:] == 0) for seen in oracle.seen_conds)
        # churn: sigma_hat = (1 + gamma) sigma_i with gamma = 0.4 when stochastic, 0 otherwise
        gamma = 0.4 if mode == "stochastic" else 0.0
        assert len(steps) == STEPS
        for info in steps:
            assert float(info["sigma_hat"]) == pytest.approx((1 + gamma) * float(info["sigma"]), rel=1e-6)


def test_only_the_stochastic_mode_draws_noise_after_the_start(denoiser, cond):
    """With the start noise fixed, the seed changes the stochastic mode's result (churn) and no other's."""
    from genvs.sampling import SAMPLING_MODES, sampling_options

    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for mode in SAMPLING_MODES:
        a, b = (sample_images(denoiser, cond, noise=noise, seed=seed, **sampling_options(mode, steps=STEPS))
                for seed in (1, 2))
        assert torch.equal(a, b) != (mode == "stochastic"), mode


def test_churn_is_capped_as_in_k_diffusion():
    """gamma = min(s_churn / steps, sqrt(2) - 1): asking for churn 0.5 per step gives sqrt(2) - 1."""
    from genvs.sampling import sampling_options

    y = _clean_images(0)
    for churn, gamma in ((0.2, 0.2), (0.5, math.sqrt(2) - 1)):
        steps = []
        out = sample_images(_Oracle(y), _oracle_cond(), seed=0, callback=steps.append,
                            **sampling_options("stochastic", steps=STEPS, churn=churn))
        torch.testing.assert_close(out, y, atol=1e-5, rtol=0)
        assert [float(info["sigma_hat"]) for info in steps] == pytest.approx(
            [(1 + gamma) * float(info["sigma"]) for info in steps], rel=1e-6)


def test_a_generated_frame_is_encoded_with_its_own_pose(monkeypatch):
    """Autoregressive generation feeds frame 0 back in as a view taken from trajectory pose 0: frame 1's
    rendered features must be those of the field encoded from [input, frame 0] with poses
    [input pose, pose 0] -- computed here directly -- and not with frame 0 under another pose."""
    import genvs.sampling
    from genvs.cameras import make_intrinsics, orbit, trajectory_from
    from genvs.model import PRESETS as MODEL_PRESETS
    from genvs.model import GeNVS
    from genvs.sampling import generate_trajectory

    model = GeNVS(MODEL_PRESETS["smoke"], seed=0)
    size = MODEL_PRESETS["smoke"].field.encoder.image_size
    K, c2w = make_intrinsics(1.0 * size, size / 2, size / 2)[None], orbit(1)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    poses = trajectory_from(c2w[0], 8, sweep_deg=240.0)[1:4]  # pose 0 is 30 degrees away from the input
    known = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    calls = []

    def fake_sample_images(denoiser, cond, **options):  # frame 0 is the known image, later frames grey
        calls.append(options["seed"])
        return known if len(calls) == 1 else torch.zeros_like(known)

    monkeypatch.setattr(genvs.sampling, "sample_images", fake_sample_images)
    result = generate_trajectory(model, image, K, c2w, K.expand(3, 3, 3), poses, max_random=0, steps=2,
                                 progress=False)
    assert len(calls) == 3 and result["conditioning"][1] == [0, 1]
    assert torch.equal(result["samples"][0], known[0])

    def features_of_frame_1(frame_0_pose):
        with eval_mode(model), torch.no_grad():
            views = model.field.encode(torch.stack([image[0], known[0]])[None], torch.cat([K, K])[None],
                                       torch.stack([c2w[0], frame_0_pose])[None])
            return model.condition(views, K[None], poses[None, 1:2])[1]["features"][0, 0]

    expected = features_of_frame_1(poses[0])
    torch.testing.assert_close(result["features"][1], expected, atol=1e-5, rtol=1e-5)
    for wrong_pose in (c2w[0], poses[1]):  # the input's pose; the pose of the frame being generated
        assert (features_of_frame_1(wrong_pose) - expected).abs().max() > 1e-2
