"""Which route makes the most consistent turntable (lesson 08): every route's orbits, scored against the exact truth.

For each held-out synthetic car, one input view and an orbit of ``n_frames`` cameras starting at it
(:func:`genvs.cameras.trajectory_from`). The synthetic cars are exact, so the truth of every orbit frame is rendered
by the same ray caster that made the dataset (:func:`true_orbit`): its image, its depth, its coverage and which
hidden-side attributes it shows. Every route (:class:`genvs.routes.Route`) generates the same orbits with the same
seeds (:func:`standard_routes`; the routes without GeNVS's render, :class:`OrbitRoute` and :class:`RayRoute`, are
here), and :func:`compare_turntables` scores, per object then mean and standard deviation over
objects:

- ``psnr``, ``ssim``, ``detail``: per frame against the true frame (:mod:`genvs.metrics`), averaged over frames;
  far from the input they reward the mean of the plausible answers, as always;
- ``consistency``: :func:`genvs.metrics.reprojection_consistency` of consecutive frames, warped with the *true*
  depth (the same for every route); the truth's row is the ceiling shading and anti-aliasing allow; it rewards
  blur (a frame without detail is easy to predict);
- ``consistency_gain``: the same warp's error relative to each frame's own one-pixel jitter (dB, the ``gain`` of
  :func:`genvs.metrics.reprojection_consistency`): the truth scores best; blur, a frozen frame and independent
  noise all lower it;
- ``hidden_agreement``: for each attribute the input view does not show (:mod:`genvs.probe`), over the frames
  whose truth shows it, the fraction of consecutive such frames where the probe reads the same value: does the
  hidden side stay the same around the orbit? (any value is plausible; changing it is not);
- ``hidden_confidence``: the probe's mean top probability on those frames (a committed answer vs a blur);
- ``seen_accuracy``: the probe's accuracy on attributes the input shows, in frames that show them.

What each route cost to train (:func:`route_compute`) counts every shipped model it trains or stands on
(:data:`ROUTE_MODELS`): a frozen field or base counts, with all the training that made it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from genvs.artefacts import shipped
from genvs.cameras import pixel_rays, trajectory_from
from genvs.controlnet import GUIDANCE_SCALE, load_base
from genvs.data.cars import VISIBLE_FRACTION, attribute_coverage, car_primitives, cast_rays, render_car
from genvs.data.srn import SRNDataset
from genvs.data.synthetic import read_attributes
from genvs.metrics import detail_score, psnr, reprojection_consistency, ssim
from genvs.model import load_model
from genvs.multiview import ORBIT_MODES, generate_orbit, load_multiview
from genvs.probe import AttributeProbe, car_of, dataset_seed
from genvs.raycond import ray_condition
from genvs.routes import RenderRoute, Route, TrajectoryRoute, frame_seeds
from genvs.sampling import sample_images, sampling_options
from genvs.seeding import derive_seed

__all__ = ["TurntableConfig", "true_orbit", "OrbitRoute", "RayRoute", "standard_routes", "compare_turntables",
           "TURNTABLE_METRICS", "ROUTE_MODELS", "training_compute", "route_compute"]

TURNTABLE_METRICS = ("psnr", "ssim", "detail", "consistency", "consistency_gain", "hidden_agreement",
                     "hidden_confidence", "seen_accuracy")

ROUTE_MODELS: dict[str, tuple[str, ...]] = {
    "genvs_independent": ("lesson",),
    "genvs_autoregressive": ("lesson",),
    "controlnet": ("lesson", "controlnet_base", "controlnet"),
    "multiview_chunked": ("lesson", "controlnet_base", "controlnet", "multiview"),
    "multiview_autoregressive": ("lesson", "controlnet_base", "controlnet", "multiview"),
    "2d_only": ("controlnet_base", "raycond"),
}
"""The shipped models (:mod:`genvs.artefacts`) each route of :func:`standard_routes` trained or stands on: the
ControlNet routes use GeNVS's field (frozen; it was trained with GeNVS's denoiser, so all of ``lesson`` counts) and
the base (frozen); the multi-view ControlNet was fine-tuned from lesson 07's."""


