import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from genvs.denoiser import build_denoiser, denoiser_config, k_diffusion
from genvs.sampling import CHURN_SAMPLERS, SAMPLERS, k_diffusion_s_churn, karras_sigmas, sample_images, sampling_options
from genvs.seeding import derive_seed, seeded_rng

STEPS = 4


def perturbed(denoiser: nn.Module) -> nn.Module:
    """``denoiser`` with 0.05 N(0, 1) added to every weight (seed 0), in place: k-diffusion zero-initialises its
    output layers, so untrained, D would ignore its input's details and its condition."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in denoiser.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return denoiser


@pytest.fixture(scope="module")
def denoiser() -> nn.Module:
    """A smoke-sized denoiser, :func:`perturbed`, so the condition matters and dropout would show if left on."""
    return perturbed(build_denoiser(denoiser_config("smoke", dropout=0.3)))


@pytest.fixture(scope="module")
def cond() -> torch.Tensor:
    return torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(1))


def _sample(denoiser, cond, **options):
    return sample_images(denoiser, cond, steps=STEPS, **options)


class _Oracle(nn.Module):
    """A perfect denoiser of a known data set: ``D(x; sigma, c) = y`` where the condition ``c`` is all
    zeros (checked sample by sample, independently of ``null_condition``) and ``z`` otherwise.

    ``y``, ``z``: ``[B, 3, H, W]``; a batch of ``n * B`` (guidance stacks two) gets them repeated.
    It records every condition it is given, and the dtype of the CPU autocast it runs under (None: none);
    like a network, it answers in that dtype. ``sample_images`` reads the device from its dummy
    parameter and the channels from ``inner_model``, as from a k-diffusion ``Denoiser``.
    """

    def __init__(self, y, z=None, cond_channels=2):
        super().__init__()
        self.y, self.z = y, y if z is None else z
        self.dummy = nn.Parameter(torch.zeros(()))
        self.inner_model = SimpleNamespace(unet_cond_dim=cond_channels, c_in=y.shape[1])
        self.seen_conds, self.autocast = [], []

    def forward(self, x, sigma, unet_cond=None):
        self.seen_conds.append(unet_cond)
        autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        self.autocast.append(autocast)
        repeats = x.shape[0] // self.y.shape[0]
        is_null = (unet_cond == 0).flatten(1).all(1)[:, None, None, None]
        answer = torch.where(is_null, self.y.repeat(repeats, 1, 1, 1), self.z.repeat(repeats, 1, 1, 1))
        return answer if autocast is None else answer.to(autocast)


class BatchInvariantDenoiser(nn.Module):
    """An EDM-shaped denoiser computed pixel by pixel with correctly rounded operations only:
    ``D = c_skip x + c_out softsign(w c_in x + c_0..2)`` (``c``: the condition's first 3 channels; ``sd = 0.5``).

    Image ``b``'s output is the same bits whatever else is in the batch; k-diffusion's U-Net does not promise that
    (its matrix products may sum in another order for another number of rows). Sampling with it shows what the
    sampler's bookkeeping (seeds, noise streams, conditioning sets) does, free of float rounding.
    """

    def __init__(self, cond_channels=16):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(1.5))
        self.inner_model = SimpleNamespace(unet_cond_dim=cond_channels, c_in=3)

    def forward(self, x, sigma, unet_cond=None):
        variance = sigma[:, None, None, None] ** 2 + 0.25
        raw = self.weight * x / variance.sqrt() + unet_cond[:, :3]
        return 0.25 / variance * x + sigma[:, None, None, None] * 0.5 / variance.sqrt() * (raw / (1 + raw.abs()))


class BatchInvariantEncoder(nn.Module):
    """An image-to-volume encoder ``[N, 3, H, W] -> [N, C, D, h, w]`` computed image by image without matrix
    products: feature ``c`` of plane ``d`` is ``softsign(w_cd * a_(c mod 3))``, ``a`` the image area-averaged to
    ``h x w``. The same bits for an image whatever else is in the batch (the ResNet encoder does not promise that)."""

    def __init__(self, channels: int, depth_planes: int, size: int):
        super().__init__()
        self.size = size
        generator = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(channels, depth_planes, 1, 1, generator=generator))
        self.register_buffer("colour", torch.arange(channels) % 3)

    def forward(self, images):
        raw = torch.nn.functional.adaptive_avg_pool2d(images, self.size)[:, self.colour, None] * self.weight
        return raw / (1 + raw.abs())


def batch_invariant(model: nn.Module) -> nn.Module:
    """A copy of a GeNVS with :class:`BatchInvariantEncoder` and :class:`BatchInvariantDenoiser` in place of its
    networks: object b's computations (its field's MLP and rendering are kept) give the same bits in any batch."""
    import copy

    config = model.config.field.encoder
    invariant = copy.deepcopy(model)
    invariant.field.encoder = BatchInvariantEncoder(config.feature_channels, config.depth_planes, config.volume_size)
    invariant.denoiser = BatchInvariantDenoiser(config.feature_channels)
    return invariant


SAMPLER_VARIANTS = [pytest.param(name, {}, id=name) for name in sorted(SAMPLERS)] \
    + [pytest.param(name, {"churn": 0.25}, id=f"{name}-churn") for name in CHURN_SAMPLERS] \
    + [pytest.param("euler_ancestral", {"s_noise": 1.5}, id="euler_ancestral-s_noise")]
# churn at some steps only (sigma in [0.1, 5]): the noise is drawn at every step all the same
WINDOWED_CHURN = [pytest.param(name, {"churn": 0.4, "s_tmin": 0.1, "s_tmax": 5.0, "s_noise": 1.003},
                               id=f"{name}-churn-window") for name in CHURN_SAMPLERS]


def _k_diffusion_sample(denoiser, cond, sampler, seed, steps=STEPS, **options):
    """k-diffusion's own ``sample_<sampler>``, drawing from the global RNG seeded with ``seed`` (what ``sample_images``
    called before it drew from explicit generators); ``churn`` given to it as its ``s_churn``."""
    if "churn" in options:
        options["s_churn"] = k_diffusion_s_churn(options.pop("churn"), steps)
    sigmas = karras_sigmas(steps)
    with k_diffusion.utils.eval_mode(denoiser), seeded_rng(seed, torch.device("cpu")), torch.no_grad():
        start = torch.randn(2, 3, 16, 16) * sigmas[0]
        sample = getattr(k_diffusion.sampling, f"sample_{sampler}")
        return sample(lambda x, sigma: denoiser(x, sigma, unet_cond=cond), start, sigmas, disable=True,
                      **options).clamp(-1, 1)


@pytest.mark.parametrize("sampler,options", SAMPLER_VARIANTS + WINDOWED_CHURN)
def test_samplers_compute_k_diffusions_samplers_bit_for_bit(denoiser, cond, sampler, options):
    """The oracle: k-diffusion's own sampler given the same seed gives the same images bit for bit."""
    expected = _k_diffusion_sample(denoiser, cond, sampler, 11, **options)
    assert torch.equal(_sample(denoiser, cond, sampler=sampler, seed=11, **options), expected)


