import math

import pytest
import torch

from genvs import cameras


def _random_pose(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    azimuth = torch.rand((), generator=generator) * 2 * math.pi
    elevation = torch.rand((), generator=generator) * 1.2 + 0.1
    return cameras.spherical_to_c2w(azimuth, elevation, 1.3)


def test_pixel_rays_centre_pixel_points_along_optical_axis():
    K = cameras.make_intrinsics(100.0, 32.0, 32.0)
    c2w = _random_pose(0)
    origins, directions = cameras.pixel_rays(K, c2w, 64, 64)
    assert origins.shape == directions.shape == (64, 64, 3)
    # Pixel (31, 31) has its centre at (31.5, 31.5): half a pixel left of and above the axis.
    d_cam = (directions[31, 31] @ c2w[:3, :3])
    torch.testing.assert_close(d_cam, torch.tensor([-0.5 / 100, -0.5 / 100, 1.0]))
    torch.testing.assert_close(origins[5, 7], c2w[:3, 3])


def test_rays_have_unit_camera_depth_so_t_is_depth():
    K = cameras.make_intrinsics(80.0, 24.0, 20.0)
    c2w = _random_pose(1)
    origins, directions = cameras.pixel_rays(K, c2w, 40, 48)
    points = origins + 1.7 * directions
    _, depth = cameras.project(points.reshape(-1, 3), K, c2w)
    torch.testing.assert_close(depth, torch.full_like(depth, 1.7))


def test_project_pixel_rays_round_trip_to_pixel_centres():
    K = cameras.make_intrinsics(131.25, 64.0, 64.0)
    c2w = _random_pose(2)
    origins, directions = cameras.pixel_rays(K, c2w, 8, 8)
    uv, _ = cameras.project((origins + 1.2 * directions).reshape(-1, 3), K, c2w)
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    expected = torch.stack([cols + 0.5, rows + 0.5], dim=-1).reshape(-1, 2)
    torch.testing.assert_close(uv, expected, atol=1e-4, rtol=0)


def test_project_unproject_round_trip_batched():
    generator = torch.Generator().manual_seed(3)
    K = torch.stack([cameras.make_intrinsics(90.0 + 10 * i, 30.0, 34.0) for i in range(3)])
    c2w = torch.stack([_random_pose(i) for i in range(3)])
    points = torch.randn(3, 50, 3, generator=generator) * 0.4
    uv, depth = cameras.project(points, K, c2w)
    assert uv.shape == (3, 50, 2) and depth.shape == (3, 50)
    torch.testing.assert_close(cameras.unproject(uv, depth, K, c2w), points, atol=1e-5, rtol=0)


def test_look_at_axes_are_opencv_and_rigid():
    eye = torch.tensor([0.0, -2.0, 0.0])
    c2w = cameras.look_at(eye, torch.zeros(3))
    rotation = c2w[:3, :3]
    # Looking along +y with z up: right is +x, down is -z, forward is +y.
    torch.testing.assert_close(rotation[:, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(rotation[:, 1], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(rotation[:, 2], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(c2w[:3, 3], eye)
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(3))
    assert torch.det(rotation) == pytest.approx(1.0)


def test_look_at_target_projects_to_principal_point():
    K = cameras.make_intrinsics(100.0, 30.0, 20.0)
    target = torch.tensor([0.1, -0.2, 0.05])
    c2w = cameras.look_at(torch.tensor([1.0, 0.7, 0.6]), target)
    uv, depth = cameras.project(target[None], K, c2w)
    torch.testing.assert_close(uv[0], torch.tensor([30.0, 20.0]))
    assert depth.item() > 0


def test_look_at_rejects_view_parallel_to_up():
    with pytest.raises(ValueError, match="parallel"):
        cameras.look_at(torch.tensor([0.0, 0.0, 2.0]), torch.zeros(3))


def test_world_up_points_up_on_screen():
    K = cameras.make_intrinsics(100.0, 32.0, 32.0)
    c2w = cameras.spherical_to_c2w(torch.tensor(0.3), torch.tensor(0.4), 1.3)
    uv, _ = cameras.project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.2]]), K, c2w)
    assert uv[1, 1] < uv[0, 1]  # higher in the world = smaller row index


