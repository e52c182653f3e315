"""The environment files agree, and the installed environment is the one they describe.

pyproject.toml declares ranges (what genvs supports); constraints.txt pins one tested version of every package
(what `make install` and CI install); environment.yml installs genvs under those constraints.
"""

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [req for group in project["optional-dependencies"].values() for req in group]
    return [Requirement(req) for req in project["dependencies"] + extras]


def _constraints() -> dict[str, str]:
    """``{canonical name: pinned version}`` of constraints.txt (every line ``name==version``)."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, _, pinned = line.partition("==")
        assert pinned and not set(pinned) & set("<>=!~*; "), f"constraints.txt: {line!r} is not name==version"
        assert canonicalize_name(name) not in pins, f"constraints.txt: {name} twice"
        pins[canonicalize_name(name)] = pinned
    return pins


def _environment_yml_pip_lines() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    items = []
    for line in lines[start + 1:]:
        item = line.strip()
        if not item.startswith("- "):
            break
        items.append(item[2:].strip())
    return items


def test_pyproject_declares_ranges_not_pins():
    # `pip install genvs` beside Colab's own torch must replace nothing that satisfies a range.
    pinned = [str(req) for req in _pyproject_requirements() if any(s.operator in ("==", "===") for s in req.specifier)]
    assert pinned == []


def test_every_dependency_is_pinned_inside_its_range():
    pins = _constraints()
    for req in _pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency in pyproject.toml but has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's range {req}"


def test_installed_versions_are_the_constraints():
    pins = _constraints()
    for req in _pyproject_requirements():
        pinned = pins[canonicalize_name(req.name)]
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            pytest.fail(f"{req.name} is not installed (constraints.txt pins {pinned}): make install")
        # As pip applies the pin: 2.15.0 also matches a local build such as 2.15.0+cu130.
        assert SpecifierSet(f"=={pinned}").contains(installed, prereleases=True), \
            f"{req.name} {installed} is installed, constraints.txt pins {pinned}: make install"


def test_environment_yml_installs_genvs_under_the_constraints():
    assert _environment_yml_pip_lines() == ["-c constraints.txt", "-e .[dev]"]


def test_torch_and_torchvision_are_the_pinned_matching_pair():
    import torch
    import torchvision

    pins = _constraints()
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert torchvision.__version__.split("+")[0] == pins["torchvision"]
    # The compiled operator that fails to load when the pair does not match.
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.1]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_k_diffusion_imports():
    import k_diffusion  # needs setuptools<81 (clip-anytorch imports pkg_resources)

    assert hasattr(k_diffusion.layers, "Denoiser")
