"""Seeded randomness: the same seed gives the same numbers on the same device, and a caller's
global RNG is never disturbed.

Two tools: :func:`draw` takes numbers from an explicit ``torch.Generator`` (the package's own
code), and :func:`seeded_rng` fixes the global RNG for a block of library code that uses it
(weight initialisation, the dropout masks of a training step), restoring it afterwards.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["draw", "seeded_rng", "derive_seed"]


def draw(kind: Callable[..., Tensor], shape: tuple[int, ...], generator: torch.Generator | None = None,
         device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``kind(shape)`` (``torch.rand`` or ``torch.randn``) from ``generator``, returned on ``device``.

    A generator produces numbers on its own device, so they are drawn there and moved: the same
    seed gives the same numbers wherever the result goes. ``generator=None`` uses the global RNG
    of ``device``. ``device=None`` keeps the numbers where they were drawn. ``dtype=None``: torch's
    default dtype (float32 unless ``torch.set_default_dtype`` changed it).
    """
    source = generator.device if generator is not None else torch.device(device or "cpu")
    return kind(shape, generator=generator, device=source, dtype=dtype).to(device or source)


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNGs of the CPU and of ``device`` with ``seed``; restore both states on exit.

    For library code that draws from the global RNG (``nn.Module`` initialisation, dropout): inside, such draws
    are fixed by ``seed``; outside, the caller's RNG streams are as if nothing happened. Other devices' RNGs are
    neither used nor changed.
    """
    accelerators = [] if device.type == "cpu" else [device]
    with torch.random.fork_rng(devices=accelerators, device_type=device.type):
        torch.default_generator.manual_seed(seed)
        for accelerator in accelerators:
            state = torch.Generator(accelerator).manual_seed(seed).get_state()
            torch.get_device_module(accelerator.type).set_rng_state(state, accelerator)
        yield


def derive_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for item ``index`` of a run seeded with ``seed`` (numpy's ``SeedSequence``).

    Neighbouring indices give unrelated seeds, so ``(seed, index)`` can fix the randomness of
    training micro-batch ``index`` or of generated frame ``index`` independently of all others.
    """
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))
