"""All of this project's GPU work, one command per call, sized for a short lease of one GPU.

    python benchmarks/gpu_job.py --leg --out DIR [--minutes 7] [--dry-run]     # the leg: trains the shipped model
    python benchmarks/gpu_job.py --out DIR [--minutes 8] [--dry-run]           # the benchmark job

Each phase gets a time budget, a share of ``--minutes`` (:data:`LEG_BUDGET`, :data:`BUDGET`); what does not fit is
recorded as ``"skipped: out of time"``, a phase that reaches its budget is stopped (``"interrupted: out of time
after N s"``), keeping what it measured. ``DIR/results.json`` is rewritten after every phase, so a killed job still
leaves its figures. Both start with setup: on a machine without k-diffusion, pip-install the wheels carried in
``.whl/`` (written here by ``benchmarks/fetch_wheels.py``) into a temporary folder put first on ``sys.path``; device
facts and a measured bf16 matrix-product ceiling.

The leg (``--leg``): what every lent GPU minute should do, train the model every lesson loads.

1. data: the shipped reference model's cars and more of the same generator (:data:`LEG_DATA`), rendered by
   :func:`genvs.data.synthetic.make_dataset` on every core.
2. throughput: from the shipped weights, each batch of :data:`LEG_BATCHES` in each mode of ``--modes``
   (:data:`SWEEP_MODES`: fp32 with TF32 matmuls, bf16, ``torch.compile``, CUDA graphs), a few timed steps and two
   profiled ones (:func:`measure_steps`): images/s, the loader's wait, the GPU's busy fraction (kernel time over
   step time). :func:`choose_setting` keeps the correct one (its first loss agrees with fp32's) that trains the
   most images in the time left.
3. leg_training: the shipped model (``--init``: :data:`SHIPPED_REFERENCE`) at the chosen batch and precision, its
   learning rates scaled by :func:`leg_config`, its warm-up and cosine decay sized from the measured speed, for the
   time left (``Trainer.run(time_limit=...)``).
4. export: the EMA weights in fp16, packed at once as ``leg.tar.part*`` (a leg folder: ``export/``, ``log.csv``,
   ``config.json``).
5. evaluation: the model card's protocol (``PROTOCOLS["synthetic"]``, its 20 test cars, objects batched:
   :data:`GPU_PROTOCOL`) through :func:`genvs.legs.score_leg`; the headline rows against the shipped model's
   ``evaluation.json`` (:func:`genvs.legs.compare`); packed again with ``evaluation.json`` and ``leg.json``.
6. figure: ``samples.png``. ``results.json["summary"]`` gathers the leg's figures (:func:`leg_summary`).

Back here: ``cat leg.tar.part* | tar x`` gives ``leg/``; ``python -m genvs ship-leg --leg leg`` ships it when no
headline row got worse.

The benchmark job (no ``--leg``), measured once on an H200:

1. data: a 128 px set for the paper preset's benchmark and a 64 px set to train on (:class:`DataSpec`, rendered
   like the leg's).
2. training_benchmark: for each preset, fp32 eager (TF32 matmuls), bf16 eager and bf16 + ``torch.compile``,
   with the GPU speed settings (:data:`genvs.training.GPU_SPEED`): warm-up steps (until every number of input
   views of the timed steps has been seen, so that no timed step compiles), then timed steps; FLOPs of a step
   (forward + backward, :class:`torch.utils.flop_counter.FlopCounterMode`, on the same steps in fp32 eager) and
   the model FLOPs utilisation against the GPU's datasheet peak (:data:`PEAK_FLOPS`); the paper preset at the
   largest batch that fits (:func:`fit_largest_batch`).
3. sampling_benchmark: seconds per 128 px view of the paper preset's model (random weights: the time does
   not depend on them), one view per call and several per call, 25 and 250 stochastic Euler steps, fp32 and bf16.
4. final_training: a 64 px model (:data:`FINAL_64`) with GPU batches, bf16, compiled if compiling paid off in
   phase 2, for the time that is left; its schedule is sized from phase 2's speed, or from a few timed steps of
   its own when phase 2 was skipped.
5. export: its EMA weights in fp16, packed as ``model_fp16.tar`` in parts of at most 15 MiB.
6. evaluation: the held-out protocol (:data:`GPU_PROTOCOL`) on the exported model.
7. figure: ``samples.png``, the evaluation's examples.

``--skip training_benchmark,sampling_benchmark`` leaves the benchmark phases out (recorded as skipped), so that the
final training gets their minutes.

``--dry-run`` runs the same code on the CPU at tiny sizes (the leg: the shipped architecture, 20 cars, batches of
2 and 4, three training steps, the smoke protocol; the benchmark job: the smoke preset) and the "aot_eager" compile
backend (no code generation), in under a minute each. ``DIR`` stays flat: ``results.json``, ``gpu_job.log``,
``samples.png`` and the model's parts (at most 15 MiB each: the device tool brings back files of at most 16 MiB).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
WHEELS = Path(os.environ.get("GENVS_WHEELS", REPO / ".whl"))
SITE = Path(tempfile.gettempdir()) / "genvs_site"


def install_wheels(wheels: Path, target: Path) -> dict:
    """pip-install every wheel in ``wheels`` into ``target`` (offline, no dependencies) and put ``target`` first on
    ``sys.path`` and ``PYTHONPATH`` (for worker processes). setuptools is skipped where ``pkg_resources`` is
    already importable, so the machine's own stays in use. Returns what was installed and the command."""
    found = sorted(wheels.glob("*.whl"))
    if not found:
        raise SystemExit(f"k_diffusion is not installed and {wheels} holds no wheels: run "
                         f"`.venv/bin/python benchmarks/fetch_wheels.py` where pip reaches PyPI, and carry .whl")
    if importlib.util.find_spec("pkg_resources") is not None:
        found = [wheel for wheel in found if not wheel.name.startswith("setuptools-")]
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, found)]
    subprocess.run(command, check=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()
    return {"installed": [wheel.name for wheel in found], "target": str(target), "command": " ".join(command)}


def make_importable() -> dict:
    """Put the repository on ``sys.path`` (genvs is not pip-installed on the GPU machine) and, where k-diffusion
    is missing, the carried wheels (:func:`install_wheels`). Returns what was done and how long it took."""
    sys.path.insert(0, str(REPO))
    start = time.perf_counter()
    if importlib.util.find_spec("k_diffusion") is not None:
        return {"wheels": "none installed: k_diffusion is importable", "seconds": time.perf_counter() - start}
    return {**install_wheels(WHEELS, SITE), "seconds": time.perf_counter() - start}


SETUP = make_importable()
os.environ.setdefault("MPLBACKEND", "Agg")  # no display on the GPU machine

import matplotlib.pyplot as plt  # noqa: E402  (after make_importable: these need the carried wheels)
import torch  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import genvs.training  # noqa: E402
from genvs.checkpoint import latest_checkpoint  # noqa: E402
from genvs.data import SRNDataset  # noqa: E402
from genvs.data.batches import StepBatches  # noqa: E402
from genvs.data.synthetic import make_dataset  # noqa: E402
from genvs.denoiser import denoiser_config  # noqa: E402
from genvs.encoder import encoder_config  # noqa: E402
from genvs.evaluation import PROTOCOLS, EvaluationConfig, evaluate, results_table  # noqa: E402
from genvs.field import field_config  # noqa: E402
from genvs.fitting import read_log  # noqa: E402
from genvs.legs import compare, comparison_table, describe_compute, headline_scores, legs_table, score_leg  # noqa: E402
from genvs.model import GeNVS, GeNVSConfig, load_model  # noqa: E402
from genvs.sampling import sample_novel_views, sampling_options  # noqa: E402
from genvs.training import GPU_SPEED, TrainConfig, Trainer, export_model, train_config, train_split  # noqa: E402
from genvs.viz import plot_evaluation_examples  # noqa: E402

SETUP["ready_after_s"] = time.perf_counter() - START  # interpreter, wheels and imports

BUDGET = {"data": 0.10, "training_benchmark": 0.40, "sampling_benchmark": 0.07, "export": 0.02, "evaluation": 0.12,
          "figure": 0.02}
"""Each phase's share of ``--minutes``; final_training gets what is left once the phases after it are reserved.
Time a phase does not use goes to the next ones."""
AFTER_TRAINING = ("export", "evaluation", "figure")
SKIPPABLE = ("training_benchmark", "sampling_benchmark")
"""Phases ``--skip`` may leave out."""

PEAK_FLOPS = (  # (name contains, dense bf16, dense TF32) in FLOP/s per GPU, vendors' datasheets (no sparsity)
    ("H100 PCIe", 756.0e12, 378.0e12),
    ("H100", 989.4e12, 494.7e12),  # SXM
    ("H200", 989.4e12, 494.7e12),  # SXM: the H100's tensor cores
    ("A100", 312.0e12, 156.0e12),
    ("L4", 121.0e12, 60.0e12),
)
"""Peak FLOP/s for the model FLOPs utilisation; the first entry whose text is in the device's name is used."""

MODES = {"fp32_eager": ("fp32", False), "bf16_eager": ("bf16", False), "bf16_compile": ("bf16", True)}
"""Training benchmark modes: (precision, compile); all with :data:`genvs.training.GPU_SPEED` (TF32,
channels-last, fused AdamW)."""

FINAL_64 = train_config(
    "cpu", model=GeNVSConfig(field_config("smoke", encoder=encoder_config("smoke", image_size=64, volume_size=32),
                                          render_size=32),
                             denoiser_config("cpu", noise="genvs", image_size=64), input_rgb_weight=1.0),
    batch_size=32, precision="bf16", speed=GPU_SPEED)
FINAL_64_WHY = (
    "the shipped reference model's architecture (the lesson preset: ResNet-18 trunk cut after layer2, 8 depth planes, "
    "field MLP 32 wide, 8 + 8 samples per ray, the cpu preset's 3.5M-parameter U-Net) at 64 px, its volume at half the"
    " image side (32 x 32, as the cpu preset) and features rendered at 32 x 32: 4.3M parameters, 8.2 MiB in fp16, "
    "under the 12 MiB a shipped model may take (the cpu preset's ResNet-34 model, trained in the first H200 run, "
    "exports to 50.6 MiB); 32 objects x 2 targets per step instead of 4 x 2, so that a step keeps the GPU busy (at 4 "
    "objects it is launch-bound) and a few minutes see each of ~1900 training cars many times; the cpu preset's "
    "learning rates and 50-step warm-up (trained stably at 32 x 2 in the first H200 run; the colab-t4 preset's lower "
    "rates and 500-step warm-up suit runs of tens of thousands of steps, not a few thousand); bf16, the GPU speed "
    "settings")
"""The model trained in the job, and why (``results.json``: ``final_training.choice``)."""

GPU_PROTOCOL = dataclasses.replace(PROTOCOLS["synthetic"], object_batch=PROTOCOLS["synthetic"].max_objects)
"""The evaluation on the GPU: the synthetic protocol with every object's autoregressive trajectory in one denoiser
batch (scores change by float rounding only, :mod:`genvs.evaluation`). One object at a time, the autoregressive
method alone is 20 objects x 2 draws x 8 frames x 25 steps = 8,000 sequential U-Net calls of one image (the H200
run of 2026-11-29, with one draw and objects one at a time, ran out of its 58 s in the evaluation). Batched: 400
calls of 20 images."""

PART_BYTES = 15 * 2**20
"""Largest file written into DIR: the device tool brings back files of at most 16 MiB, 8 of them."""

UNITS = {
    "step_s": "seconds per optimiser step (forward, backward, clipping, AdamW, EMA, data loading)",
    "images_per_s": "target images per second: batch_size x target_views per step",
    "flops_per_step": "FLOPs of one step's forward and backward (a multiply-add is 2), counted by "
                      "torch.utils.flop_counter.FlopCounterMode on the timed steps in fp32 eager mode",
    "mfu": "model FLOPs utilisation: flops_per_step / step_s / peak (a fraction); peak: device.peak_flops_per_s, "
           "tf32 for fp32 modes, bf16 for bf16 modes",
    "warmup_s": "seconds of the warm-up steps (compile mode: compiling included)",
    "seconds_per_view": "seconds of sample_novel_views per target view (encode, render, denoise): "
                        "precision -> steps -> views per call",
    "seconds": "wall-clock seconds",
}


# -- time --------------------------------------------------------------------------------------


class OutOfTime(KeyboardInterrupt):
    """Raised by the time box's alarm outside a training run. A ``KeyboardInterrupt``, so that library code that
    catches ``Exception`` lets it through. Inside :meth:`Clock.stopping` the alarm asks the run to stop instead."""


class Clock:
    """The job's end and nested time boxes; the innermost box's deadline is armed as a SIGALRM timer."""

    def __init__(self, total_s: float):
        self.total_s, self.end = total_s, START + total_s
        self._deadlines: list[float] = []
        self._stoppers: list[Callable[[], None]] = []

    def left(self) -> float:
        """Seconds until the innermost box's deadline (the job's end outside any box)."""
        return (self._deadlines[-1] if self._deadlines else self.end) - time.perf_counter()

    @contextlib.contextmanager
    def box(self, seconds: float):
        """Raise :class:`OutOfTime` in the block ``seconds`` from now (or at an outer box's deadline if sooner)."""
        outer = self._deadlines[-1] if self._deadlines else self.end
        self._deadlines.append(min(outer, time.perf_counter() + seconds))
        previous = signal.signal(signal.SIGALRM, self._ring)
        self._arm()
        try:
            yield
        finally:
            self._deadlines.pop()
            self._arm()
            signal.signal(signal.SIGALRM, previous)

    @contextlib.contextmanager
    def stopping(self, request_stop: Callable[[], None]):
        """In the block, a deadline calls ``request_stop`` (a run's public stop request: it ends after the step in
        progress, with a checkpoint) instead of raising :class:`OutOfTime`."""
        self._stoppers.append(request_stop)
        try:
            yield
        finally:
            self._stoppers.pop()

    def _arm(self) -> None:
        """Set the timer to the innermost deadline; a deadline already past is not armed (the loops check it)."""
        remaining = self._deadlines[-1] - time.perf_counter() if self._deadlines else 0.0
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.0))

    def _ring(self, signum, frame):
        if self._stoppers:
            self._stoppers[-1]()
        else:
            raise OutOfTime()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """A synthetic data set: ``make_dataset(n_objects=n_objects, n_views=views, image_size=image_size, seed=seed,
    extra_train_objects=extra_train_objects)`` (80/10/10 train/val/test split of the ``n_objects``, the extra
    cars after them all training cars)."""

    image_size: int
    n_objects: int
    views: int
    seed: int
    extra_train_objects: int = 0

    @property
    def cars(self) -> int:
        return self.n_objects + self.extra_train_objects


