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
import importlib
from typing import Callable

from genvs.course.checking import Exercise, Verdict, solution_source
from genvs.course.checking import check as check_exercise

__all__ = ["LESSON_OF", "exercise_named", "all_exercises", "check", "solution"]

LESSON_OF: dict[str, str] = {
    "compositing_weights": "01",
    "volume_coordinates": "02", "sample_volume": "02",
    "edm_preconditioning": "03", "euler_churn_step": "03",
    "joint_loss": "04",
    "classifier_free_guidance": "05", "conditioning_mask": "05",
    "kid_mmd": "06", "unseen_tv": "06",
    "controlled_skip": "07",
    "cross_view_attention": "08", "pluecker_rays": "08",
}
"""Every exercise, by name, and the lesson whose module (``genvs.course.lessonNN``) holds it. A lesson imports only
its own module, so lesson 01 does not wait for the diffusion libraries that lessons 03-08's exercises load."""


def exercise_named(name: str) -> Exercise:
    """The exercise called ``name``; a KeyError that lists the valid names otherwise."""
    if name not in LESSON_OF:
        raise KeyError(f"no exercise {name!r}; the exercises are {sorted(LESSON_OF)}")
    module = importlib.import_module(f"genvs.course.lesson{LESSON_OF[name]}")
    return next(exercise for exercise in vars(module).values()
                if isinstance(exercise, Exercise) and exercise.name == name)


def all_exercises() -> dict[str, Exercise]:
    """Every exercise, by name, in the order of the lessons."""
    return {name: exercise_named(name) for name in LESSON_OF}


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
