import math

import pytest
import torch

from genvs import rendering
from genvs.cameras import make_intrinsics, orbit, pixel_rays


def test_stratified_samples_are_sorted_in_range_and_seeded():
    t = rendering.stratified_samples(0.8, 1.8, 32, (5, 7), generator=torch.Generator().manual_seed(0))
    assert t.shape == (5, 7, 32)
    assert torch.all(t[..., 1:] > t[..., :-1])
    assert t.min() >= 0.8 and t.max() < 1.8
    again = rendering.stratified_samples(0.8, 1.8, 32, (5, 7), generator=torch.Generator().manual_seed(0))
    other = rendering.stratified_samples(0.8, 1.8, 32, (5, 7), generator=torch.Generator().manual_seed(1))
    assert torch.equal(t, again) and not torch.equal(t, other)
    # One sample per bin.
    bins = ((t - 0.8) / (1.0 / 32)).floor()
    torch.testing.assert_close(bins, torch.arange(32.0).expand(5, 7, 32))


def test_unperturbed_samples_are_bin_starts():
    t = rendering.stratified_samples(1.0, 2.0, 4, perturb=False)
    torch.testing.assert_close(t, torch.tensor([1.0, 1.25, 1.5, 1.75]))


@pytest.mark.parametrize("sigma_value,length", [(0.5, 0.4), (3.0, 0.25), (20.0, 0.5)])
def test_constant_density_slab_opacity_is_analytic(sigma_value, length):
    # Slab [1.2, 1.2 + length) inside [1, 2), aligned with bin edges of 200 samples.
    t = rendering.stratified_samples(1.0, 2.0, 200, perturb=False)
    sigma = torch.where((t >= 1.2 - 1e-6) & (t < 1.2 + length - 1e-6), sigma_value, 0.0)
    values = torch.ones(200, 3)
    out = rendering.composite(sigma, values, t, t_far=2.0)
    expected = 1.0 - math.exp(-sigma_value * length)
    assert out["opacity"].item() == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(out["values"], torch.full((3,), expected), rtol=1e-4, atol=1e-6)


def test_jittered_samples_approximate_the_slab_integral():
    generator = torch.Generator().manual_seed(0)
    t = rendering.stratified_samples(1.0, 2.0, 256, (64,), generator=generator)
    sigma = torch.where((t >= 1.3) & (t < 1.7), 2.0, 0.0)
    out = rendering.composite(sigma, torch.ones(64, 256, 1), t, t_far=2.0)
    assert out["opacity"].mean().item() == pytest.approx(1.0 - math.exp(-0.8), abs=0.01)


def _composite_reference(sigma, values, t, background, t_far):
    """The DESIGN.md convention written out sample by sample in float64 (one ray at a time).

    Sample i covers [t_i, t_{i+1}), the last one [t_{S-1}, t_far) (t_far None: the previous spacing).
    """
    sigma, values, t = sigma.double().tolist(), values.double().tolist(), t.double().tolist()
    if t_far is None:
        t_far = t[-1] + (t[-1] - t[-2])
    edges = t[1:] + [t_far]
    weights, transmittance = [], 1.0
    for i in range(len(t)):
        alpha = 1.0 - math.exp(-sigma[i] * (edges[i] - t[i]))
        weights.append(alpha * transmittance)
        transmittance *= 1.0 - alpha
    opacity = sum(weights)
    composited = [sum(w * value[c] for w, value in zip(weights, values)) + (1.0 - opacity) * background[c]
                  for c in range(len(background))]
    depth = sum(w * ti for w, ti in zip(weights, t)) / opacity
    return {"weights": weights, "opacity": opacity, "values": composited, "depth": depth}


@pytest.mark.parametrize("t_far", [2.5, None])
def test_composite_matches_a_sample_by_sample_reference(t_far):
    generator = torch.Generator().manual_seed(1)
    sigma = torch.rand(10, 16, generator=generator) * 3
    values = torch.rand(10, 16, 4, generator=generator)
    t = rendering.stratified_samples(0.5, 2.5, 16, (10,), generator=generator)
    background = [1.0, 0.0, 0.5, 0.25]
    out = rendering.composite(sigma, values, t, background=torch.tensor(background), t_far=t_far)
    for ray in range(10):
        expected = _composite_reference(sigma[ray], values[ray], t[ray], background, t_far)
        for key in ("weights", "opacity", "values", "depth"):
            torch.testing.assert_close(out[key][ray].double(), torch.tensor(expected[key], dtype=torch.float64),
                                       rtol=1e-5, atol=1e-6, msg=lambda m: f"ray {ray}, {key}: {m}")
    assert 0.2 < out["opacity"].min() and out["opacity"].max() < 0.999  # the background really shows