def training_compute(folder: str | Path) -> dict:
    """What training the model in ``folder`` cost: ``parameters`` (its trainable parameters, counted on the loaded
    model), ``target_images`` (images denoised in training), ``minutes`` (wall time) and ``where``.

    A GeNVS model's folder has ``legs.json`` (:mod:`genvs.legs`): the sums over its legs. A diffusers route's has
    ``training.json`` (:func:`genvs.controlnet.fit_network`): ``steps x batch_size x target_views`` images (one per
    object for the base, which has no targets), ``seconds / 60``; a camera-aware multi-view ControlNet's
    parameters include its :class:`genvs.multiview.CameraEmbedding`.

    Raises:
        FileNotFoundError: ``folder`` has neither record.
    """
    folder = Path(folder)
    if (folder / "legs.json").is_file():
        legs = json.loads((folder / "legs.json").read_text())
        parameters = sum(parameter.numel() for parameter in load_model(folder)[0].parameters())
        return {"parameters": parameters, "target_images": sum(leg["target_images"] for leg in legs),
                "minutes": sum(leg["minutes"] for leg in legs), "where": sorted({leg["where"] for leg in legs})}
    if (folder / "training.json").is_file():
        record = json.loads((folder / "training.json").read_text())
        if json.loads((folder / "config.json").read_text())["_class_name"] == "UNet2DConditionModel":
            networks = [load_base(folder)]
        else:
            networks = [network for network in load_multiview(folder) if network is not None]
        parameters = sum(parameter.numel() for network in networks for parameter in network.parameters())
        per_step = record["fit"]["batch_size"] * max(record["fit"]["target_views"], 1)
        return {"parameters": parameters, "target_images": record["steps"] * per_step,
                "minutes": record["seconds"] / 60, "where": [record["device"]]}
    raise FileNotFoundError(f"{folder}: no legs.json (a GeNVS model's legs) nor training.json (a diffusers route's "
                            "run record)")


def route_compute(route: str) -> dict:
    """What route ``route`` of :data:`ROUTE_MODELS` cost: the sums of :func:`training_compute` over the shipped
    models it trained or stands on, and each model's own (``models``)."""
    models = {name: training_compute(shipped(name)) for name in ROUTE_MODELS[route]}
    totals = {key: sum(model[key] for model in models.values()) for key in ("parameters", "target_images", "minutes")}
    return {**totals, "models": models}


@dataclass(frozen=True)
class TurntableConfig:
    """The comparison's orbits and sampling.

    Attributes:
        n_objects: held-out cars (the first of ``split``); n_frames: cameras per orbit (360 degrees, at the input's
            height); input_view: which dataset view is the input.
        steps, churn: every route samples with EDM's Euler and churn ``gamma = churn`` per step
            (:func:`genvs.sampling.sampling_options`'s ``"stochastic"``); guidance_scale: the diffusers routes' ``w``
            (lesson 07's default; GeNVS's own denoiser samples without guidance, as in lessons 05-07).
        chunk, max_random: the multi-view routes' chunk size and random guides (:func:`genvs.multiview.generate_orbit`).
        seed: object ``i`` has the seed ``derive_seed(seed, i)``, for every route.
    """

    n_objects: int = 8
    n_frames: int = 12
    input_view: int = 0
    steps: int = 25
    churn: float = 0.4
    guidance_scale: float = GUIDANCE_SCALE
    chunk: int = 3
    max_random: int = 2
    seed: int = 0
    split: str = "test"


@torch.no_grad()
def true_orbit(folder: str | Path, seed: int, K_cam: Tensor, c2w: Tensor, image_size: int) -> dict[str, Tensor]:
    """The exact truth of ``N`` views of the synthetic car in ``folder`` (drawn with dataset ``seed``).

    Args:
        K_cam: ``[3, 3]`` intrinsics of ``image_size`` images; c2w: ``[N, 4, 4]``.
    Returns:
        ``images [N, 3, H, W]`` in [-1, 1] (as the dataset's views are rendered), ``depth [N, H, W]`` (camera depth
        of the ray through each pixel centre, 0 where it misses), ``opacity [N, H, W]`` (1 where it hits) and
        ``shows {attribute: [N] bool}`` (coverage >= :data:`genvs.data.cars.VISIBLE_FRACTION`).
    """
    car = car_of(Path(folder), seed)
    rgb, _ = render_car(car, K_cam, c2w, image_size, image_size)
    _, hit, depth, _ = cast_rays(car_primitives(car), *pixel_rays(K_cam, c2w, image_size, image_size))
    shows = {name: coverage >= VISIBLE_FRACTION
             for name, coverage in attribute_coverage(car, K_cam, c2w, image_size, image_size).items()}
    return {"images": rgb.permute(0, 3, 1, 2) * 2 - 1, "depth": torch.where(hit, depth, 0.0),
            "opacity": hit.float(), "shows": shows}