def test_spherical_round_trip():
    azimuth, elevation = torch.tensor([0.5, -2.0, 3.0]), torch.tensor([0.1, 0.7, 1.2])
    c2w = cameras.spherical_to_c2w(azimuth, elevation, 1.3)
    back_azimuth, back_elevation, radius = cameras.c2w_to_spherical(c2w)
    torch.testing.assert_close(back_azimuth, azimuth)
    torch.testing.assert_close(back_elevation, elevation)
    torch.testing.assert_close(radius, torch.full((3,), 1.3))


def test_orbit_and_spiral_shapes_and_geometry():
    poses = cameras.orbit(12, radius=1.3, elevation_deg=30.0, start_azimuth_deg=45.0)
    assert poses.shape == (12, 4, 4)
    azimuth, elevation, radius = cameras.c2w_to_spherical(poses)
    torch.testing.assert_close(radius, torch.full((12,), 1.3))
    torch.testing.assert_close(elevation, torch.full((12,), math.radians(30.0)))
    assert azimuth[0].item() == pytest.approx(math.radians(45.0), abs=1e-5)
    spiral = cameras.spiral(20, elevation_range_deg=(10.0, 50.0))
    _, spiral_elevation, _ = cameras.c2w_to_spherical(spiral)
    assert torch.all(spiral_elevation[1:] > spiral_elevation[:-1])


def test_rescale_intrinsics_keeps_rays_through_same_scene_points():
    K = cameras.make_intrinsics(131.25, 64.0, 64.0)
    c2w = _random_pose(4)
    K_small = cameras.rescale_intrinsics(K, 0.5)
    torch.testing.assert_close(K_small, cameras.make_intrinsics(65.625, 32.0, 32.0))
    # A 2x2 block of fine pixels averages to the coarse pixel's ray.
    _, fine = cameras.pixel_rays(K, c2w, 128, 128)
    _, coarse = cameras.pixel_rays(K_small, c2w, 64, 64)
    block_mean = fine[:2, :2].reshape(-1, 3).mean(0)
    torch.testing.assert_close(block_mean, coarse[0, 0], atol=1e-6, rtol=0)


def test_gradients_flow_through_rays_and_projection():
    K = cameras.make_intrinsics(100.0, 16.0, 16.0).requires_grad_()
    c2w = _random_pose(5).requires_grad_()
    origins, directions = cameras.pixel_rays(K, c2w, 4, 4)
    uv, depth = cameras.project(origins + directions, K, c2w)
    (uv.sum() + depth.sum() + directions.sum()).backward()
    assert K.grad is not None and torch.isfinite(K.grad).all()
    assert c2w.grad is not None and c2w.grad.abs().sum() > 0


