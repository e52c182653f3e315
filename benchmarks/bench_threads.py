"""One torch thread or all cores? The lessons' own workloads timed at both, interleaved in one run.

Lessons 02-06 used to pin one thread (right for a busy 2-core machine, wrong for an idle 8-core laptop); they
now leave torch at its default, one thread per core, unless ``OMP_NUM_THREADS`` says otherwise (CI sets 1).
This measures what that buys: for each workload, the median seconds over ``--repeats`` calls at 1 thread and at
``--threads`` (default: all cores), the two settings alternating so that a neighbour's load hits both alike.

Workloads, with the shipped ``lesson`` model (``genvs/shipped/lesson``) on 12 synthetic cars at 32 px:
- ``train_step``: one training step of the ``lesson`` preset (4 cars, 2 targets; forward, backward, AdamW);
  lessons 02 and 04 train this model live;
- ``field_render``: the field rendering 8 target views of one car (the regression baseline; lessons 02, 06);
- ``sampling``: 8 views sampled with 25 stochastic Euler steps (lessons 05, 06);
- ``denoiser_step``: one step of lesson 03's denoiser (the ``cpu`` preset at 32 px, 8 images).

    python benchmarks/bench_threads.py            # writes benchmarks/results/threads.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import write_result

from genvs.artefacts import shipped
from genvs.data import SRNDataset
from genvs.data.batches import StepBatches
from genvs.data.synthetic import make_dataset
from genvs.denoiser import build_denoiser, denoiser_config, denoising_loss
from genvs.model import load_model
from genvs.sampling import sample_images, sampling_options


def workloads(folder: Path) -> dict:
    """Name -> a function running one call of that workload on the CPU."""
    model, _ = load_model(shipped("lesson"))
    data = make_dataset(folder / "cars", n_objects=12, n_views=8, image_size=32, seed=0, progress=False)
    batch = StepBatches(SRNDataset(data, split="train", views_per_item=None), batch_size=4, max_inputs=1,
                        target_views=2, seed=0)[0]
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-6)
    car = SRNDataset(data, split="test", views_per_item=None)[0]
    with torch.no_grad():
        views = model.field.encode(car["images"][None, :1], car["K"][None, :1], car["c2w"][None, :1])
        cond, _ = model.condition(views, car["K"][None, :8], car["c2w"][None, :8])
    generator = torch.Generator().manual_seed(0)
    denoiser_03 = denoiser_config("cpu", noise="genvs", image_size=32)
    small = build_denoiser(denoiser_03, seed=0)
    small_optimiser = torch.optim.AdamW(small.parameters(), lr=1e-6)

    def train_step():
        loss = model.losses(batch["images"], batch["K"], batch["c2w"], 1, generator)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    def field_render():
        with torch.no_grad():
            model.field.render_image(views, car["K"][None, :8], car["c2w"][None, :8])

    def sampling():
        sample_images(model.denoiser, cond, seed=0, **sampling_options("stochastic", 25))

    def denoiser_step():
        images = car["images"][:8]
        loss = denoising_loss(small, images, torch.ones(8, 16, 32, 32), denoiser_03, generator)
        small_optimiser.zero_grad()
        loss.backward()
        small_optimiser.step()

    return {"train_step": train_step, "field_render": field_render, "sampling": sampling,
            "denoiser_step": denoiser_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    settings = sorted({1, args.threads})
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        for name, function in workloads(Path(folder)).items():
            times = {threads: [] for threads in settings}
            for repeat in range(args.repeats + 1):  # the first round warms up
                for threads in settings:
                    torch.set_num_threads(threads)
                    start = time.perf_counter()
                    function()
                    if repeat:
                        times[threads].append(time.perf_counter() - start)
            row = {"workload": name, **{f"seconds_{threads}_threads": statistics.median(times[threads])
                                        for threads in settings}}
            row["speedup"] = row["seconds_1_threads"] / row[f"seconds_{settings[-1]}_threads"]
            print(f"{name:14s}" + "".join(f"{threads} thread(s) {row[f'seconds_{threads}_threads']:7.3f} s   "
                                          for threads in settings) + f"speed-up {row['speedup']:.2f}x")
            rows.append(row)
    torch.set_num_threads(1)
    write_result("threads", {"repeats": args.repeats, "thread_settings": settings, "workloads": rows})


if __name__ == "__main__":
    main()