@dataclass(frozen=True)
class JobPlan:
    """What both jobs' shared machinery reads (:class:`Job`, the data phase, warm-up and timing); :class:`Plan` and
    :class:`LegPlan` add their own."""

    device: torch.device
    compile_backend: str
    data: dict[str, DataSpec]
    min_warmup: int
    max_warmup: int
    timed_steps: int
    log_every: int
    protocol: EvaluationConfig
    workers: int
    processes: int
    matmul_size: int


@dataclass(frozen=True)
class Plan(JobPlan):
    """What the benchmark job runs: the GPU plan or the dry run's tiny one."""

    bench: dict[str, tuple[TrainConfig, str]]  # name -> (config, data key)
    sampling_preset: str
    sampling_data: str
    sampling_steps: tuple[int, ...]
    sampling_views: tuple[int, ...]
    final: TrainConfig
    final_why: str
    final_bench: str
    final_data: str
    final_max_steps: int | None
    precisions: tuple[str, ...] = ("fp32", "bf16")
    budget: dict[str, float] = field(default_factory=lambda: BUDGET)
    largest_batch: dict[str, int] = field(default_factory=dict)  # preset -> limit: benchmarked at its largest batch


def gpu_plan() -> Plan:
    """The plan for one GPU (an H200: 16 CPU cores, minutes of GPU time)."""
    return Plan(device=torch.device("cuda"), compile_backend="inductor",
                data={"bench": DataSpec(128, 48, 10, seed=1), "train": DataSpec(64, 2400, 16, seed=0)},
                bench={"final64": (FINAL_64, "train"), "paper": (train_config("paper"), "bench")},
                min_warmup=2, max_warmup=8, timed_steps=5,
                sampling_preset="paper", sampling_data="bench", sampling_steps=(25, 250), sampling_views=(1, 8),
                final=FINAL_64, final_why=FINAL_64_WHY, final_bench="final64", final_data="train", final_max_steps=None,
                log_every=25, protocol=GPU_PROTOCOL, workers=8, processes=os.cpu_count() or 1,
                matmul_size=8192, largest_batch={"paper": 256})


def dry_plan() -> Plan:
    """The same phases on the CPU at the smoke preset's sizes: seconds each."""
    smoke = train_config("smoke", speed=GPU_SPEED)
    return Plan(device=torch.device("cpu"), compile_backend="aot_eager",
                data={"bench": DataSpec(32, 8, 6, seed=1), "train": DataSpec(32, 20, 6, seed=0)},
                bench={"smoke": (smoke, "bench")}, min_warmup=1, max_warmup=4, timed_steps=2,
                sampling_preset="smoke", sampling_data="bench", sampling_steps=(2, 4), sampling_views=(1, 2),
                final=dataclasses.replace(smoke, precision="bf16"), final_why="dry run: the smoke preset, bf16",
                final_bench="smoke", final_data="train", final_max_steps=3,
                log_every=1, protocol=PROTOCOLS["smoke"], workers=0, processes=2, matmul_size=128,
                largest_batch={"smoke": 8})


@dataclass
class State:
    """What later phases need from earlier ones."""

    data: dict[str, Path] = field(default_factory=dict)
    train_sets: dict[str, SRNDataset] = field(default_factory=dict)  # their train splits, listed once
    bench: dict[str, dict] = field(default_factory=dict)
    run_dir: Path | None = None
    model_dir: Path | None = None
    examples: dict | None = None
    setting: dict | None = None


