"""The attribute probe: a small classifier that reads the synthetic cars' hidden-side attributes from a view.

The evaluation asks what a prediction shows on the side the input view did not see. A person would look; the
probe looks for us. It is a 3-stage CNN (``3 -> w -> 2w -> 4w`` channels, each stage a 3x3 convolution with
stride 2 after a 3x3 convolution, GroupNorm and SiLU) on the image resized to ``image_size``, global average
pooling to a ``4w``-dimensional feature ``f(x)``, and one linear head per attribute giving logits over its values.

Training: true renders of the training split, the cross-entropy of attribute ``a`` counted only on views that
show it (``attributes.json``'s ``shows``), AdamW, Gaussian noise of a random standard deviation in
``[0, noise_std]`` added to the images so the probe also reads slightly noisy views. Its accuracy on the views of
held-out cars that show an attribute is the ceiling of what the evaluation can tell (:func:`probe_accuracy`).

A probe trained on clean renders alone reads *anything* as some value with confidence, even the average of the
possible panels that a regression model predicts for the side it did not see (measured: 0.98 mean top probability
on such averages). So the training also sees **blends** (:func:`blended_views`): a view re-rendered with each value
of one attribute it shows, mixed with Dirichlet(1) weights ``w``, ``x = sum_v w_v render_v``, whose target for that
attribute is ``w`` itself (a soft label). The probe's probabilities then say how much of each value an image holds:
a committed answer reads near 1, an equal average well below (:func:`blend_confidence`; the shipped probe: 0.98 on
true views, 0.58 on equal averages, where ``1 / n_values`` would be 0.44).

It is part of the evaluation, not of the model: a shipped checkpoint (:func:`genvs.artefacts.shipped` ``("probe")``)
read by :func:`load_probe`, trained by ``python -m genvs train-probe`` on :class:`genvs.fitting.Fitter` (warmup and
cosine decay; the shipped probe was trained with a one-cycle schedule before the fitting core existed).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from genvs.artefacts import shipped_path
from genvs.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from genvs.data.cars import ATTRIBUTES, render_car, sample_car_params
from genvs.data.srn import SRNDataset, SRNFormatError, read_pose
from genvs.data.synthetic import MANIFEST_NAME, read_attributes, srn_intrinsics
from genvs.fitting import FitSettings, Fitter, read_log
from genvs.seeding import derive_seed, seeded_rng

__all__ = ["ProbeConfig", "AttributeProbe", "attribute_views", "dataset_seed", "car_of", "blended_views", "train_probe",
           "probe_accuracy", "blend_confidence", "save_probe", "load_probe", "ProbeBatches"]


@dataclass(frozen=True)
class ProbeConfig:
    """The probe's size and training.

    Args:
        width: channels of the first stage (``4 * width`` features).
        image_size: views are resized to this before the network.
        steps, batch_size, lr, warmup_steps, min_lr_fraction, weight_decay: AdamW training, warmup then cosine
            decay (:class:`genvs.fitting.Fitter`), no gradient clipping.
        noise_std: training images get Gaussian noise of a standard deviation uniform in ``[0, noise_std]``.
        blends: blended views (soft labels) added to the training views.
        seed: initialisation, batches, blends and noise.
    """

    width: int = 32
    image_size: int = 32
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    noise_std: float = 0.1
    blends: int = 3000
    seed: int = 0
    warmup_steps: int = 180
    min_lr_fraction: float = 0.0
    weight_decay: float = 1e-4


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv, GroupNorm, SiLU, then a 3x3 conv of stride 2 (half the resolution), GroupNorm, SiLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.GroupNorm(8, out_channels), nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1), nn.GroupNorm(8, out_channels), nn.SiLU(),
    )


class AttributeProbe(nn.Module):
    """Images ``[B, 3, H, W]`` in [-1, 1] -> features ``[B, 4 w]`` -> logits ``{attribute: [B, n_values]}``."""

    def __init__(self, config: ProbeConfig = ProbeConfig(), attributes: dict[str, tuple[str, ...]] = ATTRIBUTES):
        super().__init__()
        self.config = config
        self.attributes = {name: tuple(values) for name, values in attributes.items()}
        width = config.width
        self.body = nn.Sequential(_stage(3, width), _stage(width, 2 * width), _stage(2 * width, 4 * width))
        self.heads = nn.ModuleDict({name: nn.Linear(4 * width, len(values))
                                    for name, values in self.attributes.items()})

    def features(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ``[B, 4 w]``: the pooled last stage (KID's feature space)."""
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                                   align_corners=False)
        return self.body(images.float()).mean(dim=(-2, -1))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``[B, 3, H, W]`` -> ``{attribute: logits [B, n_values]}``."""
        features = self.features(images)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def read(self, images: Tensor, batch_size: int = 256) -> tuple[dict[str, Tensor], Tensor]:
        """Softmax probabilities ``{attribute: [..., n_values]}`` and features ``[..., 4 w]`` of images
        ``[..., 3, H, W]``, from one pass of the network (no gradients)."""
        flat = images.reshape(-1, *images.shape[-3:])
        features = torch.cat([self.features(flat[start:start + batch_size])
                              for start in range(0, flat.shape[0], batch_size)])
        probabilities = {name: head(features).softmax(-1).reshape(*images.shape[:-3], -1)
                         for name, head in self.heads.items()}
        return probabilities, features.reshape(*images.shape[:-3], -1)

    def predict(self, images: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
        """Softmax probabilities ``{attribute: [..., n_values]}`` of images ``[..., 3, H, W]`` (no gradients)."""
        return self.read(images, batch_size)[0]


def attribute_views(root: str | Path, split: str, image_size: int) -> dict:
    """Every view of a split with its attribute labels: what the probe trains and is tested on.

    Returns:
        ``images [N, 3, S, S]`` in [-1, 1], ``labels {attribute: [N] long}`` (index into its values),
        ``shows {attribute: [N] bool}`` (the view shows it), ``object_index [N] long``, ``view_index [N] long``,
        ``folders`` (each object's folder).
    Raises:
        SRNFormatError: naming an object folder without ``attributes.json`` (e.g. real SRN cars: no labels).
    """
    dataset = SRNDataset(root, split=split, views_per_item=None, image_size=image_size)
    images, labels, shows = [], {name: [] for name in ATTRIBUTES}, {name: [] for name in ATTRIBUTES}
    object_index, view_index = [], []
    for index, obj in enumerate(tqdm(dataset.objects, desc=f"reading {split} views", unit="car", leave=False)):
        record = read_attributes(obj.folder)
        if record is None:
            raise SRNFormatError(f"{obj.folder}: no attributes.json (the probe needs synthetic cars made by "
                                 f"genvs.data.synthetic.make_dataset, version 2 or later)")
        images.append(dataset.load_views(index, list(range(obj.n_views)))["images"])
        for name, values in ATTRIBUTES.items():
            labels[name] += [values.index(record["attributes"][name])] * obj.n_views
            shows[name] += [name in view["shows"] for view in record["views"]]
        object_index += [index] * obj.n_views
        view_index += list(range(obj.n_views))
    return {"images": torch.cat(images), "labels": {name: torch.tensor(value) for name, value in labels.items()},
            "shows": {name: torch.tensor(value) for name, value in shows.items()},
            "object_index": torch.tensor(object_index), "view_index": torch.tensor(view_index),
            "folders": [obj.folder for obj in dataset.objects]}


def dataset_seed(root: str | Path) -> int:
    """The seed a synthetic dataset's cars were drawn with (its ``make_dataset`` manifest)."""
    return json.loads((Path(root) / MANIFEST_NAME).read_text())["seed"]


def car_of(folder: Path, seed: int):
    """The :class:`genvs.data.cars.CarParams` that ``make_dataset`` drew for object folder ``car_NNNNN``."""
    car = sample_car_params(np.random.default_rng([seed, int(folder.name.split("_")[-1])]))
    if car.attributes() != read_attributes(folder)["attributes"]:
        raise SRNFormatError(f"{folder}: its attributes.json does not match the car make_dataset draws for it with "
                             f"seed {seed}; blends need cars made by genvs.data.synthetic.make_dataset")
    return car


def _renders_of_each_value(views: dict, row: int, seed_of_data: int, rng: np.random.Generator,
                           image_size: int) -> tuple[str, list[Tensor]]:
    """One attribute that view ``row`` of ``views`` shows (drawn with ``rng``) and the view rendered with each of the
    attribute's values, ``[S, S, 3]`` in [0, 1] each."""
    folder = views["folders"][int(views["object_index"][row])]
    car = car_of(folder, seed_of_data)
    c2w = read_pose(folder / "pose" / f"{int(views['view_index'][row]):06d}.txt")
    attribute = str(rng.choice([name for name in ATTRIBUTES if bool(views["shows"][name][row])]))
    K = srn_intrinsics(image_size)
    return attribute, [render_car(dataclasses.replace(car, **{attribute: value}), K, c2w, image_size, image_size)[0]
                       for value in ATTRIBUTES[attribute]]


def _shows_something(views: dict) -> np.ndarray:
    """Indices of the views that show at least one attribute."""
    return np.flatnonzero(torch.stack(list(views["shows"].values())).any(0).numpy())


def blended_views(root: str | Path, views: dict, n_blends: int, seed: int, image_size: int) -> dict:
    """Views re-rendered as mixtures of one attribute's values, with the mixture as a soft label.

    Blend ``b`` takes a random view of ``views`` (:func:`attribute_views`) that shows some attribute, one such
    attribute ``a`` at random, weights ``w ~ Dirichlet(1, ..., 1)`` over ``a``'s values, and renders
    ``x = sum_v w_v render(car with a = v)`` (:func:`genvs.data.cars.render_car` at ``image_size``); its
    target for ``a`` is ``w``, for the other attributes their true value (one-hot).

    Args:
        root: the synthetic dataset (its manifest gives the seed the cars were drawn with).
        views: :func:`attribute_views` of one of its splits.
    Returns:
        ``images [n, 3, S, S]`` in [-1, 1], ``targets {attribute: [n, n_values]}`` probabilities, ``shows``.
    """
    seed_of_data = dataset_seed(root)
    rng = np.random.default_rng(seed)
    images, targets, shows = [], {name: [] for name in ATTRIBUTES}, {name: [] for name in ATTRIBUTES}
    for row in tqdm(rng.choice(_shows_something(views), n_blends), desc="rendering blends", leave=False):
        blended, renders = _renders_of_each_value(views, row, seed_of_data, rng, image_size)
        weights = rng.dirichlet(np.ones(len(renders)))
        images.append(sum(float(w) * render for w, render in zip(weights, renders)).permute(2, 0, 1) * 2 - 1)
        for name, values in ATTRIBUTES.items():
            target = F.one_hot(views["labels"][name][row], len(values)).float()
            targets[name].append(torch.as_tensor(weights, dtype=torch.float32) if name == blended else target)
            shows[name].append(bool(views["shows"][name][row]))
    return {"images": torch.stack(images), "targets": {name: torch.stack(value) for name, value in targets.items()},
            "shows": {name: torch.tensor(value) for name, value in shows.items()}}


def _masked_cross_entropy(logits: dict[str, Tensor], labels: dict[str, Tensor], shows: dict[str, Tensor]) -> Tensor:
    """``sum_a sum_i shows_ai CE(logits_ai, label_ai) / sum_a sum_i shows_ai``: each attribute where it is shown.

    Labels are class indices ``[N]`` or probabilities ``[N, n_values]`` (soft labels: ``CE = -sum_v q_v log p_v``)."""
    total = sum(F.cross_entropy(logits[name], labels[name], reduction="none")[shows[name]].sum() for name in logits)
    return total / sum(int(mask.sum()) for mask in shows.values())


class ProbeBatches(torch.utils.data.Dataset):
    """Probe training batch ``i``, a pure function of ``(seed, i)``: ``batch_size`` rows drawn with replacement from
    ``images [N, 3, S, S]``, each with Gaussian noise of a standard deviation uniform in ``[0, noise_std]``.

    Item ``i``: ``images [batch_size, 3, S, S]`` and, per attribute ``a``, ``target/a [batch_size, n_values]``
    (probabilities) and ``shows/a [batch_size]`` (bool).
    """

    def __init__(self, images: Tensor, targets: dict[str, Tensor], shows: dict[str, Tensor], batch_size: int,
                 noise_std: float, seed: int):
        self.images, self.targets, self.shows = images, targets, shows
        self.batch_size, self.noise_std, self.seed = batch_size, noise_std, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, index))
        rows = torch.randint(self.images.shape[0], (self.batch_size,), generator=generator)
        noise_std = self.noise_std * torch.rand(self.batch_size, 1, 1, 1, generator=generator)
        images = self.images[rows] + noise_std * torch.randn(self.images[rows].shape, generator=generator)
        return {"images": images, **{f"target/{name}": value[rows] for name, value in self.targets.items()},
                **{f"shows/{name}": value[rows] for name, value in self.shows.items()}}


