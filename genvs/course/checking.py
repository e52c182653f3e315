"""Checking a learner's implementation against the package's own (the "your turn" cells of lessons 01-08).

An :class:`Exercise` names the package function that is the oracle, the cases to try (random ones and edge cases),
and the typical mistakes, each a function that makes that mistake and the sentence that names it. :func:`check`
runs the learner's function on every case and says in one sentence what it found:

- the stub's ``NotImplementedError``: "not yet written", with the exercise's hint, and the notebook goes on;
- an exception, a wrong shape or non-finite values: which, on which case;
- outputs within ``tolerance`` of the oracle on every case: it passes;
- otherwise, when the outputs match one typical mistake's on every case, that mistake's sentence; failing that, the
  largest difference and the case it came from.

A mistake is recognised by its outputs, not by reading the learner's code, so any implementation that computes
the same wrong thing gets the same sentence.
"""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["Case", "Mistake", "Exercise", "Verdict", "check", "solution_source"]


@dataclass(frozen=True)
class Case:
    """One call of the exercise: ``name`` (said in messages, e.g. "random rays" or "an empty ray"), its
    positional ``args`` and keyword ``kwargs``."""

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A typical mistake: ``wrong`` computes it (same signature as the exercise); ``message`` names it."""

    wrong: Callable
    message: str


@dataclass(frozen=True)
class Exercise:
    """A "your turn" exercise.

    Attributes:
        name: its key in :data:`genvs.course.EXERCISES`; lesson: the lesson number ("01").
        oracle: the package's function the learner's must agree with (same signature).
        cases: builds the cases (called with a seeded generator, so every check sees the same ones).
        mistakes: the typical mistakes, tried in order.
        hint: what the stub's error says, and "not yet written" repeats.
        solution: a correct implementation written as a learner would (shown by :func:`genvs.course.solution`).
        atol, rtol: how close to the oracle counts as equal (``torch.allclose``).
    """

    name: str
    lesson: str
    oracle: Callable
    cases: Callable[[torch.Generator], list[Case]]
    mistakes: tuple[Mistake, ...]
    hint: str
    solution: Callable
    atol: float = 1e-5
    rtol: float = 1e-4

    def all_cases(self) -> list[Case]:
        """The exercise's cases, always the same ones (seed 0)."""
        return self.cases(torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class Verdict:
    """What :func:`check` found: ``passed``, ``written`` (False for the untouched stub) and the one-sentence
    ``message``."""

    passed: bool
    written: bool
    message: str

    def __str__(self) -> str:
        return self.message


def leaves(output: Any) -> list[Tensor]:
    """The tensors of an output (a tensor, or a tuple / list / dict of them, in order)."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, dict):
        return [tensor for key in sorted(output) for tensor in leaves(output[key])]
    if isinstance(output, (tuple, list)):
        return [tensor for item in output for tensor in leaves(item)]
    return [torch.as_tensor(output)]


def call(function: Callable, case: Case) -> Any:
    """``function`` on a copy of the case's tensors (a learner's in-place edit cannot change the next call)."""
    copy = lambda value: value.clone() if isinstance(value, Tensor) else value  # noqa: E731
    return function(*map(copy, case.args), **{key: copy(value) for key, value in case.kwargs.items()})


def agrees(output: Any, expected: Any, atol: float, rtol: float) -> bool:
    """Whether two outputs have the same structure, shapes and values (within the tolerances)."""
    ours, theirs = leaves(output), leaves(expected)
    return len(ours) == len(theirs) and all(
        a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol, equal_nan=True)
        for a, b in zip(ours, theirs))


def check(exercise: Exercise, function: Callable) -> Verdict:
    """Run ``function`` on the exercise's cases against its oracle (module docstring) and say what was found."""
    cases = exercise.all_cases()
    outputs = []
    for case in cases:
        try:
            outputs.append(call(function, case))
        except NotImplementedError:
            return Verdict(False, False, f"{exercise.name}: not yet written. Hint: {exercise.hint}")
        except Exception as error:  # noqa: BLE001 - any error is the learner's to see, named
            return Verdict(False, True, f"{exercise.name}: raised {type(error).__name__} on {case.name}: {error}")
    expected = [call(exercise.oracle, case) for case in cases]
    for case, output, truth in zip(cases, outputs, expected):
        problem = structural_problem(output, truth)
        if problem:
            return Verdict(False, True, f"{exercise.name}: {problem} on {case.name}.")
    if all(agrees(output, truth, exercise.atol, exercise.rtol) for output, truth in zip(outputs, expected)):
        return Verdict(True, True, f"{exercise.name}: passes, the package's answer on all {len(cases)} cases, "
                                   f"edge cases included.")
    for mistake in exercise.mistakes:
        if all(agrees(output, call(mistake.wrong, case), exercise.atol, exercise.rtol)
               for case, output in zip(cases, outputs)):
            return Verdict(False, True, f"{exercise.name}: {mistake.message}")
    return Verdict(False, True, f"{exercise.name}: {largest_difference(cases, outputs, expected)}")


def structural_problem(output: Any, expected: Any) -> str:
    """No output, something not made of tensors, a wrong number of outputs, a wrong shape or non-finite values, said
    in words; "" if none."""
    if output is None:
        return "returned None (is the `return` missing?)"
    try:
        ours = leaves(output)
    except (TypeError, RuntimeError, ValueError):
        return f"returned a {type(output).__name__}, not tensors"
    theirs = leaves(expected)
    if len(ours) != len(theirs):
        return f"returned {len(ours)} tensor(s) where the package returns {len(theirs)}"
    for index, (a, b) in enumerate(zip(ours, theirs)):
        which = f"output {index}" if len(ours) > 1 else "the output"
        if a.shape != b.shape:
            return f"{which} has shape {tuple(a.shape)}, expected {tuple(b.shape)}"
        if not torch.isfinite(a).all() and torch.isfinite(b).all():
            return f"{which} has NaN or infinite values"
    return ""


def largest_difference(cases: list[Case], outputs: list, expected: list) -> str:
    """The largest absolute difference from the oracle, and the case and output where it is."""
    worst = max(((float((a.double() - b.double()).abs().max()), case.name, index)
                 for case, output, truth in zip(cases, outputs, expected)
                 for index, (a, b) in enumerate(zip(leaves(output), leaves(truth)))), key=lambda item: item[0])
    return f"differs from the package by up to {worst[0]:.3g} (output {worst[2]}, on {worst[1]})."


def solution_source(exercise: Exercise) -> str:
    """The source of the exercise's solution, dedented."""
    return textwrap.dedent(inspect.getsource(exercise.solution))
