"""The environment files agree, and the installed environment is the one they describe."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [req for group in project["optional-dependencies"].values() for req in group]
    return {req.replace(" ", "") for req in project["dependencies"] + extras}


def _environment_yml_pip_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    requirements = set()
    for line in lines[start + 1:]:
        item = line.strip()
        if not item.startswith("- "):
            break
        requirements.add(item[2:].replace(" ", ""))
    return requirements - {"-e."}


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    assert _environment_yml_pip_requirements() == _pyproject_requirements()


def test_torch_and_torchvision_are_the_pinned_matching_pair():
    import torch
    import torchvision

    pins = {req.split("==")[0]: req.split("==")[1] for req in _pyproject_requirements() if "==" in req}
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert torchvision.__version__.split("+")[0] == pins["torchvision"]
    # The compiled operator that fails to load when the pair does not match.
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.1]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_k_diffusion_imports():
    import k_diffusion  # needs setuptools<81 (clip-anytorch imports pkg_resources)

    assert hasattr(k_diffusion.layers, "Denoiser")