@dataclass(frozen=True)
class OrbitRoute:
    """Lesson 08's multi-view route as a :class:`genvs.routes.Route`: :func:`genvs.multiview.generate_orbit`, the
    frames denoised jointly in groups (``mode`` ``"chunked"`` or ``"autoregressive"``); object ``b``'s call ``c`` is
    seeded ``derive_seed(seeds[b], c)``.

    Attributes:
        model: the GeNVS whose field renders the conditions; denoiser: a :func:`genvs.multiview.multiview_denoiser`.
        options: :func:`genvs.multiview.sample_jointly`'s (steps, churn, s_noise, guidance_scale, ...).
    """

    model: nn.Module = field(repr=False)
    denoiser: nn.Module = field(repr=False)
    mode: str = "chunked"
    chunk: int = 3
    max_random: int = 2
    options: dict = field(default_factory=dict)

    def __call__(self, images: Tensor, K: Tensor, c2w: Tensor, target_K: Tensor, target_c2w: Tensor,
                 seeds: Sequence[int], **options) -> Tensor:
        """:class:`genvs.routes.Route`'s call."""
        return generate_orbit(self.model, self.denoiser, images, K, c2w, target_K, target_c2w, mode=self.mode,
                              chunk=self.chunk, max_random=self.max_random, seed=list(seeds), progress=False,
                              **{**self.options, **options})["samples"]


@dataclass(frozen=True)
class RayRoute:
    """Lesson 08's 2D-only route as a :class:`genvs.routes.Route`: every frame sampled from the first input image and
    the rays (:func:`genvs.raycond.ray_condition`, no field); frame ``f`` of object ``b`` from
    ``derive_seed(seeds[b], f)`` (:func:`genvs.routes.frame_seeds`).

    Attributes:
        denoiser: :func:`genvs.raycond.raycond_route`'s; options: :func:`genvs.sampling.sample_images`'s.
    """

    denoiser: nn.Module = field(repr=False)
    options: dict = field(default_factory=dict)

    def __call__(self, images: Tensor, K: Tensor, c2w: Tensor, target_K: Tensor, target_c2w: Tensor,
                 seeds: Sequence[int], **options) -> Tensor:
        """:class:`genvs.routes.Route`'s call (the condition is built where the denoiser's weights are)."""
        device = next(self.denoiser.parameters()).device
        cond = ray_condition(*(tensor.to(device)
                               for tensor in (images[:, 0], K[:, 0], c2w[:, 0], target_K, target_c2w)))
        samples = sample_images(self.denoiser, cond, seed=frame_seeds(seeds, target_c2w.shape[1]),
                                **{**self.options, **options})
        return samples.unflatten(0, tuple(target_c2w.shape[:2])).cpu()


def standard_routes(model, config: TurntableConfig, controlnet=None, multiview=None,
                    raycond=None) -> dict[str, Route]:
    """The routes of lesson 08's table, those whose denoiser is given (GeNVS's are always there).

    ``genvs_independent`` / ``genvs_autoregressive``: :class:`genvs.routes.TrajectoryRoute` with ``model``'s own
    denoiser; ``controlnet``: lesson 07's route, every frame from the input's render (:class:`genvs.routes.RenderRoute`,
    one seed per frame); ``multiview_chunked`` / ``multiview_autoregressive``: :class:`OrbitRoute`; ``2d_only``:
    :class:`RayRoute`, every frame from the input image and the rays. All sample with the same stochastic Euler
    (``config``); frame ``f`` of object ``b`` is seeded from the object's seed.
    """
    stochastic = sampling_options("stochastic", config.steps, config.churn)
    guided = {**stochastic, "guidance_scale": config.guidance_scale}
    joint = {key: stochastic[key] for key in ("steps", "churn", "s_noise")}
    joint["guidance_scale"] = config.guidance_scale
    routes = {f"genvs_{name}": TrajectoryRoute(model, autoregressive=autoregressive, max_random=config.max_random,
                                               options=stochastic)
              for name, autoregressive in (("independent", False), ("autoregressive", True))}
    if controlnet is not None:
        routes["controlnet"] = RenderRoute(model, controlnet, guided, per_frame=True)
    if multiview is not None:
        routes |= {f"multiview_{mode}": OrbitRoute(model, multiview, mode, config.chunk, config.max_random, joint)
                   for mode in ORBIT_MODES}
    if raycond is not None:
        routes["2d_only"] = RayRoute(raycond, guided)
    return routes


def _probe_scores(probe: AttributeProbe, frames: Tensor, truth: dict, true_values: dict[str, str]) -> dict[str, float]:
    """One object's hidden-side scores (module docstring) for ``frames [N, 3, H, W]``; frame 0 is the input camera."""
    probabilities = probe.predict(frames)
    agreement, confidence, seen = [], [], []
    for name, shows in truth["shows"].items():
        read = probabilities[name].argmax(-1)
        showing = shows.nonzero().squeeze(-1)
        if bool(shows[0]):
            seen += (read[showing] == probe.attributes[name].index(true_values[name])).float().tolist()
        elif showing.numel() >= 2:
            agreement += (read[showing[1:]] == read[showing[:-1]]).float().tolist()
            confidence += probabilities[name][showing].amax(-1).tolist()
    return {"hidden_agreement": float(np.mean(agreement)) if agreement else float("nan"),
            "hidden_confidence": float(np.mean(confidence)) if confidence else float("nan"),
            "seen_accuracy": float(np.mean(seen)) if seen else float("nan")}


