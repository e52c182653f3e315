"""Evaluation protocol: held-out objects, one input view, fixed targets and seeds, every method scored.

For each held-out object (SRN layout) the model sees one input view and predicts fixed target views
with four methods:

- ``regression``: the feature field's RGB guess (channels 0-2 of the rendered features, trained with
  an MSE loss) rendered at the image size: a pixelNeRF-style regression model sharing GeNVS's encoder;
- ``deterministic``: GeNVS sampled without churn (an ODE: one answer per start noise);
- ``stochastic``: GeNVS with the seed's churn (:func:`genvs.sampling.sampling_options`);
- ``autoregressive``: stochastic, target after target, each conditioned on the input and earlier
  generated targets (:func:`genvs.sampling.generate_trajectory`), several objects at once.

The two samplers are routes (:class:`genvs.routes.RenderRoute`: GeNVS's denoiser on the input-only field's render).
Other routes to the same views (``routes``, any :class:`genvs.routes.Route`, e.g. lesson 07's ControlNet as a
:class:`~genvs.routes.RenderRoute`) are called as the samplers are, with the same seeds, and scored like them.

Every method is scored per target view against the truth (:func:`genvs.metrics.psnr`, ``ssim``,
``sharpness``, ``detail_score``, ``LPIPS`` when its weights are on disk) and, along the targets in their order, for
multi-view consistency (:func:`genvs.metrics.reprojection_consistency`; the true views are scored too,
as the ceiling the rendered depth allows). Consistency warps every method's frames with one depth, the
input-only field's rendered at the image size, so that the methods differ in their images alone (the
autoregressive method's own field, which also sees its generated frames, would warp its frames with
another depth). Its PSNR rewards blur (the regression scores above the truth); ``consistency_gain`` (the
same warp's ``gain``: its error relative to each frame's one-pixel jitter) does not. Scores are averaged per
object, then reported as mean and standard deviation over objects.

Hidden-side attributes (synthetic cars with ``attributes.json`` and the attribute probe, :mod:`genvs.probe`): for
each target view, each attribute the true target shows is *seen* if the input view shows it too, else *unseen*.
The probe reads every prediction, and the protocol reports (``attribute_metrics``), per method and for the truth:

- ``seen_accuracy``: the probe's accuracy on seen attributes (fidelity to what was shown; per object, then mean
  and standard deviation over objects);
- ``unseen_confidence``: its mean top probability on unseen attributes (a committed answer vs a blurred average);
- ``unseen_tv``: the total variation between the distribution of the values read on unseen attributes (over
  objects, targets and draws, per attribute) and the generator's uniform prior, averaged over attributes; its
  spread is the standard deviation over 200 bootstrap resamples of the objects. The truth's row is the floor
  that a finite number of objects allows;
- ``disagreement_seen``, ``disagreement_unseen``: how often two draws (two seeds per object) read different
  values (diversity belongs on the unseen side; the seen side should agree);
- ``kid``: the kernel distance (:func:`genvs.metrics.kernel_distance`) between the probe's features of the
  predictions and of the true targets, mean and standard deviation over 100 subsets.

Draw ``r`` of object ``i`` samples with the seed ``derive_seed(seed + r, i)``; draw 0 is the one every other
metric scores, so a second draw adds to the results without changing them. Without ``attributes.json`` (real SRN
cars) or a probe, the attribute metrics are skipped, the reason is recorded, and one draw is made.

Seeds: object ``i`` has the seed ``s_i = derive_seed(seed, i)`` (:func:`genvs.seeding.derive_seed`); the two
samplers and the other routes are called per object and per chunk of targets ``t .. t + target_batch - 1``, with the
seed ``derive_seed(s_i, t)``; the autoregressive method is :func:`genvs.sampling.generate_trajectory` with seed
``s_i`` (:class:`genvs.routes.TrajectoryRoute`). The autoregressive method generates
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
With the attribute metrics (two draws) every sampling method runs twice: the lesson checkpoint's ``synthetic``
protocol took 118 s before them and 440 s with them (one CPU thread, beside another job).
Memory: every generated frame's volume stays on the device until its batch is done: 8 x 251 volumes of
16 x 64 x 64 x 64 floats (the paper preset) are 34 GB.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from genvs.artefacts import is_shipped, shipped_path
from genvs.data.srn import SRNDataset, SRNFormatError
from genvs.data.synthetic import read_attributes
from genvs.denoiser import k_diffusion
from genvs.metrics import (
    LPIPS,
    LPIPSUnavailable,
    detail_score,
    kernel_distance,
    psnr,
    reprojection_consistency,
    sharpness,
    ssim,
    tv_to_uniform,
)
from genvs.probe import AttributeProbe, load_probe
from genvs.routes import RenderRoute, Route, TrajectoryRoute
from genvs.sampling import sampling_options
from genvs.seeding import derive_seed

__all__ = ["EvaluationConfig", "PROTOCOLS", "METHODS", "METRICS", "ATTRIBUTE_METRICS", "evaluate", "results_table",
           "markdown_table", "target_view_ids"]

METHODS = ("regression", "deterministic", "stochastic", "autoregressive")
METRICS = ("psnr", "ssim", "lpips", "sharpness", "detail", "consistency", "consistency_gain")
ATTRIBUTE_METRICS = ("seen_accuracy", "unseen_confidence", "unseen_tv", "disagreement_seen", "disagreement_unseen",
                     "kid")
METRIC_LABELS = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "sharpness": "sharpness (truth = 1)",
                 "detail": "detail (truth = 1) ↑", "consistency": "consistency (dB) ↑",
                 "consistency_gain": "consistency gain (dB) ↑",
                 "seen_accuracy": "seen: probe accuracy ↑", "unseen_confidence": "unseen: probe confidence",
                 "unseen_tv": "unseen: TV to prior ↓", "disagreement_seen": "seen: 2 seeds disagree ↓",
                 "disagreement_unseen": "unseen: 2 seeds disagree", "kid": "KID (probe features) ↓"}
DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3, "sharpness": 2, "detail": 3, "consistency": 2, "consistency_gain": 2,
          "seen_accuracy": 3,
          "unseen_confidence": 3, "unseen_tv": 3, "disagreement_seen": 3, "disagreement_unseen": 3, "kid": 4}
BOOTSTRAP_RESAMPLES = 200


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
        draws: samples per object and sampling method when the attribute metrics run (two seeds disagreeing needs
            2); draw 0 alone is scored by the other metrics.
        methods: which of :data:`METHODS` to score; ``regression`` always is (its render gives every method's
            consistency depth), so ``("regression",)`` evaluates the feature field alone, in seconds.
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
    draws: int = 2
    methods: tuple[str, ...] = METHODS

    def __post_init__(self):
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or "regression" not in self.methods:
            raise ValueError(f"methods must be among {METHODS} and include 'regression', got {self.methods}")
        for name in ("max_objects", "input_view", "target_views"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("steps", "target_batch", "object_batch", "draws"):
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


def _samplers(model, config: EvaluationConfig, routes: Mapping[str, Route]) -> dict[str, Route]:
    """The methods called per chunk of targets: GeNVS's two modes (the input-only field's render), then ``routes``."""
    clashes = set(routes) & set(METHODS + ("truth",))
    if clashes:
        raise ValueError(f"route names {sorted(clashes)} clash with the protocol's methods {METHODS} or the truth")
    own = {mode: RenderRoute(model, options=sampling_options(mode, config.steps))
           for mode in ("deterministic", "stochastic") if mode in config.methods}
    return {**own, **routes}


@torch.no_grad()
def _predict(model, views: dict[str, Tensor], config: EvaluationConfig, seeds: list[int], device: torch.device,
             samplers: dict[str, Route]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The regression's ``[1, T, 3, H, W]`` and each sampler's predictions ``[R, T, 3, H, W]`` of one object's
    targets (view 0 is the input), draw ``r`` from ``seeds[r]``, and the one ``depth`` and ``opacity [T, H, W]``
    that score every method's consistency: the input-only field's."""
    inputs = [views[key][None, :1].to(device) for key in ("images", "K", "c2w")]
    target_K, target_c2w = (views[key][None, 1:].to(device) for key in ("K", "c2w"))
    with k_diffusion.utils.eval_mode(model):
        # the regression: the field rendered at the image size, as pixelNeRF renders
        field = model.field.render_image(model.field.encode(*inputs), target_K, target_c2w,
                                         size=views["images"].shape[-1])
    chunks = [slice(start, start + config.target_batch) for start in range(0, target_c2w.shape[1], config.target_batch)]

    def predict(route: Route, seed: int) -> Tensor:  # [T, 3, H, W], chunk by chunk
        return torch.cat([route(*inputs, target_K[:, chunk], target_c2w[:, chunk], [derive_seed(seed, chunk.start)])[0]
                          for chunk in chunks])

    sampled = {method: torch.stack([predict(route, seed) for seed in seeds]) for method, route in samplers.items()}
    predictions = {"regression": field["features"][:, :, :3].clamp(-1, 1).cpu(), **sampled}
    return predictions, {key: field[key][0].cpu() for key in ("depth", "opacity")}


