"""Lesson 06's "your turn": two of the attribute metrics, KID's unbiased MMD^2 and the unseen side's TV to the prior.

KID (Binkowski et al. 2018) compares features ``x_1 .. x_m`` of the true targets with ``y_1 .. y_m`` of the
predictions through the cubic kernel ``k(x, y) = (x . y / d + 1)^3``, by the unbiased squared maximum mean
discrepancy::

    MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
            - 2 sum_{i, j} k(x_i, y_j) / m^2

The oracle is :func:`genvs.metrics.kernel_distance` with one subset of all ``m`` features (its subsets are
permutations of the sets then, which the sums do not see). The unseen TV compares the histogram ``p`` of the
values the probe reads on unseen attributes with the uniform prior ``q = 1 / n`` over the attribute's ``n`` values::

    TV(p, q) = 1/2 sum_v |p(v) - q(v)|,      p(v) = (number of reads of value v) / (number of reads)

The oracle is :func:`genvs.metrics.tv_to_uniform`, which :mod:`genvs.evaluation` uses for each attribute.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genvs.course.checking import Case, Exercise, Mistake
from genvs.metrics import kernel_distance, tv_to_uniform

__all__ = ["KID_MMD", "UNSEEN_TV"]


# KID's unbiased MMD^2.

def package_mmd(real: Tensor, generated: Tensor) -> Tensor:
    """:func:`genvs.metrics.kernel_distance`'s MMD^2 ``[]`` (float64) of features ``real [m, d]`` and
    ``generated [m, d]``: one subset, of all ``m`` features."""
    mean, _ = kernel_distance(real, generated, subsets=1, subset_size=real.shape[0])
    return torch.tensor(mean, dtype=torch.float64)


def mmd_solution(real: Tensor, generated: Tensor) -> Tensor:
    """The unbiased MMD^2 ``[]`` of true features ``real [m, d]`` and predicted ones ``generated [m, d]``."""
    m, d = real.shape
    k_xx = (real @ real.T / d + 1) ** 3                        # k(x_i, x_j) = (x_i . x_j / d + 1)^3
    k_yy = (generated @ generated.T / d + 1) ** 3
    k_xy = (real @ generated.T / d + 1) ** 3
    same_xx = k_xx.sum() - k_xx.diagonal().sum()               # sum over i != j: leave out k(x_i, x_i)
    same_yy = k_yy.sum() - k_yy.diagonal().sum()
    return (same_xx + same_yy) / (m * (m - 1)) - 2 * k_xy.sum() / m ** 2


def kernels(real: Tensor, generated: Tensor, degree: int = 3, scale: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """``k(x_i, x_j) [m, m]``, ``k(y_i, y_j) [m, m]``, ``k(x_i, y_j) [m, m]`` with ``k(x, y) = (x . y / d + 1)^degree``
    (without the ``1 / d`` when not ``scale``)."""
    d = real.shape[1] if scale else 1
    return tuple((a @ b.T / d + 1) ** degree for a, b in ((real, real), (generated, generated), (real, generated)))


def unbiased(k_xx: Tensor, k_yy: Tensor, k_xy: Tensor) -> Tensor:
    m = k_xx.shape[0]
    off_diagonal = k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()
    return off_diagonal / (m * (m - 1)) - 2 * k_xy.mean()


def biased(real: Tensor, generated: Tensor) -> Tensor:
    k_xx, k_yy, k_xy = kernels(real, generated)
    return k_xx.mean() + k_yy.mean() - 2 * k_xy.mean()


def no_dimension_scale(real: Tensor, generated: Tensor) -> Tensor:
    return unbiased(*kernels(real, generated, scale=False))


def quadratic_kernel(real: Tensor, generated: Tensor) -> Tensor:
    return unbiased(*kernels(real, generated, degree=2))


def cross_term_off_diagonal(real: Tensor, generated: Tensor) -> Tensor:
    k_xx, k_yy, k_xy = kernels(real, generated)
    m = k_xx.shape[0]
    return (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace() - 2 * (k_xy.sum() - k_xy.trace())) / (m * (m - 1))


def probe_like(generator: torch.Generator, m: int, d: int) -> Tensor:
    """``[m, d]`` features like the probe's pooled ones: SiLU of Gaussians, averaged over 4 "pixels"."""
    return torch.nn.functional.silu(torch.randn(m, d, 4, generator=generator)).mean(-1)


def mmd_cases(generator: torch.Generator) -> list[Case]:
    real, generated, shifted = (probe_like(generator, 40, 128) for _ in range(3))
    small = probe_like(generator, 2, 8)
    return [Case("40 true and 40 predicted probe-like features (d = 128), one distribution", (real, generated)),
            Case("predicted features shifted away from the true ones", (real, shifted + 0.3)),
            Case("the same 40 features twice", (real, real)),
            Case("2 features each (m = 2, the fewest), d = 8", (small, probe_like(generator, 2, 8))),
            Case("12 random Gaussian features each, d = 16", (torch.randn(12, 16, generator=generator),
                                                             torch.randn(12, 16, generator=generator)))]