def _frame_scores(frames: Tensor, truth: dict, K_t: Tensor, c2w_t: Tensor) -> dict[str, float]:
    """One object's consecutive-frame consistency (true depth) and, unless ``frames`` are the truth, per-frame
    fidelity, for ``frames [N, 3, H, W]``."""
    warp = reprojection_consistency(frames, truth["depth"], truth["opacity"], K_t, c2w_t)
    scores = {"consistency": float(warp["psnr"].nanmean()), "consistency_gain": float(warp["gain"].nanmean())}
    if frames is not truth["images"]:
        scores |= {"psnr": float(psnr(frames, truth["images"]).mean()),
                   "ssim": float(ssim(frames, truth["images"]).mean()),
                   "detail": float(detail_score(frames, truth["images"]).mean())}
    return scores


def compare_turntables(routes: Mapping[str, Route], data: str | Path, probe: AttributeProbe | None = None,
                       config: TurntableConfig = TurntableConfig(), object_batch: int = 4,
                       progress: bool = True) -> dict:
    """Every route's orbits of ``config.n_objects`` held-out synthetic cars, scored (module docstring).

    Args:
        routes: name -> :class:`genvs.routes.Route` (e.g. :func:`standard_routes`).
        data: a synthetic dataset (``genvs.data.synthetic.make_dataset``: its cars are re-rendered exactly).
        probe: the attribute probe (:func:`genvs.probe.load_probe`); without it the attribute scores are skipped.
        object_batch: objects generated together per route call.
    Returns:
        ``scores {route or "truth": {metric: {"mean", "std"}}}`` (the truth: consistency and attribute scores
        only), ``per_object`` (each object's scores), ``seconds {route: generation time}``, ``frames {route or
        "truth": [n_objects, N, 3, H, W]}``, ``inputs`` (images, K, c2w of the input views), the orbit cameras
        ``target_K [n_objects, N, 3, 3]`` and ``target_c2w [n_objects, N, 4, 4]``, and ``config``.
    """
    dataset = SRNDataset(data, split=config.split, views_per_item=None)
    if config.n_objects > len(dataset):
        raise ValueError(f"{data}: its {config.split} split has {len(dataset)} objects, fewer than n_objects="
                         f"{config.n_objects}")
    views = [dataset.load_views(index, [config.input_view]) for index in range(config.n_objects)]
    seed_of_data, image_size = dataset_seed(data), views[0]["images"].shape[-1]
    inputs = {key: torch.stack([view[key] for view in views]) for key in ("images", "K", "c2w")}
    target_c2w = torch.stack([trajectory_from(view["c2w"][0], config.n_frames) for view in views])
    target_K = inputs["K"].expand(-1, config.n_frames, -1, -1)
    folders = [dataset.objects[index].folder for index in range(config.n_objects)]
    truths = [true_orbit(folder, seed_of_data, views[index]["K"][0], target_c2w[index], image_size)
              for index, folder in enumerate(folders)]
    seeds = [derive_seed(config.seed, index) for index in range(config.n_objects)]
    frames, seconds = {}, {}
    for name, route in tqdm(routes.items(), desc="routes", disable=not progress):
        start, generated = time.perf_counter(), []
        for first in range(0, config.n_objects, object_batch):
            batch = slice(first, first + object_batch)
            generated.append(route(*(inputs[key][batch] for key in ("images", "K", "c2w")), target_K[batch],
                                   target_c2w[batch], seeds[batch]).cpu())
        frames[name], seconds[name] = torch.cat(generated), time.perf_counter() - start
    per_object = {name: [] for name in [*frames, "truth"]}
    for index, truth in enumerate(truths):
        true_values = read_attributes(folders[index])["attributes"] if probe is not None else {}
        for name, object_frames in [*((name, route_frames[index]) for name, route_frames in frames.items()),
                                    ("truth", truth["images"])]:
            scores = _frame_scores(object_frames, truth, target_K[index], target_c2w[index])
            if probe is not None:
                scores |= _probe_scores(probe, object_frames, truth, true_values)
            per_object[name].append(scores)
    summary = {name: {metric: {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values))}
                      for metric in rows[0] for values in [[row[metric] for row in rows]]}
               for name, rows in per_object.items()}
    frames["truth"] = torch.stack([truth["images"] for truth in truths])
    return {"scores": summary, "per_object": per_object, "seconds": seconds, "frames": frames, "inputs": inputs,
            "target_K": target_K, "target_c2w": target_c2w, "config": config}