@pytest.mark.parametrize("sampler,options", SAMPLER_VARIANTS)
def test_per_image_seeds_give_each_image_the_numbers_it_gets_alone(sampler, options):
    """Image b of a batch sampled with seeds [s_0, s_1, s_2] is, bit for bit, image b sampled alone with seed s_b
    (a denoiser independent of the batch: only the random numbers can differ); one int seed is one stream for the
    whole batch instead, so its image 1 is not image 1 sampled alone."""
    denoiser = BatchInvariantDenoiser()
    cond = torch.randn(3, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    seeds = [5, 17, 5]  # a seed repeated with another condition
    together = sample_images(denoiser, cond, sampler=sampler, steps=STEPS, seed=seeds, **options)
    alone = [sample_images(denoiser, cond[b:b + 1], sampler=sampler, steps=STEPS, seed=seed, **options)
             for b, seed in enumerate(seeds)]
    for b in range(3):
        assert torch.equal(together[b:b + 1], alone[b]), b
    one_stream = sample_images(denoiser, cond, sampler=sampler, steps=STEPS, seed=17, **options)
    assert (one_stream[1] - alone[1][0]).abs().max() > 1e-3


def test_per_image_seeds_with_the_unet_match_sampling_alone_to_rounding(denoiser, cond):
    """With k-diffusion's U-Net a batch of 2 equals its images sampled alone up to float rounding (measured: 2e-6),
    and seeds [s] for one image are seed s bit for bit."""
    options = {"sampler": "euler", "churn": 0.25}
    together = _sample(denoiser, cond, seed=[3, 4], **options)
    for b, seed in enumerate((3, 4)):
        alone = _sample(denoiser, cond[b:b + 1], seed=seed, **options)
        torch.testing.assert_close(together[b:b + 1], alone, atol=1e-5, rtol=0)
        assert torch.equal(_sample(denoiser, cond[b:b + 1], seed=[seed], **options), alone)


@pytest.mark.parametrize("sampler,options", SAMPLER_VARIANTS)
def test_a_seed_per_group_gives_each_group_the_numbers_it_gets_alone(sampler, options):
    """Seeds [s_0, s_1] for a batch of 4: images 0-1 are, bit for bit, those two sampled alone with seed s_0 (one
    stream for both), images 2-3 those sampled with s_1 (a denoiser independent of the batch)."""
    denoiser = BatchInvariantDenoiser()
    cond = torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    together = sample_images(denoiser, cond, sampler=sampler, steps=STEPS, seed=[5, 17], **options)
    for group, seed in enumerate((5, 17)):
        alone = sample_images(denoiser, cond[2 * group:2 * group + 2], sampler=sampler, steps=STEPS, seed=seed,
                              **options)
        assert torch.equal(together[2 * group:2 * group + 2], alone), group
    with pytest.raises(ValueError, match="3 seeds for a batch of 4 images"):
        sample_images(denoiser, cond, sampler=sampler, steps=STEPS, seed=[1, 2, 3], **options)


@pytest.mark.parametrize("sampler,options", SAMPLER_VARIANTS)
def test_bf16_sampling_is_fp32_sampling_to_bf16s_precision(denoiser, cond, sampler, options):
    """bf16 keeps 8 significant bits (rounding 2^-9 = 0.2% per value); one call of this U-Net in bf16 differs from
    fp32 by up to 0.0043 on outputs up to 0.47 (1%, roundings compounded through its layers), and the steps add
    these up: measured, the images differ by at most 0.018 (heun, 4 steps) and 0.0011 on average. The bounds
    0.05 and 0.005 leave 3-5x room; a difference of 0 would mean bf16 was not used."""
    fp32 = _sample(denoiser, cond, sampler=sampler, seed=2, **options)
    bf16_steps = []
    bf16 = _sample(denoiser, cond, sampler=sampler, seed=2, precision="bf16", callback=bf16_steps.append, **options)
    error = (bf16 - fp32).abs()
    assert 0 < error.max() <= 0.05 and error.mean() <= 0.005
    assert all(info["x"].dtype == info["denoised"].dtype == torch.float32 for info in bf16_steps)


def test_bf16_runs_the_denoiser_under_autocast_and_the_sampler_in_float32(clean_images, oracle_cond):
    """The oracle answers in bf16 under autocast, as a network does; y and z are exact in bf16. Every call must run
    under bf16 autocast, and the guided combination y + w (z - y) and the ODE stay float32: the result lands on it
    to float32 rounding (in bf16 it would be off by up to 2^-9 of its size)."""
    y, z = (clean_images(seed, scale=0.2).bfloat16().float() for seed in (1, 2))
    expected = {"deterministic": z, "stochastic": z, "guided": y + 2.5 * (z - y)}  # |guided| <= 0.8: not clamped
    for mode, answer in expected.items():
        for precision, autocast in (("bf16", torch.bfloat16), ("fp32", None)):
            oracle = _Oracle(y, z)
            out = sample_images(oracle, oracle_cond(), seed=0, precision=precision,
                                **sampling_options(mode, steps=STEPS, guidance_scale=2.5))
            assert out.dtype == torch.float32 and oracle.autocast == [autocast] * STEPS, (mode, precision)
            torch.testing.assert_close(out, answer, atol=1e-5, rtol=0, msg=lambda m: f"{mode} {precision}: {m}")


@pytest.mark.parametrize("sampler,options", SAMPLER_VARIANTS)
def test_every_sampler_lands_on_a_perfect_denoisers_image(sampler, options, clean_images, oracle_cond):
    """With D(x; sigma) = y for every x and sigma, the probability-flow ODE (and the churn / ancestral
    noise, which it removes again) ends exactly at y, whatever the start noise."""
    y = clean_images(0)
    oracle = _Oracle(y)
    for seed in range(3):
        out = sample_images(oracle, oracle_cond(), sampler=sampler, steps=STEPS, seed=seed, **options)
        torch.testing.assert_close(out, y, atol=1e-5, rtol=0)


def test_unconditional_conditional_and_guided_sampling_use_the_right_denoiser(clean_images, oracle_cond):
    """The oracle answers y to the all-zero condition and z to any other: unconditional sampling must
    land on y, conditional on z, guided with scale w on y + w (z - y)."""
    y, z = clean_images(1, scale=0.3), clean_images(2, scale=0.3)
    cond = oracle_cond()
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
    churn = {"churn": 0.25} if sampler in CHURN_SAMPLERS else {}
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
    churn = {"churn": 0.25} if sampler in CHURN_SAMPLERS else {}
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
    _sample(denoiser, cond, sampler="euler", churn=0.25, seed=0)
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


def test_k_diffusions_eval_mode_restores_mixed_modes():
    """What genvs's own eval_mode did, which k-diffusion's replaced: every submodule gets its own mode back."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model.train()
    model[0].eval()
    with k_diffusion.utils.eval_mode(model):
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
    with pytest.raises(ValueError, match=r"churn=0.25 applies to the samplers \('euler', 'heun'\) only, not 'dpmpp"):
        _sample(denoiser, cond, sampler="dpmpp_2m", churn=0.25)
    with pytest.raises(ValueError, match="cond is None"):
        sample_images(denoiser, shape=(2, 3, 16, 16))
    with pytest.raises(ValueError, match="guidance_scale=2.0 needs conditional"):
        _sample(denoiser, cond, unconditional=True, guidance_scale=2.0)
    with pytest.raises(ValueError, match="differ in batch or size"):
        _sample(denoiser, cond, shape=(3, 3, 16, 16))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        sample_images(denoiser, cond, steps=0)
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; valid precisions: \('fp32', 'bf16'\)"):
        _sample(denoiser, cond, precision="fp16")
    with pytest.raises(ValueError, match="3 seeds for a batch of 2 images"):
        _sample(denoiser, cond, seed=[1, 2, 3])


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


@pytest.fixture(scope="module")
def genvs_model() -> nn.Module:
    """The smoke GeNVS with its denoiser :func:`perturbed`."""
    from genvs.model import PRESETS as MODEL_PRESETS
    from genvs.model import GeNVS

    model = GeNVS(MODEL_PRESETS["smoke"], seed=0)
    perturbed(model.denoiser)
    return model


def _trajectory_inputs(n_objects: int, n_frames: int, size: int = 32) -> tuple[torch.Tensor, ...]:
    """``n_objects`` objects, each one random input view from its own camera on an orbit and a 90-degree sweep of
    ``n_frames`` poses from it: images ``[B, 1, 3, H, W]``, K ``[B, 1, 3, 3]``, c2w ``[B, 1, 4, 4]``, target_K
    ``[B, N, 3, 3]``, target_c2w ``[B, N, 4, 4]``."""
    from genvs.cameras import make_intrinsics, orbit, trajectory_from

    c2w = orbit(n_objects, start_azimuth_deg=10.0)
    images = torch.rand(n_objects, 1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    K = make_intrinsics(1.0 * size, size / 2, size / 2).expand(n_objects, 1, 3, 3)
    poses = torch.stack([trajectory_from(pose, n_frames, sweep_deg=90.0) for pose in c2w])
    return images, K, c2w[:, None], K.expand(n_objects, n_frames, 3, 3), poses


def test_trajectories_are_seeded_and_autoregressive_frames_join_the_inputs(genvs_model):
    from genvs.sampling import generate_trajectory

    images, K, c2w, target_K, poses = (tensor[0] for tensor in _trajectory_inputs(1, 5))  # one object, unbatched
    size = images.shape[-1]

    def generate(**options):
        return generate_trajectory(genvs_model, images, K, c2w, target_K, poses, steps=3, progress=False, **options)

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


@pytest.mark.parametrize("autoregressive", [True, False])
def test_a_batch_of_trajectories_is_each_object_generated_alone(genvs_model, autoregressive):
    """Object b of a batch generated with seeds [s_0, s_1, s_2] is object b generated alone (unbatched) with seed
    s_b: bit for bit with an encoder and a denoiser independent of the batch (then only seeds, noise streams,
    conditioning sets and view pools could differ); to float rounding with the ResNet encoder and the U-Net, whose
    matrix products may sum in another order for another number of rows (measured: 2e-6). One int seed s for a
    batch is the seeds derive_seed(s, b)."""
    from genvs.sampling import generate_trajectory

    inputs = _trajectory_inputs(3, 5)
    seeds = [4, 9, 4]  # seed 4 twice, for two different objects
    options = {"autoregressive": autoregressive, "max_random": 1, "progress": False,
               **sampling_options("stochastic", steps=3)}
    for model, exact in ((batch_invariant(genvs_model), True), (genvs_model, False)):
        together = generate_trajectory(model, *inputs, seed=seeds, **options)
        assert together["samples"].shape == (3, 5, 3, 32, 32) and together["depth"].shape == (3, 5, 16, 16)
        for b, seed in enumerate(seeds):
            alone = generate_trajectory(model, *(tensor[b] for tensor in inputs), seed=seed, **options)
            assert together["conditioning"][b] == alone["conditioning"]
            for key in ("samples", "features", "depth", "opacity"):
                if exact:
                    assert torch.equal(together[key][b], alone[key]), (b, key)
                else:
                    torch.testing.assert_close(together[key][b], alone[key], atol=1e-5, rtol=0)
    if autoregressive:  # frames 3 and 4 draw one earlier frame at random: seeds 4 and 9 draw differently
        assert together["conditioning"][0] != together["conditioning"][1]
    one_seed = generate_trajectory(genvs_model, *inputs, seed=7, **options)
    derived = generate_trajectory(genvs_model, *inputs, seed=[derive_seed(7, b) for b in range(3)], **options)
    torch.testing.assert_close(one_seed, derived, rtol=0, atol=0)


def test_a_trajectory_denoised_by_another_denoiser_is_its_frames_sampled_on_the_renders(genvs_model):
    """generate_trajectory(denoiser=other) without autoregression: frame f is sample_novel_views with ``other`` on the
    inputs' render at camera f, seeded derive_seed(s, f) (to float rounding: the frames are sampled one by one there,
    together here); the default denoiser is the model's."""
    import copy

    from genvs.sampling import generate_trajectory, sample_novel_views

    inputs = _trajectory_inputs(2, 3)
    other = perturbed(copy.deepcopy(genvs_model.denoiser))
    options = {"autoregressive": False, "progress": False, **sampling_options("stochastic", steps=3)}
    frames = generate_trajectory(genvs_model, *inputs, other, seed=[4, 9], **options)["samples"]
    seeds = [derive_seed(seed, frame) for seed in (4, 9) for frame in range(3)]
    novel = sample_novel_views(genvs_model, *inputs, other, seed=seeds, **sampling_options("stochastic", steps=3))
    torch.testing.assert_close(frames, novel["samples"], atol=1e-5, rtol=0)
    own = generate_trajectory(genvs_model, *inputs, seed=[4, 9], **options)["samples"]
    assert (own - frames).abs().max() > 1e-2
    torch.testing.assert_close(own, generate_trajectory(genvs_model, *inputs, genvs_model.denoiser, seed=[4, 9],
                                                        **options)["samples"], rtol=0, atol=0)


