"""Image quality metrics.

Images follow the package convention: ``[..., 3, H, W]`` in [-1, 1] (a range of 2).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["psnr"]


def psnr(prediction: Tensor, target: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio per image: ``10 log10(range^2 / MSE)`` in dB.

    With the default range 2 for images in [-1, 1] this equals the usual PSNR of the same images
    mapped to [0, 1] (range 1), the convention of SRN / pixelNeRF tables.

    Args:
        prediction, target: ``[..., C, H, W]`` images (broadcastable).
        data_range: max - min of the image range.
    Returns:
        ``[...]`` PSNR of each image (``inf`` for identical images); average it for a dataset score.
    """
    mse = (prediction.float() - target.float()).pow(2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / mse)
