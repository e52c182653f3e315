"""Datasets of synthetic cars (:mod:`genvs.data.cars`) written in the SRN layout, with their hidden-side attributes.

Each object folder holds what :mod:`genvs.data.srn` reads (``rgb/``, ``pose/``, ``intrinsics.txt``, written by its
writers) and ``attributes.json``: the car's hidden-side attribute values and, per view, the fraction of the image
that sees each attribute's primitive and the attributes the view shows (:func:`genvs.data.cars.attribute_coverage`,
:data:`genvs.data.cars.VISIBLE_FRACTION`).

Cameras are SRN's: ``f = 131.25`` pixels at 128x128 (:func:`srn_intrinsics`), 1.3 from the origin and looking at
it; train and val objects are seen from random cameras on the band of elevations 5 to 75 degrees
(:func:`hemisphere_poses`), test objects from a fixed spiral (:func:`spiral_poses`).

Everything is deterministic: object ``i`` of seed ``k`` draws from
``numpy.random.default_rng([k, i])``, so it is the same car whatever the number of objects.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from genvs.cameras import make_intrinsics, spherical_to_c2w, spiral
from genvs.data.cars import ATTRIBUTES, VISIBLE_FRACTION, CarParams, render_car_with_coverage, sample_car_params
from genvs.data.srn import write_image, write_intrinsics, write_pose

__all__ = [
    "read_attributes",
    "srn_intrinsics",
    "hemisphere_poses",
    "spiral_poses",
    "split_names",
    "make_dataset",
]

CAMERA_RADIUS = 1.3
"""Distance of every camera from the origin (as in SRN cars)."""
SRN_FOCAL_128 = 131.25
"""SRN cars' focal length in pixels at 128x128; scaled with the image size."""
ELEVATION_RANGE_DEG = (5.0, 75.0)
"""Train/val cameras: uniform on the spherical band between these elevations."""
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "genvs_synthetic.json"
"""Written last by :func:`make_dataset`: its arguments, to reuse or replace a dataset safely."""
MANIFEST_VERSION = 2
"""Bumped whenever the rendering changes, so older datasets are rendered anew (2: hidden-side attributes)."""
ATTRIBUTES_NAME = "attributes.json"


def srn_intrinsics(image_size: int) -> Tensor:
    """SRN cars' intrinsics at ``image_size``: ``f = 131.25 * size / 128``, centre ``size / 2``.

    ``f`` is rounded to the 6 decimals ``intrinsics.txt`` keeps (exact for sizes divisible by 8),
    so the file and the renders agree. Returns ``[3, 3]``.
    """
    focal = round(SRN_FOCAL_128 * image_size / 128, 6)
    return make_intrinsics(focal, image_size / 2, image_size / 2)


def hemisphere_poses(rng: np.random.Generator, n_views: int, radius: float = CAMERA_RADIUS) -> Tensor:
    """Cameras uniform on the sphere band ``elevation in [5, 75]`` degrees, looking at the origin.

    Uniform in area: ``sin(elevation)`` uniform, azimuth uniform. Returns ``[n_views, 4, 4]``.
    """
    azimuth = rng.uniform(0.0, 2.0 * math.pi, n_views)
    low, high = (math.sin(math.radians(e)) for e in ELEVATION_RANGE_DEG)
    elevation = np.arcsin(rng.uniform(low, high, n_views))
    return spherical_to_c2w(azimuth, elevation, radius)


def spiral_poses(n_views: int) -> Tensor:
    """Test cameras: :func:`genvs.cameras.spiral` at radius 1.3 (SRN-like). Returns ``[n, 4, 4]``."""
    return spiral(n_views, radius=CAMERA_RADIUS)


