"""Training throughput of each preset: seconds per optimiser step and target images per second.

For each preset, a small synthetic dataset at the preset's image size is written to a
temporary folder and :class:`genvs.training.Trainer` runs ``1 + repeats`` steps (no samples, one
checkpoint at the end); the first step is a warm-up. A step is everything the trainer does
for it: loading the batch, the forward pass of encoder, field and denoiser, backward, clipping,
AdamW and the EMA update. The number of input views is drawn per step (1 to 3), so the median
is over a mix of them. Throughput counts target images (``batch_size x target_views`` per step).

    python benchmarks/bench_training.py                      # smoke and cpu presets
    python benchmarks/bench_training.py --presets paper      # on a GPU

Writes ``benchmarks/results/training.json`` (or ``training_<device type>.json`` off the CPU).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch
from common import device_arguments, device_name, write_result

from genvs.data.synthetic import make_dataset
from genvs.training import PRESETS, Trainer


def time_preset(preset: str, device: torch.device, repeats: int, folder: Path) -> dict:
    config = PRESETS[preset]
    size = config.model.field.encoder.image_size
    data = make_dataset(folder / f"cars_{size}", n_objects=12, n_views=config.views_per_object + 1, image_size=size,
                        seed=0, progress=False)
    trainer = Trainer(config, data, folder / f"run_{preset}", 1 + repeats, device=device, log_every=1,
                      sample_every=0, checkpoint_every=0, progress=False)
    seconds = statistics.median(record["seconds"] for record in trainer.run()[1:])
    images = config.batch_size * config.target_views * config.grad_accumulation
    row = {"preset": preset, "image_size": size, "batch_objects": config.batch_size,
           "target_views": config.target_views, "precision": config.precision if device.type == "cuda" else "fp32",
           "seconds_per_step": seconds, "steps_per_s": 1 / seconds, "target_images_per_s": images / seconds}
    print(f"{preset:>9} {size:4d} px  {seconds:7.3f} s/step  {1 / seconds:6.2f} steps/s  "
          f"{images / seconds:7.1f} images/s")
    return row


def main() -> None:
    args = device_arguments(__doc__, repeats=5, more=lambda parser: parser.add_argument(
        "--presets", nargs="+", default=["smoke", "cpu"], choices=sorted(PRESETS)))
    device = args.device
    with tempfile.TemporaryDirectory() as folder:
        rows = [time_preset(preset, device, args.repeats, Path(folder)) for preset in args.presets]
    name = "training" if device.type == "cpu" else f"training_{device.type}"
    write_result(name, {"device": device_name(device), "repeats": args.repeats, "presets": rows})


if __name__ == "__main__":
    main()
