"""Lessons 05 and 06's checkers: each passes its solution and another correct implementation, and names typical
mistakes, written here independently of the checkers' own list."""

import pytest
import torch
import torch.nn.functional as F

from genvs.course.checking import check
from genvs.course.lesson05 import CLASSIFIER_FREE_GUIDANCE, CONDITIONING_MASK
from genvs.course.lesson06 import KID_MMD, UNSEEN_TV

EXERCISES = (CLASSIFIER_FREE_GUIDANCE, CONDITIONING_MASK, KID_MMD, UNSEEN_TV)


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_the_solution_passes_and_the_stub_is_not_yet_written(exercise):
    result = check(exercise, exercise.solution)
    assert result.passed and result.written, result.message
    assert exercise.lesson in ("05", "06")

    def stub(*args):
        raise NotImplementedError("your turn")

    result = check(exercise, stub)
    assert not result.passed and not result.written and "Hint" in result.message


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.name)
def test_each_listed_mistake_is_told_apart_from_the_answer_and_from_the_earlier_ones(exercise):
    assert len(exercise.mistakes) >= 3
    for mistake in exercise.mistakes:
        assert check(exercise, mistake.wrong).message == f"{exercise.name}: {mistake.message}"


# Classifier-free guidance: D_w = D_null + w (D_c - D_null), D_null given null_condition(cond) = zeros.

def both_predictions(denoiser, x, sigma, cond, null):
    """(D_c, D_null) from one batched call, as the package makes it."""
    return denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), unet_cond=torch.cat([cond, null])).chunk(2)


def test_guidance_mistakes_are_named():
    def w_on_the_unconditional(denoiser, x, sigma, cond, w):
        d_c, d_null = both_predictions(denoiser, x, sigma, cond, torch.zeros_like(cond))
        return (1 - w) * d_c + w * d_null

    def paper_convention(denoiser, x, sigma, cond, w):
        d_c, d_null = both_predictions(denoiser, x, sigma, cond, cond * 0)
        return d_c + w * (d_c - d_null)

    def conditional_scaled(denoiser, x, sigma, cond, w):
        d_c, d_null = both_predictions(denoiser, x, sigma, cond, cond.new_zeros(cond.shape))
        return torch.add(d_null, d_c, alpha=w)

    def no_null(denoiser, x, sigma, cond, w):
        d_c, d_same = both_predictions(denoiser, x, sigma, cond, cond)
        return d_same + w * (d_c - d_same)

    def white_null(denoiser, x, sigma, cond, w):
        d_c, d_null = both_predictions(denoiser, x, sigma, cond, torch.full_like(cond, 1.0))
        return d_null + w * (d_c - d_null)

    def verdict(function):
        return check(CLASSIFIER_FREE_GUIDANCE, function).message

    assert "swapped" in verdict(w_on_the_unconditional)
    assert "Ho & Salimans" in verdict(paper_convention)
    assert "conditional prediction alone" in verdict(conditional_scaled)
    assert "given the condition" in verdict(no_null)
    assert "not the null one" in verdict(white_null)


def test_guidance_written_otherwise_passes_and_a_positional_condition_is_named():
    def interpolated(denoiser, x, sigma, cond, w):
        d_c = denoiser(x, sigma, unet_cond=cond)
        d_null = denoiser(x, sigma, unet_cond=cond.new_zeros(cond.shape))
        return torch.lerp(d_null, d_c, w)  # d_null + w (d_c - d_null)

    assert check(CLASSIFIER_FREE_GUIDANCE, interpolated).passed

    def positional(denoiser, x, sigma, cond, w):
        d_c, d_null = denoiser(x, sigma, cond), denoiser(x, sigma, torch.zeros_like(cond))
        return d_null + w * (d_c - d_null)

    result = check(CLASSIFIER_FREE_GUIDANCE, positional)
    assert not result.passed and "raised TypeError" in result.message


# The conditioning set: every input, up to max_random of frames 0 .. f - 2 at random, and frame f - 1.

def as_mask(indices, n_inputs, n_frames):
    return torch.isin(torch.arange(n_inputs + n_frames), torch.tensor(indices, dtype=torch.long))


def listed_set(frame, n_inputs, max_random, generator):
    """The set as a list of pool indices, written as a learner would, from ``generator``."""
    if frame == 0:
        return list(range(n_inputs))
    earlier = torch.randperm(frame - 1, generator=generator)[:max_random].tolist()
    return [*range(n_inputs), *(n_inputs + j for j in earlier), n_inputs + frame - 1]


