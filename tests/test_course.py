"""The course's checkers: each passes its solution and catches typical mistakes, written here independently of
the checkers' own list, with a sentence that names the mistake."""

import importlib
from pathlib import Path

import pytest
import torch

from genvs import course
from genvs.course.checking import check


def verdict(name, function):
    return check(course.exercise_named(name), function)


def test_every_solution_passes_its_checker():
    for name, exercise in course.all_exercises().items():
        assert exercise.name == name and exercise.lesson == course.LESSON_OF[name]
        result = check(exercise, exercise.solution)
        assert result.passed and result.written, result.message


def test_an_untouched_stub_is_not_yet_written_and_raises_nothing():
    def stub(*args):
        raise NotImplementedError("your turn")

    for name in course.LESSON_OF:
        result = verdict(name, stub)
        assert not result.passed and not result.written
        assert "not yet written" in result.message and "Hint" in result.message


def test_errors_and_shapes_are_named():
    result = verdict("compositing_weights", lambda sigma, deltas: sigma.sum(-1))
    assert not result.passed and "shape" in result.message and "(4,)" in result.message
    result = verdict("compositing_weights", lambda sigma, deltas: sigma @ deltas)
    assert not result.passed and "raised RuntimeError" in result.message
    assert "return` missing" in verdict("compositing_weights", lambda sigma, deltas: None).message
    assert "returned a str, not tensors" in verdict("compositing_weights", lambda sigma, deltas: "weights").message


def test_compositing_weights_mistakes_are_named():
    def inclusive(sigma, deltas):  # T_i includes sample i: prod over j <= i
        alpha = 1 - torch.exp(-sigma * deltas)
        return alpha * torch.cumprod(1 - alpha, dim=-1)

    def per_unit_length(sigma, deltas):
        alpha = 1 - torch.exp(-sigma)
        return alpha * torch.cat([torch.ones_like(alpha[..., :1]), torch.cumprod(1 - alpha, -1)[..., :-1]], -1)

    def alpha_only(sigma, deltas):
        return -torch.expm1(-sigma * deltas)

    assert "not exclusive" in verdict("compositing_weights", inclusive).message
    assert "spacing" in verdict("compositing_weights", per_unit_length).message
    assert "lack the transmittance" in verdict("compositing_weights", alpha_only).message
    # a product form of the right answer passes: the checker compares values, not code
    def product_form(sigma, deltas):
        alpha = 1 - torch.exp(-sigma * deltas)
        return alpha * torch.cat([torch.ones_like(alpha[..., :1]), torch.cumprod(1 - alpha, -1)[..., :-1]], -1)

    assert verdict("compositing_weights", product_form).passed


def test_every_exercise_is_registered_and_an_unknown_name_lists_them():
    import inspect

    from genvs.course import checking

    modules = sorted(path.stem for path in Path(course.__file__).parent.glob("lesson*.py"))
    defined = {exercise.name for module in modules
               for _, exercise in inspect.getmembers(importlib.import_module(f"genvs.course.{module}"))
               if isinstance(exercise, checking.Exercise)}
    assert defined == set(course.LESSON_OF)
    assert {exercise.lesson for exercise in course.all_exercises().values()} == {f"{n:02d}" for n in range(1, 9)}
    with pytest.raises(KeyError, match="compositing_weights"):
        course.exercise_named("compositing_weight")


def test_check_prints_one_line_and_solution_shows_the_source_folded_and_checks_it(capsys, monkeypatch):
    import IPython.display

    course.check("pluecker_rays", lambda K, c2w, height, width: None)
    line = capsys.readouterr().out
    assert line.startswith("✗ pluecker_rays: ") and line.count("\n") == 1
    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    course.solution("compositing_weights")
    assert len(shown) == 1 and shown[0].data.startswith("<details>") and "def solution(sigma" in shown[0].data
    assert capsys.readouterr().out.startswith("✓ compositing_weights: passes")
