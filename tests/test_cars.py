import dataclasses
import math

import numpy as np
import pytest
import torch

from genvs.cameras import pixel_rays, spherical_to_c2w
from genvs.data.cars import (
    ATTRIBUTES,
    BOUNDING_RADIUS,
    VISIBLE_FRACTION,
    attribute_coverage,
    car_primitives,
    cast_rays,
    render_car,
    render_car_with_coverage,
    sample_car_params,
)
from genvs.data.synthetic import hemisphere_poses, srn_intrinsics

SIZE = 32


def _car(index: int = 0, seed: int = 0):
    return sample_car_params(np.random.default_rng([seed, index]))


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


def test_render_window_matches_rays_over_the_full_image():
    K, car = srn_intrinsics(SIZE), _car(1)
    poses = hemisphere_poses(np.random.default_rng(2), 4)
    rgb, alpha = render_car(car, K, poses, SIZE, SIZE, supersample=1)
    full_rgb, full_hit, _, _ = cast_rays(car_primitives(car), *pixel_rays(K, poses, SIZE, SIZE))
    assert (alpha != full_hit.float()).sum() <= 2  # only a ray grazing an edge may flip
    assert ((rgb - full_rgb).abs().amax(-1) > 1e-4).sum() <= 2


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


def test_one_ray_cast_gives_the_render_and_the_coverage():
    K, car, poses = srn_intrinsics(SIZE), _car(3), hemisphere_poses(np.random.default_rng(4), 2)
    rgb, alpha, coverage = render_car_with_coverage(car, K, poses, SIZE, SIZE, supersample=2)
    expected_rgb, expected_alpha = render_car(car, K, poses, SIZE, SIZE, supersample=2)
    assert torch.equal(rgb, expected_rgb) and torch.equal(alpha, expected_alpha)
    expected = attribute_coverage(car, K, poses, SIZE, SIZE, supersample=2)
    assert list(coverage) == list(ATTRIBUTES)
    assert all(torch.equal(coverage[name], expected[name]) for name in ATTRIBUTES)
