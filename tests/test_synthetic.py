import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genvs.cameras import pixel_rays, project, spherical_to_c2w
from genvs.data import SRNDataset, srn_fixture_dir
from genvs.data.synthetic import (
    ATTRIBUTES,
    BOUNDING_RADIUS,
    MANIFEST_NAME,
    VISIBLE_FRACTION,
    attribute_coverage,
    car_primitives,
    cast_rays,
    hemisphere_poses,
    make_dataset,
    read_attributes,
    SPLITS,
    render_car,
    sample_car_params,
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


def test_cars_fit_the_bounding_sphere_and_stand_on_the_ground():
    for index in range(100):
        params = _car(index)
        car = car_primitives(params)
        low, high = car.bounds()
        assert 0.5 * (high - low).norm().item() <= BOUNDING_RADIUS + 1e-5
        torch.testing.assert_close(low + high, torch.zeros(3), atol=1e-6, rtol=0)  # centred
        wheel_bottoms = car.wheel_centres[:, 2] - car.wheel_radius
        torch.testing.assert_close(wheel_bottoms, torch.full((4,), params.z_ground), atol=1e-6, rtol=0)
        assert low[2].item() == pytest.approx(params.z_ground, abs=1e-6)


def test_cars_vary_in_shape_and_colour():
    cars = [_car(index) for index in range(20)]
    assert len({round(car.length, 4) for car in cars}) == 20
    hues = [np.argmax(car.paint) for car in cars]
    assert len(set(hues)) == 3  # red-, green- and blue-dominant paints all occur


def test_car_is_inside_the_frame_and_visible_from_extreme_cameras():
    K = srn_intrinsics(SIZE)
    azimuth = torch.arange(8) * (math.pi / 4)
    for elevation_deg in (5.0, 75.0):
        poses = spherical_to_c2w(azimuth, torch.full((8,), math.radians(elevation_deg)), 1.3)
        for index in range(3):
            _, alpha = render_car(_car(index), K, poses, SIZE, SIZE)
            border = torch.cat([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], dim=-1)
            assert border.max() == 0
            assert (alpha.flatten(1).sum(-1) > 20).all()


def test_files_have_car_inside_the_frame(dataset):
    for path in sorted(dataset.rglob("rgb/*.png")):
        alpha = _read_rgba(path)[..., 3]
        assert alpha[0].max() == alpha[-1].max() == alpha[:, 0].max() == alpha[:, -1].max() == 0
        assert alpha.sum() > 20


def test_hit_depths_are_within_srn_near_far():
    K = srn_intrinsics(SIZE)
    poses = hemisphere_poses(np.random.default_rng(1), 8)
    for index in range(3):
        _, hit, depth, _ = cast_rays(car_primitives(_car(index)), *pixel_rays(K, poses, SIZE, SIZE))
        assert hit.any()
        assert depth[hit].min() >= 0.8 and depth[hit].max() <= 1.8
        assert torch.isinf(depth[~hit]).all()


def _count(rgb: torch.Tensor, low: tuple, high: tuple) -> int:
    """Pixels whose colour lies in the box [low, high] per channel."""
    inside = (rgb >= torch.tensor(low)) & (rgb <= torch.tensor(high))
    return int(inside.all(-1).sum())


def test_front_view_shows_headlamps_and_rear_view_shows_red_taillamps():
    blue_car = dataclasses.replace(_car(0), paint=(0.1, 0.2, 0.8))
    poses = spherical_to_c2w(torch.tensor([0.0, math.pi]), torch.tensor([0.2, 0.2]), 1.3)  # front, rear
    rgb, _ = render_car(blue_car, srn_intrinsics(64), poses, 64, 64)
    red, pale_yellow = ((0.6, 0.0, 0.0), (1.0, 0.2, 0.2)), ((0.8, 0.75, 0.4), (1.0, 1.0, 0.8))
    front, rear = rgb
    assert _count(front, *pale_yellow) >= 4 and _count(front, *red) == 0
    assert _count(rear, *red) >= 4 and _count(rear, *pale_yellow) == 0


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


def test_render_window_matches_rays_over_the_full_image():
    K, car = srn_intrinsics(SIZE), _car(1)
    poses = hemisphere_poses(np.random.default_rng(2), 4)
    rgb, alpha = render_car(car, K, poses, SIZE, SIZE, supersample=1)
    full_rgb, full_hit, _, _ = cast_rays(car_primitives(car), *pixel_rays(K, poses, SIZE, SIZE))
    assert (alpha != full_hit.float()).sum() <= 2  # only a ray grazing an edge may flip
    assert ((rgb - full_rgb).abs().amax(-1) > 1e-4).sum() <= 2


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


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


def _mutual_information_bits(x: list, y: list) -> float:
    """Plug-in estimate of I(X; Y) = sum p(x, y) log2(p(x, y) / (p(x) p(y))) from paired samples."""
    pairs, n = list(zip(x, y)), len(x)
    joint = {pair: pairs.count(pair) / n for pair in set(pairs)}
    p_x = {value: x.count(value) / n for value in set(x)}
    p_y = {value: y.count(value) / n for value in set(y)}
    return sum(p * math.log2(p / (p_x[a] * p_y[b])) for (a, b), p in joint.items())


def test_hidden_attributes_are_independent_of_the_shown_ones_and_each_is_sometimes_hidden():
    # 300 cars, 4 random views each; what each view shows comes from the ray caster.
    K, shown_value, hidden_value, shows_count = srn_intrinsics(SIZE), [], [], {name: 0 for name in ATTRIBUTES}
    n_views = 0
    for index in range(300):
        rng = np.random.default_rng([3, index])
        car = sample_car_params(rng)
        coverage = attribute_coverage(car, K, hemisphere_poses(rng, 4), SIZE, SIZE, supersample=1)
        for view in range(4):
            shows = {name for name in ATTRIBUTES if coverage[name][view] >= VISIBLE_FRACTION}
            assert not {"left_panel", "right_panel"} <= shows  # no view shows every attribute
            for name in shows:
                shows_count[name] += 1
            for seen in shows:
                for hidden in set(ATTRIBUTES) - shows:
                    shown_value.append((seen, getattr(car, seen)))
                    hidden_value.append((hidden, getattr(car, hidden)))
            n_views += 1
    for name, count in shows_count.items():
        assert 0.1 * n_views < count < n_views  # shown in some views, hidden in others
    # What a view shows tells nothing about what it hides: I(shown; hidden) for each (shown, hidden) pair of
    # attributes is at the plug-in estimator's bias, (|X| - 1)(|Y| - 1) / (2 n ln 2) ~ 0.005 bits here.
    for seen in ATTRIBUTES:
        for hidden in set(ATTRIBUTES) - {seen}:
            rows = [i for i, (a, b) in enumerate(zip(shown_value, hidden_value)) if a[0] == seen and b[0] == hidden]
            x, y = [shown_value[i][1] for i in rows], [hidden_value[i][1] for i in rows]
            if len(rows) > 100:
                assert _mutual_information_bits(x, y) < 0.03, (seen, hidden, len(rows))
                assert _mutual_information_bits(x, x) > 0.9  # the estimator does see a dependence
    values = {name: [getattr(sample_car_params(np.random.default_rng([3, i])), name) for i in range(300)]
              for name in ATTRIBUTES}
    for name, drawn in values.items():  # uniform over its values
        for value in ATTRIBUTES[name]:
            assert abs(drawn.count(value) / 300 - 1 / len(ATTRIBUTES[name])) < 0.1


def test_coverage_counts_the_pixels_an_attribute_colours():
    # Independent of the ray caster's primitive ids: repaint one attribute and count the pixels that change.
    K = srn_intrinsics(SIZE)
    poses = hemisphere_poses(np.random.default_rng(5), 6)
    red_car = dataclasses.replace(_car(2), paint=(0.8, 0.1, 0.1))
    for name in ATTRIBUTES:
        white = dataclasses.replace(red_car, **{name: "white"})
        coverage = attribute_coverage(white, K, poses, SIZE, SIZE, supersample=1)[name]
        painted = dataclasses.replace(white, **{name: "paint"})
        changed = ((render_car(white, K, poses, SIZE, SIZE, supersample=1)[0]
                    - render_car(painted, K, poses, SIZE, SIZE, supersample=1)[0]).abs().amax(-1) > 0.05)
        torch.testing.assert_close(coverage * SIZE * SIZE, changed.flatten(1).sum(-1).float(), atol=0, rtol=0)


def test_a_camera_on_the_left_shows_the_left_panel_and_not_the_right_one():
    left, right = spherical_to_c2w(torch.tensor([math.pi / 2, -math.pi / 2]), torch.tensor([0.3, 0.3]), 1.3)
    coverage = attribute_coverage(_car(0), srn_intrinsics(SIZE), torch.stack([left, right]), SIZE, SIZE)
    assert coverage["left_panel"][0] > 0.03 and coverage["right_panel"][0] == 0  # +y is the car's left
    assert coverage["right_panel"][1] > 0.03 and coverage["left_panel"][1] == 0
    with pytest.raises(ValueError, match="left_panel must be one of"):
        dataclasses.replace(_car(0), left_panel="purple")


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
