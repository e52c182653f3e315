import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genvs.cameras import project
from genvs.data import SRNDataset, srn_fixture_dir
from genvs.data.cars import ATTRIBUTES, VISIBLE_FRACTION, attribute_coverage, render_car, sample_car_params
from genvs.data.synthetic import (
    MANIFEST_NAME,
    SPLITS,
    hemisphere_poses,
    make_dataset,
    read_attributes,
    spiral_poses,
    split_names,
    srn_intrinsics,
)

FIXTURE = srn_fixture_dir()
FIXTURE_CAR = FIXTURE / "sample_car" if FIXTURE is not None else None
SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """3 cars (one per split), 4 views each, 5 test views, 32x32."""
    return make_dataset(tmp_path_factory.mktemp("cars"), 3, 4, SIZE, seed=0, test_views=5, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _read_pose(path: Path) -> torch.Tensor:
    values = [float(token) for token in path.read_text().split()]
    assert len(values) == 16
    return torch.tensor(values).reshape(4, 4)


def _read_rgba(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGBA"
        return np.asarray(image, dtype=np.float32) / 255.0


def _car(index: int = 0, seed: int = 0):
    return sample_car_params(np.random.default_rng([seed, index]))


def test_same_seed_gives_identical_files_and_another_seed_differs(dataset, tmp_path):
    again = make_dataset(tmp_path / "again", 3, 4, SIZE, seed=0, test_views=5, progress=False)
    other = make_dataset(tmp_path / "other", 3, 4, SIZE, seed=1, test_views=5, progress=False)
    assert _files(again) == _files(dataset)
    other_files = _files(other)
    assert other_files.keys() == _files(dataset).keys()
    assert other_files["cars_train/car_00000/rgb/000000.png"] != _files(dataset)["cars_train/car_00000/rgb/000000.png"]


def test_a_car_does_not_depend_on_the_number_of_objects(dataset, tmp_path):
    more = make_dataset(tmp_path / "more", 6, 4, SIZE, seed=0, progress=False)
    assert _files(more / "cars_train" / "car_00000") == _files(dataset / "cars_train" / "car_00000")


def test_extra_training_cars_follow_and_leave_val_and_test_as_they_were(dataset, tmp_path):
    bigger = make_dataset(tmp_path / "bigger", 3, 4, SIZE, seed=0, test_views=5, extra_train_objects=2,
                          progress=False)
    assert sorted(path.name for path in (bigger / "cars_train").iterdir()) == ["car_00000", "car_00003", "car_00004"]
    for split in ("cars_val", "cars_test", "cars_train/car_00000"):
        assert _files(bigger / split) == _files(dataset / split)
    five = make_dataset(tmp_path / "five", 5, 4, SIZE, seed=0, progress=False)  # car 3 is a val car there
    assert _files(bigger / "cars_train" / "car_00003") == _files(five / "cars_val" / "car_00003")
    assert (json.loads((bigger / MANIFEST_NAME).read_text())["extra_train_objects"] == 2
            and "extra_train_objects" not in json.loads((dataset / MANIFEST_NAME).read_text()))


def test_worker_processes_write_the_same_files_as_one_process(tmp_path):
    """20 cars in 3 tasks of OBJECTS_PER_TASK on 3 processes against the serial loop, file for file."""
    serial = make_dataset(tmp_path / "serial", 3, 2, 16, seed=0, extra_train_objects=17, progress=False)
    parallel = make_dataset(tmp_path / "parallel", 3, 2, 16, seed=0, extra_train_objects=17, workers=3, progress=False)
    assert len(list((parallel / "cars_train").iterdir())) == 18
    assert _files(parallel) == _files(serial)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        make_dataset(tmp_path / "none", 3, 2, 16, workers=0, progress=False)


def test_split_names_are_contiguous_blocks_with_each_split_present():
    assert split_names(10) == ["train"] * 8 + ["val", "test"]
    assert split_names(3) == ["train", "val", "test"]
    assert split_names(2) == ["train", "train"]
    assert split_names(20, (0.5, 0.25, 0.25)).count("val") == 5
    with pytest.raises(ValueError, match="no training objects"):
        split_names(4, (0.0, 0.5, 0.5))


def test_layout_view_counts_and_image_format(dataset):
    objects = {split: sorted(p.name for p in (dataset / f"cars_{split}").iterdir()) for split in SPLITS}
    assert objects == {"train": ["car_00000"], "val": ["car_00001"], "test": ["car_00002"]}
    for split, n_views in (("train", 4), ("val", 4), ("test", 5)):
        folder = dataset / f"cars_{split}" / objects[split][0]
        names = [f"{view:06d}" for view in range(n_views)]
        assert sorted(p.stem for p in (folder / "rgb").glob("*.png")) == names
        assert sorted(p.stem for p in (folder / "pose").glob("*.txt")) == names
        assert _read_rgba(folder / "rgb" / "000000.png").shape == (SIZE, SIZE, 4)


def test_intrinsics_file_has_srn_format(dataset):
    text = (dataset / "cars_train" / "car_00000" / "intrinsics.txt").read_text()
    assert text == "32.812500 16.000000 16.000000 0.\n0. 0. 0.\n1.\n32 32\n"


@pytest.mark.skipif(FIXTURE_CAR is None, reason="SRN fixture not found")
def test_intrinsics_at_128_match_the_real_srn_file(tmp_path):
    root = make_dataset(tmp_path, 1, 1, 128, progress=False)
    ours = (root / "cars_train" / "car_00000" / "intrinsics.txt").read_text()
    assert ours == (FIXTURE_CAR / "intrinsics.txt").read_text()


def test_poses_are_rigid_float32_and_look_at_the_origin(dataset):
    K = srn_intrinsics(SIZE)
    for path in sorted(dataset.rglob("pose/*.txt")):
        text = path.read_text()
        assert text.endswith("\n") and text.count("\n") == 1
        assert all(float(np.float32(token)) == float(token) for token in text.split())
        c2w = _read_pose(path).double()
        rotation = c2w[:3, :3]
        torch.testing.assert_close(rotation.T @ rotation, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
        assert torch.det(rotation).item() == pytest.approx(1.0, abs=1e-6)
        assert c2w[3].tolist() == [0.0, 0.0, 0.0, 1.0]
        assert c2w[:3, 3].norm().item() == pytest.approx(1.3, abs=1e-6)
        uv, depth = project(torch.zeros(1, 3), K, c2w.float())
        torch.testing.assert_close(uv[0], torch.tensor([SIZE / 2, SIZE / 2]), atol=1e-4, rtol=0)
        assert depth.item() == pytest.approx(1.3, abs=1e-5)


def test_test_views_follow_the_spiral(dataset):
    folder = dataset / "cars_test" / "car_00002"
    poses = torch.stack([_read_pose(folder / "pose" / f"{view:06d}.txt") for view in range(5)])
    torch.testing.assert_close(poses, spiral_poses(5), atol=0, rtol=0)


def test_train_cameras_lie_on_the_elevation_band():
    poses = hemisphere_poses(np.random.default_rng(0), 500)
    elevation = torch.rad2deg(torch.asin(poses[:, 2, 3] / 1.3))
    assert 5.0 - 1e-3 <= elevation.min() and elevation.max() <= 75.0 + 1e-3
    assert elevation.min() < 10 and elevation.max() > 70


def test_files_have_car_inside_the_frame(dataset):
    for path in sorted(dataset.rglob("rgb/*.png")):
        alpha = _read_rgba(path)[..., 3]
        assert alpha[0].max() == alpha[-1].max() == alpha[:, 0].max() == alpha[:, -1].max() == 0
        assert alpha.sum() > 20


def test_png_composited_on_white_is_the_render_and_srn_reader_agrees(dataset):
    folder = dataset / "cars_train" / "car_00000"
    c2w = _read_pose(folder / "pose" / "000001.txt")
    rgb, alpha = render_car(_car(0), srn_intrinsics(SIZE), c2w, SIZE, SIZE)
    rgba = _read_rgba(folder / "rgb" / "000001.png")
    composited = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    assert 0 < (0 < alpha).sum() - (alpha == 1).sum()  # there are edge pixels
    np.testing.assert_allclose(composited, rgb.numpy(), atol=0.5 / 255 + 1e-6, rtol=0)
    np.testing.assert_allclose(rgba[..., 3], alpha.numpy(), atol=0.5 / 255 + 1e-6, rtol=0)

    item = SRNDataset(dataset, split="train", views_per_item=4, random_views=False)[0]
    view = item["view_ids"].tolist().index(1)
    torch.testing.assert_close(item["c2w"][view], c2w, atol=0, rtol=0)
    torch.testing.assert_close(item["K"][view], srn_intrinsics(SIZE), atol=0, rtol=0)
    from_reader = (item["images"][view].permute(1, 2, 0) + 1) / 2
    torch.testing.assert_close(from_reader, rgb, atol=0.5 / 255 + 1e-5, rtol=0)


def test_same_arguments_reuse_the_dataset_and_new_ones_replace_it(tmp_path):
    root = make_dataset(tmp_path / "cars", 4, 5, SIZE, seed=0, progress=False)
    first_image = root / "cars_train" / "car_00000" / "rgb" / "000000.png"
    stamp = first_image.stat().st_mtime_ns
    make_dataset(root, 4, 5, SIZE, seed=0, progress=False)
    assert first_image.stat().st_mtime_ns == stamp  # reused, not rendered again
    # Fewer objects and views into the same folder: nothing stale may remain
    # (no leftover views, no car in two splits): identical to a fresh folder.
    make_dataset(root, 3, 2, SIZE, seed=0, progress=False)
    fresh = make_dataset(tmp_path / "fresh", 3, 2, SIZE, seed=0, progress=False)
    assert _files(root) == _files(fresh)


def test_a_folder_with_foreign_split_folders_is_refused(tmp_path):
    (tmp_path / "cars_train" / "someone_elses_car").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="did not write"):
        make_dataset(tmp_path, 3, 2, SIZE, progress=False)
    assert (tmp_path / "cars_train" / "someone_elses_car").is_dir()


def test_attributes_json_records_the_values_and_what_each_view_shows(dataset):
    folder = dataset / "cars_train" / "car_00000"
    record = read_attributes(folder)
    assert record["attributes"] == _car(0).attributes()
    assert len(record["views"]) == 4
    for view in record["views"]:
        c2w = _read_pose(folder / "pose" / f"{view['view']}.txt")
        coverage = attribute_coverage(_car(0), srn_intrinsics(SIZE), c2w, SIZE, SIZE)
        assert view["coverage"] == pytest.approx({name: float(value) for name, value in coverage.items()}, abs=1e-6)
        assert view["shows"] == [name for name in ATTRIBUTES if coverage[name] >= VISIBLE_FRACTION]
    assert read_attributes(dataset / "cars_train") is None  # not an object folder


def test_a_dataset_of_an_older_generator_version_is_rendered_anew(tmp_path):
    root = make_dataset(tmp_path / "cars", 3, 2, SIZE, seed=0, progress=False)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    (root / MANIFEST_NAME).write_text(json.dumps({**manifest, "version": 1}))
    for path in root.rglob("attributes.json"):
        path.unlink()  # as version 1 wrote it
    make_dataset(root, 3, 2, SIZE, seed=0, progress=False)
    assert _files(root) == _files(make_dataset(tmp_path / "fresh", 3, 2, SIZE, seed=0, progress=False))
