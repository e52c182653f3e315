"""Speed of the EDM denoiser and its samplers.

1. Time per sample against the number of steps, for every sampler, with the "cpu" preset
   (batch of 4 images at its 32x32 size; heun is timed deterministic, so 2 * steps - 1 calls).
2. One denoiser forward (no gradients) at batch 1 and 8 for the "cpu" and "paper" presets.

Prints tables and writes ``benchmarks/results/denoiser.json`` (plus :func:`common.environment`:
versions, CPU threads, load). Times are medians of a few repeats after a warm-up call, on
``--device`` (default: CUDA if present, else CPU), with ``--threads`` CPU threads (default 1).

    python benchmarks/bench_denoiser.py
"""

from __future__ import annotations

import torch
from common import device_arguments, device_name, median_seconds, write_result

from genvs.denoiser import PRESETS, build_denoiser, parameter_count
from genvs.sampling import SAMPLERS, sample_images

SAMPLER_STEPS = (8, 16, 32)
SAMPLE_BATCH = 4
FORWARD_BATCHES = (1, 8)


def time_samplers(device: torch.device, repeats: int) -> list[dict]:
    """Seconds per sample for each sampler and step count, cpu preset, batch ``SAMPLE_BATCH``."""
    config = PRESETS["cpu"]
    denoiser = build_denoiser(config).to(device)
    cond = torch.randn(SAMPLE_BATCH, config.cond_channels, config.image_size, config.image_size, device=device)
    rows = []
    for sampler in SAMPLERS:
        for steps in SAMPLER_STEPS:
            seconds = median_seconds(lambda: sample_images(denoiser, cond, sampler=sampler, steps=steps, seed=0),
                                     repeats, device)
            rows.append({"sampler": sampler, "steps": steps, "seconds_per_sample": seconds / SAMPLE_BATCH})
    return rows


def time_forwards(device: torch.device, repeats: int) -> list[dict]:
    """Seconds per denoiser forward (no gradients) for the cpu and paper presets at each batch size."""
    rows = []
    for preset in ("cpu", "paper"):
        config = PRESETS[preset]
        denoiser = build_denoiser(config).to(device).eval()
        for batch in FORWARD_BATCHES:
            size = config.image_size
            x = torch.randn(batch, config.image_channels, size, size, device=device)
            cond = torch.randn(batch, config.cond_channels, size, size, device=device)
            sigma = torch.ones(batch, device=device)
            with torch.no_grad():
                seconds = median_seconds(lambda: denoiser(x, sigma, unet_cond=cond), repeats, device)
            rows.append({"preset": preset, "image_size": size, "params": parameter_count(config), "batch": batch,
                         "seconds": seconds})
    return rows


def print_tables(samplers: list[dict], forwards: list[dict]) -> None:
    """Milliseconds per sample (sampler x steps), then milliseconds per forward (preset x batch)."""
    print(f"ms per sample, cpu preset, batch {SAMPLE_BATCH}:")
    print(f"{'sampler':16s}" + "".join(f"{steps:>9d} st" for steps in SAMPLER_STEPS))
    for sampler in SAMPLERS:
        times = [row["seconds_per_sample"] for row in samplers if row["sampler"] == sampler]
        print(f"{sampler:16s}" + "".join(f"{1000 * t:12.1f}" for t in times))
    print("ms per denoiser forward:")
    print(f"{'preset':8s}{'size':>6s}{'params':>14s}" + "".join(f"{'batch ' + str(b):>12s}" for b in FORWARD_BATCHES))
    for preset in ("cpu", "paper"):
        rows = [row for row in forwards if row["preset"] == preset]
        print(f"{preset:8s}{rows[0]['image_size']:6d}{rows[0]['params']:14,d}"
              + "".join(f"{1000 * row['seconds']:12.1f}" for row in rows))


def main() -> None:
    args = device_arguments(__doc__.splitlines()[0])
    device = args.device
    samplers = time_samplers(device, args.repeats)
    forwards = time_forwards(device, args.repeats)
    print_tables(samplers, forwards)
    write_result("denoiser", {
        "benchmark": "genvs.sampling.sample_images per sampler and steps; genvs.denoiser forward per preset",
        "device": device_name(device),
        "sampler_preset": "cpu",
        "sampler_image_size": PRESETS["cpu"].image_size,
        "sampler_batch": SAMPLE_BATCH,
        "params": {name: parameter_count(config) for name, config in PRESETS.items()},
        "samplers": samplers,
        "forward": forwards,
    })


if __name__ == "__main__":
    main()
