"""Training GeNVS: one trainer for the CLI, the lessons, one CPU or many GPUs.

Each optimiser step ``t`` of a run is a pure function of the weights, the optimiser state and
the seed: micro-batch ``a`` of process ``rank`` is number ``i = (t A + a) W + rank`` of the run,
and its data (objects, views, number of input views) and every random number it needs (ray
jitter, training noise, conditioning dropout, dropout masks) come from ``derive_seed(seed, i)``.
So resuming from a checkpoint at step ``t`` continues exactly as if the run had never stopped,
the data loader may use any number of workers, and ``W`` processes compute the same steps as
one process accumulating ``W`` times as many micro-batches.

One step, with ``A`` micro-batches of gradient accumulation and ``W`` processes::

    g = (1 / (A W)) sum_{processes} sum_{a < A} grad L(batch_{t, a, rank})    (DDP averages over processes)
    g <- g * min(1, grad_clip / ||g||)                                          (gradient clipping)
         (||g|| not finite: fp16 skips the step, as its gradient scaler does; fp32 and bf16 stop the run)
    theta <- AdamW(theta, g, lr_part(t))      lr(t) = lr * warmup(t) * cosine(t)  (per part)
    theta_ema <- decay(t) theta_ema + (1 - decay(t)) theta                       (EMA, for sampling)

where ``decay(t) = min(ema_max, 1 - (1 + t)^-ema_power)`` (k-diffusion's ``EMAWarmup``).
Losses are :meth:`genvs.model.GeNVS.losses`; ``stage`` picks what trains (the staged recipe:
"field", then "denoiser" with ``init`` from the field run, then "joint").

Multi-GPU and multi-machine runs use ``torchrun`` (DDP): ``torchrun --nproc_per_node=N -m genvs
train ...``; the trainer reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from genvs.checkpoint import (CheckpointError, config_differences, latest_checkpoint, load_checkpoint,
                              prune_checkpoints, save_checkpoint)
from genvs.config import config_from_dict, from_preset
from genvs.data import SRNDataset
from genvs.data.srn import require_views
from genvs.denoiser import K as k_diffusion
from genvs.denoiser import denoiser_config
from genvs.field import field_config
from genvs.model import PRESETS as MODEL_PRESETS
from genvs.model import STAGES, GeNVS, GeNVSConfig, architecture
from genvs.sampling import sample_novel_views
from genvs.seeding import derive_seed, seeded_rng
from genvs.viz import field_rgb, save_contact_sheet

__all__ = ["SpeedConfig", "TrainConfig", "PRESETS", "train_config", "StepBatches", "Trainer", "load_model", "export_model",
           "shipped_checkpoint", "read_log", "lr_factor"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class SpeedConfig:
    """How fast a run computes, not what: each option changes the numbers by float rounding at most, so a
    run may resume with other speed settings (they are not compared when resuming).

    Attributes:
        tf32: on CUDA, float32 matmuls on TF32 tensor cores (``torch.set_float32_matmul_precision("high")``,
            cuDNN likewise; 10 mantissa bits inside the product, float32 accumulation). No effect on the CPU.
        channels_last: the encoder and the U-Net in channels-last memory format (NHWC), which GPU
            convolution kernels prefer.
        compile: ``torch.compile`` the encoder, the field MLP and the U-Net (opt-in: the first steps
            compile for minutes). k-diffusion turns dynamo's ``suppress_errors`` on when imported, which
            would fall back to eager mode silently; genvs turns it off, so a failure stops the run.
        fused_adamw: AdamW's fused kernel, all parameters in one launch.
    """

    tf32: bool = True
    channels_last: bool = False
    compile: bool = False
    fused_adamw: bool = False


COMPILE_BACKEND = "inductor"
"""``torch.compile``'s backend for ``SpeedConfig.compile`` (the tests use ``"aot_eager"``: no code generation)."""

