"""What every benchmark records beside its figures, and where it writes them."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from genvs.config import default_device

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    """Versions, CPU count, load and date: the context needed to compare two result files."""
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def device_arguments(description: str, repeats: int = 3,
                     more: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Parse ``--device`` (default CUDA if present, else CPU), ``--threads`` (default 1), ``--repeats``
    and the arguments ``more(parser)`` adds; set torch's CPU threads. Returns the arguments with
    ``device`` as a ``torch.device``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=repeats)
    if more is not None:
        more(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.device = torch.device(args.device)
    return args


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else ``str(device)``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def median_seconds(function, repeats: int, device: torch.device) -> float:
    """Median wall time of ``function()`` over ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_result(name: str, result: dict) -> Path:
    """Write ``result`` plus :func:`environment` to ``benchmarks/results/<name>.json``; returns the path."""
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, **environment()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