def test_sampling_modes_name_the_seeds_settings(clean_images, oracle_cond):
    from genvs.sampling import SAMPLING_MODES

    assert sampling_options("stochastic", steps=50) == {"sampler": "euler", "steps": 50, "churn": 0.4,
                                                        "s_noise": 1.003}  # gamma = 0.4 per step
    assert sampling_options("deterministic", steps=10) == {"sampler": "euler", "steps": 10}
    assert sampling_options("unconditional")["unconditional"] is True
    assert sampling_options("guided", guidance_scale=3.0)["guidance_scale"] == 3.0
    with pytest.raises(ValueError, match="valid modes"):
        sampling_options("fast")
    y, z = clean_images(3, scale=0.2), clean_images(4, scale=0.2)
    expected = {"stochastic": z, "deterministic": z, "unconditional": y, "guided": y + 2.5 * (z - y)}
    assert expected["guided"].abs().max() < 1  # not clamped
    for mode in SAMPLING_MODES:  # with a perfect denoiser each mode lands on its own answer
        oracle, steps = _Oracle(y, z), []
        out = sample_images(oracle, oracle_cond(), seed=0, callback=steps.append,
                            **sampling_options(mode, steps=STEPS, guidance_scale=2.5))
        torch.testing.assert_close(out, expected[mode], atol=1e-5, rtol=0, msg=lambda m: f"{mode}: {m}")
        if mode == "unconditional":  # the network saw the all-zero condition only
            assert all(torch.all(seen == 0) for seen in oracle.seen_conds)
        if mode == "guided":  # ... and every guided call saw the condition and the all-zero one
            assert all(torch.equal(seen[:2], oracle_cond()) and torch.all(seen[2:] == 0) for seen in oracle.seen_conds)
        # churn: sigma_hat = (1 + gamma) sigma_i with gamma = 0.4 when stochastic, 0 otherwise
        gamma = 0.4 if mode == "stochastic" else 0.0
        assert len(steps) == STEPS
        for info in steps:
            assert float(info["sigma_hat"]) == pytest.approx((1 + gamma) * float(info["sigma"]), rel=1e-6)


