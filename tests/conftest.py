"""Shared test set-up."""

import pytest
import torch


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
