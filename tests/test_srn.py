import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genvs.cameras import project
from genvs.data import SRNDataset, SRNFormatError, srn_fixture_dir

SAMPLE = srn_fixture_dir()

pytestmark = pytest.mark.skipif(SAMPLE is None, reason="SRN fixture not found (../shared/fixtures or $GENVS_SRN_FIXTURE)")


def _write_object(folder: Path, n_views: int, size: int = 8, rgba: bool = False) -> Path:
    """A tiny valid SRN object folder: identity-rotation cameras 1.3 units behind the origin."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "pose").mkdir()
    (folder / "intrinsics.txt").write_text(f"{size} {size / 2} {size / 2} 0.\n0. 0. 0.\n1.\n{size} {size}\n")
    for view in range(n_views):
        pixels = np.full((size, size, 4 if rgba else 3), 40 * view, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "rgb" / f"{view:06d}.png")
        pose = np.eye(4)
        pose[2, 3] = -1.3
        (folder / "pose" / f"{view:06d}.txt").write_text(" ".join(str(x) for x in pose.ravel()))
    return folder


def test_real_fixture_loads_with_expected_fields():
    item = SRNDataset(SAMPLE, views_per_item=2)[0]
    assert item["images"].shape == (2, 3, 128, 128)
    assert item["images"].min() >= -1 and item["images"].max() <= 1
    assert item["K"].shape == (2, 3, 3) and item["c2w"].shape == (2, 4, 4)
    assert item["object_id"] == "sample_car"
    assert sorted(item["view_ids"].tolist()) == [0, 1]
    torch.testing.assert_close(item["K"][0], torch.tensor([[131.25, 0, 64], [0, 131.25, 64], [0, 0, 1.0]]))


def test_real_fixture_poses_are_returned_exactly_as_in_the_files():
    item = SRNDataset(SAMPLE, views_per_item=None)[0]
    numbers = [float(x) for x in (SAMPLE / "sample_car" / "pose" / "000001.txt").read_text().split()]
    torch.testing.assert_close(item["c2w"][1], torch.tensor(numbers, dtype=torch.float32).reshape(4, 4))


def test_real_fixture_geometry_origin_projects_to_image_centre():
    item = SRNDataset(SAMPLE, views_per_item=None)[0]
    for K, c2w in zip(item["K"], item["c2w"]):
        uv, depth = project(torch.zeros(1, 3), K, c2w)
        torch.testing.assert_close(uv[0], torch.tensor([64.0, 64.0]), atol=0.5, rtol=0)
        assert 1.2 < depth.item() < 1.4  # cameras sit about 1.3 units from the origin
        rotation = c2w[:3, :3]
        torch.testing.assert_close(rotation.T @ rotation, torch.eye(3), atol=1e-5, rtol=0)


def test_real_fixture_rgba_is_composited_on_white():
    image = SRNDataset(SAMPLE, views_per_item=None)[0]["images"][0]
    corners = image[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners, torch.ones_like(corners))
    assert image.min() < 0  # the car itself is not white


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
    shutil.copytree(SAMPLE / "sample_car", tmp_path / "cars_train" / "a")
    shutil.copytree(SAMPLE / "sample_car", tmp_path / "cars_val" / "b")
    shutil.copytree(SAMPLE / "sample_car", tmp_path / "cars_test" / "c")
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


def test_image_pose_count_mismatch_names_the_folder(tmp_path):
    folder = _write_object(tmp_path / "obj", 3)
    (folder / "pose" / "000002.txt").unlink()
    with pytest.raises(SRNFormatError, match="obj.*3 images.*2 pose"):
        SRNDataset(tmp_path)


def test_empty_root_is_an_error(tmp_path):
    with pytest.raises(SRNFormatError, match="no objects"):
        SRNDataset(tmp_path)
    with pytest.raises(SRNFormatError, match="no such folder"):
        SRNDataset(tmp_path / "missing")


def test_too_few_views_is_an_error():
    with pytest.raises(SRNFormatError, match="fewer than 3 views"):
        SRNDataset(SAMPLE, views_per_item=3)


def test_one_view_reads_like_the_dataset_reads_it(tmp_path):
    from genvs.data.srn import read_view

    fixture = srn_fixture_dir()
    if fixture is None:
        pytest.skip("the SRN fixture is not beside this checkout")
    car = next(path for path in fixture.iterdir() if path.is_dir())
    image_path, pose_path = sorted((car / "rgb").iterdir())[1], sorted((car / "pose").iterdir())[1]
    view = read_view(image_path, pose_path, car / "intrinsics.txt", image_size=64)
    item = SRNDataset(fixture, split="all", views_per_item=None, image_size=64).load_views(0, [1])
    for key in ("images", "K", "c2w"):
        torch.testing.assert_close(view[key], item[key])
    per_view = tmp_path / "K.txt"  # a per-view 3x3 K of the 128 px file
    per_view.write_text(" ".join(f"{value:.6f}" for value in (item["K"][0] * 2).flatten().tolist()[:6]) + " 0 0 1")
    torch.testing.assert_close(read_view(image_path, pose_path, per_view, image_size=64)["K"], item["K"])
    with pytest.raises(SRNFormatError, match="nowhere.png: no such file"):
        read_view(tmp_path / "nowhere.png", pose_path, car / "intrinsics.txt")