def _autoregressive(model, views: list[dict[str, Tensor]], config: EvaluationConfig, seeds: list[int]) -> Tensor:
    """The autoregressive method's predictions ``[B, T, 3, H, W]`` of ``B`` objects' targets (view 0 of each is its
    input; all have ``T`` targets), generated together, object ``b`` from seed ``seeds[b]``."""
    inputs = [torch.stack([object_views[key][:1] for object_views in views]) for key in ("images", "K", "c2w")]
    targets = [torch.stack([object_views[key][1:] for object_views in views]) for key in ("K", "c2w")]
    route = TrajectoryRoute(model, max_random=config.max_random, options=sampling_options("stochastic", config.steps))
    return route(*inputs, *targets, seeds)


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
    """Per-method means over one object's targets (``predictions``: draw 0, ``[T, 3, H, W]``; ``truth [T, 3, H, W]``,
    target ``K``, ``c2w``); consistency warps with ``geometry``'s depth and opacity for every method and for the
    truth (the ceiling)."""
    scores = {}
    for method, images in {**predictions, "truth": truth}.items():
        method_scores = {}
        if method != "truth":
            method_scores = {"psnr": psnr(images, truth), "ssim": ssim(images, truth),
                             "sharpness": sharpness(images, truth), "detail": detail_score(images, truth)}
            if lpips is not None:
                method_scores["lpips"] = lpips(images, truth)
        if images.shape[0] > 1:
            warp = reprojection_consistency(images, geometry["depth"], geometry["opacity"], K, c2w)
            method_scores |= {"consistency": warp["psnr"], "consistency_gain": warp["gain"]}
        if method_scores:
            scores[method] = {name: float(values.nanmean()) for name, values in method_scores.items()}
    return scores