def test_two_samples_by_hand():
    """t = (1, 2), t_far = 4: deltas (1, 2); sigma = ln 2 on both gives alpha = (1/2, 3/4),
    weights (1/2, 3/8), opacity 7/8, depth (1/2 * 1 + 3/8 * 2) / (7/8) = 10/7; colours (1, 0) and
    (0, 1) over a (-1, 1) background: (1/2 - 1/8, 3/8 + 1/8) = (3/8, 1/2)."""
    t = torch.tensor([1.0, 2.0])
    sigma = torch.full((2,), math.log(2.0))
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = rendering.composite(sigma, values, t, background=torch.tensor([-1.0, 1.0]), t_far=4.0)
    torch.testing.assert_close(out["weights"], torch.tensor([1 / 2, 3 / 8]))
    assert out["opacity"].item() == pytest.approx(7 / 8)
    assert out["depth"].item() == pytest.approx(10 / 7)
    torch.testing.assert_close(out["values"], torch.tensor([3 / 8, 1 / 2]))


def test_opaque_surface_gives_its_colour_and_depth():
    t = rendering.stratified_samples(0.0, 4.0, 400, perturb=False)
    sigma = torch.where(t >= 2.0, 1e4, 0.0)
    colours = torch.tensor([0.2, 0.4, 0.6]).expand(400, 3)
    out = rendering.composite(sigma, colours, t, background=1.0, t_far=4.0)
    torch.testing.assert_close(out["values"], torch.tensor([0.2, 0.4, 0.6]), atol=1e-4, rtol=0)
    assert out["depth"].item() == pytest.approx(2.0, abs=0.011)
    assert out["opacity"].item() == pytest.approx(1.0, abs=1e-5)


def test_empty_ray_has_zero_opacity_and_far_depth():
    t = rendering.stratified_samples(0.8, 1.8, 8, perturb=False)
    out = rendering.composite(torch.zeros(8), torch.rand(8, 3), t, background=1.0, t_far=1.8)
    assert out["opacity"].item() == 0.0
    torch.testing.assert_close(out["values"], torch.ones(3))
    assert out["depth"].item() == pytest.approx(1.8)


def test_importance_sampling_concentrates_where_weights_are_high():
    t = rendering.stratified_samples(0.0, 1.0, 64, (3,), perturb=False)
    weights = torch.zeros(3, 64)
    weights[:, 40:44] = 1.0  # mass on [0.625, 0.6875)
    fine = rendering.importance_samples(t, weights, 1.0, 128, generator=torch.Generator().manual_seed(0))
    assert fine.shape == (3, 128)
    assert torch.all(fine[..., 1:] >= fine[..., :-1])
    # Dilation widens the mass by one interval on each side: [39/64, 45/64).
    inside = ((fine >= 39 / 64) & (fine < 45 / 64)).float().mean().item()
    assert inside > 0.95
    assert ((fine >= 40 / 64) & (fine < 44 / 64)).float().mean().item() > 0.6
    uniform = rendering.importance_samples(t, torch.ones(3, 64), 1.0, 1000, perturb=False)
    assert uniform.mean().item() == pytest.approx(0.5, abs=1e-3)


def test_composite_gradients_flow_to_density_and_values():
    generator = torch.Generator().manual_seed(2)
    sigma = (torch.rand(4, 32, generator=generator) * 2).requires_grad_()
    values = torch.rand(4, 32, 16, generator=generator).requires_grad_()
    t = rendering.stratified_samples(0.8, 1.8, 32, (4,), generator=generator)
    out = rendering.composite(sigma, values, t, background=1.0, t_far=1.8)
    (out["values"].sum() + out["depth"].sum()).backward()
    assert sigma.grad.abs().sum() > 0 and values.grad.abs().sum() > 0