def train_probe(root: str | Path, config: ProbeConfig = ProbeConfig(), progress: bool = True,
                run_dir: str | Path | None = None, resume: bool = False,
                until: int | None = None) -> tuple[AttributeProbe, dict]:
    """Train a probe on the true views of ``root``'s training split and ``config.blends`` blends of them; test it
    on the test split's true views (:func:`probe_accuracy`) and blends (:func:`blend_confidence`).

    Args:
        run_dir: the run folder for :class:`genvs.fitting.Fitter`'s checkpoints and log (default: none, the run
            stays in memory).
        resume: continue the run in ``run_dir`` from its checkpoint, exactly.
        until: stop after this step, as if interrupted there (``resume`` continues).
    Returns:
        the probe (eval mode) and a JSON-ready record: ``config``, ``train_views``, ``loss`` (mean of the first and
        last 50 steps), ``accuracy``, ``blend_confidence``, ``seconds``.
    """
    start = time.perf_counter()
    train = attribute_views(root, "train", config.image_size)
    blends = blended_views(root, train, config.blends, config.seed, config.image_size)
    images = torch.cat([train["images"], blends["images"]])
    targets = {name: torch.cat([F.one_hot(train["labels"][name], len(values)).float(), blends["targets"][name]])
               for name, values in ATTRIBUTES.items()}
    shows = {name: torch.cat([train["shows"][name], blends["shows"][name]]) for name in ATTRIBUTES}
    with seeded_rng(config.seed, torch.device("cpu")):
        probe = AttributeProbe(config).train()

    def loss(batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        return {"loss": _masked_cross_entropy(probe(batch["images"]),
                                              {name: batch[f"target/{name}"] for name in ATTRIBUTES},
                                              {name: batch[f"shows/{name}"] for name in ATTRIBUTES})}

    settings = FitSettings(config.steps, config.warmup_steps, config.min_lr_fraction, config.weight_decay,
                           grad_clip=0.0, seed=config.seed)
    fitter = Fitter(probe, {"probe": (probe, config.lr)}, loss,
                    ProbeBatches(images, targets, shows, config.batch_size, config.noise_std, config.seed),
                    settings, run_dir, {"probe": asdict(config)}, resume=resume, log_every=1, checkpoint_every=0,
                    keep_checkpoints=1, progress=progress, desc="training the probe")
    records = fitter.run(until)
    losses = [row["loss"] for row in (records if run_dir is None else read_log(run_dir))]
    probe.eval()
    test = attribute_views(root, "test", config.image_size)
    record = {"config": asdict(config), "data": str(root), "train_views": train["images"].shape[0],
              "loss": {"first_50": float(np.mean(losses[:50])), "last_50": float(np.mean(losses[-50:]))},
              "accuracy": probe_accuracy(probe, test),
              "blend_confidence": blend_confidence(probe, root, test, config.seed + 1, config.image_size),
              "seconds": time.perf_counter() - start}
    return probe, record


def probe_accuracy(probe: AttributeProbe, views: dict) -> dict:
    """Accuracy on the views that show each attribute (:func:`attribute_views`' dict).

    Returns:
        ``{attribute: {"accuracy", "views"}, "all": {"accuracy", "views"}}``: per attribute, and pooled over
        every (view, attribute) pair that is shown.
    """
    probabilities = probe.predict(views["images"])
    result, correct_all, count_all = {}, 0, 0
    for name, values in probabilities.items():
        shown = views["shows"][name]
        correct = int((values.argmax(-1)[shown] == views["labels"][name][shown]).sum())
        count = int(shown.sum())
        result[name] = {"accuracy": correct / max(count, 1), "views": count}
        correct_all, count_all = correct_all + correct, count_all + count
    result["all"] = {"accuracy": correct_all / max(count_all, 1), "views": count_all}
    return result


def blend_confidence(probe: AttributeProbe, root: str | Path, views: dict, seed: int, image_size: int,
                     n_blends: int = 300) -> dict:
    """The probe's mean top probability on true views and on equal blends of all values of one attribute.

    An equal blend, ``x = (1 / n) sum_v render_v``, is what a regression model trained with MSE predicts for an
    attribute it cannot see; a calibrated probe reads it near ``1 / n`` and a true view near 1.

    Returns:
        ``{"true": mean top probability on the views' shown attributes, "equal_blend": on n_blends equal blends,
        "chance": mean 1 / n_values of the blended attributes}``.
    """
    rng = np.random.default_rng(seed)
    seed_of_data = dataset_seed(root)
    true_probabilities = probe.predict(views["images"])
    on_truth = torch.cat([true_probabilities[name].amax(-1)[views["shows"][name]] for name in ATTRIBUTES])
    on_blends, chance = [], []
    for row in rng.choice(_shows_something(views), n_blends):
        blended, renders = _renders_of_each_value(views, row, seed_of_data, rng, image_size)
        image = (torch.stack(renders).mean(0).permute(2, 0, 1) * 2 - 1)[None]
        on_blends.append(float(probe.predict(image)[blended].amax()))
        chance.append(1 / len(ATTRIBUTES[blended]))
    return {"true": float(on_truth.mean()), "equal_blend": float(np.mean(on_blends)), "chance": float(np.mean(chance))}


def save_probe(probe: AttributeProbe, out: str | Path, record: dict) -> Path:
    """Write the probe's weights (safetensors) and ``record`` (its training and accuracy, JSON) to ``out``."""
    return save_checkpoint(out, probe.config.steps, {"probe": probe.state_dict()},
                           {"probe": asdict(probe.config), "attributes": probe.attributes, "record": record})


def load_probe(path: str | Path | None = None, device: torch.device | str = "cpu") -> tuple[AttributeProbe, dict]:
    """A probe saved by :func:`save_probe` (default: the shipped one), in eval mode, and its record.

    Raises:
        CheckpointError: naming the folder if no probe is there, and the command that trains one.
    """
    path = shipped_path("probe") if path is None else path
    try:
        _, state, stored = load_checkpoint(path, device=device)
    except CheckpointError as error:
        raise CheckpointError(f"{error}. An attribute probe is trained by "
                              f"python -m genvs train-probe --data <synthetic cars> --out {path}") from None
    probe = AttributeProbe(ProbeConfig(**stored["probe"]), stored["attributes"]).to(device)
    probe.load_state_dict(state["probe"])
    return probe.eval(), stored["record"]
