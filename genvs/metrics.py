"""Image quality metrics: fidelity to the truth, sharpness, perceptual distance, multi-view consistency.

Images follow the package convention: ``[..., 3, H, W]`` in [-1, 1] (a range of 2).

- :func:`psnr`, :func:`ssim`: pixel fidelity. They reward the mean of the plausible views, so a
  blurry regression scores well on them.
- :func:`sharpness`: fine detail relative to the truth (1: as much; below 1: blurrier; above 1: noise).
- :func:`detail_score`: whether each band of detail has the truth's energy (1: the truth; blur and noise
  both score lower), so that added noise cannot pass for detail.
- :func:`kernel_distance` (KID) and :func:`total_variation`: distances between distributions, of image
  features and of attribute values (the attribute probe's, :mod:`genvs.probe`).
- :class:`LPIPS`: distance between deep features (AlexNet), closer to what people see; it needs
  ImageNet weights on disk and tells why when they are missing.
- :func:`reprojection_consistency`: whether consecutive generated views agree about the same 3D
  points, using the rendered depth; no ground truth needed. Its ``psnr`` rewards blur (a blurred
  frame is easy to predict); its ``gain`` does not: the warp's error relative to what moving the
  frame by one pixel costs (:func:`one_pixel_jitter`).
"""

from __future__ import annotations

import math
from pathlib import Path

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.image.kid import poly_mmd

from genvs.cameras import project, unproject

__all__ = ["psnr", "ssim", "fine_detail", "high_frequency_energy", "sharpness", "band_energies", "detail_score",
           "kernel_distance", "total_variation", "tv_to_uniform", "LPIPS", "LPIPSUnavailable", "one_pixel_jitter",
           "reprojection_consistency"]


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


def _blur(images: Tensor, sigma: float) -> Tensor:
    size = 2 * math.ceil(3 * sigma) + 1
    return kornia.filters.gaussian_blur2d(images, (size, size), (sigma, sigma), border_type="reflect")


def fine_detail(images: Tensor, sigma: float = 1.0) -> Tensor:
    """The finest band of detail, the part a Gaussian blur removes: ``h(x) = x - G_sigma * x``.

    ``G_sigma`` is a Gaussian of standard deviation ``sigma`` pixels (kernel ``2 ceil(3 sigma) + 1``
    wide, reflected at the borders).

    Args:
        images: ``[..., C, H, W]``.
    Returns:
        ``[..., C, H, W]`` float32.
    """
    flat = images.float().reshape(-1, *images.shape[-3:])
    return (flat - _blur(flat, sigma)).reshape(images.shape)


def high_frequency_energy(images: Tensor, sigma: float = 1.0) -> Tensor:
    """Energy of the detail a Gaussian blur removes: ``E = mean((x - G_sigma * x)^2)`` per image.

    ``x - G_sigma * x`` is :func:`fine_detail`; the mean runs over channels and pixels. For white noise of
    variance ``s^2`` the expectation is ``s^2 sum_k (delta_k - g_k)^2`` over the kernel taps ``g``.

    Args:
        images: ``[..., C, H, W]``.
    Returns:
        ``[...]`` energies.
    """
    return fine_detail(images, sigma).pow(2).mean(dim=(-3, -2, -1))


def sharpness(prediction: Tensor, target: Tensor, sigma: float = 1.0) -> Tensor:
    """Fine detail of a prediction relative to the truth: ``E(prediction) / E(target)``.

    ``E`` is :func:`high_frequency_energy`. 1: as much high-frequency energy as the true view; below 1:
    blurrier (a regression model averaging the possible views); above 1: more than the truth (noise,
    speckle). It measures amount, not place: detail in the wrong place still counts as sharp.

    Args:
        prediction, target: ``[..., C, H, W]`` (broadcastable).
    Returns:
        ``[...]`` ratios.
    """
    return high_frequency_energy(prediction, sigma) / high_frequency_energy(target, sigma).clamp_min(1e-12)


DETAIL_SIGMAS = (1.0, 2.0, 4.0)
"""Gaussian blurs that cut an image into detail bands: ``x - G_1 x``, ``G_1 x - G_2 x``, ``G_2 x - G_4 x``."""


