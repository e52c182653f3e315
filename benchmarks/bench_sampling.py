"""Novel-view sampling cost per preset: feature rendering and denoising, one view alone and views batched.

For each model preset, one object with one input view is encoded, its features rendered from
target cameras and a view sampled with the stochastic sampler (Euler with churn, ``--steps``
denoiser calls). Timed in the same run (medians after a warm-up, no gradients):

* **render**: encode the input view and render the field's features for one target camera;
* **sample, 1 view**: :func:`genvs.sampling.sample_novel_views` for one target (render included);
* **sample, N views batched**: the same for ``--batch`` targets in one call, per view.

Ratios: batched vs one-at-a-time seconds per view (the speed-up of batching targets) and the share
of a view's time spent rendering features. Prints a table and writes
``benchmarks/results/sampling.json`` (``sampling_<device type>.json`` off the CPU).

    python benchmarks/bench_sampling.py                              # smoke and cpu presets
    python benchmarks/bench_sampling.py --presets smoke cpu paper --repeats 2  # paper: 128 px, 115M U-Net
"""

from __future__ import annotations

import torch
from common import device_arguments, device_name, median_seconds, write_result

from genvs.cameras import make_intrinsics, orbit
from genvs.denoiser import k_diffusion
from genvs.model import PRESETS, GeNVS
from genvs.sampling import sample_novel_views, sampling_options


def time_preset(preset: str, device: torch.device, repeats: int, steps: int, batch: int) -> dict:
    config = PRESETS[preset]
    size = config.field.encoder.image_size
    model = GeNVS(config, seed=0).to(device)
    K = make_intrinsics(1.0 * size, size / 2, size / 2).to(device)
    c2w = orbit(batch + 1, sweep_deg=360.0).to(device)
    image = torch.rand(1, 1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    inputs = (image, K.expand(1, 1, 3, 3), c2w[None, :1])

    def targets(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return K.expand(1, n, 3, 3), c2w[None, 1:n + 1]

    @torch.no_grad()
    def render() -> None:
        with k_diffusion.utils.eval_mode(model):
            model.condition(model.field.encode(*inputs), *targets(1))

    def sample(n: int):
        return lambda: sample_novel_views(model, *inputs, *targets(n), seed=0, **sampling_options("stochastic", steps))

    render_s = median_seconds(render, repeats, device)
    single_s = median_seconds(sample(1), repeats, device)
    batched_s = median_seconds(sample(batch), repeats, device) / batch
    row = {"preset": preset, "image_size": size, "render_size": config.field.render_size, "steps": steps,
           "batch": batch, "render_seconds": render_s, "sample_seconds_per_view": single_s,
           "batched_sample_seconds_per_view": batched_s, "batching_speedup": single_s / batched_s,
           "render_share": render_s / single_s}
    print(f"{preset:>6} {size:4d} px  render {render_s:7.3f} s  sample 1 view {single_s:7.2f} s  "
          f"{batch} batched {batched_s:7.2f} s/view ({single_s / batched_s:4.2f}x)  "
          f"render share {render_s / single_s:5.1%}")
    return row


def main() -> None:
    def more(parser):
        parser.add_argument("--presets", nargs="+", default=["smoke", "cpu"], choices=sorted(PRESETS))
        parser.add_argument("--steps", type=int, default=25, help="sampler steps (denoiser calls)")
        parser.add_argument("--batch", type=int, default=4, help="target views sampled together")

    args = device_arguments(__doc__, repeats=3, more=more)
    rows = [time_preset(preset, args.device, args.repeats, args.steps, args.batch) for preset in args.presets]
    name = "sampling" if args.device.type == "cpu" else f"sampling_{args.device.type}"
    write_result(name, {"device": device_name(args.device), "repeats": args.repeats, "presets": rows})


if __name__ == "__main__":
    main()