SHOWN_IN_TARGET_ONLY, SHOWN_IN_BOTH = 1, 2  # an attribute's kind in one target: 0 = the target does not show it


@torch.no_grad()
def _attribute_reads(probe: AttributeProbe, predictions: dict[str, Tensor], truth: Tensor, record: dict,
                     view_ids: list[int]) -> dict:
    """What the probe reads in one object's predictions (each ``[R, T, 3, H, W]``) and true targets ``[T, 3, H, W]``.

    Returns:
        ``label {attribute: value index}``, ``kind {attribute: [T] long}`` (0: the target does not show it,
        :data:`SHOWN_IN_TARGET_ONLY` (unseen), :data:`SHOWN_IN_BOTH` (seen)), ``probabilities {method: {attribute:
        [R, T, n_values]}}`` and ``features {method: [T, d]}`` (draw 0's), the truth as method ``"truth"``.
    """
    shows = [set(record["views"][view]["shows"]) for view in view_ids]
    kind = {name: torch.tensor([0 if name not in target else SHOWN_IN_BOTH if name in shows[0] else SHOWN_IN_TARGET_ONLY
                                for target in shows[1:]]) for name in probe.attributes}
    label = {name: probe.attributes[name].index(record["attributes"][name]) for name in probe.attributes}
    probabilities, features = {}, {}
    for method, images in {**predictions, "truth": truth[None]}.items():
        probabilities[method], method_features = probe.read(images)
        features[method] = method_features[0]
    return {"label": label, "kind": kind, "probabilities": probabilities, "features": features}


def _per_object_attribute_scores(reads: dict, method: str) -> dict[str, float]:
    """One object's seen accuracy and unseen confidence (draw 0) and, with two draws or more, how often draws 0
    and 1 read different values; NaN where the object has nothing to score."""
    values = {name: [] for name in ("seen_accuracy", "unseen_confidence", "disagreement_seen", "disagreement_unseen")}
    n_draws = 1
    for name, probabilities in reads["probabilities"][method].items():
        read, n_draws = probabilities.argmax(-1), probabilities.shape[0]  # read: [R, T]
        seen, unseen = reads["kind"][name] == SHOWN_IN_BOTH, reads["kind"][name] == SHOWN_IN_TARGET_ONLY
        values["seen_accuracy"] += (read[0][seen] == reads["label"][name]).float().tolist()
        values["unseen_confidence"] += probabilities[0].amax(-1)[unseen].tolist()
        if n_draws > 1:
            values["disagreement_seen"] += (read[0] != read[1])[seen].float().tolist()
            values["disagreement_unseen"] += (read[0] != read[1])[unseen].float().tolist()
    if n_draws == 1:
        del values["disagreement_seen"], values["disagreement_unseen"]
    return {name: float(np.mean(found)) if found else float("nan") for name, found in values.items()}