def band_energies(images: Tensor, sigmas: tuple[float, ...] = DETAIL_SIGMAS) -> Tensor:
    """Energy of each band of detail: ``E_k = mean((G_{s_{k-1}} x - G_{s_k} x)^2)`` with ``G_{s_0} x = x``.

    ``G_s`` is a Gaussian blur of standard deviation ``s`` pixels (as in :func:`high_frequency_energy`, whose
    energy is band 0's); the mean runs over channels and pixels. Finest band first.

    Args:
        images: ``[..., C, H, W]``.
    Returns:
        ``[..., len(sigmas)]``.
    """
    flat = images.float().reshape(-1, *images.shape[-3:])
    levels = [flat] + [_blur(flat, sigma) for sigma in sigmas]
    energies = [(finer - coarser).pow(2).mean(dim=(-3, -2, -1)) for finer, coarser in zip(levels, levels[1:])]
    return torch.stack(energies, dim=-1).reshape(*images.shape[:-3], len(sigmas))


def detail_score(prediction: Tensor, target: Tensor, sigmas: tuple[float, ...] = DETAIL_SIGMAS) -> Tensor:
    """How well a prediction's detail matches the truth's, band by band: 1 for the truth, lower for blur *and* noise.

    ``score = (1 / K) sum_k min(E_k(p), E_k(t)) / max(E_k(p), E_k(t))`` over the :func:`band_energies` ``E_k``.
    Unlike :func:`sharpness` (``E_0(p) / E_0(t)``, which noise pushes above 1), having too much detail in a band
    costs as much as having too little: a copy of the truth with noise added scores below the truth's 1, a blurred
    copy too. Like sharpness, it measures amounts, not places.

    Args:
        prediction, target: ``[..., C, H, W]`` (broadcastable).
    Returns:
        ``[...]`` scores in (0, 1].
    """
    predicted, true = band_energies(prediction, sigmas), band_energies(target, sigmas)
    ratio = torch.minimum(predicted, true) / torch.maximum(predicted, true).clamp_min(1e-12)
    return ratio.mean(-1)