GPU_SPEED = SpeedConfig(channels_last=True, fused_adamw=True)
"""The GPU presets' speed settings (``compile`` stays opt-in: ``--set speed.compile=true``)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the numbers a run computes (compared when resuming; ``speed`` is not).

    Attributes:
        model: the GeNVS model and its loss weights.
        stage: what trains (:data:`genvs.model.STAGES`).
        batch_size: objects per micro-batch and process.
        target_views: target views per object; input views are 1 to ``model.max_input_views``,
            drawn each step.
        lr_encoder, lr_field, lr_denoiser: AdamW learning rates of the three parts.
        weight_decay: AdamW's decoupled weight decay.
        warmup_steps: linear learning-rate warmup from 0.
        min_lr_fraction: the cosine decay ends at this fraction of each learning rate.
        grad_accumulation: micro-batches per optimiser step.
        grad_clip: largest gradient norm (over all parameters); 0 turns clipping off.
        ema_power, ema_max: EMA decay schedule (module docstring).
        precision: "fp32", "bf16" or "fp16" autocast (fp16 with gradient scaling); GPU presets only.
        seed: model initialisation and every step's randomness.
        speed: :class:`SpeedConfig`, how fast the same numbers are computed.
    """

    model: GeNVSConfig
    stage: str = "joint"
    batch_size: int = 4
    target_views: int = 1
    lr_encoder: float = 1e-4
    lr_field: float = 2e-4
    lr_denoiser: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1
    grad_accumulation: int = 1
    grad_clip: float = 1.0
    ema_power: float = 0.75
    ema_max: float = 0.9999
    precision: str = "fp32"
    seed: int = 0
    speed: SpeedConfig = SpeedConfig()

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; valid stages: {STAGES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {sorted(PRECISIONS)}")
        for name in ("batch_size", "target_views", "grad_accumulation"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_encoder", "lr_field", "lr_denoiser", "weight_decay", "warmup_steps", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_fraction <= 1.0:
            raise ValueError(f"min_lr_fraction must be in [0, 1], got {self.min_lr_fraction}")

    @property
    def views_per_object(self) -> int:
        """Views loaded per object: the most inputs plus the targets."""
        return self.model.max_input_views + self.target_views


PRESETS: dict[str, TrainConfig] = {
    # tests, CI and the lessons' live training: 32 px, ~0.2 s a step on one CPU thread
    "smoke": TrainConfig(MODEL_PRESETS["smoke"], batch_size=4, target_views=2, lr_encoder=1e-3, lr_field=2e-3,
                         lr_denoiser=1e-3, warmup_steps=20),
    # lessons 04 and 05: the smoke field with the cpu denoiser at 32 px and high learning rates,
    # about 0.5 s a step on one thread; in 1200 steps it learns silhouettes, pose and rough colours
    "lesson": TrainConfig(GeNVSConfig(field_config("smoke"), denoiser_config("cpu", noise="genvs", image_size=32),
                                      input_rgb_weight=1.0),
                          batch_size=4, target_views=2, lr_encoder=2e-3, lr_field=5e-3, lr_denoiser=3e-3,
                          warmup_steps=50),
    # a laptop CPU: 64 px, about 3 s a step on one thread
    "cpu": TrainConfig(MODEL_PRESETS["cpu"], batch_size=4, target_views=2, lr_encoder=5e-4, lr_field=1e-3,
                       lr_denoiser=5e-4, warmup_steps=50),
    # a Colab T4 (16 GB, no bf16): the cpu model at 64 px, bigger batches, fp16
    "colab-t4": TrainConfig(MODEL_PRESETS["cpu"], batch_size=16, target_views=2, lr_encoder=2e-4, lr_field=4e-4,
                            lr_denoiser=2e-4, warmup_steps=500, precision="fp16", speed=GPU_SPEED),
    # GeNVS at 128 px (~145M parameters) on A100/H100-class GPUs, per GPU; the seed
    # reimplementation fine-tuned its pretrained denoiser at 1e-5, from scratch 1e-4 trains faster
    "paper": TrainConfig(MODEL_PRESETS["paper"], batch_size=8, target_views=1, warmup_steps=1000, precision="bf16",
                         speed=GPU_SPEED),
}
"""Named training configs; get one with :func:`train_config`."""


def train_config(preset: str, **overrides) -> TrainConfig:
    """The training config of preset ``preset`` with top-level ``overrides``."""
    return from_preset(PRESETS, preset, "training", **overrides)


class StepBatches(torch.utils.data.Dataset):
    """Micro-batch ``i`` of a run, a pure function of ``(seed, i)``.

    Item ``i``: ``images [B, V, 3, H, W]``, ``K [B, V, 3, 3]``, ``c2w [B, V, 4, 4]`` and
    ``n_inputs`` (a 0-d long tensor): ``B`` distinct objects (with repeats only if the dataset
    has fewer), each with ``V = n_inputs + target_views`` distinct views, the first ``n_inputs``
    being inputs. ``n_inputs`` is drawn from ``1 .. max_inputs``.
    """

    def __init__(self, dataset: SRNDataset, batch_size: int, max_inputs: int, target_views: int, seed: int,
                 length: int = 2**62):
        self.dataset, self.batch_size, self.max_inputs, self.target_views = dataset, batch_size, max_inputs, target_views
        self.seed, self.length = seed, length
        require_views(dataset, max_inputs + target_views, " (max_input_views + target_views)")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, index))
        n_objects = len(self.dataset)
        objects = torch.cat([torch.randperm(n_objects, generator=generator)
                             for _ in range(math.ceil(self.batch_size / n_objects))])[: self.batch_size]
        n_inputs = int(torch.randint(1, self.max_inputs + 1, (1,), generator=generator))
        items = []
        for object_index in objects.tolist():
            n_views = self.dataset.objects[object_index].n_views
            views = torch.randperm(n_views, generator=generator)[: n_inputs + self.target_views].tolist()
            items.append(self.dataset.load_views(object_index, views))
        batch = {key: torch.stack([item[key] for item in items]) for key in ("images", "K", "c2w")}
        return {**batch, "n_inputs": torch.tensor(n_inputs)}