def _unseen_tv(reads: list[dict], method: str) -> float:
    """Total variation between the values read on unseen attributes (all objects, targets, draws) and the uniform
    prior, per attribute, averaged over the attributes read at least once."""
    distances = []
    for name, probabilities in reads[0]["probabilities"][method].items():
        n_values = probabilities.shape[-1]
        read = torch.cat([obj["probabilities"][method][name].argmax(-1)[:, obj["kind"][name] == SHOWN_IN_TARGET_ONLY]
                          .reshape(-1) for obj in reads])
        if read.numel():
            distances.append(float(tv_to_uniform(read, n_values)))
    return float(np.mean(distances)) if distances else float("nan")


def _attribute_summary(reads: list[dict], seed: int) -> dict[str, dict[str, dict]]:
    """Every method's attribute metrics (module docstring) over the objects' :func:`_attribute_reads`."""
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(len(reads), size=len(reads)) for _ in range(BOOTSTRAP_RESAMPLES)]
    summary = {}
    for method in reads[0]["probabilities"]:
        per_object = [{"attributes": _per_object_attribute_scores(obj, method)} for obj in reads]
        summary[method] = _summary(per_object)["attributes"]
        bootstrap = [_unseen_tv([reads[index] for index in sample], method) for sample in resamples]
        known = [value for value in bootstrap if not np.isnan(value)]
        summary[method]["unseen_tv"] = {"mean": _unseen_tv(reads, method),
                                        "std": float(np.std(known)) if known else float("nan")}
        if method != "truth":
            true_features = torch.cat([obj["features"]["truth"] for obj in reads])
            mean, std = kernel_distance(true_features, torch.cat([obj["features"][method] for obj in reads]), seed=seed)
            summary[method]["kid"] = {"mean": mean, "std": std}
    return summary