def kernel_distance(real: Tensor, generated: Tensor, subsets: int = 100, subset_size: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (KID, Binkowski et al. 2018) between two sets of features, with its spread.

    For ``subsets`` random subsets of ``m = min(subset_size, N_real, N_generated)`` features of each set, the
    unbiased squared maximum mean discrepancy with the cubic polynomial kernel ``k(x, y) = (x . y / d + 1)^3``::

        MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
                - 2 sum_{i, j} k(x_i, y_j) / m^2

    (torchmetrics' ``poly_mmd``); KID is its mean over subsets. 0 in expectation for samples of one distribution
    (a single subset can be slightly negative). Here the features are the attribute probe's, not Inception's.

    Args:
        real, generated: ``[N, d]`` and ``[M, d]`` features.
        seed: draws the subsets (``torch.randperm``, real then generated, per subset).
    Returns:
        ``(mean, standard deviation)`` over subsets.
    """
    generator = torch.Generator().manual_seed(seed)
    size = min(subset_size, real.shape[0], generated.shape[0])
    if size < 2:
        raise ValueError(f"kernel_distance needs at least 2 features in each set, got {real.shape[0]} and "
                         f"{generated.shape[0]}")
    values = []
    for _ in range(subsets):
        real_subset = real[torch.randperm(real.shape[0], generator=generator)[:size]]
        generated_subset = generated[torch.randperm(generated.shape[0], generator=generator)[:size]]
        values.append(poly_mmd(real_subset.double(), generated_subset.double()))
    values = torch.stack(values)
    return float(values.mean()), float(values.std(unbiased=False))


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """Total variation distance between distributions over the last axis: ``(1 / 2) sum_k |p_k - q_k|`` in [0, 1]."""
    return 0.5 * (p - q).abs().sum(-1)


def tv_to_uniform(reads: Tensor, n_values: int) -> Tensor:
    """Total variation ``[]`` between the histogram of ``reads [N]`` (integers in ``0 .. n_values - 1``) and the
    uniform prior: ``(1 / 2) sum_v |p(v) - 1 / n_values|`` with ``p(v) = #{reads = v} / N``, in float64."""
    histogram = torch.bincount(reads, minlength=n_values).double() / reads.numel()
    return total_variation(histogram, torch.full_like(histogram, 1.0 / n_values))


class LPIPSUnavailable(RuntimeError):
    """LPIPS cannot run here (its backbone's ImageNet weights are not on disk); the message says where they go."""


class LPIPS:
    """Learned perceptual image patch similarity (Zhang et al. 2018), torchmetrics' implementation.

    ``d(x, y) = sum_l mean_hw || w_l * (f_l(x) - f_l(y)) ||^2`` over unit-normalised AlexNet features
    ``f_l`` of 5 layers, with learned channel weights ``w_l`` (shipped inside torchmetrics). 0 for
    identical images; lower is more similar. Nothing is downloaded: the AlexNet ImageNet weights
    must already be in torch's hub cache, else :class:`LPIPSUnavailable` says where to put them.

    Args:
        device: where the network runs.
        hub_dir: torch's hub folder (default ``torch.hub.get_dir()``, i.e. ``$TORCH_HOME/hub``).
    """

    def __init__(self, device: torch.device | str = "cpu", hub_dir: str | Path | None = None):
        import torchvision

        url = torchvision.models.AlexNet_Weights.DEFAULT.url
        hub_dir = Path(hub_dir) if hub_dir is not None else Path(torch.hub.get_dir())
        self.backbone_path = hub_dir / "checkpoints" / Path(url).name
        if not self.backbone_path.is_file():
            raise LPIPSUnavailable(f"LPIPS skipped: its AlexNet ImageNet weights are not on this machine "
                                   f"(looked for {self.backbone_path}; they are {url}, copy the file there to "
                                   f"enable LPIPS)")
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
        except ImportError as error:
            raise LPIPSUnavailable(f"LPIPS skipped: torchmetrics is not installed ({error}); pip install torchmetrics")
        previous_hub = torch.hub.get_dir()
        torch.hub.set_dir(str(hub_dir))
        try:
            self.metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="none").to(device).eval()
        finally:
            torch.hub.set_dir(previous_hub)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, prediction: Tensor, target: Tensor) -> Tensor:
        """``[..., 3, H, W]`` images in [-1, 1] (same shape) -> ``[...]`` LPIPS distances."""
        batch_shape, image_shape = prediction.shape[:-3], prediction.shape[-3:]
        pair = [image.float().reshape(-1, *image_shape).to(self.device).clamp(-1, 1) for image in (prediction, target)]
        return self.metric(*pair).reshape(batch_shape).cpu()


def one_pixel_jitter(images: Tensor) -> tuple[Tensor, Tensor]:
    """How much moving an image by one pixel changes it, per pixel: the scale of a frame's own detail.

    ``J(p) = mean over the neighbours q in {p + (1, 0), p + (0, 1)} inside the image of mean_c (I(p) - I(q))^2``.
    A flat image has ``J = 0``; a blurred one, less than the original; white noise of variance ``s^2``, ``2 s^2``.

    Args:
        images: ``[N, C, H, W]``.
    Returns:
        ``jitter [N, H, W]`` and ``valid [N, H, W]`` (False where ``p`` has no neighbour: the bottom-right pixel).
    """
    right = (images[..., :, 1:] - images[..., :, :-1]).pow(2).mean(dim=-3)  # [N, H, W - 1]
    down = (images[..., 1:, :] - images[..., :-1, :]).pow(2).mean(dim=-3)  # [N, H - 1, W]
    total = images.new_zeros(images.shape[:1] + images.shape[2:])
    count = torch.zeros_like(total)
    total[..., :, :-1] += right
    count[..., :, :-1] += 1
    total[..., :-1, :] += down
    count[..., :-1, :] += 1
    return total / count.clamp_min(1), count > 0


