"""Where the encoder's ResNet trunk should end at 32 px: size, CPU training step time and held-out regression PSNR.

The `lesson` model with its trunk ending after layer4 (``trunk_stride`` 32, the reference model up to v2), layer3
(16) or layer2 (8), everything else equal. At 32 px layer4 sees a 1 x 1 map, layer3 2 x 2, layer2 4 x 4.

- parameters: encoder and whole model; the fp16 export's size (2 bytes per parameter; the export holds the EMA
  weights only).
- step time: one `Trainer` optimiser step each (data loading, forward, backward, clipping, AdamW, EMA), the variants
  alternating step by step in one process so that a busy neighbour slows them alike; the median of ``--repeats``
  after a warm-up, and each variant's ratio to ``trunk_stride=32``.
- with ``--train-steps N``: each variant trained N joint steps on ``--data`` from the same seed (the preset's
  warmup + cosine schedule sized to N), then the feature field's regression PSNR on the protocol's 20 held-out
  test cars (input view 0, 8 targets; `PROTOCOLS["synthetic"]`, `methods=("regression",)`), mean ± standard
  deviation over the cars.

    python benchmarks/bench_encoder.py --repeats 20
    python benchmarks/bench_encoder.py --train-steps 1500 --data data/generated/reference_cars_32

Writes ``benchmarks/results/encoder.json``.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from common import device_arguments, write_result
from tqdm.auto import tqdm

from genvs.config import with_overrides
from genvs.encoder import TRUNK_STRIDES, parameter_count
from genvs.evaluation import PROTOCOLS, evaluate
from genvs.training import PRESETS, TrainConfig, Trainer

MIB = 2**20


def variant(trunk_stride: int) -> TrainConfig:
    """The `lesson` preset with its encoder's trunk ending at ``trunk_stride``."""
    return with_overrides(PRESETS["lesson"], {"model.field.encoder.trunk_stride": str(trunk_stride)})


def sizes(config: TrainConfig, trainer: Trainer) -> dict:
    total = sum(p.numel() for p in trainer.model.parameters())
    return {"encoder_parameters": parameter_count(config.model.field.encoder), "parameters": total,
            "fp16_export_mib": 2 * total / MIB}


def step_times(trainers: dict[int, Trainer], repeats: int) -> dict[int, float]:
    """Median seconds per optimiser step of each trainer, the trainers taking turns step by step."""
    batches = {stride: trainer.micro_batches() for stride, trainer in trainers.items()}
    times = {stride: [] for stride in trainers}
    for repeat in tqdm(range(repeats + 1), desc="timed steps"):
        for stride, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_step(batches[stride])
            if repeat:  # the first round warms up
                times[stride].append(time.perf_counter() - start)
    return {stride: statistics.median(values) for stride, values in times.items()}


def regression_psnr(config: TrainConfig, data: Path, steps: int, folder: Path) -> dict:
    """Train ``steps`` joint steps, then score the EMA model's regression route on the 20-car protocol."""
    trainer = Trainer(config, data, folder, steps, sample_every=0, checkpoint_every=0)
    start = time.perf_counter()
    trainer.run()
    minutes = (time.perf_counter() - start) / 60
    protocol = dataclasses.replace(PROTOCOLS["synthetic"], methods=("regression",))
    psnr = evaluate(trainer.ema, data, protocol, lpips=False, attributes=False)["metrics"]["regression"]["psnr"]
    return {"train_steps": steps, "train_minutes": minutes, "regression_psnr": psnr["mean"],
            "regression_psnr_std": psnr["std"]}


def main() -> None:
    args = device_arguments(__doc__, repeats=20, more=lambda parser: (
        parser.add_argument("--train-steps", type=int, default=0),
        parser.add_argument("--data", type=Path, default=Path("data/generated/reference_cars_32"))))
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        trainers = {stride: Trainer(variant(stride), args.data, Path(folder) / f"time_{stride}", args.repeats + 1,
                                    device=args.device, sample_every=0, checkpoint_every=0, progress=False)
                    for stride in reversed(TRUNK_STRIDES)}
        seconds = step_times(trainers, args.repeats)
        for stride, trainer in trainers.items():
            rows[stride] = {"trunk_stride": stride, **sizes(variant(stride), trainer),
                            "seconds_per_step": seconds[stride], "speed_vs_32": seconds[32] / seconds[stride]}
        del trainers
        for stride in rows if args.train_steps else ():
            rows[stride].update(regression_psnr(variant(stride), args.data, args.train_steps,
                                                Path(folder) / f"train_{stride}"))
    for row in rows.values():
        psnr = (f"  regression {row['regression_psnr']:.2f} ± {row['regression_psnr_std']:.2f} dB after "
                f"{row['train_steps']} steps" if "regression_psnr" in row else "")
        print(f"trunk_stride {row['trunk_stride']:2d}: encoder {row['encoder_parameters'] / 1e6:5.2f}M, model "
              f"{row['parameters'] / 1e6:5.2f}M ({row['fp16_export_mib']:4.1f} MiB fp16), "
              f"{row['seconds_per_step']:.3f} s/step ({row['speed_vs_32']:.2f}x){psnr}")
    write_result("encoder", {"preset": "lesson", "repeats": args.repeats, "data": str(args.data),
                             "variants": list(rows.values())})


if __name__ == "__main__":
    main()