def _attribute_probe(dataset: SRNDataset, n_objects: int, attributes: bool | AttributeProbe,
                     device: torch.device) -> tuple[AttributeProbe | None, list[dict] | None, str | None]:
    """The probe, the objects' ``attributes.json`` records, and why the attribute metrics are skipped (or None)."""
    if attributes is False:
        return None, None, "attribute metrics skipped: not asked for"
    records = [read_attributes(obj.folder) for obj in dataset.objects[:n_objects]]
    missing = [obj.folder for obj, record in zip(dataset.objects, records) if record is None]
    if missing:
        return None, None, (f"attribute metrics skipped: {missing[0]} has no attributes.json (only synthetic cars "
                            f"of genvs.data.synthetic, version 2 or later, have hidden-side attributes)")
    if isinstance(attributes, AttributeProbe):
        return attributes.to(device).eval(), records, None
    if not is_shipped("probe"):
        return None, None, (f"attribute metrics skipped: no attribute probe at {shipped_path('probe')} "
                            "(python -m genvs train-probe makes one)")
    return load_probe(device=device)[0], records, None


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
             lpips: bool = True, attributes: bool | AttributeProbe = True, examples: int = 4,
             progress: bool = True, routes: Mapping[str, Route] | None = None) -> dict:
    """Run the protocol (module docstring) with ``model`` on the held-out split of ``data``.

    Args:
        model: a trained :class:`genvs.model.GeNVS` (on ``device``).
        data: SRN-format root holding ``*_{config.split}/``.
        config: the protocol (:data:`PROTOCOLS`).
        lpips: score LPIPS if its backbone weights are on disk (the reason is recorded if not).
        attributes: score the hidden-side attributes: True with the shipped probe (if the data has
            ``attributes.json``; the reason is recorded if not), or this :class:`genvs.probe.AttributeProbe`.
        examples: keep the predictions of this many objects' first ``min(T, 3)`` targets for a figure.
        routes: more methods, ``{name: route}`` (:class:`genvs.routes.Route`), called and scored like the samplers
            (module docstring), e.g. ``RenderRoute(model, controlnet_route(), options)`` (lesson 07's ControlNet on
            the same render as GeNVS's denoiser, ``options`` from :func:`genvs.sampling.sampling_options` plus a
            ``guidance_scale``); they follow the samplers in the results.
    Returns:
        a JSON-ready dict: ``protocol``, ``data``, ``objects`` (ids), ``views`` (input and target ids per
        object), ``image_size``, ``lpips`` and ``attributes`` (each ``{"available", "reason"}``), ``metrics``
        (method -> metric -> ``{mean, std, per_object}``; the ``truth`` row has consistency only),
        ``attribute_metrics`` (method -> metric -> ``{mean, std[, per_object]}``, with a ``truth`` row; empty when
        skipped), ``seconds``, ``device``, ``torch``; and, not JSON, ``examples``: ``{"input" [E, 3, H, W],
        "truth" [E, k, 3, H, W], method: [E, k, 3, H, W]}`` (draw 0).
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
    probe, records, attribute_reason = _attribute_probe(dataset, n_objects, attributes, device)
    draws = config.draws if probe is not None else 1
    view_ids = [_view_ids(dataset, index, config) for index in range(n_objects)]
    samplers = _samplers(model, config, routes or {})
    per_object, reads, kept = [], [], []
    with tqdm(total=n_objects, desc="evaluating", disable=not progress) as bar:
        for batch in _object_batches([len(ids) for ids in view_ids], config.object_batch):
            views = [dataset.load_views(index, view_ids[index]) for index in batch]
            seeds = [[derive_seed(config.seed + draw, index) for draw in range(draws)] for index in batch]
            trajectories = (torch.stack([_autoregressive(model, views, config, [object_seeds[draw]
                                                                                 for object_seeds in seeds])
                                         for draw in range(draws)], dim=1)  # [B, R, T, 3, H, W]
                            if "autoregressive" in config.methods else [None] * len(batch))
            for index, object_seeds, object_views, trajectory in zip(batch, seeds, views, trajectories):
                predictions, geometry = _predict(model, object_views, config, object_seeds, device, samplers)
                if trajectory is not None:
                    predictions["autoregressive"] = trajectory
                truth = object_views["images"][1:]
                per_object.append(_object_scores({method: images[0] for method, images in predictions.items()},
                                                 geometry, truth, object_views["K"][1:], object_views["c2w"][1:],
                                                 lpips_metric))
                if probe is not None:
                    reads.append(_attribute_reads(probe, {method: images.to(device) for method, images
                                                          in predictions.items()}, truth.to(device),
                                                  records[index], view_ids[index]))
                if index < examples:
                    kept.append({"input": object_views["images"][0], "truth": truth[:3],
                                 **{method: images[0, :3] for method, images in predictions.items()}})
                bar.update()
    return {
        "protocol": asdict(config),
        "data": str(data),
        "objects": [obj.object_id for obj in dataset.objects[:n_objects]],
        "views": [{"input": ids[0], "targets": ids[1:]} for ids in view_ids],
        "image_size": size,
        "lpips": {"available": lpips_metric is not None, "reason": reason},
        "attributes": {"available": probe is not None, "reason": attribute_reason},
        "metrics": _summary(per_object),
        "attribute_metrics": _attribute_summary(reads, config.seed) if reads else {},
        "seconds": time.perf_counter() - start,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "examples": {key: torch.stack([example[key] for example in kept]) for key in kept[0]} if kept else {},
    }


def markdown_table(rows: dict[str, dict], metrics: tuple[str, ...]) -> list[str]:
    """The lines of a markdown table ``| method | metric ... |`` of ``rows`` (method -> metric -> ``{mean, std}``,
    e.g. ``results["attribute_metrics"]``), ``mean ± std`` cells, empty where a method has no such metric."""
    metrics = [name for name in metrics if any(name in row for row in rows.values())]
    lines = ["| method | " + " | ".join(METRIC_LABELS[name] for name in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for method, row in rows.items():
        cells = [f"{row[name]['mean']:.{DIGITS[name]}f} ± {row[name]['std']:.{DIGITS[name]}f}" if name in row else ""
                 for name in metrics]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def results_table(results: dict) -> str:
    """Markdown tables of ``results["metrics"]`` and, if measured, ``results["attribute_metrics"]``: one row per
    method, ``mean ± std`` (over objects; for ``unseen_tv`` over bootstrap resamples, for KID over subsets)."""
    lines = markdown_table(results["metrics"], METRICS)
    notes = [f"{len(results['objects'])} held-out objects, 1 input view, {len(results['views'][0]['targets'])} "
             f"targets each, {results['image_size']} px, {results['protocol']['steps']} sampler steps; "
             f"mean ± standard deviation over objects; {results['seconds']:.0f} s on {results['device']}."]
    if not results["lpips"]["available"]:
        notes.append(results["lpips"]["reason"])
    if results.get("attribute_metrics"):
        lines += ["", "Hidden-side attributes, read by the attribute probe (seen: shown in the input view and the "
                  f"target; unseen: in the target only; {results['protocol']['draws']} draws per object):", ""]
        lines += markdown_table(results["attribute_metrics"], ATTRIBUTE_METRICS)
    elif results.get("attributes"):
        notes.append(results["attributes"]["reason"])
    return "\n".join(lines + [""] + notes) + "\n"
