"""Image quality metrics.

Images follow the package convention: ``[..., 3, H, W]`` in [-1, 1] (a range of 2).
"""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

__all__ = ["psnr", "ssim"]


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


def ssim(prediction: Tensor, target: Tensor, data_range: float = 2.0, window_size: int = 11) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), averaged over pixels and channels.

    ``SSIM = (2 mu_x mu_y + c1)(2 sigma_xy + c2) / ((mu_x^2 + mu_y^2 + c1)(sigma_x^2 + sigma_y^2 + c2))``
    with local statistics under an 11 x 11 Gaussian window of standard deviation 1.5,
    ``c1 = (0.01 L)^2``, ``c2 = (0.03 L)^2``, ``L = data_range``, on the positions where the window
    fits inside the image (no padding); ``kornia.metrics.ssim`` computes the map. The same numbers
    as scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``.

    Args:
        prediction, target: ``[..., C, H, W]`` images (same shape), ``H, W >= window_size``.
        data_range: max - min of the image range (2 for [-1, 1]).
    Returns:
        ``[...]`` SSIM of each image, at most 1 (identical images).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"ssim needs images of the same shape, got {list(prediction.shape)} and {list(target.shape)}")
    batch_shape, image_shape = prediction.shape[:-3], prediction.shape[-3:]
    if min(image_shape[-2:]) < window_size:
        raise ValueError(f"ssim needs images of at least {window_size}x{window_size} pixels, got {list(image_shape)}")
    pair = [image.float().reshape(-1, *image_shape) for image in (prediction, target)]
    index_map = kornia.metrics.ssim(*pair, window_size=window_size, max_val=data_range, padding="valid")
    return index_map.mean(dim=(-3, -2, -1)).reshape(batch_shape)