def test_only_the_stochastic_mode_draws_noise_after_the_start(denoiser, cond):
    """With the start noise fixed, the seed changes the stochastic mode's result (churn) and no other's."""
    from genvs.sampling import SAMPLING_MODES

    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for mode in SAMPLING_MODES:
        a, b = (sample_images(denoiser, cond, noise=noise, seed=seed, **sampling_options(mode, steps=STEPS))
                for seed in (1, 2))
        assert torch.equal(a, b) != (mode == "stochastic"), mode


@pytest.mark.parametrize("churn", [0.1, 0.4])
def test_churn_raises_sigma_to_one_plus_churn_at_every_step_of_its_window(churn, clean_images, oracle_cond):
    """EDM's per-step gamma: sigma_hat = (1 + churn) sigma_i at every step with s_tmin <= sigma_i <= s_tmax (read
    from k-diffusion's callback dict), sigma_hat = sigma_i outside; the perfect denoiser still lands on y."""
    y = clean_images(0)
    steps = 6
    sigmas = karras_sigmas(steps)
    s_tmin, s_tmax = float(sigmas[3]), float(sigmas[1])  # steps 1-3 churn, steps 0, 4 and 5 do not
    for sampler in CHURN_SAMPLERS:
        for window, inside in (({}, [True] * steps), ({"s_tmin": s_tmin, "s_tmax": s_tmax}, [False] + [True] * 3
                                                      + [False] * 2)):
            seen = []
            out = sample_images(_Oracle(y), oracle_cond(), sampler=sampler, steps=steps, seed=0, churn=churn,
                                callback=seen.append, **window)
            torch.testing.assert_close(out, y, atol=1e-5, rtol=0)
            ratios = [float(info["sigma_hat"]) / float(info["sigma"]) for info in seen]
            assert ratios == pytest.approx([1 + churn if churning else 1.0 for churning in inside], rel=1e-6), \
                (sampler, window)


