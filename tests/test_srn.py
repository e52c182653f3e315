import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genvs.cameras import make_intrinsics, project, spherical_to_c2w
from genvs.data import SRNDataset, SRNFormatError, srn_fixture_dir
from genvs.data.srn import read_image, read_intrinsics, read_pose, read_view, write_image, write_intrinsics, write_pose
from genvs.data.synthetic import make_dataset

SAMPLE = srn_fixture_dir()

needs_fixture = pytest.mark.skipif(SAMPLE is None,
                                   reason="SRN fixture not found (../shared/fixtures or $GENVS_SRN_FIXTURE)")


def _write_pose(path: Path, c2w: np.ndarray) -> Path:
    """A pose file as SRN writes them: 16 numbers, row-major."""
    path.write_text(" ".join(str(float(x)) for x in np.asarray(c2w).ravel()))
    return path


def _pose(rotation=np.eye(3), centre=(0.0, 0.0, -1.3)) -> np.ndarray:
    """``[[R, t], [0, 0, 0, 1]]``; the defaults: a camera 1.3 units behind the origin, looking at it along +z."""
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, centre
    return c2w


def _rotation_about_y(degrees: float) -> np.ndarray:
    """``[3, 3]``: a camera turned by ``degrees`` about its y axis (0: looking along +z)."""
    angle = math.radians(degrees)
    return np.array([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]])