def test_conditioning_set_mistakes_are_named():
    def generated_frames_only(frame, n_inputs, n_frames, max_random, seed):
        chosen = listed_set(frame, n_inputs, max_random, torch.Generator().manual_seed(seed))
        return as_mask([index for index in chosen if index >= n_inputs], n_inputs, n_frames)

    def with_the_frame_itself(frame, n_inputs, n_frames, max_random, seed):
        chosen = listed_set(frame, n_inputs, max_random, torch.Generator().manual_seed(seed))
        return as_mask(chosen + [n_inputs + frame], n_inputs, n_frames)

    def any_frame_of_the_trajectory(frame, n_inputs, n_frames, max_random, seed):
        generator = torch.Generator().manual_seed(seed)
        picks = torch.randperm(n_frames, generator=generator)[:min(max_random, frame - 1)] if frame > 1 else []
        chosen = [*range(n_inputs), *(n_inputs + int(j) for j in picks)] + ([n_inputs + frame - 1] if frame else [])
        return as_mask(chosen, n_inputs, n_frames)

    def default_generator(frame, n_inputs, n_frames, max_random, seed):
        return as_mask(listed_set(frame, n_inputs, max_random, torch.Generator("cpu")), n_inputs, n_frames)

    def all_of_the_past(frame, n_inputs, n_frames, max_random, seed):
        return as_mask(list(range(n_inputs + frame)), n_inputs, n_frames)

    def verdict(function):
        return check(CONDITIONING_MASK, function).message

    assert "input views are missing" in verdict(generated_frames_only)
    assert "frame being generated" in verdict(with_the_frame_itself)
    assert "not generated yet" in verdict(any_frame_of_the_trajectory)
    assert "do not come from the seed" in verdict(default_generator)
    assert "every earlier frame" in verdict(all_of_the_past)


def test_conditioning_set_from_the_global_rng_fails():
    def global_rng(frame, n_inputs, n_frames, max_random, seed):
        chosen = listed_set(frame, n_inputs, max_random, None)  # torch's global generator: not reproducible
        return as_mask(chosen, n_inputs, n_frames)

    with torch.random.fork_rng():
        torch.manual_seed(12345)
        assert not check(CONDITIONING_MASK, global_rng).passed


def test_conditioning_set_written_otherwise_passes():
    def from_the_list(frame, n_inputs, n_frames, max_random, seed):
        return as_mask(listed_set(frame, n_inputs, max_random, torch.Generator().manual_seed(seed)), n_inputs,
                       n_frames)

    assert check(CONDITIONING_MASK, from_the_list).passed


# KID: the unbiased MMD^2 with k(x, y) = (x . y / d + 1)^3.

def joint_kernel(real, generated, degree=3, scale=True):
    """The kernel over both sets together, ``[2m, 2m]``: the blocks are k(x, x), k(x, y), k(y, x), k(y, y)."""
    features = torch.cat([real, generated]).double()
    return (features @ features.T / (features.shape[1] if scale else 1) + 1) ** degree


def unbiased_from_joint(kernel, m):
    off = ~torch.eye(m, dtype=torch.bool)
    return kernel[:m, :m][off].mean() + kernel[m:, m:][off].mean() - 2 * kernel[:m, m:].mean()


def test_kernel_distance_mistakes_are_named():
    def diagonals_kept(real, generated):
        kernel, m = joint_kernel(real, generated), real.shape[0]
        return kernel[:m, :m].mean() + kernel[m:, m:].mean() - kernel[:m, m:].mean() - kernel[m:, :m].mean()

    def plain_dot_product(real, generated):
        return unbiased_from_joint(joint_kernel(real, generated, scale=False), real.shape[0])

    def squared(real, generated):
        return unbiased_from_joint(joint_kernel(real, generated, degree=2), real.shape[0])

    def pairs_only(real, generated):
        kernel, m = joint_kernel(real, generated), real.shape[0]
        off = ~torch.eye(m, dtype=torch.bool)
        return kernel[:m, :m][off].mean() + kernel[m:, m:][off].mean() - 2 * kernel[:m, m:][off].mean()

    def verdict(function):
        return check(KID_MMD, function).message

    assert "biased" in verdict(diagonals_kept)
    assert "lacks the 1/d" in verdict(plain_dot_product)
    assert "not cubic" in verdict(squared)
    assert "cross term" in verdict(pairs_only)


def test_kernel_distance_written_otherwise_passes():
    def from_the_joint_kernel(real, generated):
        return unbiased_from_joint(joint_kernel(real, generated), real.shape[0])

    assert check(KID_MMD, from_the_joint_kernel).passed


# The unseen TV: 1/2 sum_v |p(v) - 1/n| with p the histogram of the values read.

def test_unseen_tv_mistakes_are_named():
    def whole_sum(reads, n_values):
        p = F.one_hot(reads, n_values).double().mean(0)
        return (p - 1 / n_values).abs().sum()

    def raw_counts(reads, n_values):
        counts = torch.stack([(reads == value).sum() for value in range(n_values)]).double()
        return (counts - 1 / n_values).abs().sum() / 2

    def values_read_only(reads, n_values):
        _, counts = torch.unique(reads, return_counts=True)
        return 0.5 * (counts.double() / reads.numel() - 1 / n_values).abs().sum()

    def verdict(function):
        return check(UNSEEN_TV, function).message

    assert "1/2 is missing" in verdict(whole_sum)
    assert "counts, not a distribution" in verdict(raw_counts)
    assert "never read" in verdict(values_read_only)


def test_unseen_tv_written_otherwise_passes():
    def excess_mass(reads, n_values):  # TV = the total of p - q where p exceeds q (both sum to 1)
        p = F.one_hot(reads, n_values).double().mean(0)
        return (p - 1 / n_values).clamp(min=0).sum()

    assert check(UNSEEN_TV, excess_mass).passed
