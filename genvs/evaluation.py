"""Evaluation protocol: held-out objects, one input view, fixed targets and seeds, every method scored.

For each held-out object (SRN layout) the model sees one input view and predicts fixed target views
with four methods:

- ``regression``: the feature field's RGB guess (channels 0-2 of the rendered features, trained with
  an MSE loss) rendered at the image size: a pixelNeRF-style regression model sharing GeNVS's encoder;
- ``deterministic``: GeNVS sampled without churn (an ODE: one answer per start noise);
- ``stochastic``: GeNVS with the seed's churn (:func:`genvs.sampling.sampling_options`);
- ``autoregressive``: stochastic, target after target, each conditioned on the input and earlier
  generated targets (:func:`genvs.sampling.generate_trajectory`), several objects at once.

Every method is scored per target view against the truth (:func:`genvs.metrics.psnr`, ``ssim``,
``sharpness``, ``LPIPS`` when its weights are on disk) and, along the targets in their order, for
multi-view consistency (:func:`genvs.metrics.reprojection_consistency`; the true views are scored too,
as the ceiling the rendered depth allows). Consistency warps every method's frames with one depth, the
input-only field's rendered at the image size, so that the methods differ in their images alone (the
autoregressive method's own field, which also sees its generated frames, would warp its frames with
another depth). Scores are averaged per object, then reported as mean and standard deviation over objects.

Seeds: object ``i`` has the seed ``s_i = derive_seed(seed, i)`` (:func:`genvs.seeding.derive_seed`); the two
samplers draw targets ``t .. t + target_batch - 1`` from ``derive_seed(s_i, t)``, the autoregressive method is
:func:`genvs.sampling.generate_trajectory` with seed ``s_i``. The autoregressive method generates
``object_batch`` objects' trajectories together (frame ``f`` of each in one denoiser batch), each with its own
random numbers, so the batch changes its images by float rounding only: the CPU's matrix products sum in an
order that depends on the number of rows (measured with the lesson checkpoint: images within 4e-6, scores within
2e-6 of ``object_batch=1``, the other methods' scores identical). ``object_batch=1`` reproduces the results of
the code before objects were batched bit for bit.

Cost, in denoiser (U-Net) calls, of the ``"srn"`` protocol on SRN cars (704 test cars, 250 targets each, 250
Euler steps: one call per step): each sampling method denoises 704 x 250 x 250 = 44,000,000 images. The
deterministic and stochastic methods take 16 targets per call (``target_batch``): 704 x 16 x 250 = 2,816,000
calls each. The autoregressive method took one frame of one car per call, 44,000,000 calls; with
``object_batch=8`` it takes 88 batches x 250 frames x 250 steps = 5,500,000 calls of 8 images. All three methods:
49,632,000 calls before, 11,132,000 now. On a 2-core CPU, one thread, the lesson checkpoint (32 px), 4 cars x 8
targets x 25 steps: 22.5 s one car at a time, 11.5 s in one batch of 4.
Memory: every generated frame's volume stays on the device until its batch is done: 8 x 251 volumes of
16 x 64 x 64 x 64 floats (the paper preset) are 34 GB.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from genvs.data.srn import SRNDataset, SRNFormatError
from genvs.metrics import LPIPS, LPIPSUnavailable, psnr, reprojection_consistency, sharpness, ssim
from genvs.sampling import eval_mode, generate_trajectory, sample_images, sampling_options
from genvs.seeding import derive_seed

__all__ = ["EvaluationConfig", "PROTOCOLS", "METHODS", "METRICS", "evaluate", "results_table", "target_view_ids"]

METHODS = ("regression", "deterministic", "stochastic", "autoregressive")
METRICS = ("psnr", "ssim", "lpips", "sharpness", "consistency")
METRIC_LABELS = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "sharpness": "sharpness (truth = 1)",
                 "consistency": "consistency (dB) ↑"}
DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3, "sharpness": 2, "consistency": 2}


@dataclass(frozen=True)
class EvaluationConfig:
    """What is evaluated, and how.

    Args:
        split: the held-out split of the SRN-format data ("test" or "val").
        max_objects: evaluate the first ``max_objects`` objects of the split (0: all).
        input_view: index of the one input view of each object (SRN cars' 1-view protocol: 64).
        target_views: this many targets spread evenly over the other views, in view order (0: all of them).
        steps: sampler steps; seed: the sampling seed of object ``i`` is ``derive_seed(seed, i)``.
        target_batch: targets sampled together (memory).
        max_random: random earlier frames conditioning an autoregressive target (the seed: 4).
        object_batch: objects whose autoregressive trajectories are generated together, frame ``f`` of each in one
            denoiser batch (consecutive objects with as many targets; memory: every generated frame's volume stays
            on the device). Each keeps its own seed and conditioning sets, so this changes scores by float rounding
            only (module docstring); 1 reproduces results computed before objects were batched bit for bit.
    """

    split: str = "test"
    max_objects: int = 20
    input_view: int = 0
    target_views: int = 8
    steps: int = 25
    seed: int = 0
    target_batch: int = 16
    max_random: int = 4
    object_batch: int = 1

    def __post_init__(self):
        for name in ("max_objects", "input_view", "target_views"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("steps", "target_batch", "object_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


PROTOCOLS = {
    "smoke": EvaluationConfig(max_objects=2, target_views=3, steps=3, object_batch=2),
    # the lesson checkpoint's evaluation.json: one object at a time, reproduced bit for bit
    "synthetic": EvaluationConfig(max_objects=20, target_views=8, steps=25),
    # SRN cars, 1 input view: view 64 of each cars_test object in, the other 250 views out (as pixelNeRF);
    # 250 steps of the stochastic sampler, as the seed reimplementation. Long: 3 x 250 views x 250 denoised
    # images per car (deterministic, stochastic, autoregressive; module docstring); --max-objects / --steps for a
    # first look.
    "srn": EvaluationConfig(max_objects=0, input_view=64, target_views=0, steps=250, object_batch=8),
}


def target_view_ids(n_views: int, input_view: int, n_targets: int) -> list[int]:
    """``n_targets`` view indices spread evenly (in order) over ``0 .. n_views - 1`` without ``input_view`` (0: all)."""
    others = [view for view in range(n_views) if view != input_view]
    if n_targets == 0 or n_targets >= len(others):
        return others
    return [others[index] for index in np.linspace(0, len(others) - 1, n_targets).round().astype(int)]


@torch.no_grad()
def _predict(model, views: dict[str, Tensor], config: EvaluationConfig, seed: int,
             device: torch.device) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The regression's and the two samplers' predictions ``[T, 3, H, W]`` of one object's targets (view 0 is the
    input), and the one ``depth`` and ``opacity [T, H, W]`` that score every method's consistency: the input-only
    field's."""
    inputs = [views[key][None, :1].to(device) for key in ("images", "K", "c2w")]
    target_K, target_c2w = (views[key][None, 1:].to(device) for key in ("K", "c2w"))
    samples = {"deterministic": [], "stochastic": []}
    with eval_mode(model):
        encoded = model.field.encode(*inputs)  # once, for the regression and both samplers
        # the regression: the field rendered at the image size, as pixelNeRF renders
        field = model.field.render_image(encoded, target_K, target_c2w, size=views["images"].shape[-1])
        for start in range(0, target_c2w.shape[1], config.target_batch):
            chunk = slice(start, start + config.target_batch)
            cond, _ = model.condition(encoded, target_K[:, chunk], target_c2w[:, chunk])  # shared by both samplers
            for mode, chunks in samples.items():
                chunks.append(sample_images(model.denoiser, cond, seed=derive_seed(seed, start),
                                            **sampling_options(mode, config.steps)).cpu())
    predictions = {"regression": field["features"][0, :, :3].clamp(-1, 1).cpu(),
                   **{mode: torch.cat(chunks) for mode, chunks in samples.items()}}
    return predictions, {key: field[key][0].cpu() for key in ("depth", "opacity")}


def _autoregressive(model, views: list[dict[str, Tensor]], config: EvaluationConfig, seeds: list[int]) -> Tensor:
    """The autoregressive method's predictions ``[B, T, 3, H, W]`` of ``B`` objects' targets (view 0 of each is its
    input; all have ``T`` targets), generated together, object ``b`` from seed ``seeds[b]``."""
    inputs = [torch.stack([object_views[key][:1] for object_views in views]) for key in ("images", "K", "c2w")]
    targets = [torch.stack([object_views[key][1:] for object_views in views]) for key in ("K", "c2w")]
    return generate_trajectory(model, *inputs, *targets, autoregressive=True, max_random=config.max_random,
                               seed=seeds, progress=False, **sampling_options("stochastic", config.steps))["samples"]


def _object_batches(n_targets: list[int], size: int) -> list[list[int]]:
    """Indices ``0 .. len(n_targets) - 1`` in order, cut into batches of at most ``size`` consecutive objects with
    equal numbers of targets (``n_targets[i]``), so that each batch's trajectories are generated together."""
    batches = []
    for index, count in enumerate(n_targets):
        if batches and len(batches[-1]) < size and n_targets[batches[-1][0]] == count:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def _object_scores(predictions: dict[str, Tensor], geometry: dict[str, Tensor], truth: Tensor, K: Tensor, c2w: Tensor,
                   lpips: LPIPS | None) -> dict[str, dict]:
    """Per-method means over one object's targets (``truth [T, 3, H, W]``, target ``K``, ``c2w``); consistency
    warps with ``geometry``'s depth and opacity for every method and for the truth (the ceiling)."""
    scores = {}
    for method, images in {**predictions, "truth": truth}.items():
        method_scores = {}
        if method != "truth":
            method_scores = {"psnr": psnr(images, truth), "ssim": ssim(images, truth),
                             "sharpness": sharpness(images, truth)}
            if lpips is not None:
                method_scores["lpips"] = lpips(images, truth)
        if images.shape[0] > 1:
            method_scores["consistency"] = reprojection_consistency(images, geometry["depth"], geometry["opacity"], K,
                                                                    c2w)["psnr"]
        if method_scores:
            scores[method] = {name: float(values.nanmean()) for name, values in method_scores.items()}
    return scores


def _summary(per_object: list[dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Mean, standard deviation and per-object values of every method's metrics across objects."""
    summary = {}
    for method in per_object[0]:
        summary[method] = {}
        for metric in per_object[0][method]:
            values = np.array([scores[method][metric] for scores in per_object], dtype=float)
            known = values[~np.isnan(values)]  # NaN: nothing to compare (e.g. no overlap between two views)
            summary[method][metric] = {"mean": float(known.mean()) if known.size else float("nan"),
                                       "std": float(known.std()) if known.size else float("nan"),
                                       "per_object": values.tolist()}
    return summary


def _view_ids(dataset: SRNDataset, index: int, config: EvaluationConfig) -> list[int]:
    """Object ``index``'s input view, then its target views (:func:`target_view_ids`)."""
    n_views = dataset.objects[index].n_views
    if config.input_view >= n_views:
        raise SRNFormatError(f"{dataset.objects[index].folder}: has {n_views} views, no input view "
                             f"{config.input_view}; choose another input view")
    return [config.input_view] + target_view_ids(n_views, config.input_view, config.target_views)


def evaluate(model, data: str | Path, config: EvaluationConfig = EvaluationConfig(), device: torch.device | str = "cpu",
             lpips: bool = True, examples: int = 4, progress: bool = True) -> dict:
    """Run the protocol (module docstring) with ``model`` on the held-out split of ``data``.

    Args:
        model: a trained :class:`genvs.model.GeNVS` (on ``device``).
        data: SRN-format root holding ``*_{config.split}/``.
        config: the protocol (:data:`PROTOCOLS`).
        lpips: score LPIPS if its backbone weights are on disk (the reason is recorded if not).
        examples: keep the predictions of this many objects' first ``min(T, 3)`` targets for a figure.
    Returns:
        a JSON-ready dict: ``protocol``, ``data``, ``objects`` (ids), ``views`` (input and target ids per
        object), ``image_size``, ``lpips`` (``{"available", "reason"}``), ``metrics`` (method -> metric ->
        ``{mean, std, per_object}``; the ``truth`` row has consistency only), ``seconds``, ``device``,
        ``torch``; and, not JSON, ``examples``: ``{"input" [E, 3, H, W], "truth" [E, k, 3, H, W],
        method: [E, k, 3, H, W]}``.
    """
    device = torch.device(device)
    start = time.perf_counter()
    size = model.config.field.encoder.image_size
    dataset = SRNDataset(data, split=config.split, views_per_item=None, image_size=size)
    n_objects = len(dataset) if config.max_objects == 0 else min(config.max_objects, len(dataset))
    lpips_metric, reason = None, None
    if lpips:
        try:
            lpips_metric = LPIPS(device)
        except LPIPSUnavailable as error:
            reason = str(error)
            print(reason)
    else:
        reason = "LPIPS skipped: not asked for"
    view_ids = [_view_ids(dataset, index, config) for index in range(n_objects)]
    per_object, kept = [], []
    with tqdm(total=n_objects, desc="evaluating", disable=not progress) as bar:
        for batch in _object_batches([len(ids) for ids in view_ids], config.object_batch):
            views = [dataset.load_views(index, view_ids[index]) for index in batch]
            seeds = [derive_seed(config.seed, index) for index in batch]
            trajectories = _autoregressive(model, views, config, seeds)
            for index, seed, object_views, trajectory in zip(batch, seeds, views, trajectories):
                predictions, geometry = _predict(model, object_views, config, seed, device)
                predictions["autoregressive"] = trajectory
                per_object.append(_object_scores(predictions, geometry, object_views["images"][1:],
                                                 object_views["K"][1:], object_views["c2w"][1:], lpips_metric))
                if index < examples:
                    kept.append({"input": object_views["images"][0], "truth": object_views["images"][1:4],
                                 **{method: images[:3] for method, images in predictions.items()}})
                bar.update()
    return {
        "protocol": asdict(config),
        "data": str(data),
        "objects": [obj.object_id for obj in dataset.objects[:n_objects]],
        "views": [{"input": ids[0], "targets": ids[1:]} for ids in view_ids],
        "image_size": size,
        "lpips": {"available": lpips_metric is not None, "reason": reason},
        "metrics": _summary(per_object),
        "seconds": time.perf_counter() - start,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "examples": {key: torch.stack([example[key] for example in kept]) for key in kept[0]} if kept else {},
    }


def results_table(results: dict) -> str:
    """A markdown table of ``results["metrics"]``: one row per method, ``mean ± std`` over objects."""
    metrics = [name for name in METRICS if any(name in row for row in results["metrics"].values())]
    lines = ["| method | " + " | ".join(METRIC_LABELS[name] for name in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for method, row in results["metrics"].items():
        cells = [f"{row[name]['mean']:.{DIGITS[name]}f} ± {row[name]['std']:.{DIGITS[name]}f}" if name in row else ""
                 for name in metrics]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    notes = [f"{len(results['objects'])} held-out objects, 1 input view, {len(results['views'][0]['targets'])} "
             f"targets each, {results['image_size']} px, {results['protocol']['steps']} sampler steps; "
             f"mean ± standard deviation over objects; {results['seconds']:.0f} s on {results['device']}."]
    if not results["lpips"]["available"]:
        notes.append(results["lpips"]["reason"])
    return "\n".join(lines + [""] + notes) + "\n"