# -- results and log ---------------------------------------------------------------------------


class Job:
    """The output folder, the log and ``results.json`` (rewritten atomically after every phase)."""

    def __init__(self, out: Path, work: Path, plan: JobPlan, clock: Clock, results: dict,
                 skip: frozenset[str] = frozenset()):
        self.out, self.work, self.plan, self.clock, self.results, self.skip = out, work, plan, clock, results, skip
        self.state = State()
        self._log = (out / "gpu_job.log").open("a")

    def log(self, message: str) -> None:
        """Print ``message`` with the job's elapsed seconds, and append it to ``gpu_job.log``."""
        line = f"[{time.perf_counter() - START:6.1f} s] {message}"
        print(line, flush=True)
        self._log.write(line + "\n")
        self._log.flush()

    def write(self) -> None:
        self.results["job"]["seconds"] = time.perf_counter() - START
        path = self.out / "results.json"
        path.with_suffix(".tmp").write_text(json.dumps(_finite(self.results), indent=1) + "\n")
        path.with_suffix(".tmp").replace(path)

    def phase(self, name: str, function: Callable[[dict], None], budget_s: float, needs: tuple[bool, str] = (True, "")):
        """Run ``function(record)`` in a time box of ``budget_s``, recording its status, figures and seconds."""
        record = {"budget_s": round(budget_s, 1)}
        self.results[name] = record
        ready, missing = needs
        if name in self.skip:
            record["status"] = "skipped: --skip"
        elif not ready:
            record["status"] = f"skipped: needs {missing}"
        elif budget_s < self.min_phase_s:
            record["status"] = "skipped: out of time"
        else:
            self.log(f"== {name} (budget {budget_s:.0f} s)")
            start = time.perf_counter()
            try:
                with self.clock.box(budget_s):
                    function(record)
                record["status"] = "done"
            except OutOfTime:
                record["status"] = f"interrupted: out of time after {time.perf_counter() - start:.0f} s"
            except Exception as error:  # one phase failing must not cost the others' figures
                record["status"] = f"failed: {type(error).__name__}: {error}"
                self.log(traceback.format_exc())
            record["seconds"] = time.perf_counter() - start
        self.log(f"{name}: {record['status']}")
        self.write()

    @property
    def min_phase_s(self) -> float:
        return 1.0 if self.plan.device.type == "cpu" else 5.0

    def data_needed(self) -> list[str]:
        """The data sets of :attr:`Plan.data` that the phases not skipped read."""
        needed = {self.plan.final_data}
        if "training_benchmark" not in self.skip:
            needed |= {key for _, key in self.plan.bench.values()}
        if "sampling_benchmark" not in self.skip:
            needed.add(self.plan.sampling_data)
        return [key for key in self.plan.data if key in needed]

    def budget(self, name: str) -> float:
        """``name``'s share of the job, at most what is left once the phases after final training are reserved."""
        shares = self.plan.budget
        reserve = 0.0 if name in AFTER_TRAINING else sum(shares[later] for later in AFTER_TRAINING)
        return max(0.0, min(shares[name] * self.clock.total_s, self.clock.left() - reserve * self.clock.total_s))

    def reserve_s(self) -> float:
        """Seconds kept for the phases after training (:data:`AFTER_TRAINING`)."""
        return sum(self.plan.budget[name] for name in AFTER_TRAINING) * self.clock.total_s