def _write_object(folder: Path, n_views: int, size: int = 8, rgba: bool = False) -> Path:
    """A tiny valid SRN object folder: identity-rotation cameras 1.3 units behind the origin."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "pose").mkdir()
    (folder / "intrinsics.txt").write_text(f"{size} {size / 2} {size / 2} 0.\n0. 0. 0.\n1.\n{size} {size}\n")
    for view in range(n_views):
        grey = view * 255 // max(n_views - 1, 1)  # a level of its own per view, inside uint8's 0..255
        pixels = np.full((size, size, 4 if rgba else 3), grey, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "rgb" / f"{view:06d}.png")
        _write_pose(folder / "pose" / f"{view:06d}.txt", _pose())
    return folder


@needs_fixture
def test_real_fixture_loads_with_expected_fields():
    item = SRNDataset(SAMPLE, views_per_item=2)[0]
    assert item["images"].shape == (2, 3, 128, 128)
    assert item["images"].min() >= -1 and item["images"].max() <= 1
    assert item["K"].shape == (2, 3, 3) and item["c2w"].shape == (2, 4, 4)
    assert item["object_id"] == "sample_car"
    assert sorted(item["view_ids"].tolist()) == [0, 1]
    torch.testing.assert_close(item["K"][0], torch.tensor([[131.25, 0, 64], [0, 131.25, 64], [0, 0, 1.0]]))


@needs_fixture
def test_real_fixture_poses_are_returned_exactly_as_in_the_files():
    item = SRNDataset(SAMPLE, views_per_item=None)[0]
    numbers = [float(x) for x in (SAMPLE / "sample_car" / "pose" / "000001.txt").read_text().split()]
    torch.testing.assert_close(item["c2w"][1], torch.tensor(numbers, dtype=torch.float32).reshape(4, 4))


@needs_fixture
def test_real_fixture_geometry_origin_projects_to_image_centre():
    item = SRNDataset(SAMPLE, views_per_item=None)[0]
    for K, c2w in zip(item["K"], item["c2w"]):
        uv, depth = project(torch.zeros(1, 3), K, c2w)
        torch.testing.assert_close(uv[0], torch.tensor([64.0, 64.0]), atol=0.5, rtol=0)
        assert 1.2 < depth.item() < 1.4  # cameras sit about 1.3 units from the origin
        rotation = c2w[:3, :3]
        torch.testing.assert_close(rotation.T @ rotation, torch.eye(3), atol=1e-5, rtol=0)


@needs_fixture
def test_real_fixture_rgba_is_composited_on_white():
    image = SRNDataset(SAMPLE, views_per_item=None)[0]["images"][0]
    corners = image[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners, torch.ones_like(corners))
    assert image.min() < 0  # the car itself is not white


@needs_fixture
def test_resize_rescales_intrinsics_so_origin_stays_centred():
    item = SRNDataset(SAMPLE, views_per_item=None, image_size=64)[0]
    assert item["images"].shape == (2, 3, 64, 64)
    torch.testing.assert_close(item["K"][0], torch.tensor([[65.625, 0, 32], [0, 65.625, 32], [0, 0, 1.0]]))
    uv, _ = project(torch.zeros(1, 3), item["K"][1], item["c2w"][1])
    torch.testing.assert_close(uv[0], torch.tensor([32.0, 32.0]), atol=0.25, rtol=0)


def test_per_view_intrinsics_override_object_intrinsics(tmp_path):
    folder = _write_object(tmp_path / "obj", 2)
    (folder / "intrinsics").mkdir()
    for view, focal in enumerate((10.0, 20.0)):
        (folder / "intrinsics" / f"{view:06d}.txt").write_text(f"{focal} 0 4\n0 {focal} 4\n0 0 1\n")
    item = SRNDataset(tmp_path, views_per_item=None)[0]
    assert item["K"][:, 0, 0].tolist() == [10.0, 20.0]


def test_fixed_views_in_evaluation_random_in_training(tmp_path):
    _write_object(tmp_path / "obj", 20)
    evaluation = SRNDataset(tmp_path, views_per_item=3, seed=7)
    assert evaluation[0]["view_ids"].tolist() == evaluation[0]["view_ids"].tolist()
    assert len(set(evaluation[0]["view_ids"].tolist())) == 3
    training = SRNDataset(tmp_path, views_per_item=3, random_views=True)
    draws = {tuple(training[0]["view_ids"].tolist()) for _ in range(20)}
    assert len(draws) > 1
    torch.manual_seed(5)
    first = [training[0]["view_ids"].tolist() for _ in range(5)]
    torch.manual_seed(5)
    assert [training[0]["view_ids"].tolist() for _ in range(5)] == first


def test_single_folder_gets_deterministic_90_10_split(tmp_path):
    for index in range(20):
        _write_object(tmp_path / f"obj{index:02d}", 1, size=4)
    train = SRNDataset(tmp_path, split="train", views_per_item=1)
    val = SRNDataset(tmp_path, split="val", views_per_item=1)
    assert len(train) == 18 and len(val) == 2
    train_ids = {obj.object_id for obj in train.objects}
    assert train_ids.isdisjoint(obj.object_id for obj in val.objects)
    assert {obj.object_id for obj in SRNDataset(tmp_path, split="val", views_per_item=1).objects} == {
        obj.object_id for obj in val.objects
    }


def test_root_with_split_folders(tmp_path):
    for split, object_id in (("train", "a"), ("val", "b"), ("test", "c")):
        _write_object(tmp_path / f"cars_{split}" / object_id, 2)
    assert [obj.object_id for obj in SRNDataset(tmp_path, split="val").objects] == ["b"]
    assert len(SRNDataset(tmp_path, split="all")) == 3


def test_pose_without_16_numbers_names_the_file(tmp_path):
    folder = _write_object(tmp_path / "obj", 2)
    (folder / "pose" / "000001.txt").write_text("1 0 0 0 1 0")
    with pytest.raises(SRNFormatError, match="000001.txt.*16 numbers"):
        SRNDataset(tmp_path, views_per_item=None)[0]


def test_missing_intrinsics_names_the_file(tmp_path):
    folder = _write_object(tmp_path / "obj", 2)
    (folder / "intrinsics.txt").unlink()
    with pytest.raises(SRNFormatError, match="intrinsics.txt"):
        SRNDataset(tmp_path, views_per_item=None)[0]


def test_unreadable_image_names_the_file(tmp_path):
    folder = _write_object(tmp_path / "obj", 2)
    (folder / "rgb" / "000000.png").write_bytes(b"not a png")
    with pytest.raises(SRNFormatError, match="000000.png.*unreadable"):
        SRNDataset(tmp_path, views_per_item=None)[0]


def test_image_without_pose_names_the_image_and_the_pose_file_it_expected(tmp_path):
    folder = _write_object(tmp_path / "obj", 3)
    (folder / "pose" / "000002.txt").unlink()
    with pytest.raises(SRNFormatError, match=r"obj/rgb/000002\.png has no pose file pose/000002\.txt"):
        SRNDataset(tmp_path)
    (folder / "pose" / "000007.txt").write_text((folder / "pose" / "000001.txt").read_text())  # as many poses again
    with pytest.raises(SRNFormatError, match=r"obj/rgb/000002\.png has no pose file pose/000002\.txt"):
        SRNDataset(tmp_path)


def test_pose_without_image_names_the_pose_and_the_image_it_expected(tmp_path):
    folder = _write_object(tmp_path / "obj", 3)
    (folder / "rgb" / "000001.png").unlink()
    with pytest.raises(SRNFormatError, match=r"obj/pose/000001\.txt has no image rgb/000001\.png"):
        SRNDataset(tmp_path)


def test_empty_root_is_an_error(tmp_path):
    with pytest.raises(SRNFormatError, match="no objects"):
        SRNDataset(tmp_path)
    with pytest.raises(SRNFormatError, match="no such folder"):
        SRNDataset(tmp_path / "missing")


def test_too_few_views_is_an_error(tmp_path):
    _write_object(tmp_path / "obj", 2)
    with pytest.raises(SRNFormatError, match="fewer than 3 views"):
        SRNDataset(tmp_path, views_per_item=3)


@needs_fixture
def test_one_view_reads_like_the_dataset_reads_it(tmp_path):
    car = next(path for path in SAMPLE.iterdir() if path.is_dir())
    image_path, pose_path = sorted((car / "rgb").iterdir())[1], sorted((car / "pose").iterdir())[1]
    view = read_view(image_path, pose_path, car / "intrinsics.txt", image_size=64, depth_range=(0.8, 1.8))
    assert view["cropped_from"] is None  # a square file, and a camera that sees the origin at SRN's depths
    item = SRNDataset(SAMPLE, split="all", views_per_item=None, image_size=64).load_views(0, [1])
    for key in ("images", "K", "c2w"):
        torch.testing.assert_close(view[key], item[key])
    per_view = tmp_path / "K.txt"  # a per-view 3x3 K of the 128 px file
    per_view.write_text(" ".join(f"{value:.6f}" for value in (item["K"][0] * 2).flatten().tolist()[:6]) + " 0 0 1")
    torch.testing.assert_close(read_view(image_path, pose_path, per_view, image_size=64)["K"], item["K"])
    with pytest.raises(SRNFormatError, match="nowhere.png: no such file"):
        read_view(tmp_path / "nowhere.png", pose_path, car / "intrinsics.txt")


def _with(c2w: np.ndarray, row: int, column: int, value: float) -> np.ndarray:
    """A copy of ``c2w`` with one entry replaced."""
    c2w = c2w.copy()
    c2w[row, column] = value
    return c2w


BROKEN_POSES = {
    "NaN": (_with(_pose(), 0, 3, math.nan), "NaN or infinite"),
    "inf": (_with(_pose(), 1, 3, math.inf), "NaN or infinite"),
    "scaled": (_pose(2 * np.eye(3)), "not a rotation: its columns have lengths 2, 2, 2"),
    "sheared": (_pose(np.array([[1, 0.5, 0], [0, 1, 0], [0, 0, 1]])), r"not a rotation: .*lengths 1, 1\.12, 1"),
    "reflection": (_pose(np.diag([1.0, 1.0, -1.0])), "reflection"),
    "last row": (_with(_pose(), 3, 0, 0.5), "last row is 0.5, 0, 0, 1"),
}


@pytest.mark.parametrize("broken", BROKEN_POSES)
def test_a_pose_that_is_not_rigid_is_refused_naming_the_file(tmp_path, broken):
    c2w, problem = BROKEN_POSES[broken]
    folder = _write_object(tmp_path / "obj", 2)
    _write_pose(folder / "pose" / "000001.txt", c2w)
    with pytest.raises(SRNFormatError, match=rf"obj/pose/000001\.txt: .*{problem}.*rigid camera-to-world"):
        SRNDataset(tmp_path, views_per_item=None)[0]


def _assert_pose_files_load_but_not_slightly_scaled(pose_paths: list[Path], tmp_path: Path) -> None:
    """Every pose file loads, exactly as written; each scaled by 1.002 (|R^T R - I| ~ 4e-3) is refused."""
    assert pose_paths
    for path in pose_paths:
        numbers = np.array(path.read_text().split(), dtype=np.float64)
        torch.testing.assert_close(read_pose(path), torch.tensor(numbers, dtype=torch.float32).reshape(4, 4))
        c2w = numbers.reshape(4, 4)
        with pytest.raises(SRNFormatError, match="not a rotation"):
            read_pose(_write_pose(tmp_path / "scaled.txt", _pose(c2w[:3, :3] * 1.002, c2w[:3, 3])))


def test_synthetic_car_poses_load_and_slightly_scaled_ones_do_not(tmp_path):
    data = make_dataset(tmp_path / "cars", n_objects=3, n_views=20, image_size=8, seed=0, progress=False)
    _assert_pose_files_load_but_not_slightly_scaled(sorted(data.glob("cars_*/*/pose/*.txt")), tmp_path)


@needs_fixture
def test_real_srn_poses_load_and_slightly_scaled_ones_do_not(tmp_path):
    target_poses = SAMPLE.parent / "srn_cars_sample_target_poses"  # seven more real poses, when beside the sample
    paths = sorted(SAMPLE.glob("*/pose/*.txt")) + sorted(target_poses.glob("*.txt"))
    _assert_pose_files_load_but_not_slightly_scaled(paths, tmp_path)


def _marked_centre(image: torch.Tensor) -> torch.Tensor:
    """``(u, v)``: the centroid of the red marking in ``image [3, H, W]`` (white elsewhere), pixel centres at +0.5."""
    redness = (image[0] - image[1]).clamp(min=0)
    rows, columns = torch.meshgrid(torch.arange(image.shape[1]) + 0.5, torch.arange(image.shape[2]) + 0.5,
                                   indexing="ij")
    return torch.stack([(redness * columns).sum(), (redness * rows).sum()]) / redness.sum()


@pytest.mark.parametrize("width, height", [(160, 120), (120, 160)])
@pytest.mark.parametrize("image_size", [None, 60])
def test_a_non_square_image_is_centre_cropped_and_k_still_projects_onto_the_image(tmp_path, width, height, image_size):
    # camera 1.3 units behind the origin looking along +z, f = 100 px, principal point at the file's centre
    (tmp_path / "intrinsics.txt").write_text(f"100 {width / 2} {height / 2} 0.\n0. 0. 0.\n1.\n{height} {width}\n")
    pose = _write_pose(tmp_path / "pose.txt", _pose())
    pixels = np.full((height, width, 3), 255, dtype=np.uint8)
    u, v = width / 2 + 20, height / 2 - 10  # a 2x2 red block in the file, its centre at pixel coordinates (u, v)
    pixels[int(v) - 1:int(v) + 1, int(u) - 1:int(u) + 1] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "car.png")
    point = torch.tensor([[(u - width / 2) * 1.3 / 100, (v - height / 2) * 1.3 / 100, 0.0]])  # seen at (u, v)

    view = read_view(tmp_path / "car.png", pose, tmp_path / "intrinsics.txt", image_size=image_size,
                     depth_range=(0.8, 1.8))
    side = image_size or 120
    assert view["images"].shape == (1, 3, side, side) and view["cropped_from"] == (height, width)
    assert view["K"][0, 0, 0] == view["K"][0, 1, 1]  # cropped, not squashed: the pixels stay square
    uv, _ = project(point, view["K"][0], view["c2w"][0])
    torch.testing.assert_close(uv[0], _marked_centre(view["images"][0]), atol=1e-3, rtol=0)


CAMERAS_THAT_MISS = {
    "turned away": (_pose(_rotation_about_y(180)), "looks away from the object at the origin: .*behind the camera"),
    "looking aside": (_pose(_rotation_about_y(60)),
                      "looks away from the object at the origin: .*outside the 8x8 image"),
    "too far": (_pose(centre=(0, 0, -5.2)),
                r"5\.20 units in front of the camera; this model sees depths 0\.80\.\.1\.80"),
    "too near": (_pose(centre=(0, 0, -0.5)), r"0\.50 units in front of the camera"),
}


@pytest.mark.parametrize("camera", CAMERAS_THAT_MISS)
def test_a_camera_that_does_not_see_the_origin_within_the_depth_range_is_refused(tmp_path, camera):
    folder = _write_object(tmp_path / "obj", 1)
    image, intrinsics = folder / "rgb" / "000000.png", folder / "intrinsics.txt"
    assert read_view(image, folder / "pose" / "000000.txt", intrinsics, depth_range=(0.8, 1.8))["cropped_from"] is None
    c2w, problem = CAMERAS_THAT_MISS[camera]
    pose = _write_pose(tmp_path / "pose.txt", c2w)
    read_view(image, pose, intrinsics)  # a valid pose: without a depth range nothing is checked
    with pytest.raises(SRNFormatError, match=rf"pose\.txt: .*{problem}"):
        read_view(image, pose, intrinsics, depth_range=(0.8, 1.8))


def test_written_intrinsics_read_back_as_the_same_k_and_size(tmp_path):
    K = make_intrinsics(32.8125, 20.0, 12.5)  # 6 decimals or fewer: exact in the file
    write_intrinsics(tmp_path / "intrinsics.txt", K, 24, 40)
    assert (tmp_path / "intrinsics.txt").read_text() == "32.812500 20.000000 12.500000 0.\n0. 0. 0.\n1.\n24 40\n"
    read_K, size = read_intrinsics(tmp_path / "intrinsics.txt")
    assert torch.equal(read_K, K) and size == (24, 40)
    non_square_pixels = K.clone()
    non_square_pixels[1, 1] = 31.0
    with pytest.raises(ValueError, match="one focal length"):
        write_intrinsics(tmp_path / "other.txt", non_square_pixels, 24, 40)


def test_a_written_float32_pose_reads_back_bit_for_bit(tmp_path):
    c2w = spherical_to_c2w(torch.tensor(0.7), torch.tensor(0.4), 1.3)
    assert c2w.dtype == torch.float32
    write_pose(tmp_path / "000000.txt", c2w)
    assert torch.equal(read_pose(tmp_path / "000000.txt"), c2w)


def test_a_written_image_reads_back_composited_on_white(tmp_path):
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (8, 8, 3), generator=generator) / 255.0
    alpha = torch.ones(8, 8)
    alpha[:2] = 0.0  # background: white, whatever rgb says there
    rgb[:2] = 1.0
    write_image(tmp_path / "opaque.png", rgb, alpha)
    torch.testing.assert_close(read_image(tmp_path / "opaque.png"), rgb.permute(2, 0, 1) * 2 - 1, atol=1e-6, rtol=0)
    # Edge pixels, partly covered: C = c a + (1 - a) comes back to 8-bit rounding.
    coverage = torch.rand(8, 8, generator=generator)
    composited = rgb * coverage[..., None] + (1 - coverage[..., None])
    write_image(tmp_path / "edges.png", composited, coverage)
    torch.testing.assert_close(read_image(tmp_path / "edges.png"), composited.permute(2, 0, 1) * 2 - 1,
                               atol=1 / 255 + 1e-5, rtol=0)
