import pytest
import torch
from torch import nn

from genvs.denoiser import build_denoiser, denoiser_config, null_condition
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


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_seed_reproduces_and_different_seeds_differ(denoiser, cond, sampler):
    churn = {"s_churn": 1.0} if sampler in CHURN_SAMPLERS else {}
    a = _sample(denoiser, cond, sampler=sampler, seed=3, **churn)
    b = _sample(denoiser, cond, sampler=sampler, seed=3, **churn)
    c = _sample(denoiser, cond, sampler=sampler, seed=4, **churn)
    assert a.shape == (2, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


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


def test_unconditional_is_sampling_with_the_null_condition(denoiser, cond):
    unconditional = sample_images(denoiser, shape=(2, 3, 16, 16), unconditional=True, steps=STEPS, seed=5)
    with_null = _sample(denoiser, null_condition(cond), seed=5)
    ignored_cond = _sample(denoiser, cond, unconditional=True, seed=5)
    assert torch.equal(unconditional, with_null) and torch.equal(unconditional, ignored_cond)
    assert (unconditional - _sample(denoiser, cond, seed=5)).abs().max() > 1e-3


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
    denoiser = build_denoiser(denoiser_config("smoke", cond_channels=2), seed=0)
    cond = torch.zeros(2, 2, 16, 16)
    for mode in SAMPLING_MODES:  # every mode runs through sample_images
        assert sample_images(denoiser, cond, seed=0, **sampling_options(mode, steps=3)).shape == (2, 3, 16, 16)