def split_names(n_objects: int, split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> list[str]:
    """Split of each object index: contiguous blocks train, then val, then test.

    ``n_val = round(n * f_val)`` and ``n_test = round(n * f_test)``, each at least 1 when
    ``n >= 3``; the rest is train.
    """
    _, val_fraction, test_fraction = split_fractions
    minimum = 1 if n_objects >= 3 else 0
    n_val = max(minimum, round(n_objects * val_fraction))
    n_test = max(minimum, round(n_objects * test_fraction))
    n_train = n_objects - n_val - n_test
    if n_train < minimum:
        raise ValueError(f"split_fractions {split_fractions} leave no training objects out of {n_objects}")
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def _write_object(folder: Path, params: CarParams, K: Tensor, poses: Tensor, image_size: int) -> None:
    """Render every pose and write ``rgb/``, ``pose/``, ``intrinsics.txt`` and ``attributes.json`` into ``folder``."""
    (folder / "rgb").mkdir(parents=True, exist_ok=True)
    (folder / "pose").mkdir(exist_ok=True)
    write_intrinsics(folder / "intrinsics.txt", K, image_size, image_size)
    views = []
    for view, c2w in enumerate(poses):
        rgb, alpha, coverage = render_car_with_coverage(params, K, c2w, image_size, image_size)
        write_image(folder / "rgb" / f"{view:06d}.png", rgb, alpha)
        write_pose(folder / "pose" / f"{view:06d}.txt", c2w)
        fractions = {name: round(float(value), 6) for name, value in coverage.items()}
        views.append({"view": f"{view:06d}", "coverage": fractions,
                      "shows": [name for name, value in fractions.items() if value >= VISIBLE_FRACTION]})
    record = {"attributes": params.attributes(), "values": {name: list(values) for name, values in ATTRIBUTES.items()},
              "visible_fraction": VISIBLE_FRACTION, "views": views}
    (folder / ATTRIBUTES_NAME).write_text(json.dumps(record, indent=1) + "\n")


def read_attributes(folder: str | Path) -> dict | None:
    """An object folder's ``attributes.json`` (see :func:`make_dataset`), or None if it has none (e.g. real SRN cars).

    Returns:
        ``{"attributes": {name: value}, "values": {name: [values]}, "visible_fraction": float,
        "views": [{"view": "000000", "coverage": {name: fraction}, "shows": [names]}, ...]}`` (views in file order).
    """
    path = Path(folder) / ATTRIBUTES_NAME
    return json.loads(path.read_text()) if path.is_file() else None


@contextlib.contextmanager
def _single_torch_thread():
    """Run torch on one thread, then restore the previous count.

    One image's tensors are small: splitting them over threads gains little, and when the
    cores are busy with other work torch's thread pool stalls (measured on 2 shared cores:
    ~150 images/s on one thread, 3-8 images/s on two).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_dataset(
    out_dir: str | Path,
    n_objects: int = 20,
    n_views: int = 50,
    image_size: int = 64,
    seed: int = 0,
    test_views: int | None = None,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    extra_train_objects: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Render synthetic cars into ``out_dir/cars_{train,val,test}/car_NNNNN/`` (SRN layout, plus ``attributes.json``).

    Object ``i`` (folder ``car_{i:05d}``) is the car drawn from ``default_rng([seed, i])``;
    its split comes from :func:`split_names`. Train and val objects get ``n_views`` cameras
    from :func:`hemisphere_poses` (same generator, after the car); test objects get
    ``test_views`` (default ``n_views``) cameras on :func:`spiral_poses`' spiral.

    A ``genvs_synthetic.json`` manifest of the arguments is written last. Called again with the
    same arguments, the existing dataset is reused at once; with other arguments, the old
    ``cars_*`` folders are removed and the dataset is rendered anew (so no stale views or objects
    remain). A folder holding ``cars_*`` data without a manifest is not ours and is refused.

    Args:
        out_dir: dataset root (created).
        n_objects, n_views: number of cars and of views per train/val car.
        image_size: square image side in pixels.
        seed: dataset seed.
        test_views: views per test car.
        split_fractions: (train, val, test) fractions; train takes what val and test leave.
        extra_train_objects: more training cars, objects ``n_objects .. n_objects + extra - 1``; the val and
            test cars stay those of ``n_objects`` alone (a bigger training set, the same held-out protocol).
        workers: processes rendering cars side by side (each on one torch thread); the files are the same for
            any number, since every object is drawn from its own generator.
        progress: show a tqdm bar over objects.
    Returns:
        ``out_dir`` as a :class:`pathlib.Path`.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    manifest = {"generator": "genvs.data.synthetic", "version": MANIFEST_VERSION, "n_objects": n_objects,
                "n_views": n_views, "image_size": image_size, "seed": seed, "test_views": test_views,
                "split_fractions": list(split_fractions)}
    if extra_train_objects:
        manifest["extra_train_objects"] = extra_train_objects
    if _read_manifest(out_dir) == manifest:
        return out_dir
    _clear_previous_dataset(out_dir)
    for split in SPLITS:
        (out_dir / f"cars_{split}").mkdir(parents=True, exist_ok=True)
    splits = split_names(n_objects, split_fractions) + ["train"] * extra_train_objects
    per_task = 1 if workers == 1 else OBJECTS_PER_TASK
    tasks = [(out_dir, start, splits[start:start + per_task], seed, n_views, test_views, image_size)
             for start in range(0, len(splits), per_task)]
    with tqdm(total=len(splits), desc="synthetic cars", unit="car", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                bar.update(_render_objects(task))
        else:
            with multiprocessing.get_context().Pool(min(workers, len(tasks))) as pool:
                for count in pool.imap_unordered(_render_objects, tasks):
                    bar.update(count)
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return out_dir


OBJECTS_PER_TASK = 8
"""Cars one worker process renders per task when :func:`make_dataset` runs several."""


def _render_objects(task: tuple[Path, int, list[str], int, int, int | None, int]) -> int:
    """Render objects ``first .. first + len(splits) - 1`` (object ``i`` into ``cars_{split}/car_{i:05d}``) on one
    torch thread; returns how many."""
    out_dir, first, splits, seed, n_views, test_views, image_size = task
    K = srn_intrinsics(image_size)
    with _single_torch_thread():
        for index, split in enumerate(splits, start=first):
            rng = np.random.default_rng([seed, index])
            params = sample_car_params(rng)
            if split == "test":
                poses = spiral_poses(n_views if test_views is None else test_views)
            else:
                poses = hemisphere_poses(rng, n_views)
            _write_object(out_dir / f"cars_{split}" / f"car_{index:05d}", params, K, poses, image_size)
    return len(splits)


def _read_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def _clear_previous_dataset(out_dir: Path) -> None:
    """Remove the split folders of an earlier synthetic dataset in ``out_dir`` (ours only)."""
    split_folders = [out_dir / f"cars_{split}" for split in SPLITS if (out_dir / f"cars_{split}").exists()]
    if not split_folders:
        return
    if not (out_dir / MANIFEST_NAME).is_file():
        raise FileExistsError(
            f"{out_dir} already holds cars_* folders that genvs did not write (no {MANIFEST_NAME}): "
            "choose an empty or new output folder"
        )
    (out_dir / MANIFEST_NAME).unlink()
    for folder in split_folders:
        shutil.rmtree(folder)