def _process_device(requested: torch.device | str | None, local_rank: int) -> torch.device:
    """This process's device: ``requested`` (a bare ``"cuda"`` is ``cuda:LOCAL_RANK``), by default
    ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if requested is None:
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(requested)
    return torch.device("cuda", local_rank) if device.type == "cuda" and device.index is None else device


def _join_processes(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)`` from torchrun's environment, after selecting this process's GPU.

    ``torch.cuda.set_device`` comes first, before anything touches CUDA (otherwise every process
    opens a context on GPU 0); then, for more than one process, the process group starts with the
    backend the device needs: NCCL on CUDA, gloo on the CPU (``--device cpu`` on a GPU machine too).
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return int(os.environ.get("RANK", "0")), world


def _speed_up(model: GeNVS, device: torch.device, speed: SpeedConfig) -> None:
    """Apply ``speed``'s TF32 and compile settings (channels-last and fused AdamW are set where the model
    and optimiser are made). Compiling happens in place (``nn.Module.compile``): parameter names, and so
    checkpoints, stay those of the eager model."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high" if speed.tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = speed.tf32
    if speed.compile:
        torch._dynamo.config.suppress_errors = False  # k-diffusion sets it to True on import: fail loudly instead
        for part in (model.field.encoder, model.field.mlp, model.denoiser.inner_model):
            part.compile(backend=COMPILE_BACKEND)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_fraction: float) -> float:
    """``warmup(t) * cosine(t)``: linear from 0 over ``warmup_steps``, then cosine down to ``min_fraction``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def load_model(path: str | Path, device: torch.device | str = "cpu", ema: bool = True) -> tuple[GeNVS, dict]:
    """A trained GeNVS from a run folder (its latest checkpoint) or a checkpoint's ``.json``.

    Args:
        ema: load the EMA weights (what sampling should use) instead of the raw ones.
    Returns:
        the model in eval mode on ``device``, and the checkpoint's training config as a dict.
    """
    step, state, config = load_checkpoint(path, device=device)
    weights = "ema" if ema else "model"
    if weights not in state:
        raise CheckpointError(f"{path}: this checkpoint holds only {sorted(state)} weights, not {weights!r} "
                              f"(an exported checkpoint keeps the EMA weights only: load it with ema=True)")
    model = GeNVS(config_from_dict(TrainConfig, config).model)
    model.load_state_dict(state[weights])  # copies into the model's float32 parameters, whatever the stored dtype
    return model.to(device).eval(), {**config, "step": step}


SHIPPED_CHECKPOINTS = Path(__file__).resolve().parents[1] / "data" / "checkpoints"


def shipped_checkpoint(preset: str) -> Path | None:
    """The folder of the checkpoint shipped for ``preset`` (``data/checkpoints/<preset>/``), or None if there is none."""
    folder = SHIPPED_CHECKPOINTS / preset
    return folder if latest_checkpoint(folder) is not None else None


def export_model(run: str | Path, out: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write a run's EMA weights alone, floating-point tensors in ``dtype``, as a checkpoint for sampling.

    A training checkpoint carries the raw weights, the EMA weights and two AdamW moments (four
    copies in float32); the export keeps the one copy sampling uses, at half the bytes in float16:
    ``2 x parameters`` bytes. :func:`load_model` reads it like any checkpoint (``ema=True``).

    Args:
        run: a run folder (its latest checkpoint) or a checkpoint's ``.json``.
        out: the folder to write (``step_N.safetensors``, ``step_N.json``, ``latest.json``).
    Returns:
        the path of the exported checkpoint's ``.json``.
    """
    step, state, config = load_checkpoint(run)
    weights = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor for name, tensor in state["ema"].items()}
    return save_checkpoint(out, step, {"ema": weights}, config)