def test_trajectories_start_at_the_input_camera_and_move_gradually():
    start = cameras.spherical_to_c2w(torch.tensor(0.7), torch.tensor(0.3), 1.3)
    for swing in (0.0, 25.0):
        poses = cameras.trajectory_from(start, 24, sweep_deg=360.0, elevation_swing_deg=swing)
        assert poses.shape == (24, 4, 4)
        torch.testing.assert_close(poses[0], start)
        azimuth, elevation, radius = cameras.c2w_to_spherical(poses)
        torch.testing.assert_close(radius, torch.full((24,), 1.3))  # same distance to the object
        steps = torch.arange(24) / 24
        expected_elevation = 0.3 + math.radians(swing) * torch.sin(2 * math.pi * steps)
        torch.testing.assert_close(elevation, expected_elevation, atol=1e-5, rtol=0)
        step = torch.remainder(azimuth.diff(), 2 * math.pi)
        torch.testing.assert_close(step, torch.full((23,), 2 * math.pi / 24), atol=1e-5, rtol=0)  # 15 degrees each
        rotations = poses[:, :3, :3]
        torch.testing.assert_close(rotations @ rotations.transpose(1, 2), torch.eye(3).expand(24, 3, 3), atol=1e-5,
                                   rtol=0)
    # Rodrigues against a known rotation: 90 degrees about z takes x to y
    torch.testing.assert_close(cameras.rotation_about(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(math.pi / 2))
                               @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_geometry_stays_float32_under_bf16_autocast():
    """SRN's 128 px camera: rays and projections under bf16 autocast equal the float32 ones (< 0.05 px).

    Without :func:`cameras.full_precision` the projected pixels move by about a pixel.
    """
    K = cameras.make_intrinsics(131.25, 64.0, 64.0)  # SRN cars' intrinsics
    c2w = _random_pose(3)
    points = torch.rand(4096, 3, generator=torch.Generator().manual_seed(0)) - 0.5  # the object's box

    def geometry():
        uv, depth = cameras.project(points, K, c2w)
        _, directions = cameras.pixel_rays(K, c2w, 128, 128)
        return uv, depth, directions, cameras.unproject(uv, depth, K, c2w)

    exact = geometry()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = geometry()
    assert all(value.dtype == torch.float32 for value in autocast)
    uv_error, depth_error, direction_error, point_error = ((a - b).abs().max().item() for a, b in zip(autocast, exact))
    assert uv_error < 0.05  # pixels
    assert depth_error * 64 / 1.0 < 0.05  # in planes of a 64-plane volume over [0.8, 1.8]
    assert direction_error * 131.25 < 0.05  # a direction error of e moves a point at depth 1 by f e pixels
    assert point_error < 1e-4
    torch.testing.assert_close(autocast[-1], points, atol=1e-5, rtol=0)  # the round trip is exact too


def test_full_precision_keeps_float64_and_lifts_half_precision():
    K = cameras.make_intrinsics(131.25, 64.0, 64.0)
    c2w = _random_pose(4)
    points = torch.rand(8, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    assert cameras.project(points.double(), K.double(), c2w.double())[0].dtype == torch.float64
    uv_half, _ = cameras.project(points.bfloat16(), K, c2w)
    assert uv_half.dtype == torch.float32
    torch.testing.assert_close(uv_half, cameras.project(points.bfloat16().float(), K, c2w)[0])


def test_intrinsics_inverse_in_closed_form_matches_a_general_inverse():
    generator = torch.Generator().manual_seed(0)
    K = torch.zeros(5, 4, 3, 3, dtype=torch.float64)
    K[..., 0, 0] = 50 + 100 * torch.rand(5, 4, generator=generator, dtype=torch.float64)  # fx
    K[..., 1, 1] = 50 + 100 * torch.rand(5, 4, generator=generator, dtype=torch.float64)  # fy
    K[..., 0, 1] = torch.randn(5, 4, generator=generator, dtype=torch.float64)  # skew
    K[..., :2, 2] = 64 * torch.rand(5, 4, 2, generator=generator, dtype=torch.float64)  # cx, cy
    K[..., 2, 2] = 1.0
    K_inv = cameras.invert_intrinsics(K)
    torch.testing.assert_close(K_inv, torch.linalg.inv(K))
    torch.testing.assert_close(K_inv @ K, torch.eye(3, dtype=torch.float64).expand(5, 4, 3, 3))


def test_pluecker_rays_name_the_ray_through_each_pixel():
    K_cam = cameras.make_intrinsics(10.0, 4.5, 3.5)  # the principal point on the centre of pixel (4, 3)
    c2w = cameras.look_at(torch.tensor([0.3, -1.2, 0.5]), torch.zeros(3))
    rays = cameras.pluecker_rays(K_cam, c2w, 8, 8)  # [6, H, W]
    direction, moment = rays[:3], rays[3:]
    torch.testing.assert_close(direction.norm(dim=0), torch.ones(8, 8))
    # the ray through the principal point is the optical axis, through the origin: direction = the camera's z axis
    torch.testing.assert_close(direction[:, 3, 4], c2w[:3, 2])
    torch.testing.assert_close(moment[:, 3, 4], torch.zeros(3), atol=1e-6, rtol=0)
    # elsewhere |o x d| is the ray's distance from the origin: |o - (o . d) d| computed independently
    centre = c2w[:3, 3]
    along = (direction * centre[:, None, None]).sum(0)
    distance = (centre[:, None, None] - along * direction).norm(dim=0)
    torch.testing.assert_close(moment.norm(dim=0), distance, atol=1e-6, rtol=1e-5)
    assert (moment * direction).sum(0).abs().max() < 1e-6  # the moment is perpendicular to the direction
    # pixel (0, 0) looks up-left of the axis: its angle to the axis is atan(|offset| / focal)
    offset = math.hypot(4.5 - 0.5, 3.5 - 0.5)
    angle = torch.acos((direction[:, 0, 0] * c2w[:3, 2]).sum())
    assert math.isclose(float(angle), math.atan(offset / 10.0), rel_tol=1e-5)
