"""Training batches as a pure function of their number: what makes a run resumable exactly, on any number of workers."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genvs.data.srn import SRNDataset, require_views
from genvs.seeding import derive_seed

__all__ = ["StepBatches"]


class StepBatches(torch.utils.data.Dataset):
    """Micro-batch ``i`` of a run, a pure function of ``(seed, i)``.

    Item ``i``: ``images [B, V, 3, H, W]``, ``K [B, V, 3, 3]``, ``c2w [B, V, 4, 4]`` and
    ``n_inputs`` (a 0-d long tensor): ``B`` distinct objects (with repeats only if the dataset
    has fewer), each with ``V = n_inputs + target_views`` distinct views, the first ``n_inputs``
    being inputs. ``n_inputs`` is drawn from ``1 .. max_inputs``.
    """

    def __init__(self, dataset: SRNDataset, batch_size: int, max_inputs: int, target_views: int, seed: int,
                 length: int = 2**62):
        self.dataset, self.batch_size = dataset, batch_size
        self.max_inputs, self.target_views = max_inputs, target_views
        self.seed, self.length = seed, length
        require_views(dataset, max_inputs + target_views, " (max_input_views + target_views)")

    def __len__(self) -> int:
        return self.length

    def draw(self, index: int) -> tuple[list[int], int, torch.Generator]:
        """Micro-batch ``index``'s objects and number of input views, without loading anything; the generator
        then draws each object's views."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, index))
        n_objects = len(self.dataset)
        objects = torch.cat([torch.randperm(n_objects, generator=generator)
                             for _ in range(math.ceil(self.batch_size / n_objects))])[: self.batch_size]
        n_inputs = int(torch.randint(1, self.max_inputs + 1, (1,), generator=generator))
        return objects.tolist(), n_inputs, generator

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        objects, n_inputs, generator = self.draw(index)
        items = []
        for object_index in objects:
            n_views = self.dataset.objects[object_index].n_views
            views = torch.randperm(n_views, generator=generator)[: n_inputs + self.target_views].tolist()
            items.append(self.dataset.load_views(object_index, views))
        batch = {key: torch.stack([item[key] for item in items]) for key in ("images", "K", "c2w")}
        return {**batch, "n_inputs": torch.tensor(n_inputs)}