def _finite(value):
    """``value`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


# -- setup -------------------------------------------------------------------------------------


def peak_flops(name: str) -> dict | None:
    """Datasheet peaks of the device called ``name`` (:data:`PEAK_FLOPS`), or None if it is not in the table."""
    for text, bf16, tf32 in PEAK_FLOPS:
        if text in name:
            return {"bf16": bf16, "tf32": tf32, "source": f"datasheet, dense, table entry {text!r}"}
    return None


def matmul_tflops(device: torch.device, size: int, repeats: int = 10) -> float:
    """Measured bf16 TFLOP/s of ``size``-cubed matrix products (after 3 warm-ups): the attainable ceiling."""
    a = torch.randn(size, size, generator=torch.Generator(device).manual_seed(0), device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    synchronize(device)
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e12


def device_facts(device: torch.device, matmul_size: int) -> dict:
    """Name, versions, memory, datasheet peak and measured bf16 matmul ceiling of ``device``."""
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})"
    peak = peak_flops(name) if cuda else None
    return {"name": name, "type": device.type, "torch": torch.__version__, "torch_cuda_build": torch.version.cuda,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else None,
            "peak_flops_per_s": peak,
            "peak_note": "" if peak else ("no peak FLOP/s known for the CPU: MFU is null" if not cuda else
                                          f"{name} is not in gpu_job.PEAK_FLOPS: MFU is null"),
            "matmul_bf16_tflops_measured": matmul_tflops(device, matmul_size),
            "matmul_size": matmul_size}


# -- phase 1: data -----------------------------------------------------------------------------


def make_data(job: Job, record: dict, keys: list[str]) -> None:
    """Phase 1: the data sets ``keys`` of the plan, one after the other, each rendered by
    :func:`genvs.data.synthetic.make_dataset` on every process (the same files as one process would write)."""
    plan = job.plan
    record.update(processes=plan.processes, sets={})
    for key in keys:
        spec = plan.data[key]
        start = time.perf_counter()
        job.log(f"data: {key}: {spec.cars} cars of {spec.views} views at {spec.image_size} px on {plan.processes} "
                "processes")
        job.state.data[key] = make_dataset(job.work / f"cars_{key}", n_objects=spec.n_objects, n_views=spec.views,
                                           image_size=spec.image_size, seed=spec.seed,
                                           extra_train_objects=spec.extra_train_objects, workers=plan.processes,
                                           progress=False)
        seconds = time.perf_counter() - start
        job.state.train_sets[key] = train_split(job.state.data[key], spec.image_size)
        train = len(job.state.train_sets[key])
        record["sets"][key] = {**dataclasses.asdict(spec), "cars": spec.cars, "train_cars": train,
                               "seconds": seconds, "seconds_per_car_per_process": seconds * plan.processes / spec.cars}
        job.log(f"data: {key}: {spec.cars} cars ({train} to train on) in {seconds:.1f} s")
        job.write()


# -- phase 2: training benchmark ---------------------------------------------------------------


def warmup_steps(config: TrainConfig, dataset: SRNDataset, plan: JobPlan) -> tuple[int, list[int]]:
    """The fewest warm-up steps (``min_warmup`` .. ``max_warmup``) whose numbers of input views include every
    number the timed steps draw, so that no timed step meets a new shape (a compiled model would recompile).
    Step ``t``'s micro-batch is ``StepBatches`` item ``t`` (one micro-batch per step, one process).
    Returns the warm-up and the number of input views of each step."""
    batches = StepBatches(dataset, config.batch_size, config.model.max_input_views, config.target_views, config.seed)
    n_inputs = [batches.draw(step)[1] for step in range(plan.max_warmup + plan.timed_steps)]
    for warmup in range(plan.min_warmup, plan.max_warmup + 1):
        if set(n_inputs[warmup:warmup + plan.timed_steps]) <= set(n_inputs[:warmup]):
            break
    return warmup, n_inputs[:warmup + plan.timed_steps]


def timing_trainer(plan: JobPlan, config: TrainConfig, data: SRNDataset, folder: Path, steps: int, *,
                   init: Path | None = None, workers: int | None = None) -> Trainer:
    """A trainer of ``steps`` steps for timing: no logging, samples or checkpoints; ``plan.workers`` loader
    processes unless ``workers`` says otherwise."""
    return Trainer(config, data, folder, steps, init=init, device=plan.device, log_every=10**9, sample_every=0,
                   checkpoint_every=0, workers=plan.workers if workers is None else workers, progress=False)


def measure_steps(trainer: Trainer, warmup: int, timed: int, profiled: int = 0) -> dict:
    """Time a fresh trainer's steps: ``warmup`` steps, then ``timed`` steps one by one, then ``profiled`` steps under
    ``torch.profiler``.

    Returns:
        ``warmup_steps``, ``warmup_s``, ``first_losses`` (the first step's: the same weights and batch in every
        precision), ``timed_steps``, ``step_s`` (mean), ``step_s_median``, ``step_s_all``, ``steps_per_s``,
        ``images_per_s`` (target images per step / ``step_s``), ``data_wait_s`` (per timed step, waiting for the
        loader), ``max_memory_gib`` (CUDA); with ``profiled``: ``kernel_s_per_step`` and
        ``kernel_launches_per_step`` (CUDA kernels), ``gpu_busy_fraction`` = kernel seconds per step / ``step_s_median``
        (None without CUDA kernels), ``top_host_ops`` (the profiler's table of host operators).
    """
    device, config = trainer.device, trainer.config
    batches, waits = trainer.micro_batches(), []

    def timed_batches():
        while True:
            start = time.perf_counter()
            batch = next(batches)
            waits.append(time.perf_counter() - start)
            yield batch

    source = timed_batches()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    first = {}
    for step in range(warmup):
        losses = trainer.train_step(source)
        first = first or {name: value for name, value in losses.items() if name != "grad_norm"}
    synchronize(device)
    entry = {"warmup_steps": warmup, "warmup_s": time.perf_counter() - start, "first_losses": first}
    waits.clear()
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        trainer.train_step(source)
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = statistics.mean(times)
    images = config.batch_size * config.target_views * config.grad_accumulation
    entry.update(timed_steps=timed, step_s=step_s, step_s_median=statistics.median(times), step_s_all=times,
                 steps_per_s=1 / step_s, images_per_s=images / step_s, data_wait_s=sum(waits) / timed,
                 max_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)
    if profiled:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as profiler:
            for _ in range(profiled):
                trainer.train_step(source)
            synchronize(device)
        kernels = [event for event in profiler.events() if event.device_type == DeviceType.CUDA]
        kernel_s = sum(event.self_device_time_total for event in kernels) / 1e6 / profiled
        entry.update(profiled_steps=profiled, kernel_s_per_step=kernel_s if kernels else None,
                     kernel_launches_per_step=len(kernels) / profiled if kernels else None,
                     gpu_busy_fraction=kernel_s / entry["step_s_median"] if kernels else None,
                     top_host_ops=profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return entry


def time_mode(job: Job, config: TrainConfig, data: SRNDataset, folder: Path, warmup: int, count_flops: bool,
              entry: dict) -> None:
    """:func:`measure_steps` of a fresh trainer (``plan.timed_steps`` timed steps after ``warmup``); with
    ``count_flops``, count the FLOPs of the timed steps again afterwards (same micro-batches, under
    FlopCounterMode). Fills ``entry``."""
    plan = job.plan
    trainer = timing_trainer(plan, config, data, folder, warmup + plan.timed_steps)
    entry.update(measure_steps(trainer, warmup, plan.timed_steps))
    if count_flops:
        batches = trainer.micro_batches(start=warmup)  # the timed steps' micro-batches again: the same shapes
        with FlopCounterMode(display=False) as counter:
            for _ in range(plan.timed_steps):
                trainer.train_step(batches)
        entry["flops_per_step"] = counter.get_total_flops() / plan.timed_steps


def bench_preset(job: Job, name: str, config: TrainConfig, data: SRNDataset, entry: dict) -> None:
    """The three :data:`MODES` of one preset, each in the time left for it; fills ``entry``."""
    warmup, n_inputs = warmup_steps(config, data, job.plan)
    entry.update(image_size=config.model.field.encoder.image_size, batch_size=config.batch_size,
                 target_views=config.target_views, input_views_per_step=n_inputs, modes={})
    peak = job.results["device"]["peak_flops_per_s"]
    for mode, (precision, compiled) in MODES.items():
        result = entry["modes"][mode] = {"precision": precision, "compile": compiled}
        if job.clock.left() < 1.0:
            result["status"] = "skipped: out of time"
            continue
        mode_config = dataclasses.replace(config, precision=precision,
                                          speed=dataclasses.replace(config.speed, compile=compiled))
        start = time.perf_counter()
        try:
            time_mode(job, mode_config, data, job.work / f"bench_{name}_{mode}", warmup, mode == "fp32_eager", result)
            result["status"] = "done"
        except OutOfTime:
            result["status"] = f"interrupted: out of time after {time.perf_counter() - start:.0f} s"
        except Exception as error:  # e.g. a compile failure: the other modes and presets still run
            result["status"] = f"failed: {type(error).__name__}: {error}"
            job.log(traceback.format_exc())
        finally:
            gc.collect()
            if compiled:
                torch._dynamo.reset()
            if job.plan.device.type == "cuda":
                torch.cuda.empty_cache()
        flops = entry["modes"]["fp32_eager"].get("flops_per_step")
        if flops and "step_s" in result:
            result["flops_per_step"] = flops
            kind = "bf16" if precision == "bf16" else "tf32"
            result["mfu"] = flops / result["step_s"] / peak[kind] if peak else None
            result["peak_used"] = f"{kind}: {peak[kind] / 1e12:.1f} TFLOP/s" if peak else None
        job.log(f"training_benchmark: {name} {mode}: {result['status']}" + (
            f"; warm-up {result['warmup_steps']} steps {result['warmup_s']:.1f} s; {result['step_s']:.3f} s/step, "
            f"{result['images_per_s']:.1f} images/s, MFU {_percent(result.get('mfu'))}" if "step_s" in result else ""))
    modes = entry["modes"]
    if "warmup_s" in modes["bf16_compile"] and "warmup_s" in modes["bf16_eager"]:
        entry["compile_warmup_extra_s"] = modes["bf16_compile"]["warmup_s"] - modes["bf16_eager"]["warmup_s"]


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def one_step_with_most_inputs(job: Job, config: TrainConfig, dataset: SRNDataset, folder: Path) -> None:
    """One training step of ``config`` on a micro-batch with the most input views (the most memory a step takes)."""
    batches = StepBatches(dataset, config.batch_size, config.model.max_input_views, config.target_views, config.seed)
    step = next(step for step in range(1000) if batches.draw(step)[1] == config.model.max_input_views)
    trainer = timing_trainer(job.plan, config, dataset, folder, step + 1, workers=0)
    trainer.train_step(trainer.micro_batches(start=step))
    synchronize(job.plan.device)


def fit_largest_batch(job: Job, name: str, config: TrainConfig, data: SRNDataset, limit: int,
                      entry: dict) -> TrainConfig:
    """``config`` at the largest batch, doubling from its own up to ``limit``, whose fp32 step (the most memory of
    the modes) with the most input views fits in the device's memory (:func:`one_step_with_most_inputs`); the MFU
    at a model's largest batch is what its training can reach. Each try goes into ``entry["largest_batch"]``."""
    record = entry["largest_batch"] = {"limit": limit, "tries": {}}
    fitted, batch = config.batch_size, config.batch_size
    try:
        while batch <= limit:
            trial = dataclasses.replace(config, batch_size=batch, precision="fp32")
            try:
                one_step_with_most_inputs(job, trial, data, job.work / f"fit_{name}_{batch}")
            except torch.OutOfMemoryError:
                record["tries"][str(batch)] = "out of memory"
                break
            finally:
                gc.collect()
                if job.plan.device.type == "cuda":
                    torch.cuda.empty_cache()
            record["tries"][str(batch)] = "fits"
            fitted, batch = batch, 2 * batch
    except OutOfTime:
        record["tries"][str(batch)] = "out of time"
    record["batch_size"] = fitted
    job.log(f"training_benchmark: {name}: largest batch {fitted} ({record['tries']})")
    return dataclasses.replace(config, batch_size=fitted)


def training_benchmark(job: Job, record: dict) -> None:
    """Phase 2: each preset gets an equal share of the time left for the phase."""
    record.update(compile_backend=job.plan.compile_backend, speed=dataclasses.asdict(GPU_SPEED), presets={})
    names = list(job.plan.bench)
    for index, name in enumerate(names):
        config, data_key = job.plan.bench[name]
        entry = record["presets"][name] = {}
        if data_key not in job.state.train_sets:
            entry["status"] = f"skipped: needs the {data_key} data set"
            continue
        share = job.clock.left() / (len(names) - index)
        job.log(f"training_benchmark: {name} ({share:.0f} s)")
        with job.clock.box(share):
            if name in job.plan.largest_batch:
                config = fit_largest_batch(job, name, config, job.state.train_sets[data_key],
                                           job.plan.largest_batch[name], entry)
            bench_preset(job, name, config, job.state.train_sets[data_key], entry)
        job.state.bench[name] = entry["modes"]
        job.write()


# -- phase 3: sampling benchmark ---------------------------------------------------------------


def sample_seconds(model: GeNVS, views: dict, n_views: int, steps: int, precision: str, device: torch.device) -> float:
    """Seconds of one ``sample_novel_views`` call: object 0's view 0 in, ``n_views`` target views out."""
    images, K, c2w = (views[key][None].to(device) for key in ("images", "K", "c2w"))
    synchronize(device)
    start = time.perf_counter()
    sample_novel_views(model, images[:, :1], K[:, :1], c2w[:, :1], K[:, 1:1 + n_views], c2w[:, 1:1 + n_views],
                       seed=0, precision=precision, **sampling_options("stochastic", steps))
    synchronize(device)
    return time.perf_counter() - start


def sampling_benchmark(job: Job, record: dict) -> None:
    """Phase 3: seconds per view for each precision, views per call and steps; a measurement whose estimate (from
    the fewer steps) does not fit in the time left is skipped."""
    plan, device = job.plan, job.plan.device
    config = train_config(plan.sampling_preset)
    model = GeNVS(config.model, seed=0).to(device).eval()
    size = config.model.field.encoder.image_size
    dataset = job.state.train_sets[plan.sampling_data]
    views = dataset.load_views(0, list(range(1 + max(plan.sampling_views))))
    torch.set_float32_matmul_precision("high")  # fp32 as the GPU presets train: TF32 matmuls
    record.update(preset=plan.sampling_preset, image_size=size, weights="random (the time does not depend on them)",
                  sampler="stochastic Euler (sampling_options('stochastic'))", fp32_matmuls="TF32",
                  seconds_per_view={})
    for precision in plan.precisions:
        table = record["seconds_per_view"][precision] = {str(steps): {} for steps in plan.sampling_steps}
        for n_views in plan.sampling_views:
            sample_seconds(model, views, n_views, 2, precision, device)  # warm-up: kernels, cuDNN, allocator
            per_step = 0.0  # seconds per sampler step of the last measurement: estimates the next one
            for steps in plan.sampling_steps:
                if per_step * steps > job.clock.left():
                    table[str(steps)][str(n_views)] = f"skipped: out of time (estimated {per_step * steps:.0f} s)"
                    continue
                seconds = sample_seconds(model, views, n_views, steps, precision, device)
                per_step = seconds / steps
                table[str(steps)][str(n_views)] = seconds / n_views
                job.log(f"sampling_benchmark: {precision}, {steps} steps, {n_views} view(s) per call: "
                        f"{seconds / n_views:.3f} s/view")
            job.write()


# -- phase 4: final training -------------------------------------------------------------------


def choose_compile(modes: dict | None, seconds: float) -> tuple[bool, str]:
    """Whether compiling the final run gives more steps in ``seconds`` than eager bf16, from the benchmark's figures
    (its compile warm-up counted in full, though the on-disk compile cache makes a second compile shorter)."""
    eager, compiled = (modes or {}).get("bf16_eager", {}), (modes or {}).get("bf16_compile", {})
    if eager.get("status") != "done" or compiled.get("status") != "done":
        return False, "eager: no complete bf16 eager and bf16 + compile figures to compare"
    eager_steps = seconds * eager["steps_per_s"]
    compiled_steps = max(0.0, seconds - compiled["warmup_s"]) * compiled["steps_per_s"]
    choice = compiled_steps > eager_steps
    return choice, (f"{'compile' if choice else 'eager'}: in {seconds:.0f} s, compiled ~{compiled_steps:.0f} steps "
                    f"(after {compiled['warmup_s']:.0f} s of warm-up) vs eager ~{eager_steps:.0f}")


def final_training(job: Job, record: dict) -> None:
    """Phase 4: train :attr:`Plan.final` for the time left, its cosine schedule sized from the measured speed
    (phase 2's, or, where phase 2 has none for this config, that of a few timed steps of its own)."""
    plan = job.plan
    data = job.state.train_sets[plan.final_data]
    last_write_s = 2.0 if plan.device.type == "cpu" else 15.0  # the last checkpoint
    seconds = job.clock.left() - last_write_s
    modes = job.state.bench.get(plan.final_bench, {})
    compiled, reason = choose_compile(modes, seconds)
    config = dataclasses.replace(plan.final, speed=dataclasses.replace(plan.final.speed, compile=compiled))
    measured = modes.get("bf16_compile" if compiled else "bf16_eager", {})
    if "steps_per_s" not in measured:  # e.g. --skip training_benchmark: time the final config itself, eager
        measured = record["speed_probe"] = {}
        time_mode(job, config, data, job.work / "final_speed_probe", warmup_steps(config, data, plan)[0], False,
                  measured)
        seconds = job.clock.left() - last_write_s
        job.log(f"final_training: speed probe {measured['steps_per_s']:.2f} steps/s")
    steps = int(0.9 * measured["steps_per_s"] * (seconds - (measured["warmup_s"] if compiled else 0.0)))
    steps = max(1, min(steps, plan.final_max_steps or steps))
    record.update(config={key: value for key, value in dataclasses.asdict(config).items() if key != "model"},
                  choice=plan.final_why, compile=compiled, compile_decision=reason, planned_steps=steps,
                  time_limit_s=seconds, cars=len(data))
    job.log(f"final_training: {steps} steps planned in {seconds:.0f} s ({reason})")
    job.state.run_dir = job.work / "final_run"
    if plan.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(plan.device)
    trainer = Trainer(config, data, job.state.run_dir, steps, device=plan.device, log_every=plan.log_every,
                      sample_every=0, checkpoint_every=0, workers=plan.workers, progress=False)
    record["parameters"] = sum(parameter.numel() for parameter in trainer.model.parameters())
    start = time.perf_counter()
    try:
        with job.clock.stopping(trainer.request_stop):
            trainer.run(time_limit=seconds)
    finally:  # also when stopped: the trainer has saved a checkpoint, its log holds the losses
        record.update(steps=trainer.step, minutes=(time.perf_counter() - start) / 60,
                      max_memory_gib=torch.cuda.max_memory_allocated(plan.device) / 2**30
                      if plan.device.type == "cuda" else None)
        record_losses(record, read_log(job.state.run_dir))
        losses = f", loss {record['first_losses']['loss']:.3f} -> {record['final_losses']['loss']:.3f}" \
            if "final_losses" in record else ""
        job.log(f"final_training: {trainer.step} steps in {record['minutes']:.1f} min{losses}")


def record_losses(record: dict, rows: list[dict]) -> None:
    """The first and last logged losses, the loss curve and the median images/s of a run's log rows."""
    if not rows:
        return
    parts = [name for name in ("loss", "denoising", "rgb", "input_rgb", "opacity") if name in rows[-1]]
    record.update(images_per_s_median=statistics.median(row["images_per_s"] for row in rows),
                  first_losses={name: rows[0][name] for name in parts},
                  final_losses={name: rows[-1][name] for name in parts},
                  loss_curve=[{"step": int(row["step"]), **{name: row[name] for name in parts}} for row in rows])


# -- phases 5-7: export, evaluation, figure ----------------------------------------------------


def write_parts(path: Path, out: Path) -> list[str]:
    """Copy ``path`` into ``out`` as ``<name>.part0``, ``.part1``, ... of at most :data:`PART_BYTES` each."""
    names = []
    with path.open("rb") as source:
        while chunk := source.read(PART_BYTES):
            names.append(f"{path.name}.part{len(names)}")
            (out / names[-1]).write_bytes(chunk)
    return names


def export(job: Job, record: dict) -> None:
    """Phase 5: the fp16 export of the final run, tarred, in parts that the device tool brings back."""
    folder = job.work / "model_fp16"
    export_model(job.state.run_dir, folder)
    job.state.model_dir = folder
    archive = job.work / "model_fp16.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(folder, arcname=folder.name)
    record.update(bytes=archive.stat().st_size, parts=write_parts(archive, job.out),
                  reassemble="cat model_fp16.tar.part* | tar x  # -> model_fp16/, load with genvs.training.load_model",
                  note=f"one file of {archive.stat().st_size / 2**20:.1f} MiB; the device tool brings back files of at "
                       f"most 16 MiB, so it is split into parts of {PART_BYTES / 2**20:.0f} MiB")
    job.log(f"export: {record['bytes'] / 2**20:.1f} MiB in {len(record['parts'])} part(s)")


def evaluation(job: Job, record: dict) -> None:
    """Phase 6: the held-out protocol on the exported model (the run's EMA weights if the export was skipped)."""
    model, _ = load_model(job.state.model_dir or job.state.run_dir, device=job.plan.device)
    results = evaluate(model, job.state.data[job.plan.final_data], job.plan.protocol, device=job.plan.device,
                       progress=False)
    job.state.examples = results.pop("examples")
    record.update(protocol=results["protocol"], objects=len(results["objects"]), lpips=results["lpips"],
                  attributes=results["attributes"],
                  **{key: {method: {metric: {"mean": row["mean"], "std": row["std"]} for metric, row in scores.items()}
                           for method, scores in results[key].items()} for key in ("metrics", "attribute_metrics")},
                  table=results_table(results))
    job.log("evaluation:\n" + record["table"])


def figure(job: Job, record: dict) -> None:
    """Phase 7: ``samples.png``, input | truth | each method, one row per held-out car."""
    fig = plot_evaluation_examples(job.state.examples)
    fig.savefig(job.out / "samples.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    record["path"] = "samples.png"


# -- the leg: one call trains the shipped reference model further -------------------------------


SHIPPED_REFERENCE = REPO / "genvs" / "shipped" / "lesson"
"""The reference model every lesson loads; a leg starts from it and is scored against its ``evaluation.json``."""

LEG_BUDGET = {"data": 0.12, "throughput": 0.15, "export": 0.01, "evaluation": 0.20, "figure": 0.02}
"""Each leg phase's share of ``--minutes``, with room to spare (what a phase leaves goes to the training, which gets
what is left). At 7 minutes: data 50 s for ~25 s of rendering (:data:`LEG_DATA`); the sweep 63 s for 8 settings of
a few seconds each; the protocol 84 s (20 cars x (8 targets x 25 steps x 3 samplers + 2 autoregressive draws),
batched by object on the GPU: ~2000 launch-bound denoiser calls); training about 4 minutes."""

LEG_DATA = DataSpec(image_size=32, n_objects=600, views=24, seed=0, extra_train_objects=4400)
"""The reference model's cars and more of them: its card's ``make-data --objects 600 --extra-train 2520 --views 24
--size 32`` (seed 0) gives objects 0-3119, whose test split holds the protocol's 20 cars; 1880 more training
cars follow (objects 3120-4999, the same generator and seed): 4880 to train on. A leg of 4 minutes at thousands of
target images a second sees ~700k images: each of 3000 cars ~230 times, against 32 in the CPU leg that trained the
shipped model; 1.6 times the cars cut the repeats for ~10 s more rendering. 5000 cars take ~26 s on 16 processes
at the H200 run's rate (0.22 s per 64 px car of 16 views per process; a 32 px car of 24 views has 0.375 times the
pixels)."""

LEG_BATCHES = (64, 128, 256, 512)
"""Objects per step (x 2 targets) the leg's throughput phase times; the shipped model trained at 4."""

LEG_MODES = ("fp32_eager", "bf16_eager")
"""The settings the leg times by default: compiling took more than 2 minutes on the H200 (``results/gpu_job_h200``),
more than a leg can spend; ``--modes`` adds ``bf16_compile`` and ``bf16_cudagraphs``."""

SWEEP_MODES = {"fp32_eager": ("fp32", None), "bf16_eager": ("bf16", None), "bf16_compile": ("bf16", "default"),
               "bf16_cudagraphs": ("bf16", "reduce-overhead")}
"""Settings of a throughput sweep: (precision, ``torch.compile`` mode or None for eager), all with
:data:`genvs.training.GPU_SPEED` (TF32 matmuls for fp32, channels-last, fused AdamW). ``reduce-overhead``
records CUDA graphs (one per number of input views) and replays them."""

LR_SCALE_CAP = 2.0
"""Largest learning-rate factor :func:`leg_config` applies: the ``lesson`` preset's rates (2e-3 to 5e-3 at 4 objects
per step) are already high for AdamW, and the first H200 run trained at 8x the batch with unscaled rates."""

WARMUP_FRACTION = 0.05
"""The leg's linear warm-up, as a fraction of its planned steps (at least 20 steps)."""

LOSS_TOLERANCE = 0.03
"""A sweep setting is correct when its first step's loss is finite and within this relative distance of fp32 eager's
at the same batch (the same weights, batch and noise draws: only the arithmetic differs)."""

FASTER_BY = 0.05
"""A larger batch is chosen over a smaller one only if it is this much faster in images/s (more steps per image
otherwise)."""


def leg_config(base: TrainConfig, batch_size: int, precision: str, compile_mode: str | None) -> tuple[TrainConfig,
                                                                                                           dict]:
    """``base`` at ``batch_size`` objects per step, its learning rates scaled by the square-root rule for adaptive
    optimisers (Malladi et al. 2022, https://arxiv.org/abs/2205.10287): ``lr = lr_base * min(sqrt(B / B_base),``
    :data:`LR_SCALE_CAP` ``)``, in ``precision``, compiled with ``compile_mode`` (None: eager).

    Returns:
        the config and ``{"factor", "rule", "lr_encoder", "lr_field", "lr_denoiser"}``.
    """
    factor = min(math.sqrt(batch_size / base.batch_size), LR_SCALE_CAP)
    rates = {f"lr_{part}": getattr(base, f"lr_{part}") * factor for part in ("encoder", "field", "denoiser")}
    speed = dataclasses.replace(base.speed, compile=compile_mode is not None,
                                compile_mode=compile_mode or base.speed.compile_mode)
    config = dataclasses.replace(base, batch_size=batch_size, precision=precision, speed=speed, **rates)
    rule = (f"sqrt({batch_size} / {base.batch_size}) = {math.sqrt(batch_size / base.batch_size):.2f}, capped at "
            f"{LR_SCALE_CAP:g}")
    return config, {"factor": factor, "rule": rule, **rates}


@dataclass(frozen=True)
class LegPlan(JobPlan):
    """What a leg runs: on the GPU (:func:`leg_plan`) or the dry run's tiny version (:func:`dry_leg_plan`)."""

    init: Path
    base: TrainConfig
    batches: tuple[int, ...]
    modes: tuple[str, ...]
    profiled_steps: int
    max_steps: int | None
    budget: dict[str, float] = field(default_factory=lambda: LEG_BUDGET)


def leg_plan(batches: tuple[int, ...] = LEG_BATCHES, modes: tuple[str, ...] = LEG_MODES) -> LegPlan:
    """The leg on one GPU: the reference (``lesson``) preset at GPU batches, bf16-capable, the GPU speed settings;
    14 loader workers and 16 rendering processes on the machine's 16 cores."""
    cores = os.cpu_count() or 1
    return LegPlan(device=torch.device("cuda"), compile_backend="inductor", data={"leg": LEG_DATA},
                   init=SHIPPED_REFERENCE, base=train_config("lesson", speed=GPU_SPEED), batches=batches, modes=modes,
                   min_warmup=3, max_warmup=8, timed_steps=5, profiled_steps=2, max_steps=None, log_every=50,
                   protocol=GPU_PROTOCOL, workers=max(1, cores - 2), processes=cores, matmul_size=8192)


def dry_leg_plan(batches: tuple[int, ...] = (2, 4), modes: tuple[str, ...] = LEG_MODES) -> LegPlan:
    """The same leg on the CPU at tiny sizes: the shipped model's architecture (the init needs it), 20 cars, batches
    of 2 and 4, a step per stage, 3 training steps, the smoke protocol."""
    return LegPlan(device=torch.device("cpu"), compile_backend="aot_eager",
                   data={"leg": DataSpec(image_size=32, n_objects=20, views=6, seed=0)}, init=SHIPPED_REFERENCE,
                   base=train_config("lesson", speed=GPU_SPEED), batches=batches, modes=modes, min_warmup=1,
                   max_warmup=3, timed_steps=1, profiled_steps=1, max_steps=3, log_every=1, protocol=PROTOCOLS["smoke"],
                   workers=0, processes=2, matmul_size=128)


def throughput(job: Job, record: dict) -> None:
    """Leg phase 2: every (batch, mode) of the plan from the shipped weights, the largest batch first (the first H200
    run found larger batches faster, so a sweep cut short by its time box loses the likely slowest) and fp32 eager
    first at each batch (the correctness reference); :func:`measure_steps` gives images/s, the loader's wait and
    the GPU's busy fraction. Then :func:`choose_setting` picks the leg's."""
    plan = job.plan
    data = job.state.train_sets["leg"]
    record.update(modes={mode: {"precision": SWEEP_MODES[mode][0], "compile_mode": SWEEP_MODES[mode][1]}
                         for mode in plan.modes}, settings={}, lr_scale_cap=LR_SCALE_CAP,
                  loss_tolerance=LOSS_TOLERANCE)
    modes = ["fp32_eager", *(mode for mode in plan.modes if mode != "fp32_eager")]
    try:
        sweep(job, record, data, modes)
    except OutOfTime:  # choose among the settings measured so far
        record["stopped"] = f"at its time box, after {len(record['settings'])} of " \
                            f"{len(plan.batches) * len(modes)} settings"
    train_s = job.clock.end - time.perf_counter() - job.reserve_s()  # about what the leg's training will get
    job.state.setting = record["chosen"] = choose_setting(record["settings"], train_s)
    job.log(f"throughput: chosen {record['chosen']}")


def sweep(job: Job, record: dict, data: SRNDataset, modes: list[str]) -> None:
    """Time each (batch, mode) into ``record["settings"]`` (:func:`throughput`), with what the loader sustains at
    each batch (:func:`loader_images_per_s`)."""
    plan, loader = job.plan, {}
    for batch in sorted(plan.batches, reverse=True):
        for mode in modes:
            name = f"batch{batch}_{mode}"
            entry = record["settings"][name] = {"batch_size": batch, "mode": mode}
            config, _ = leg_config(plan.base, batch, *SWEEP_MODES[mode])
            warmup, _ = warmup_steps(config, data, plan)  # compiled: no timed step meets a new shape
            start = time.perf_counter()
            try:
                trainer = timing_trainer(plan, config, data, job.work / "throughput" / name,
                                         warmup + plan.timed_steps + plan.profiled_steps, init=plan.init)
                entry.update(measure_steps(trainer, warmup, plan.timed_steps, plan.profiled_steps))
                if batch not in loader:
                    loader[batch] = loader_images_per_s(trainer, plan.workers)
                limit = loader[batch]["loader_images_per_s"]
                entry.update(loader[batch], sustained_images_per_s=min(entry["images_per_s"], limit or math.inf))
                entry["status"] = "done"
            except OutOfTime:
                entry["status"] = f"interrupted: out of time after {time.perf_counter() - start:.0f} s"
                raise
            except Exception as error:  # e.g. a compile failure or out of memory: the other settings still run
                entry["status"] = f"failed: {type(error).__name__}: {error}"
                job.log(traceback.format_exc())
            finally:
                entry.pop("top_host_ops", None)
                if SWEEP_MODES[mode][1] is not None:
                    torch._dynamo.reset()
                gc.collect()
                if plan.device.type == "cuda":
                    torch.cuda.empty_cache()
                job.write()
            job.log(f"throughput: {name}: {entry['status']}" + (
                f"; {entry['step_s_median']:.3f} s/step, {entry['images_per_s']:.0f} images/s (sustained with the "
                f"loader: {entry['sustained_images_per_s']:.0f}), busy "
                f"{_percent(entry['gpu_busy_fraction'])}, loader wait {1000 * entry['data_wait_s']:.1f} ms/step, "
                f"first loss {entry['first_losses']['loss']:.4f}" if entry["status"] == "done" else ""))


def loader_images_per_s(trainer: Trainer, workers: int, samples: int = 1) -> dict:
    """What ``workers`` loader processes sustain: ``workers x images per micro-batch / seconds to build one`` (timed
    here, in this process, on ``samples`` micro-batches past the sweep's). A few timed steps cannot show it: the loader
    prefetches two micro-batches per worker during the warm-up. With no workers the step times include the loading.

    Returns:
        ``{"load_s_per_micro_batch", "loader_images_per_s"}`` (the latter None with no workers: no limit of its own).
    """
    start = time.perf_counter()
    for index in range(samples):
        trainer.batches[10**6 + index]
    load_s = (time.perf_counter() - start) / samples
    images = trainer.config.batch_size * trainer.config.target_views
    return {"load_s_per_micro_batch": load_s, "loader_images_per_s": workers * images / load_s if workers else None}


def choose_setting(settings: dict[str, dict], train_s: float | None = None) -> dict:
    """The leg's setting from a throughput sweep (``{name: {"batch_size", "mode", "status",
    "sustained_images_per_s", "warmup_s", "first_losses"}}``): among the correct ones (done, first loss finite and
    within :data:`LOSS_TOLERANCE` of fp32 eager's at the same batch), the one that trains the most images: at the
    images/s that its steps and the loader sustain, for ``train_s`` seconds less its warm-up (compiling, for a
    compiled setting; None: the warm-up not counted); a larger batch only if :data:`FASTER_BY` more.

    Returns:
        ``{"name", "batch_size", "mode", "images_per_s", "warmup_s", "why"}``.
    Raises:
        RuntimeError: no setting is correct (the statuses and losses named).
    """
    reference = {entry["batch_size"]: entry["first_losses"]["loss"] for entry in settings.values()
                 if entry["mode"] == "fp32_eager" and entry.get("status") == "done"}
    correct = {}
    for name, entry in settings.items():
        loss = entry.get("first_losses", {}).get("loss") if entry.get("status") == "done" else None
        base = reference.get(entry["batch_size"])
        entry["correct"] = (loss is not None and base is not None and math.isfinite(loss) and math.isfinite(base)
                            and abs(loss - base) <= LOSS_TOLERANCE * abs(base))
        if entry["correct"]:
            correct[name] = entry
    if not correct:
        raise RuntimeError("no correct setting in the throughput sweep: " + "; ".join(
            f"{name}: {entry.get('status')}, first loss {entry.get('first_losses', {}).get('loss')}"
            for name, entry in settings.items()))
    worth = {name: entry["sustained_images_per_s"] * (1.0 if train_s is None else max(0.0, train_s - entry["warmup_s"]))
             for name, entry in correct.items()}
    ranked = sorted(correct, key=lambda name: (correct[name]["batch_size"], -worth[name]))
    best_name = ranked[0]
    for name in ranked[1:]:  # a larger batch, or a slower mode at the same batch
        if worth[name] > (1 + FASTER_BY) * worth[best_name]:
            best_name = name
    best = correct[best_name]
    fastest = max(correct, key=lambda name: correct[name]["sustained_images_per_s"])
    expected = "" if train_s is None else f"; ~{worth[best_name]:,.0f} target images in {train_s:.0f} s"
    return {"name": best_name, "batch_size": best["batch_size"], "mode": best["mode"],
            "images_per_s": best["sustained_images_per_s"], "warmup_s": best["warmup_s"],
            "why": f"{len(correct)} of {len(settings)} settings correct; fastest "
                   f"{correct[fastest]['sustained_images_per_s']:.0f} images/s sustained, {fastest}{expected}; a "
                   f"larger batch must train {100 * FASTER_BY:.0f}% more images than a smaller one"}


def leg_training(job: Job, record: dict) -> None:
    """Leg phase 3: the chosen setting from the shipped weights for the time left, its warm-up
    (:data:`WARMUP_FRACTION`) and cosine decay sized from the sweep's steps/s; a checkpoint every quarter of the
    run, and one where it stops at its time box."""
    plan, setting = job.plan, job.state.setting
    data = job.state.train_sets["leg"]
    precision, compile_mode = SWEEP_MODES[setting["mode"]]
    config, rates = leg_config(plan.base, setting["batch_size"], precision, compile_mode)
    steps_per_s = setting["images_per_s"] / (config.batch_size * config.target_views)
    last_write_s = 2.0 if plan.device.type == "cpu" else 10.0  # the last checkpoint
    seconds = job.clock.left() - last_write_s
    compiling_s = setting["warmup_s"] if compile_mode else 0.0  # compiled again: the sweep's dynamo state is reset
    steps = max(1, int(0.9 * steps_per_s * (seconds - compiling_s)))
    steps = min(steps, plan.max_steps or steps)
    config = dataclasses.replace(config, warmup_steps=max(20, round(WARMUP_FRACTION * steps)) if steps >= 100 else 1)
    record.update(setting=setting, learning_rates=rates, warmup_steps=config.warmup_steps, planned_steps=steps,
                  time_limit_s=seconds, init=str(plan.init.relative_to(REPO)),
                  config={key: value for key, value in dataclasses.asdict(config).items() if key != "model"})
    job.log(f"leg_training: {steps} steps planned in {seconds:.0f} s at batch {config.batch_size} ({setting['mode']}), "
            f"learning rates x{rates['factor']:.2f}, warm-up {config.warmup_steps}")
    job.state.run_dir = job.work / "leg"
    trainer = Trainer(config, data, job.state.run_dir, steps, init=plan.init, device=plan.device,
                      log_every=plan.log_every, sample_every=0, checkpoint_every=max(1, steps // 4),
                      workers=plan.workers, progress=False)  # a run stopped by an error still leaves its last quarter
    start = time.perf_counter()
    try:
        with job.clock.stopping(trainer.request_stop):
            trainer.run(time_limit=seconds)
    finally:  # also when stopped: the trainer has saved a checkpoint, its log holds the losses
        per_step = config.batch_size * config.target_views * config.grad_accumulation
        record.update(steps=trainer.step, target_images=trainer.step * per_step,
                      minutes=(time.perf_counter() - start) / 60,
                      max_memory_gib=torch.cuda.max_memory_allocated(plan.device) / 2**30
                      if plan.device.type == "cuda" else None)
        record_losses(record, read_log(job.state.run_dir))
        job.log(f"leg_training: {trainer.step} steps, {record['target_images']:,} target images in "
                f"{record['minutes']:.1f} min" + (f", loss {record['first_losses']['loss']:.3f} -> "
                                                  f"{record['final_losses']['loss']:.3f}" if "final_losses" in record
                                                  else ""))


LEG_FILES = ("export", "evaluation.json", "leg.json", "log.csv", "config.json")
"""What of the leg's run folder travels back (not its training checkpoints: 4 copies of the weights)."""


def pack_leg(job: Job) -> dict:
    """Tar the leg folder's :data:`LEG_FILES` as ``leg/`` into ``DIR/leg.tar.part*``, replacing earlier parts.
    Returns the archive's ``bytes``, ``parts`` and how to ``reassemble`` it."""
    for old in job.out.glob("leg.tar.part*"):
        old.unlink()
    archive = job.work / "leg.tar"
    with tarfile.open(archive, "w") as tar:
        for name in LEG_FILES:
            if (job.state.run_dir / name).exists():
                tar.add(job.state.run_dir / name, arcname=f"leg/{name}")
    return {"bytes": archive.stat().st_size, "parts": write_parts(archive, job.out),
            "reassemble": "cat leg.tar.part* | tar x  # -> leg/; python -m genvs ship-leg --leg leg"}


def leg_export(job: Job, record: dict) -> None:
    """Leg phase 4: the fp16 export, packed at once (the model comes back even if the evaluation does not end)."""
    job.state.model_dir = export_model(job.state.run_dir, job.state.run_dir / "export").parent
    record.update(pack_leg(job))
    job.log(f"export: {record['bytes'] / 2**20:.1f} MiB in {len(record['parts'])} part(s)")


def leg_evaluation(job: Job, record: dict) -> None:
    """Leg phase 5: the protocol on the export (:func:`genvs.legs.score_leg`), the leg's record, its headline rows
    against the shipped model's (:func:`genvs.legs.compare`), packed again with the scores."""
    plan = job.plan
    where = f"{describe_compute(plan.device)}, gpu_job.py --leg"
    leg, examples = score_leg(job.state.run_dir, job.state.data["leg"], init=plan.init.relative_to(REPO),
                              where=where, protocol=plan.protocol, device=plan.device, progress=False)
    job.state.examples = examples
    results = json.loads((job.state.run_dir / "evaluation.json").read_text())
    shipped = json.loads((plan.init / "evaluation.json").read_text())
    before, after = headline_scores(shipped), leg["scores"]
    verdicts = compare(after, before)
    same_protocol = all(results[key] == shipped[key] for key in ("objects", "views")) and (
        {**results["protocol"], "object_batch": 1} == {**shipped["protocol"], "object_batch": 1})
    record.update(protocol=results["protocol"], leg=leg, before=before, after=after, verdicts=verdicts,
                  same_protocol_as_shipped=same_protocol,
                  ship=same_protocol and "worse" not in verdicts.values(),
                  comparison=comparison_table(after, before), legs_table_row=legs_table([leg]).splitlines()[-1],
                  table=results_table(results))
    job.results["export"].update(pack_leg(job))  # again, with the scores
    job.log("evaluation:\n" + record["table"] + "\nagainst the shipped model:\n" + record["comparison"] +
            f"ship: {record['ship']} (same protocol as the shipped evaluation: {same_protocol})")


def run_leg(job: Job) -> None:
    """The leg's phases in order, each in its time box, ``results.json`` written after each."""
    state = job.state
    job.phase("data", lambda record: make_data(job, record, ["leg"]), job.budget("data"))
    job.phase("throughput", lambda record: throughput(job, record), job.budget("throughput"),
              needs=("leg" in state.train_sets, "the leg's cars"))
    job.phase("leg_training", lambda record: leg_training(job, record), job.clock.left() - job.reserve_s(),
              needs=(state.setting is not None, "a chosen setting"))
    trained = state.run_dir is not None and latest_checkpoint(state.run_dir) is not None
    job.phase("export", lambda record: leg_export(job, record), job.budget("export"),
              needs=(trained, "a trained leg"))
    job.phase("evaluation", lambda record: leg_evaluation(job, record), job.budget("evaluation"),
              needs=(state.model_dir is not None, "an exported leg"))
    job.phase("figure", lambda record: figure(job, record), job.budget("figure"),
              needs=(bool(state.examples), "the evaluation's examples"))
    job.results["summary"] = leg_summary(job.results)
    job.write()


def leg_summary(results: dict) -> dict:
    """The leg's figures in one place (what the model card's legs table and ``benchmarks/README.md`` quote): the
    device, torch, the chosen batch and setting, its images/s and GPU busy fraction in the sweep, the training's
    median images/s, minutes and target images, and the protocol's headline rows before (the shipped model) and
    after, with the verdicts. A figure the leg did not reach is None."""
    chosen = results.get("throughput", {}).get("chosen") or {}
    sweep = results.get("throughput", {}).get("settings", {}).get(chosen.get("name"), {})
    training, evaluation = results.get("leg_training", {}), results.get("evaluation", {})
    return {"device": results["device"]["name"], "torch": results["device"]["torch"],
            "batch_size": chosen.get("batch_size"), "target_views": training.get("config", {}).get("target_views"),
            "mode": chosen.get("mode"), "sweep_images_per_s": chosen.get("images_per_s"),
            "sweep_gpu_busy_fraction": sweep.get("gpu_busy_fraction"),
            "training_images_per_s_median": training.get("images_per_s_median"),
            "training_minutes": training.get("minutes"), "steps": training.get("steps"),
            "target_images": training.get("target_images"), "before": evaluation.get("before"),
            "after": evaluation.get("after"), "verdicts": evaluation.get("verdicts"), "ship": evaluation.get("ship")}


# -- the job -----------------------------------------------------------------------------------


def run(job: Job) -> None:
    """Every phase in order, each in its time box, ``results.json`` written after each."""
    state = job.state
    job.phase("data", lambda record: make_data(job, record, job.data_needed()), job.budget("data"))
    job.phase("training_benchmark", lambda record: training_benchmark(job, record), job.budget("training_benchmark"),
              needs=(bool(state.train_sets), "synthetic data"))
    job.phase("sampling_benchmark", lambda record: sampling_benchmark(job, record), job.budget("sampling_benchmark"),
              needs=(job.plan.sampling_data in state.train_sets, f"the {job.plan.sampling_data} data set"))
    job.phase("final_training", lambda record: final_training(job, record), job.clock.left() - job.reserve_s(),
              needs=(job.plan.final_data in state.train_sets, f"the {job.plan.final_data} data set"))
    trained = state.run_dir is not None and latest_checkpoint(state.run_dir) is not None
    job.phase("export", lambda record: export(job, record), job.budget("export"), needs=(trained, "a trained model"))
    job.phase("evaluation", lambda record: evaluation(job, record), job.budget("evaluation"),
              needs=(trained, "a trained model"))
    job.phase("figure", lambda record: figure(job, record), job.budget("figure"),
              needs=(bool(state.examples), "the evaluation's examples"))


def _names(text: str, valid, option: str, parser: argparse.ArgumentParser) -> tuple[str, ...]:
    names = tuple(filter(None, text.split(",")))
    if not names or not set(names) <= set(valid):
        parser.error(f"{option}: {text!r}; choose among {', '.join(valid)}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="results folder (flat: results.json, gpu_job.log, "
                                                                "samples.png, and the model's parts)")
    parser.add_argument("--leg", action="store_true", help="train the shipped reference model further (module "
                                                           "docstring, 'The leg')")
    parser.add_argument("--minutes", type=float, default=None,
                        help="the whole job's time, wheel install included (default: 8; --leg: 7; dry run: 2)")
    parser.add_argument("--dry-run", action="store_true", help="the same phases on the CPU at tiny sizes")
    parser.add_argument("--skip", default="", help=f"comma-separated phases to leave out, among {', '.join(SKIPPABLE)} "
                                                   "(their minutes go to the final training; not with --leg)")
    parser.add_argument("--batches", default=None,
                        help=f"--leg: objects per step to time, comma-separated (default: "
                             f"{','.join(map(str, LEG_BATCHES))}; dry run: 2,4)")
    parser.add_argument("--modes", default=",".join(LEG_MODES),
                        help=f"--leg: settings to time, among {', '.join(SWEEP_MODES)} (default: %(default)s)")
    parser.add_argument("--throughput-share", type=float, default=None,
                        help=f"--leg: the throughput phase's share of --minutes (default "
                             f"{LEG_BUDGET['throughput']}; more for a call that times compiling)")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for data and runs (default: a temporary folder, removed at the end)")
    args = parser.parse_args()
    skip = frozenset(filter(None, args.skip.split(",")))
    if not skip <= set(SKIPPABLE):
        parser.error(f"--skip: unknown or required phases {sorted(skip - set(SKIPPABLE))}; may skip {SKIPPABLE}")
    if args.leg and skip:
        parser.error("--skip applies to the benchmark job, not to --leg")
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device here: --dry-run runs the job's code on the CPU at tiny sizes")
    if args.leg:
        modes = _names(args.modes, SWEEP_MODES, "--modes", parser)
        batches = None
        if args.batches:
            try:
                batches = tuple(sorted({int(value) for value in args.batches.split(",")}))
            except ValueError:
                batches = ()
            if not batches or min(batches) < 1:
                parser.error(f"--batches: {args.batches!r}; objects per step, comma-separated, e.g. 64,128,256")
        make_plan = dry_leg_plan if args.dry_run else leg_plan
        plan = make_plan(modes=modes, **({"batches": batches} if batches else {}))
        if args.throughput_share is not None:
            budget = {**plan.budget, "throughput": args.throughput_share}
            if not (0 < args.throughput_share and sum(budget.values()) < 0.9):
                parser.error(f"--throughput-share {args.throughput_share}: the shares would leave "
                             f"{1 - sum(budget.values()):.2f} of the time to train; at most "
                             f"{0.9 - sum(budget.values()) + args.throughput_share:.2f}")
            plan = dataclasses.replace(plan, budget=budget)
    else:
        plan = dry_plan() if args.dry_run else gpu_plan()
    minutes = args.minutes if args.minutes is not None else 2.0 if args.dry_run else 7.0 if args.leg else 8.0
    genvs.training.COMPILE_BACKEND = plan.compile_backend
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="genvs_gpu_job_"))
    work.mkdir(parents=True, exist_ok=True)
    clock = Clock(minutes * 60)
    results = {"job": {"leg": args.leg, "dry_run": args.dry_run, "minutes": minutes, "argv": sys.argv[1:],
                       "budget_shares": plan.budget, "skip": sorted(skip),
                       "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
               "units": UNITS, "setup": SETUP, "device": device_facts(plan.device, plan.matmul_size)}
    job = Job(args.out, work, plan, clock, results, skip)
    device = results["device"]
    job.log(f"gpu_job: {device['name']}, torch {device['torch']}, {minutes:g} min, "
            f"{'leg' if args.leg else 'benchmark job'}{', dry run' if args.dry_run else ''}; wheels: "
            f"{SETUP.get('wheels') or len(SETUP['installed'])}; ready after {SETUP['ready_after_s']:.1f} s; bf16 "
            f"matmul {device['matmul_bf16_tflops_measured']:.3g} TFLOP/s measured")
    job.write()
    try:
        (run_leg if args.leg else run)(job)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    failed = [name for name, value in results.items() if str(value.get("status", "")).startswith("failed")]
    job.log(f"gpu_job: finished in {time.perf_counter() - START:.0f} s" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
