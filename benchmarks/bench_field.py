"""Feature rendering throughput of the image-to-field model, against a per-view-MLP version.

For the "cpu" and "paper" field presets, one object with ``V`` = 1, 2 and 3 input views is
rendered from one target camera into a feature image of the preset's ``render_size``
(stratified + importance samples, no gradients). Throughput is ``rays x samples per ray /
seconds``, with ``samples per ray = n_stratified + n_importance`` (the final sample set; the
time also includes the coarse pass that places the importance samples).

Two ways to combine views, timed in the same run on the same rays:

* **genvs** (:meth:`genvs.field.FeatureField.render_rays`): average the ``V`` views' sampled
  features, run the MLP once per point;
* **per-view MLP** (the seed reimplementation's order): run the MLP on each view's features
  and average its raw outputs, so the MLP runs ``V`` times per point.

The ratio of their times is the speed-up. Also the encoder's time per input image.
Prints a table and writes ``benchmarks/results/field.json``; medians of a few repeats after a
warm-up, on ``--device`` (default CUDA if present, else CPU) with ``--threads`` CPU threads.

    python benchmarks/bench_field.py
"""

from __future__ import annotations

import torch
from common import device_arguments, device_name, median_seconds, write_result

from genvs import encoder, rendering
from genvs.cameras import make_intrinsics, orbit, pixel_rays, rescale_intrinsics
from genvs.field import (
    PRESETS,
    FeatureField,
    InputViews,
    build_field,
    combine_views,
    decode,
    sample_volumes,
    volume_coordinates,
)

VIEW_COUNTS = (1, 2, 3)


def _cameras(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` cameras 1.3 units from the origin at 20 degrees elevation, 90 degrees apart: K ``[1, n, 3, 3]``,
    c2w ``[1, n, 4, 4]``."""
    return make_intrinsics(1.0 * size, size / 2, size / 2).expand(1, n, 3, 3), orbit(n, sweep_deg=90.0 * n)[None]


def per_view_mlp_render(field: FeatureField, views: InputViews, origins: torch.Tensor,
                        directions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Render with the MLP applied to each view's features, raw outputs averaged over visible views."""
    config = field.config

    def field_fn(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = points.reshape(points.shape[0], -1, 3)
        coords, visible = volume_coordinates(flat.unsqueeze(1), views.K, views.c2w, config.encoder.image_size,
                                             config.near, config.far)
        raw, n_seen = combine_views(field.mlp(sample_volumes(views.volumes, coords)), visible)
        sigma, features = decode(raw)
        seen = n_seen > 0
        return ((sigma * seen).reshape(points.shape[:-1]),
                (features * seen.unsqueeze(-1)).reshape(points.shape[:-1] + (-1,)))

    return rendering.render_rays(field_fn, origins, directions, config.near, config.far, config.n_stratified,
                                 config.n_importance, config.background, perturb=False)


def time_preset(preset: str, device: torch.device, repeats: int) -> list[dict]:
    """Rows of ``{preset, views, rays, samples_per_ray, genvs_s, per_view_s, ...}`` for each view count."""
    config = PRESETS[preset]
    field = build_field(config).to(device).eval()
    size, side = config.encoder.image_size, config.render_size
    rows = []
    for n_views in VIEW_COUNTS:
        K, c2w = (tensor.to(device) for tensor in _cameras(n_views + 1, size))
        images = torch.rand(1, n_views, 3, size, size, device=device) * 2 - 1
        with torch.no_grad():
            views = field.encode(images, K[:, :n_views], c2w[:, :n_views])
            target_K = rescale_intrinsics(K[:, n_views:], side / size)
            origins, directions = (rays.reshape(1, -1, 3)
                                   for rays in pixel_rays(target_K, c2w[:, n_views:], side, side))
            ours = median_seconds(lambda: field.render_rays(views, origins, directions), repeats, device)
            naive = median_seconds(lambda: per_view_mlp_render(field, views, origins, directions), repeats, device)
            if n_views == 1:  # one view: both orders compute the same thing
                torch.testing.assert_close(per_view_mlp_render(field, views, origins, directions)["values"],
                                           field.render_rays(views, origins, directions)["values"])
        samples = origins.shape[1] * (config.n_stratified + config.n_importance)
        rows.append({"preset": preset, "views": n_views, "render_size": side, "rays": origins.shape[1],
                     "samples_per_ray": config.n_stratified + config.n_importance,
                     "genvs_s": ours, "per_view_mlp_s": naive,
                     "genvs_samples_per_s": samples / ours, "per_view_mlp_samples_per_s": samples / naive,
                     "speedup": naive / ours})
    return rows


def time_encoder(preset: str, device: torch.device, repeats: int) -> dict:
    """Seconds to encode one image into a feature volume (no gradients)."""
    config = PRESETS[preset].encoder
    model = encoder.build_encoder(config).to(device).eval()
    images = torch.rand(1, 3, config.image_size, config.image_size, device=device) * 2 - 1
    with torch.no_grad():
        seconds = median_seconds(lambda: model(images), repeats, device)
    return {"preset": preset, "params": encoder.parameter_count(config), "volume": list(config.volume_shape),
            "seconds_per_image": seconds}


def print_table(rows: list[dict], encoders: list[dict]) -> None:
    print(f"{'preset':7s}{'views':>6s}{'rays':>7s}{'S':>5s}"
          f"{'genvs Msamples/s':>18s}{'per-view MLP':>14s}{'speed-up':>10s}")
    for row in rows:
        print(f"{row['preset']:7s}{row['views']:6d}{row['rays']:7d}{row['samples_per_ray']:5d}"
              f"{row['genvs_samples_per_s'] / 1e6:18.2f}{row['per_view_mlp_samples_per_s'] / 1e6:14.2f}"
              f"{row['speedup']:9.2f}x")
    for row in encoders:
        print(f"encoder {row['preset']}: {row['params']:,} parameters, volume {row['volume']}, "
              f"{1000 * row['seconds_per_image']:.1f} ms per image")


def main() -> None:
    args = device_arguments(__doc__.splitlines()[0])
    device = args.device
    rows = [row for preset in ("cpu", "paper") for row in time_preset(preset, device, args.repeats)]
    encoders = [time_encoder(preset, device, args.repeats) for preset in ("cpu", "paper")]
    print_table(rows, encoders)
    write_result("field", {
        "benchmark": "FeatureField.render_rays (views averaged, MLP once per point) vs the MLP per view, "
                     "one target feature image per call; encoder time per image",
        "device": device_name(device),
        "rendering": rows,
        "encoder": encoders,
    })


if __name__ == "__main__":
    main()