def test_render_rays_through_a_sphere_with_importance_samples():
    """A solid unit-density ball of radius 0.5: chord length gives the opacity exactly."""

    def ball(points):
        inside = (points.norm(dim=-1) < 0.5).float()
        return 4.0 * inside, torch.ones(points.shape[:-1] + (3,))

    origins = torch.tensor([[0.0, 0.0, -2.0], [0.3, 0.0, -2.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = rendering.render_rays(ball, origins, directions, 1.0, 3.0, n_stratified=64, n_importance=128,
                                generator=torch.Generator().manual_seed(0))
    chords = torch.tensor([1.0, 2 * math.sqrt(0.25 - 0.09)])
    torch.testing.assert_close(out["opacity"], 1 - torch.exp(-4.0 * chords), atol=0.02, rtol=0)
    assert out["t"].shape == (2, 192)
    # The importance samples cluster inside the ball.
    inside = ((out["t"] > 1.5) & (out["t"] < 2.5)).float().mean(-1)
    assert torch.all(inside > 0.6)


def test_importance_samples_reach_a_surface_that_starts_inside_a_coarse_interval():
    """The density at t_i stands for [t_i, t_{i+1}), so a wall starting mid-interval puts its
    weight on the next interval; new samples must still land between the wall and that sample."""
    t = rendering.stratified_samples(0.0, 1.0, 8, perturb=False)  # 0, 0.125, ...
    sigma = torch.where(t >= 0.55, 50.0, 0.0)  # the wall starts at 0.55, inside [0.5, 0.625)
    weights = rendering.composite(sigma, torch.ones(8, 1), t, t_far=1.0)["weights"]
    assert weights[4] == 0 and weights[5] > 0.99
    fine = rendering.importance_samples(t, weights, 1.0, 64, perturb=False)
    assert ((fine >= 0.5) & (fine < 0.625)).sum() >= 8


def test_importance_sampling_improves_depth_of_a_surface():
    """Same number of composited samples: stratified + importance beats stratified alone on depth."""

    def wall(points):
        return torch.where(points[..., 2] > 1.4, 30.0, 0.0), torch.ones(points.shape[:-1] + (1,))

    origin, direction = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    exact = rendering.render_rays(wall, origin, direction, 0.8, 1.8, 8192, perturb=False)["depth"]

    def depth_error(n_stratified, n_importance):
        depths = [rendering.render_rays(wall, origin, direction, 0.8, 1.8, n_stratified, n_importance,
                                        generator=torch.Generator().manual_seed(seed))["depth"] for seed in range(20)]
        return (torch.stack(depths) - exact).abs().mean().item()

    assert depth_error(64, 64) < 0.8 * depth_error(128, 0)


def test_image_rays_pair_each_pixel_with_its_ray_in_view_row_column_order():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 4, 5, 6, generator=generator)  # [B, V, C, H, W]
    K = make_intrinsics(6.0, 3.0, 2.5).expand(2, 3, 3, 3)
    c2w = torch.stack([orbit(3, start_azimuth_deg=30.0 * b) for b in range(2)])
    origins, directions, colours = rendering.image_rays(images, K, c2w)
    assert origins.shape == directions.shape == (2, 3 * 5 * 6, 3) and colours.shape == (2, 3 * 5 * 6, 4)
    all_origins, all_directions = pixel_rays(K, c2w, 5, 6)
    b, v, i, j = 1, 2, 3, 4
    index = v * 5 * 6 + i * 6 + j
    torch.testing.assert_close(colours[b, index], images[b, v, :, i, j])
    torch.testing.assert_close(directions[b, index], all_directions[b, v, i, j])
    torch.testing.assert_close(origins[b, index], all_origins[b, v, i, j])
    one_K = rendering.image_rays(images[0], make_intrinsics(6.0, 3.0, 2.5), c2w[0])  # one K for all views
    torch.testing.assert_close(one_K[1], directions[0])


def test_render_in_chunks_matches_one_pass():
    def field(points):  # a soft ball of radius 0.5 with position-coloured values
        sigma = 20.0 * torch.sigmoid(20.0 * (0.5 - points.norm(dim=-1)))
        return sigma, points.abs()

    K, c2w = make_intrinsics(8.0, 4.0, 4.0), orbit(2)
    origins, directions = (rays.reshape(2, -1, 3) for rays in pixel_rays(K, c2w, 8, 8))  # [B=2, R=64, 3]
    def render(o, d):
        return rendering.render_rays(field, o, d, 0.8, 1.8, 16, 8, background=1.0, perturb=False)

    whole, chunked = render(origins, directions), rendering.render_in_chunks(render, origins, directions, chunk=7)
    for key in ("values", "depth", "opacity"):
        torch.testing.assert_close(chunked[key], whole[key])
    assert whole["opacity"].max() > 0.5
