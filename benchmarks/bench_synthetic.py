"""Speed of the synthetic car generator: images per second written to disk, PNG included.

Generates 10 cars x 20 views into a temporary folder at 64x64 and at 128x128, prints the
images per second of each, and writes ``benchmarks/results/synthetic.json``.

    python benchmarks/bench_synthetic.py
"""

from __future__ import annotations

import tempfile
import time

from common import write_result

from genvs.data.cars import SUPERSAMPLE
from genvs.data.synthetic import make_dataset

N_OBJECTS, N_VIEWS = 10, 20
IMAGE_SIZES = (64, 128)


def images_per_second(image_size: int) -> tuple[float, int]:
    """Time :func:`make_dataset` into a temporary folder; returns (images/s, images written)."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        root = make_dataset(folder, N_OBJECTS, N_VIEWS, image_size, seed=0, progress=False)
        seconds = time.perf_counter() - start
        n_images = len(list(root.rglob("rgb/*.png")))
    return n_images / seconds, n_images


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        make_dataset(folder, 1, 1, 32, progress=False)  # warm up torch kernels
    runs = []
    for image_size in IMAGE_SIZES:
        rate, n_images = images_per_second(image_size)
        print(f"{image_size}x{image_size}: {rate:.1f} images/s ({n_images} images)")
        runs.append({"image_size": image_size, "images_per_second": round(rate, 1), "n_images": n_images})
    write_result("synthetic", {
        "benchmark": "genvs.data.synthetic.make_dataset, PNG writing included",
        "objects": N_OBJECTS,
        "views_per_object": N_VIEWS,
        "supersample": SUPERSAMPLE,
        "note": "make_dataset renders on one torch thread, whatever torch_threads says",
        "runs": runs,
    })


if __name__ == "__main__":
    main()
