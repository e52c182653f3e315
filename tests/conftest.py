"""Shared test set-up."""

from pathlib import Path

import pytest
import torch
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run every test on one torch thread and restore the count afterwards.

    The tests' tensors are tiny, so threads gain nothing; and on 2 shared cores torch's thread
    pool stalls when a neighbour is busy (measured here: a 200-step voxel fit took 1.2 s on one
    thread and 15 s on two). `make test` also sets OMP_NUM_THREADS=1 for the notebooks' kernels.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def constraints() -> dict[str, str]:
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


@pytest.fixture(scope="session")
def clean_images():
    """``clean_images(seed, scale=0.9)``: two 3 x 8 x 8 images with values in [-scale, scale], drawn from ``seed``."""
    def draw(seed: int, scale: float = 0.9) -> torch.Tensor:
        return (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * scale

    return draw


@pytest.fixture(scope="session")
def oracle_cond():
    """``oracle_cond()``: a condition ``[2, 2, 8, 8]`` for the oracle denoisers, non-zero in every sample (but zero in
    places, as real features may be); a new tensor each call."""
    def draw() -> torch.Tensor:
        cond = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(7))
        cond[:, 1, :4] = 0.0
        return cond

    return draw
