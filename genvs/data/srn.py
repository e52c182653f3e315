"""SRN-format multi-view datasets (ShapeNet cars as in SRN / pixelNeRF, and our synthetic cars).

Layout, one folder per object::

    <split>/<object_id>/rgb/000000.png        RGB or RGBA (composited on white)
    <split>/<object_id>/pose/000000.txt       16 floats: row-major camera-to-world, OpenCV axes
    <split>/<object_id>/intrinsics.txt        "f cx cy 0" / "0. 0. 0." / "1." / "H W"
    <split>/<object_id>/intrinsics/000000.txt optional per-view 3x3 K (9 floats), overrides the above

``root`` is either one split folder of object folders (a 90/10 train/val split is then made
deterministically from the sorted object ids), or a folder holding ``*_train``, ``*_val`` and
``*_test`` split folders (SRN's ``cars_train`` / ``cars_val`` / ``cars_test``).
Poses are returned exactly as in the files: no axis flips.

Writing (:func:`write_intrinsics`, :func:`write_pose`, :func:`write_image`) is the readers' inverse: what is
written reads back as the same ``K``, the same float32 pose and the same image to 8-bit rounding. PNGs are
written RGBA with straight (not premultiplied) colour, as PNG specifies::

    c = (C - (1 - a)) / a   where a > 0, else 1 (white)

so compositing on white, ``c * a + (1 - a)``, gives back ``C`` (to 8-bit rounding: ``c`` is computed from
the 8-bit alpha), which is what :func:`read_image` does. Pixels fully covered (``a = 1``) and background
pixels (``a = 0``) have ``c = C``; only edge pixels differ between "drop alpha" and "composite on white".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from genvs.cameras import make_intrinsics, project, rescale_intrinsics

__all__ = ["SRNFormatError", "SRNObject", "SRNDataset", "read_pose", "read_intrinsics", "read_image", "read_view",
           "require_views", "find_objects", "write_intrinsics", "write_pose", "write_image"]

SPLITS = ("train", "val", "test")


class SRNFormatError(ValueError):
    """A file or folder does not follow the SRN format; the message names it."""


@dataclass(frozen=True)
class SRNObject:
    """One object folder: its id, its image files and the matching pose files (same order)."""

    object_id: str
    folder: Path
    image_paths: tuple[Path, ...]
    pose_paths: tuple[Path, ...]

    @property
    def n_views(self) -> int:
        return len(self.image_paths)


ROTATION_TOLERANCE = 1e-3
"""Largest ``|R^T R - I|`` entry accepted in a pose's rotation block (SRN's float32 files: ~3e-7)."""


def read_pose(path: Path) -> Tensor:
    """Read a camera-to-world pose file: 16 floats, row-major. Returns ``[4, 4]`` float32.

    The matrix must be rigid, ``[[R, t], [0, 0, 0, 1]]`` with ``R`` a rotation (``R^T R = I`` to
    :data:`ROTATION_TOLERANCE`, ``det R > 0``) and finite numbers; anything else raises
    :class:`SRNFormatError` naming the file and what is wrong.
    """
    numbers = _read_floats(path)
    if numbers.numel() != 16:
        raise SRNFormatError(f"{path}: a pose file needs 16 numbers (a 4x4 matrix), found {numbers.numel()}")
    c2w = numbers.reshape(4, 4)
    problem = _rigid_pose_problem(c2w)
    if problem is not None:
        raise SRNFormatError(f"{path}: {problem}; genvs needs a rigid camera-to-world matrix [[R, t], [0, 0, 0, 1]] "
                             f"in OpenCV axes (x right, y down, z forward)")
    return c2w


def _rigid_pose_problem(c2w: Tensor) -> str | None:
    """What keeps ``c2w [4, 4]`` from being a rigid camera-to-world matrix, in words; None if it is one."""
    if not torch.isfinite(c2w).all():
        return "the pose holds NaN or infinite values"
    if not torch.allclose(c2w[3], c2w.new_tensor([0.0, 0.0, 0.0, 1.0]), rtol=0.0, atol=1e-6):
        return f"the last row is {_numbers(c2w[3])}, not 0, 0, 0, 1"
    rotation = c2w[:3, :3].double()
    deviation = (rotation.T @ rotation - torch.eye(3, dtype=torch.float64)).abs().max().item()
    if deviation > ROTATION_TOLERANCE:
        return (f"the 3x3 block R is not a rotation: its columns have lengths {_numbers(rotation.norm(dim=0))} "
                f"and R^T R differs from the identity by up to {deviation:.3g} (a scaled or sheared matrix)")
    if torch.linalg.det(rotation) < 0:
        return "the 3x3 block R is a reflection (det R = -1), not a rotation (left-handed axes?)"
    return None


def _numbers(values: Tensor) -> str:
    """``"2.0, 2.0, 2.0"``: the values of a 1-D tensor, rounded to 3 significant digits."""
    return ", ".join(f"{value:.3g}" for value in values.tolist())


def read_intrinsics(path: Path) -> tuple[Tensor, tuple[int, int]]:
    """Read an object-level ``intrinsics.txt``.

    Format: line 1 ``f cx cy 0``, line 2 ``0. 0. 0.`` (origin), line 3 ``1.`` (scale),
    line 4 ``H W`` (the image size these pixels refer to).

    Returns:
        ``K [3, 3]`` in pixels of an ``H x W`` image, and ``(H, W)``.
    """
    if not path.is_file():
        raise SRNFormatError(f"{path}: missing intrinsics.txt (and no per-view intrinsics/ folder)")
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    try:
        focal, cx, cy = (float(value) for value in lines[0][:3])
        height, width = (int(float(value)) for value in lines[-1][:2])
    except (IndexError, ValueError) as error:
        raise SRNFormatError(f"{path}: expected 'f cx cy 0' on line 1 and 'H W' on line 4 ({error})") from None
    return make_intrinsics(focal, cx, cy), (height, width)


def read_image(path: Path) -> Tensor:
    """Read an RGB or RGBA image, RGBA composited on white: ``rgb * a + (1 - a)``.

    Returns:
        ``[3, H, W]`` float32 in [-1, 1].
    """
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as error:
        raise SRNFormatError(f"{path}: unreadable image ({error})") from None
    rgb, alpha = pixels[..., :3], pixels[..., 3:]
    composited = rgb * alpha + (1.0 - alpha)
    return torch.from_numpy(composited).permute(2, 0, 1) * 2.0 - 1.0


def find_objects(split_folder: Path) -> list[SRNObject]:
    """List the object folders of one split folder; every ``rgb/NAME.png`` needs a ``pose/NAME.txt`` and back."""
    objects = []
    for folder in sorted(path for path in split_folder.iterdir() if (path / "rgb").is_dir()):
        images = {path.stem: path for path in (folder / "rgb").iterdir() if path.suffix.lower() in (".png", ".jpg")}
        poses = {path.stem: path for path in (folder / "pose").glob("*.txt")}
        without_pose, without_image = sorted(images.keys() - poses.keys()), sorted(poses.keys() - images.keys())
        if without_pose:
            raise SRNFormatError(f"{images[without_pose[0]]} has no pose file pose/{without_pose[0]}.txt")
        if without_image:
            raise SRNFormatError(f"{poses[without_image[0]]} has no image rgb/{without_image[0]}.png (or .jpg)")
        stems = sorted(images)
        if stems:
            objects.append(SRNObject(folder.name, folder, tuple(images[stem] for stem in stems),
                                     tuple(poses[stem] for stem in stems)))
    return objects


class SRNDataset(torch.utils.data.Dataset):
    """Multi-view items from SRN-format folders.

    Each item is one object with ``views_per_item`` views::

        images    [V, 3, H, W] float in [-1, 1] (RGBA composited on white)
        K         [V, 3, 3]    intrinsics in pixels of the returned images
        c2w       [V, 4, 4]    camera-to-world, OpenCV axes, exactly as in the pose files
        object_id str;  view_ids [V] long (indices into the object's sorted views)

    Views are drawn at random on each access when ``random_views`` (training, from torch's
    global RNG), else fixed by ``seed`` and the item index (evaluation: the same views every time).

    Args:
        root: a split folder of objects, or a folder with ``*_train/*_val/*_test`` folders.
        split: "train", "val", "test" or "all". For a single folder, "train"/"val" take a
            deterministic 90/10 split of the sorted object ids; "all" takes every object.
        views_per_item: V; None returns every view of the object.
        image_size: resize to this (square) size, with K rescaled; None keeps the files' size.
        random_views: draw views at random (training) instead of fixed by the seed.
        seed: fixes evaluation views and the train/val split shuffle.
        near, far: depth range of the scene (SRN cars: 0.8, 1.8), kept for renderers.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        views_per_item: int | None = 2,
        image_size: int | None = None,
        random_views: bool = False,
        seed: int = 0,
        near: float = 0.8,
        far: float = 1.8,
        val_fraction: float = 0.1,
    ):
        self.root = Path(root)
        if split not in SPLITS + ("all",):
            raise ValueError(f"split must be one of {SPLITS + ('all',)}, got {split!r}")
        self.split, self.views_per_item, self.image_size = split, views_per_item, image_size
        self.random_views, self.seed, self.near, self.far = random_views, seed, near, far
        self.objects = _objects_for_split(self.root, split, seed, val_fraction)
        if not self.objects:
            raise SRNFormatError(f"{self.root}: no objects for split {split!r} (empty root or wrong folder?)")
        if views_per_item is not None:
            require_views(self, views_per_item)

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, index: int) -> dict:
        return self.load_views(index, self.choose_views(index))

    def choose_views(self, index: int) -> list[int]:
        """View indices for item ``index``.

        Training (``random_views``): drawn from torch's global RNG, so ``torch.manual_seed`` (and
        DataLoader worker seeding) makes them reproducible. Evaluation: fixed by ``seed`` and ``index``.
        """
        n_views = self.objects[index].n_views
        if self.views_per_item is None:
            return list(range(n_views))
        if self.random_views:
            return torch.randperm(n_views)[: self.views_per_item].tolist()
        return random.Random(self.seed * 1_000_003 + index).sample(range(n_views), self.views_per_item)

    def load_views(self, index: int, view_ids: list[int]) -> dict:
        """Load chosen views of object ``index`` (see the class docstring for the fields)."""
        obj = self.objects[index]
        object_K = None  # intrinsics.txt, read once for all views that have no per-view file
        images, intrinsics = [], []
        for view in view_ids:
            image = read_image(obj.image_paths[view])
            per_view = obj.folder / "intrinsics" / f"{obj.image_paths[view].stem}.txt"
            if per_view.is_file():
                K = _read_view_intrinsics(per_view)
            else:
                object_K = object_K or read_intrinsics(obj.folder / "intrinsics.txt")
                K = _scale_to_image(*object_K, image.shape[-2:])
            image, K = _resize(image, K, self.image_size)
            images.append(image)
            intrinsics.append(K)
        return {
            "images": torch.stack(images),
            "K": torch.stack(intrinsics),
            "c2w": torch.stack([read_pose(obj.pose_paths[view]) for view in view_ids]),
            "object_id": obj.object_id,
            "view_ids": torch.tensor(view_ids, dtype=torch.long),
        }


def require_views(dataset: SRNDataset, n_views: int, why: str = "") -> None:
    """Raise :class:`SRNFormatError` naming the objects of ``dataset`` with fewer than ``n_views`` views
    (``why``: the reason)."""
    too_few = [obj.object_id for obj in dataset.objects if obj.n_views < n_views]
    if too_few:
        raise SRNFormatError(f"{dataset.root}: {len(too_few)} objects have fewer than {n_views} views{why}, "
                             f"e.g. {too_few[:5]}")


def _objects_for_split(root: Path, split: str, seed: int, val_fraction: float) -> list[SRNObject]:
    if not root.is_dir():
        raise SRNFormatError(f"{root}: no such folder")
    split_folders = {name: next(iter(sorted(root.glob(f"*_{name}"))), None) for name in SPLITS}
    if any(split_folders.values()):
        names = SPLITS if split == "all" else (split,)
        missing = [name for name in names if split_folders[name] is None]
        if missing:
            raise SRNFormatError(f"{root}: no *_{missing[0]} folder for split {missing[0]!r}")
        return [obj for name in names for obj in find_objects(split_folders[name])]
    objects = find_objects(root)
    if split == "all":
        return objects
    if split == "test":
        raise SRNFormatError(f"{root}: a single folder of objects has train/val splits only, not 'test'")
    order = list(range(len(objects)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(objects) * val_fraction))
    chosen = order[:n_val] if split == "val" else order[n_val:]
    return [objects[i] for i in sorted(chosen)]


def read_view(image_path: str | Path, pose_path: str | Path, intrinsics_path: str | Path,
              image_size: int | None = None, depth_range: tuple[float, float] | None = None) -> dict:
    """One view from SRN-format files, e.g. a user's own photo, pose and intrinsics.

    The model takes square images, so a non-square image is centre-cropped to the largest
    centred square (side ``min(H, W)``, offsets ``top = (H - side) // 2``, ``left = (W - side) // 2``)
    rather than squashed: cropping keeps the pixels' aspect, and K stays exact by moving the
    principal point, ``cx -= left``, ``cy -= top`` (pixels of the file, before any resize).

    Args:
        image_path: RGB or RGBA image (RGBA composited on white).
        pose_path: 16 numbers, the row-major camera-to-world pose (OpenCV axes); must be rigid
            (see :func:`read_pose`).
        intrinsics_path: an object-level ``intrinsics.txt`` (``f cx cy 0`` ... ``H W``) or a
            per-view file of 9 numbers (a 3x3 K in pixels of this image).
        image_size: resize (after the crop) to this square size, with K rescaled; None keeps the size.
        depth_range: ``(near, far)`` depths the model sees (``FieldConfig.near, .far``). When given,
            the camera must see the object, which genvs assumes at the world origin (SRN convention):
            the origin must project inside the image at a depth within ``[near, far]``.
    Returns:
        ``images [1, 3, S, S]`` in [-1, 1], ``K [1, 3, 3]`` in pixels of that image, ``c2w [1, 4, 4]``,
        and ``cropped_from``: the file's ``(H, W)`` if it was centre-cropped, else None.
    Raises:
        SRNFormatError: a missing or malformed file, or (with ``depth_range``) a camera that does
            not see the origin within the depth range; the message names the file.
    """
    image_path, pose_path, intrinsics_path = Path(image_path), Path(pose_path), Path(intrinsics_path)
    for path in (image_path, pose_path, intrinsics_path):
        if not path.is_file():
            raise SRNFormatError(f"{path}: no such file")
    image = read_image(image_path)
    if _read_floats(intrinsics_path).numel() == 9:
        K = _read_view_intrinsics(intrinsics_path)
    else:
        K = _scale_to_image(*read_intrinsics(intrinsics_path), image.shape[-2:])
    c2w = read_pose(pose_path)
    height, width = image.shape[-2:]
    image, K = _resize(*_centre_crop(image, K), image_size)
    if depth_range is not None:
        _check_sees_origin(K, c2w, image.shape[-1], depth_range, pose_path)
    return {"images": image[None], "K": K[None], "c2w": c2w[None],
            "cropped_from": None if height == width else (height, width)}


def _centre_crop(image: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """``image [3, H, W]`` cut to its centred ``min(H, W)`` square, K's principal point moved by the offsets."""
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    K = K.clone()
    K[0, 2] -= left
    K[1, 2] -= top
    return image[:, top:top + side, left:left + side], K


def _check_sees_origin(K: Tensor, c2w: Tensor, size: int, depth_range: tuple[float, float], pose_path: Path) -> None:
    """Raise :class:`SRNFormatError` (naming the pose file) unless the world origin projects into the
    ``size x size`` image at a depth within ``depth_range``."""
    uv, depth = project(torch.zeros(1, 3), K, c2w)
    (u, v), z = uv[0].tolist(), depth.item()
    near, far = depth_range
    if z <= 0:
        raise SRNFormatError(f"{pose_path}: camera looks away from the object at the origin: the origin is "
                             f"{-z:.2f} units behind the camera (genvs expects cameras that look at an object "
                             f"at the world origin, as in SRN)")
    if not (0 <= u <= size and 0 <= v <= size):
        raise SRNFormatError(f"{pose_path}: camera looks away from the object at the origin: the origin projects "
                             f"to pixel ({u:.1f}, {v:.1f}), outside the {size}x{size} image (genvs expects cameras "
                             f"that look at an object at the world origin, as in SRN)")
    if not near <= z <= far:
        raise SRNFormatError(f"{pose_path}: the object at the origin is {z:.2f} units in front of the camera; this "
                             f"model sees depths {near:.2f}..{far:.2f}: is the pose in another unit or scale?")


def _resize(image: Tensor, K: Tensor, image_size: int | None) -> tuple[Tensor, Tensor]:
    """``image [3, H, W]`` resized to ``image_size`` square (antialiased bilinear) and K rescaled; None: as is."""
    height, width = image.shape[-2:]
    if image_size is None or (height, width) == (image_size, image_size):
        return image, K
    resized = F.interpolate(image[None], size=(image_size, image_size), mode="bilinear", antialias=True,
                            align_corners=False)[0]
    return resized.clamp(-1.0, 1.0), rescale_intrinsics(K, image_size / width, image_size / height)


def _read_view_intrinsics(path: Path) -> Tensor:
    """A per-view ``intrinsics/NNNNNN.txt``: 9 numbers, a row-major 3x3 K in pixels of that view's image."""
    numbers = _read_floats(path)
    if numbers.numel() != 9:
        raise SRNFormatError(f"{path}: a per-view intrinsics file needs 9 numbers, found {numbers.numel()}")
    return numbers.reshape(3, 3)


def _scale_to_image(K: Tensor, file_hw: tuple[int, int], image_hw: tuple[int, int]) -> Tensor:
    """Rescale object intrinsics given for an ``H x W`` image (line 4 of intrinsics.txt) to the image read."""
    return rescale_intrinsics(K, image_hw[1] / file_hw[1], image_hw[0] / file_hw[0])


def _read_floats(path: Path) -> Tensor:
    try:
        return torch.tensor([float(value) for value in path.read_text().split()], dtype=torch.float32)
    except ValueError as error:
        raise SRNFormatError(f"{path}: expected numbers only ({error})") from None


def write_intrinsics(path: Path, K: Tensor, height: int, width: int) -> None:
    """Write an object-level ``intrinsics.txt``; :func:`read_intrinsics` reads back ``K`` (6 decimals) and ``(H, W)``.

    Format: ``f cx cy 0.`` with 6 decimals, then ``0. 0. 0.``, ``1.`` and ``H W``. The file holds one focal
    length and no skew, so ``K`` must have ``fx = fy`` and a zero skew.

    Args:
        K: ``[3, 3]`` intrinsics in pixels of an ``height x width`` image.
    """
    focal, cx, cy = float(K[0, 0]), float(K[0, 2]), float(K[1, 2])
    if float(K[1, 1]) != focal or float(K[0, 1]) != 0.0:
        raise ValueError(f"intrinsics.txt holds one focal length and no skew; K has fx {focal}, fy {float(K[1, 1])}, "
                         f"skew {float(K[0, 1])}")
    Path(path).write_text(f"{focal:f} {cx:f} {cy:f} 0.\n0. 0. 0.\n1.\n{height} {width}\n")


def write_pose(path: Path, c2w: Tensor) -> None:
    """Write a camera-to-world pose ``c2w [4, 4]`` as :func:`read_pose` reads it: 16 floats on one line,
    row-major, each value printed exactly (as SRN does), so a float32 pose reads back bit for bit."""
    Path(path).write_text(" ".join(repr(float(value)) for value in c2w.reshape(-1).tolist()) + "\n")


def write_image(path: Path, rgb: Tensor, alpha: Tensor) -> None:
    """Write an image composited on white and its coverage as an 8-bit RGBA PNG with straight colour (module docstring).

    :func:`read_image` reads back ``rgb`` (as ``[3, H, W]`` in [-1, 1]) to 8-bit rounding.

    Args:
        rgb: ``C [H, W, 3]`` in [0, 1], composited on white; alpha: ``a [H, W]`` coverage in [0, 1].
    """
    Image.fromarray(_straight_rgba(rgb, alpha)).save(path)


def _straight_rgba(rgb: Tensor, alpha: Tensor) -> np.ndarray:
    """8-bit RGBA with straight colour ``c = (C - (1 - a)) / a`` (white where ``a = 0``).

    ``c`` is computed from the 8-bit alpha, so ``c * a + (1 - a)`` matches ``C`` to 8-bit rounding.

    Args:
        rgb: ``[H, W, 3]`` image composited on white; alpha: ``[H, W]`` coverage.
    Returns:
        ``[H, W, 4]`` uint8 array.
    """
    alpha_8bit = torch.round(alpha * 255.0)
    a = (alpha_8bit / 255.0)[..., None]
    straight = torch.where(a > 0, (rgb - (1.0 - a)) / a.clamp(min=1.0 / 255.0), 1.0).clamp(0.0, 1.0)
    rgba = torch.cat([torch.round(straight * 255.0), alpha_8bit[..., None]], dim=-1)
    return rgba.to(torch.uint8).numpy()
