"""Where a training step's time goes on a GPU: kernels, the host, or data loading.

    python benchmarks/profile_step.py --out DIR [--dry-run]

For the 64 px model of ``benchmarks/gpu_job.py`` (:data:`gpu_job.FINAL_64`) at two batch sizes, fp32 and bf16:
seconds per step, the seconds of it spent waiting for the data loader, and, from ``torch.profiler`` over a few
steps, the summed GPU kernel time and the number of kernel launches per step. A step whose kernel time is far
below its wall time is bound by the host (Python, launches, syncs), not by the GPU: a larger batch then costs
little more per step. Writes ``DIR/profile.json`` and prints the table; ``--dry-run`` runs it on the CPU with
the smoke preset at one batch size in under a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_job  # noqa: E402  (installs the carried wheels where k-diffusion is missing; puts genvs on the path)
import torch  # noqa: E402

from genvs.config import default_device  # noqa: E402
from genvs.data.synthetic import make_dataset  # noqa: E402
from genvs.training import TrainConfig, Trainer, train_config  # noqa: E402

PROFILED_STEPS = 3


def time_steps(config: TrainConfig, data: Path, folder: Path, device: torch.device, warmup: int, timed: int,
               workers: int) -> dict:
    """:func:`gpu_job.measure_steps` of a fresh trainer: ``warmup`` steps, ``timed`` steps, then a profile of
    :data:`PROFILED_STEPS` steps (GPU kernel seconds and launches per step, top host operators)."""
    trainer = Trainer(config, data, folder, warmup + timed + PROFILED_STEPS, device=device, log_every=10**9,
                      sample_every=0, checkpoint_every=0, workers=workers, progress=False)
    return gpu_job.measure_steps(trainer, warmup, timed, PROFILED_STEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="the CPU, the smoke preset, two steps")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu") if args.dry_run else default_device()
    base = train_config("smoke") if args.dry_run else gpu_job.FINAL_64
    batch_sizes = (2,) if args.dry_run else (32, 128)
    warmup, timed, workers = (1, 2, 0) if args.dry_run else (6, 6, 8)
    work = Path(tempfile.mkdtemp(prefix="genvs_profile_"))
    size = base.model.field.encoder.image_size
    data = make_dataset(work / "cars", n_objects=24, n_views=8, image_size=size, progress=False)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "image_size": size, "runs": {}}
    for batch_size in batch_sizes:
        for precision in ("fp32", "bf16"):
            name = f"batch{batch_size}_{precision}"
            config = dataclasses.replace(base, batch_size=batch_size, precision=precision)
            run = results["runs"][name] = time_steps(config, data, work / name, device, warmup, timed, workers)
            print(f"{name}: {run['step_s']:.4f} s/step, {run['images_per_s']:.0f} images/s, data wait "
                  f"{run['data_wait_s']:.4f} s/step, kernels {run['kernel_s_per_step']} s/step in "
                  f"{run['kernel_launches_per_step']} launches, GPU busy {run['gpu_busy_fraction']}", flush=True)
            (args.out / "profile.json").write_text(json.dumps(results, indent=1))
    print(results["runs"][f"batch{batch_sizes[0]}_fp32"]["top_host_ops"])


if __name__ == "__main__":
    main()
