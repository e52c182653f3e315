"""The course's "your turn" exercises: the learner writes the key lines of a lesson, the package checks them.

In a lesson::

    from genvs import course

    def compositing_weights(sigma, deltas):
        raise NotImplementedError("your turn")

    course.check("compositing_weights", compositing_weights)     # one sentence: what is wrong, or that it passes
    course.solution("compositing_weights")                        # a revealable solution, checked the same way

:mod:`genvs.course.checking` holds the machinery; one module per lesson holds its exercises.
"""

from __future__ import annotations

import html
from typing import Callable

from genvs.course.checking import Exercise, Verdict, solution_source
from genvs.course.checking import check as check_exercise
from genvs.course.lesson01 import COMPOSITING_WEIGHTS

__all__ = ["EXERCISES", "check", "solution"]

EXERCISES: dict[str, Exercise] = {exercise.name: exercise for exercise in (COMPOSITING_WEIGHTS,)}


def exercise_named(name: str) -> Exercise:
    """The exercise called ``name``; a KeyError that lists the valid names otherwise."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; the exercises are {sorted(EXERCISES)}")
    return EXERCISES[name]


def check(name: str, function: Callable) -> Verdict:
    """Check ``function`` against exercise ``name`` (:func:`genvs.course.checking.check`); print the verdict and
    return it."""
    verdict = check_exercise(exercise_named(name), function)
    print(("✓ " if verdict.passed else "✗ ") + verdict.message)
    return verdict


def solution(name: str) -> None:
    """Show exercise ``name``'s solution, folded (click to reveal), and check it as :func:`check` does."""
    from IPython.display import HTML, display

    exercise = exercise_named(name)
    display(HTML(f"<details><summary>Solution: {name} (click to reveal)</summary><pre>"
                 f"{html.escape(solution_source(exercise))}</pre></details>"))
    check(name, exercise.solution)