KID_MMD = Exercise(
    name="kid_mmd", lesson="06", oracle=package_mmd, cases=mmd_cases, solution=mmd_solution,
    hint="the three kernel matrices K = (A @ B.T / d + 1) ** 3 for (x, x), (y, y), (x, y); the sums of K_xx and K_yy "
         "without their diagonals over m (m - 1), minus twice the mean of K_xy.",
    mistakes=(
        Mistake(biased, "the estimate is biased: the sums of k(x_i, x_j) and k(y_i, y_j) leave out i = j and divide "
                        "by m (m - 1), which makes MMD^2 0 in expectation for one distribution."),
        Mistake(no_dimension_scale, "the kernel lacks the 1/d: k(x, y) = (x . y / d + 1)^3, with d the features' "
                                    "dimension, so that x . y / d stays of order 1."),
        Mistake(quadratic_kernel, "the kernel is not cubic: KID's is k(x, y) = (x . y / d + 1)^3."),
        Mistake(cross_term_off_diagonal, "the cross term leaves out i = j: x_i and y_i are different samples, so "
                                         "the sum of k(x_i, y_j) runs over all m^2 pairs, divided by m^2."),
    ))


# The unseen side's total variation to the prior.

def tv_solution(reads: Tensor, n_values: int) -> Tensor:
    """TV ``[]`` between the values read ``reads [N]`` (in ``0 .. n_values - 1``) and the uniform prior."""
    counts = torch.bincount(reads, minlength=n_values)        # every value, read or not
    p = counts.double() / reads.numel()                      # p(v): the fraction of reads of value v
    q = torch.full_like(p, 1.0 / n_values)                   # the prior: 1/n each
    return 0.5 * (p - q).abs().sum()                         # TV = 1/2 sum_v |p(v) - q(v)|


def tv_without_half(reads: Tensor, n_values: int) -> Tensor:
    p = torch.bincount(reads, minlength=n_values).double() / reads.numel()
    return (p - 1.0 / n_values).abs().sum()


def tv_of_counts(reads: Tensor, n_values: int) -> Tensor:
    counts = torch.bincount(reads, minlength=n_values).double()
    return 0.5 * (counts - 1.0 / n_values).abs().sum()


def unread_values_dropped(reads: Tensor, n_values: int) -> Tensor:
    p = torch.bincount(reads).double() / reads.numel()
    return 0.5 * (p - 1.0 / n_values).abs().sum()


def skewed_reads(generator: torch.Generator, n: int, weights: list[float]) -> Tensor:
    """``[n]`` values drawn with probabilities proportional to ``weights``."""
    return torch.multinomial(torch.tensor(weights, dtype=torch.float), n, replacement=True, generator=generator)


def tv_cases(generator: torch.Generator) -> list[Case]:
    panel = skewed_reads(generator, 60, [2, 5, 1])
    return [Case("60 reads of a panel (paint, white, black), mostly white", (panel, 3)),
            Case("71 reads of the roof (paint, white)", (skewed_reads(generator, 71, [1, 3]), 2)),
            Case("every read the same value (always paint)", (torch.zeros(30, dtype=torch.long), 3)),
            Case("reads exactly as the prior (20 of each value)", (torch.arange(3).repeat(20), 3)),
            Case("no read of the last value (black)", (skewed_reads(generator, 40, [1, 1, 0]), 3)),
            Case("a single read (paint)", (torch.tensor([0]), 3))]


UNSEEN_TV = Exercise(
    name="unseen_tv", lesson="06", oracle=tv_to_uniform, cases=tv_cases, solution=tv_solution,
    hint="p = torch.bincount(reads, minlength=n_values) / reads.numel() (the fraction of reads of each value); "
         "q = 1 / n_values; TV = 1/2 sum |p - q|.",
    mistakes=(
        Mistake(tv_without_half, "the 1/2 is missing: TV(p, q) = 1/2 sum_v |p(v) - q(v)|, in [0, 1] (always the "
                                 "same value scores 2/3 for a panel, not 4/3)."),
        Mistake(tv_of_counts, "the histogram is counts, not a distribution: p(v) is the fraction of reads of value "
                              "v, the counts divided by the number of reads."),
        Mistake(unread_values_dropped, "values never read are left out of the sum: the histogram needs all n_values "
                                       "entries (torch.bincount(reads, minlength=n_values)); an unread value has "
                                       "p(v) = 0 and adds 1/2 * 1/n."),
    ))