def reprojection_consistency(frames: Tensor, depth: Tensor, opacity: Tensor, K: Tensor, c2w: Tensor,
                             opacity_threshold: float = 0.5, depth_tolerance: float = 0.05) -> dict[str, Tensor]:
    """Do consecutive views agree about the same 3D points? Frame ``t`` warped into frame ``t + 1``.

    For each pixel ``p`` of frame ``t + 1`` the rendered depth gives its 3D point
    ``x = unproject(p, D_{t+1}(p))``; projecting ``x`` into camera ``t`` gives ``(q, z)``, and
    ``I_t(q)`` (bilinear) should equal ``I_{t+1}(p)``. Compared pixels: covered in frame ``t + 1``
    (opacity >= threshold), landing inside frame ``t`` on a covered pixel, and not hidden there
    (``|D_t(q) - z| <= depth_tolerance * z``). Score per pair: ``PSNR = 10 log10(4 / MSE)`` over them.
    Rendered depth is only approximately right, so even true views score below infinity: compare
    methods with the same depth, or against the truth's score.

    The PSNR rewards blur: a frame without detail is easy to predict from any other. The **gain** compares the
    warp's error with the frame's own :func:`one_pixel_jitter` over the same pixels,
    ``gain = 10 log10(mean J / MSE)``: how much better the previous frame, moved in 3D, predicts this frame than
    this frame moved by one pixel. Blur lowers both errors but the jitter more; independent noise raises both by
    about as much (the gain falls toward 0 dB); a frame that does not turn with the camera warps badly.

    Args:
        frames: ``[N, 3, H, W]`` in [-1, 1], in trajectory order.
        depth, opacity: ``[N, H, W]`` rendered for the same cameras (upsample to ``H, W`` first).
        K: ``[N, 3, 3]`` intrinsics of the ``H x W`` frames; c2w: ``[N, 4, 4]``.
    Returns:
        ``psnr [N - 1]`` per consecutive pair (NaN where no pixel could be compared), ``gain [N - 1]`` (dB, NaN
        likewise; +inf where the warp is exact), ``coverage [N - 1]``
        (the fraction of frame ``t + 1``'s pixels compared), ``warped [N - 1, 3, H, W]`` (frame ``t`` seen
        from camera ``t + 1``) and ``compared [N - 1, H, W]`` (the mask of compared pixels).
    """
    n_frames, _, height, width = frames.shape
    if depth.shape != (n_frames, height, width) or opacity.shape != depth.shape:
        raise ValueError(f"depth {list(depth.shape)} and opacity {list(opacity.shape)} must be "
                         f"[N, H, W] = {[n_frames, height, width]}")
    rows, columns = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pixels = torch.stack([columns, rows], dim=-1).reshape(1, -1, 2).to(frames)  # [1, H*W, 2] as (u, v)
    points = unproject(pixels.expand(n_frames - 1, -1, -1), depth[1:].reshape(n_frames - 1, -1), K[1:], c2w[1:])
    uv, z = project(points, K[:-1], c2w[:-1])
    grid = (2 * uv / uv.new_tensor([width, height]) - 1).reshape(n_frames - 1, height, width, 2)

    def seen_in_earlier(images: Tensor) -> Tensor:
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)

    warped = seen_in_earlier(frames[:-1].float())
    earlier_depth, earlier_opacity = seen_in_earlier(torch.stack([depth[:-1], opacity[:-1]], dim=1).float()).unbind(1)
    z = z.reshape(n_frames - 1, height, width)
    compared = ((grid.abs() <= 1).all(dim=-1) & (z > 0) & (opacity[1:] >= opacity_threshold)
                & (earlier_opacity >= opacity_threshold) & ((earlier_depth - z).abs() <= depth_tolerance * z))
    squared_error = (warped - frames[1:].float()).pow(2).mean(dim=1)

    def mean_over(mask: Tensor, values: Tensor) -> Tensor:  # [N - 1] (0 where the mask is empty)
        return (values * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1)

    counts = compared.sum(dim=(1, 2))
    missing = squared_error.new_full(counts.shape, float("nan"))
    score = torch.where(counts > 0, 10.0 * torch.log10(4.0 / mean_over(compared, squared_error)), missing)
    jitter, has_neighbour = one_pixel_jitter(frames[1:].float())
    both = compared & has_neighbour
    gain = torch.where(both.any(dim=(1, 2)),
                       10.0 * torch.log10(mean_over(both, jitter) / mean_over(both, squared_error)), missing)
    return {"psnr": score, "gain": gain, "coverage": counts / (height * width), "warped": warped, "compared": compared}