def read_log(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``log.csv`` as dicts of floats (empty if there is no log yet)."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(file)]


class Trainer:
    """Trains GeNVS on an SRN-format dataset, writing checkpoints, a loss log and sample grids to ``out``.

    Args:
        config: :class:`TrainConfig`.
        data: SRN-format root (its train split is used; its val split, if any, for sample grids).
        out: the run folder: ``step_*.safetensors/.json`` checkpoints, ``log.csv`` (one row per
            ``log_every`` steps), ``samples/step_*.png`` and ``config.json``.
        steps: optimiser steps of the run (the cosine schedule ends there).
        resume: continue the run in ``out`` from its latest checkpoint (starts fresh if it has none).
        init: a run folder or checkpoint whose model weights start this run (the staged recipe);
            its model config must equal ``config.model``.
        device: default: ``cuda:LOCAL_RANK`` if CUDA is available, else the CPU (``"cuda"``: ``cuda:LOCAL_RANK``).
        log_every, sample_every, checkpoint_every: intervals in steps (sample/checkpoint default:
            a tenth of the run); 0 turns samples or intermediate checkpoints off.
        sample_objects, sample_steps: objects in each sample grid, sampler steps (Heun).
        keep_checkpoints: newest checkpoints kept on disk.
        workers: data-loading processes (0: load in the training process). Default: 4 (at most the CPU count)
            on CUDA, where decoding PNGs in the training process would starve the GPU; 0 on the CPU, where
            the same cores would do both. The loader lives for the whole ``run``, so its workers persist.
        progress: show a tqdm progress bar.
    Raises:
        FileExistsError: ``out`` already holds a run and ``resume`` is False (nothing is overwritten).
        genvs.checkpoint.CheckpointError: resuming a run whose config differs.
    """

    def __init__(self, config: TrainConfig, data: str | Path, out: str | Path, steps: int, *, resume: bool = False,
                 init: str | Path | None = None, device: torch.device | str | None = None, log_every: int = 10,
                 sample_every: int | None = None, checkpoint_every: int | None = None, sample_objects: int = 4,
                 sample_steps: int = 20, keep_checkpoints: int = 2, workers: int | None = None, progress: bool = True):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.config, self.out, self.steps = config, Path(out), steps
        self.device = _process_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        self.rank, self.world_size = _join_processes(self.device)
        self.log_every, self.keep_checkpoints = max(1, log_every), keep_checkpoints
        self.sample_objects, self.sample_steps = sample_objects, sample_steps
        self.sample_every = max(1, steps // 10) if sample_every is None else sample_every
        self.checkpoint_every = max(1, steps // 10) if checkpoint_every is None else checkpoint_every
        self.workers = (min(4, os.cpu_count() or 1) if self.device.type == "cuda" else 0) if workers is None else workers
        self.progress = progress and self.rank == 0

        image_size = config.model.field.encoder.image_size
        self.dataset = SRNDataset(data, split="train", views_per_item=None, image_size=image_size)
        self.batches = StepBatches(self.dataset, config.batch_size, config.model.max_input_views,
                                   config.target_views, config.seed)
        self.model = GeNVS(config.model, seed=config.seed).to(self.device)
        if config.speed.channels_last:
            for part in (self.model.field.encoder, self.model.denoiser):
                part.to(memory_format=torch.channels_last)
        trained = self.model.trainable_parts(config.stage)
        self.model.requires_grad_(False).eval()  # frozen parts: no gradients, no batch-norm statistics updates
        for part in trained.values():
            part.requires_grad_(True).train()
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.optimiser = torch.optim.AdamW(
            [{"params": list(part.parameters()), "lr": getattr(config, f"lr_{name}"), "name": name}
             for name, part in trained.items()], weight_decay=config.weight_decay, fused=config.speed.fused_adamw)
        _speed_up(self.model, self.device, config.speed)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser, lambda step: lr_factor(step, config.warmup_steps, steps, config.min_lr_fraction))
        self.ema_warmup = k_diffusion.utils.EMAWarmup(power=config.ema_power, max_value=config.ema_max)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.step, self._saved_step = 0, None  # _saved_step: the step of this run's newest checkpoint
        self._start(resume, init)
        self._preview: dict[str, Tensor] | None = None
        self.network = (DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                                else None) if self.world_size > 1 else self.model)

    # -- state ---------------------------------------------------------------------------------

    def _config_dict(self) -> dict:
        return dataclasses.asdict(self.config)

    def state(self) -> dict:
        """Everything a checkpoint holds: weights, EMA, optimiser, schedules, the run length and the number of processes."""
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimiser": self.optimiser.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema_warmup": self.ema_warmup.state_dict(), "scaler": self.scaler.state_dict(), "steps": self.steps,
                "world_size": self.world_size}

    def _start(self, resume: bool, init: str | Path | None) -> None:
        existing = latest_checkpoint(self.out)
        if existing is not None and not resume:
            raise FileExistsError(f"{self.out} already holds a run (latest checkpoint {existing.name}); pass "
                                  f"resume=True (--resume) to continue it, or choose another output folder")
        if existing is not None:
            self.step, state, stored = load_checkpoint(existing, device=self.device)
            self._check_same_numbers(existing, stored)
            self._saved_step = self.step
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimiser.load_state_dict(state["optimiser"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.ema_warmup.load_state_dict(state["ema_warmup"])
            self.scaler.load_state_dict(state["scaler"])
            self._note(f"resumed {self.out} at step {self.step}" +
                       (f" (run length {state['steps']} -> {self.steps})" if state["steps"] != self.steps else ""))
            self._warn_if_world_size_changed(state.get("world_size", 1))  # checkpoints before this field: 1 process
        else:
            if resume:
                self._note(f"nothing to resume in {self.out}: starting at step 0")
            if init is not None:
                self._initialise_from(init)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self._config_dict(), indent=1))
            self._truncate_log()

    def _check_same_numbers(self, checkpoint: Path, stored: dict) -> None:
        """Refuse to resume a run whose config differs from this one in anything but ``speed``."""
        expected = json.loads(json.dumps(self._config_dict()))  # as stored: tuples become lists
        stored, expected = ({key: value for key, value in config.items() if key != "speed"} for config in (stored, expected))
        if stored != expected:
            raise CheckpointError(f"{checkpoint}: its config does not match: {config_differences(stored, expected)}")

    def _warn_if_world_size_changed(self, saved: int) -> None:
        """Resuming with another number of processes continues, with a warning of what changes."""
        if saved == self.world_size:
            return
        accumulation = self.config.grad_accumulation
        self._note(f"warning: this run was saved by {saved} process(es) and resumes with {self.world_size}: each step "
                   f"now averages {self.world_size} x {accumulation} micro-batches of {self.config.batch_size} objects "
                   f"(was {saved} x {accumulation}), and the steps from here see other data than an uninterrupted run "
                   f"would have. Resume with {saved} process(es) to continue exactly.")

    def _initialise_from(self, init: str | Path) -> None:
        """Start from another run's weights (the staged recipe): its raw weights into the model, its EMA into the
        EMA (an export holds the EMA only: it starts both)."""
        step, state, config = load_checkpoint(init, device=self.device)
        stored, expected = config.get("model", {}), json.loads(json.dumps(dataclasses.asdict(self.config.model)))
        if architecture(stored) != architecture(expected):
            raise CheckpointError(f"{init}: its model differs from this run's (the staged recipe needs the same model "
                                  f"in every stage): {config_differences(architecture(stored), architecture(expected))}")
        self.model.load_state_dict(state.get("model", state["ema"]))
        self.ema.load_state_dict(state["ema"])
        changed = config_differences(stored, expected)
        self._note(f"initialised the model from {init} (step {step}): " +
                   ("its raw weights and its EMA" if "model" in state else "its EMA weights (an export), in both") +
                   (f"; training settings changed: {changed}" if changed else ""))

    def _note(self, message: str) -> None:
        if self.rank == 0:
            tqdm.write(message)

    # -- one step ------------------------------------------------------------------------------

    def _micro_index(self, step: int, micro: int) -> int:
        """The run-wide number of micro-batch ``micro`` of step ``step`` in this process (module docstring)."""
        return (step * self.config.grad_accumulation + micro) * self.world_size + self.rank

    def _micro_batches(self) -> Iterator[dict[str, Tensor]]:
        indices = [self._micro_index(step, micro) for step in range(self.step, self.steps)
                   for micro in range(self.config.grad_accumulation)]
        loader = torch.utils.data.DataLoader(self.batches, batch_size=None, sampler=indices,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                             persistent_workers=False)
        return iter(loader)

    def _losses(self, batch: dict[str, Tensor], index: int) -> dict[str, Tensor]:
        seed = derive_seed(self.config.seed, index)
        generator = torch.Generator(self.device).manual_seed(seed)
        images, K, c2w = (batch[key].to(self.device, non_blocking=True) for key in ("images", "K", "c2w"))
        dtype = PRECISIONS[self.config.precision]
        with seeded_rng(seed, self.device), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return self.network(images, K, c2w, int(batch["n_inputs"]), generator, self.config.stage)

    def _step_record(self, names: list[str], losses: Tensor, grad_norm: Tensor) -> dict[str, float]:
        """The step's mean ``losses [L]`` (averaged over processes) and gradient norm as floats: its one host sync."""
        if self.world_size > 1:
            dist.all_reduce(losses)
            losses = losses / self.world_size
        values = torch.cat([losses, grad_norm.detach().float().reshape(1).to(losses.device)]).tolist()
        return dict(zip([*names, "grad_norm"], values))

    def train_step(self, micro_batches: Iterator[dict[str, Tensor]]) -> dict[str, float]:
        """One optimiser step (module docstring); returns the mean losses of its micro-batches and ``grad_norm``.

        A non-finite gradient never reaches the weights, the EMA or a checkpoint: in fp16 the
        gradient scaler skips the step (weights and EMA unchanged, the loss scale halves: the
        ``loss_scale`` column of the log); otherwise the run stops with a ``FloatingPointError``
        naming the step and the parts whose gradients are not finite.
        """
        accumulation = self.config.grad_accumulation
        mean_losses = 0.0  # [L] on the device: no host sync between micro-batches
        for micro in range(accumulation):
            last = micro == accumulation - 1
            sync = contextlib.nullcontext() if last or self.world_size == 1 else self.network.no_sync()
            with sync:
                losses = self._losses(next(micro_batches), self._micro_index(self.step, micro))
                self.scaler.scale(losses["loss"] / accumulation).backward()
            mean_losses = mean_losses + torch.stack([value.detach().float() for value in losses.values()]) / accumulation
        self.scaler.unscale_(self.optimiser)
        parameters = [p for group in self.optimiser.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        totals = self._step_record(list(losses), mean_losses, grad_norm)
        if not all(math.isfinite(totals[name]) for name in losses):
            self._stop(f"non-finite loss {dict((name, totals[name]) for name in losses)}")
        finite = math.isfinite(totals["grad_norm"])
        if not finite and not self.scaler.is_enabled():
            self._stop(f"non-finite gradient (norm {totals['grad_norm']}) in {self._non_finite_parts()}, with a "
                       f"finite loss {totals['loss']:.4g}")
        if finite and self.config.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(parameters, self.config.grad_clip, grad_norm)
        self.scaler.step(self.optimiser)  # fp16: skipped when a gradient is not finite
        self.scaler.update()
        self.optimiser.zero_grad(set_to_none=True)
        self.scheduler.step()
        if finite:
            k_diffusion.utils.ema_update(self.model, self.ema, self.ema_warmup.get_value())
        self.ema_warmup.step()  # decay(t) follows the step count, skipped steps included
        if self.scaler.is_enabled():
            totals["loss_scale"] = self.scaler.get_scale()
        self.step += 1
        return totals

    def _stop(self, problem: str) -> None:
        """Drop this step's gradients and stop the run with a ``FloatingPointError`` naming the step and ``problem``."""
        self.optimiser.zero_grad(set_to_none=True)
        raise FloatingPointError(
            f"step {self.step}: {problem}. Nothing was updated with it (weights, EMA, checkpoints). The last good "
            f"checkpoint is {latest_checkpoint(self.out) or 'none yet'}; try a lower learning rate, --set "
            f"precision=fp32, or a smaller grad_clip, then --resume")

    def _non_finite_parts(self) -> str:
        """``"denoiser (2 tensors, e.g. denoiser.inner_model...)"`` for each part with non-finite gradients."""
        names = {parameter: name for name, parameter in self.model.named_parameters()}
        found = []
        for group in self.optimiser.param_groups:
            bad = [names[p] for p in group["params"] if p.grad is not None and not torch.isfinite(p.grad).all()]
            if bad:
                found.append(f"{group['name']} ({len(bad)} tensors, e.g. {bad[0]})")
        return ", ".join(found) or "no single tensor (the norm itself overflowed)"

    # -- the loop ------------------------------------------------------------------------------

    def run(self, until: int | None = None, callback: Callable[[dict], None] | None = None,
            time_limit: float | None = None) -> list[dict]:
        """Train from the current step to ``steps`` (or to ``until``, as if stopped there).

        Args:
            until: stop after this step (a checkpoint is written there).
            time_limit: stop after the first step that ends this many seconds after the start
                (logged, sampled and checkpointed like a last step; ``resume`` continues).
            callback: called on process 0 with each log record (a dict: step, losses, learning
                rates, images_per_s, seconds) and, at sample steps, ``record["samples"]``: the
                sample grid as ``[rows, 3, H, W]`` tensors.
        Returns:
            the log records written by this call.
        """
        end = self.steps if until is None else min(until, self.steps)
        records, micro_batches = [], self._micro_batches()
        bar = tqdm(total=end, initial=self.step, desc=f"training ({self.config.stage})", disable=not self.progress)
        images_per_step = self.config.batch_size * self.config.target_views * self.config.grad_accumulation
        seconds, last_logged = 0.0, self.step
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        try:
            while self.step < end:
                clock = time.perf_counter()
                losses = self.train_step(micro_batches)
                seconds += time.perf_counter() - clock
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss']:.4f}")
                if self._out_of_time(deadline):
                    self._note(f"time limit of {time_limit:.0f} s reached at step {self.step}")
                    end = self.step
                if self.step % self.log_every == 0 or self.step == end:
                    record = {"step": self.step, **losses, **self._learning_rates(),
                              "images_per_s": images_per_step * self.world_size * (self.step - last_logged) / seconds,
                              "seconds": seconds}
                    seconds, last_logged = 0.0, self.step
                    if self.rank == 0 and self.sample_every and (self.step % self.sample_every == 0 or self.step == end):
                        record["samples"] = self.write_samples()
                    self._log(record)
                    records.append(record)
                    if callback is not None and self.rank == 0:
                        callback(record)
                if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                    self.save()
        except KeyboardInterrupt:
            self._note(f"interrupted at step {self.step}: saving a checkpoint to resume from")
            self.save()
            raise
        finally:
            bar.close()
        if self._saved_step != self.step:
            self.save()
        return records

    def _out_of_time(self, deadline: float | None) -> bool:
        """Whether ``deadline`` has passed, decided by process 0 for every process (so all stop together)."""
        if deadline is None:
            return False
        if self.world_size == 1:  # nothing to agree on: no device round trip
            return time.perf_counter() >= deadline
        late = torch.tensor(float(time.perf_counter() >= deadline), device=self.device)
        dist.broadcast(late, src=0)
        return bool(late)

    def close(self) -> None:
        """End the process group of a torchrun run (a no-op in a single process)."""
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def _learning_rates(self) -> dict[str, float]:
        return {f"lr_{group['name']}": group["lr"] for group in self.optimiser.param_groups}

    def save(self) -> None:
        """Write a checkpoint of the current step (process 0), then keep the newest ``keep_checkpoints``."""
        if self.rank == 0:
            save_checkpoint(self.out, self.step, self.state(), self._config_dict())
            prune_checkpoints(self.out, self.keep_checkpoints)
        if self.world_size > 1:
            dist.barrier()
        self._saved_step = self.step

    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        row = {key: value for key, value in record.items() if key != "samples"}
        path = self.out / "log.csv"
        new = not path.is_file()
        with path.open("a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _truncate_log(self) -> None:
        """Drop log rows after the step we start from (logged before a crash, never checkpointed)."""
        path = self.out / "log.csv"
        if not path.is_file():
            return
        if self.step == 0:
            path.unlink()
            return
        with path.open(newline="") as file:
            rows = list(csv.reader(file))
        kept = rows[:1] + [row for row in rows[1:] if int(row[0]) <= self.step]
        with path.open("w", newline="") as file:
            csv.writer(file).writerows(kept)

    # -- samples -------------------------------------------------------------------------------

    def preview_batch(self, n_objects: int, n_targets: int = 3) -> dict[str, Tensor]:
        """Fixed views of the first ``n_objects`` validation objects (training objects if there is no val split).

        View 0 of each object is the input; the next ``n_targets`` are the targets.
        """
        root, size = self.dataset.root, self.config.model.field.encoder.image_size
        try:
            dataset = SRNDataset(root, split="val", views_per_item=1 + n_targets, image_size=size)
        except ValueError:  # no val split (SRNFormatError is a ValueError)
            dataset = SRNDataset(root, split="train", views_per_item=1 + n_targets, image_size=size)
        items = [dataset[index] for index in range(min(n_objects, len(dataset)))]
        return {key: torch.stack([item[key] for item in items]) for key in ("images", "K", "c2w")}

    def write_samples(self) -> list[Tensor]:
        """Sample the preview batch with the EMA model; write ``samples/step_N.png``; return its rows.

        Each row is one object: the input view, then for each target view its ground truth, the
        field's RGB (first 3 feature channels) and a sample.
        """
        if self._preview is None:
            self._preview = {key: value.to(self.device) for key, value in self.preview_batch(self.sample_objects).items()}
        batch = self._preview
        result = sample_novel_views(self.ema, batch["images"][:, :1], batch["K"][:, :1], batch["c2w"][:, :1],
                                    batch["K"][:, 1:], batch["c2w"][:, 1:], steps=self.sample_steps,
                                    seed=self.config.seed)
        rgb = field_rgb(result["features"], batch["images"].shape[-1])
        rows = []
        for index in range(batch["images"].shape[0]):
            views = [batch["images"][index, :1]]
            for target in range(result["samples"].shape[1]):
                views += [batch["images"][index, 1 + target, None], rgb[index, target, None],
                          result["samples"][index, target, None]]
            rows.append(torch.cat(views).cpu())
        save_contact_sheet(rows, self.out / "samples" / f"step_{self.step:09d}.png")
        return rows