@pytest.mark.parametrize("steps", [STEPS, 5])
@pytest.mark.parametrize("churn", [0.1, 0.4, math.sqrt(2) - 1])
def test_churn_is_k_diffusions_s_churn_over_the_steps(denoiser, cond, churn, steps):
    """sample_images(euler, churn=c) is k-diffusion's own sample_euler with s_churn = k_diffusion_s_churn(c, steps)
    = c * steps, given the same noise: gamma = min(s_churn / steps, sqrt(2) - 1) = c, bit for bit."""
    assert k_diffusion_s_churn(churn, steps) == churn * steps
    expected = _k_diffusion_sample(denoiser, cond, "euler", 11, steps=steps, churn=churn)
    assert torch.equal(sample_images(denoiser, cond, sampler="euler", steps=steps, seed=11, churn=churn), expected)
    assert not torch.equal(sample_images(denoiser, cond, sampler="euler", steps=steps, seed=11), expected)


@pytest.mark.parametrize("churn", [-0.1, 0.5, math.sqrt(2) - 1 + 1e-9])
def test_churn_outside_zero_to_sqrt2_minus_1_is_refused(denoiser, cond, churn):
    from genvs.sampling import sample_karras

    message = rf"churn={churn} is outside \[0, sqrt\(2\) - 1 = 0.4142\]"
    with pytest.raises(ValueError, match=message):
        _sample(denoiser, cond, sampler="euler", churn=churn)
    with pytest.raises(ValueError, match=message):
        sampling_options("stochastic", steps=STEPS, churn=churn)
    with pytest.raises(ValueError, match=message):
        k_diffusion_s_churn(churn, STEPS)
    with pytest.raises(ValueError, match=message):
        sample_karras(lambda x, sigma: x, torch.zeros(1, 3, 4, 4), karras_sigmas(STEPS), torch.randn, churn=churn)


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
        with k_diffusion.utils.eval_mode(model), torch.no_grad():
            views = model.field.encode(torch.stack([image[0], known[0]])[None], torch.cat([K, K])[None],
                                       torch.stack([c2w[0], frame_0_pose])[None])
            return model.condition(views, K[None], poses[None, 1:2])[1]["features"][0, 0]

    expected = features_of_frame_1(poses[0])
    torch.testing.assert_close(result["features"][1], expected, atol=1e-5, rtol=1e-5)
    for wrong_pose in (c2w[0], poses[1]):  # the input's pose; the pose of the frame being generated
        assert (features_of_frame_1(wrong_pose) - expected).abs().max() > 1e-2
