"""The environment files agree, and the installed environment is the one they describe.

pyproject.toml declares ranges (what genvs supports); constraints.txt pins one tested version of every package
(what `make install` and CI install); overrides.txt replaces a dependency's own requirement (dctorch's numpy<2);
environment.yml gives conda users the Python and the installer, then the README's command installs genvs as
`make install` does.
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


def test_pyproject_declares_ranges_not_pins():
    # `pip install genvs` beside Colab's own torch must replace nothing that satisfies a range.
    pinned = [str(req) for req in _pyproject_requirements() if any(s.operator in ("==", "===") for s in req.specifier)]
    assert pinned == []


def test_every_dependency_is_pinned_inside_its_range(constraints):
    pins = constraints
    for req in _pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency in pyproject.toml but has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's range {req}"


def test_installed_versions_are_the_constraints(constraints):
    pins = constraints
    for req in _pyproject_requirements():
        pinned = pins[canonicalize_name(req.name)]
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            pytest.fail(f"{req.name} is not installed (constraints.txt pins {pinned}): make install")
        # As pip applies the pin: 2.15.0 also matches a local build such as 2.15.0+cu130.
        assert SpecifierSet(f"=={pinned}").contains(installed, prereleases=True), \
            f"{req.name} {installed} is installed, constraints.txt pins {pinned}: make install"


def _minimum_python() -> str:
    """The lowest Python of pyproject.toml's ``requires-python`` (``>=3.11`` -> ``3.11``)."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires.startswith(">=") and "," not in requires, requires
    return requires[2:]


def test_pyproject_environment_yml_and_readme_name_the_same_python():
    minimum = _minimum_python()
    lines = [line.strip() for line in (ROOT / "environment.yml").read_text().splitlines()]
    assert f"- python={minimum}" in lines and "- uv" in lines
    readme = (ROOT / "README.md").read_text()
    assert f"Python {minimum} or newer" in readme and "conda env create -f environment.yml" in readme


def test_the_readme_installs_a_conda_environment_as_make_install_does():
    """README's conda command is the Makefile's uv line, with the environment's own python."""
    makefile = (ROOT / "Makefile").read_text()
    arguments = ("pip install --python $(PY) --compile-bytecode -c constraints.txt --override overrides.txt "
                 "-e \".[dev]\"")
    assert f"$(UV) {arguments}" in makefile
    conda = "uv " + arguments.replace("--python $(PY) ", "")
    assert conda in (ROOT / "README.md").read_text()


def test_the_numpy_override_is_still_needed_and_admits_the_pinned_numpy(constraints):
    """dctorch declares numpy<2 (so without overrides.txt numpy 2 cannot install); the override admits the pin."""
    from importlib.metadata import requires

    declared = next(Requirement(line) for line in requires("dctorch") if Requirement(line).name == "numpy")
    pinned = constraints["numpy"]
    assert not declared.specifier.contains(pinned), f"dctorch now allows numpy {pinned}: drop overrides.txt's line"
    overrides = [Requirement(line) for line in (ROOT / "overrides.txt").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
    assert [req.name for req in overrides] == ["numpy"] and overrides[0].specifier.contains(pinned)
    assert version("numpy") == pinned and int(pinned.split(".")[0]) >= 2


def test_dctorch_computes_the_orthonormal_dct_on_the_installed_numpy():
    """What the override relies on: on numpy 2, dctorch's dct, dct2 and dct3 are the type-II orthonormal DCT,
    X_k = sqrt(2 / N) c_k sum_n x_n cos(pi (2n + 1) k / 2N), c_0 = 1 / sqrt(2), else 1, written out here,
    along the last 1, 2 and 3 axes of the image (dct: the rows, axis -2)."""
    import numpy as np
    import torch
    from dctorch import functional as dct

    def along(x: np.ndarray, axis: int) -> np.ndarray:
        n = x.shape[axis]
        k, i = np.arange(n)[:, None], np.arange(n)[None, :]
        matrix = np.sqrt(2 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
        matrix[0] /= np.sqrt(2)
        return np.moveaxis(np.tensordot(matrix, np.moveaxis(x, axis, 0), axes=1), 0, axis)

    x = torch.randn(3, 6, 7, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for function, axes in ((dct.dct, (-2,)), (dct.dct2, (-2, -1)), (dct.dct3, (-3, -2, -1))):
        expected = x.numpy()
        for axis in axes:
            expected = along(expected, axis)
        np.testing.assert_allclose(function(x).numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=function.__name__)


def test_torch_and_torchvision_are_the_pinned_matching_pair(constraints):
    import torch
    import torchvision

    pins = constraints
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert torchvision.__version__.split("+")[0] == pins["torchvision"]
    # The compiled operator that fails to load when the pair does not match.
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.1]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_k_diffusion_imports_through_genvs_with_or_without_pkg_resources():
    """clip-anytorch (k-diffusion's) does `from pkg_resources import packaging`; setuptools 82 removed it, and
    genvs.denoiser's stand-in lets the import succeed, then leaves no pkg_resources behind."""
    import importlib.util
    import subprocess
    import sys

    check = ("import importlib.util, sys\n"
             "had = importlib.util.find_spec('pkg_resources') is not None\n"
             "from genvs.denoiser import k_diffusion\n"
             "import clip\n"
             "assert k_diffusion.layers.Denoiser and clip.available_models()\n"
             "assert ('pkg_resources' in sys.modules) == had, sys.modules.get('pkg_resources')\n"
             "print(had)")
    result = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", check], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(importlib.util.find_spec("pkg_resources") is not None)
