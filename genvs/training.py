"""Training GeNVS: its configs and presets, and the trainer that runs them on :mod:`genvs.fitting`'s core.

The trainer supplies GeNVS's parts and loss to :class:`genvs.fitting.Fitter` (which holds the optimiser step, the
schedule, the EMA, checkpoints, exact resume and DDP; its docstring has the equations) and adds what is GeNVS's own:
the stage that picks what trains (:data:`genvs.model.STAGES`, the staged recipe: "field", then "denoiser" with
``init`` from the field run, then "joint"), the speed options, and sample grids during training. Losses are
:meth:`genvs.model.GeNVS.losses`.

Multi-GPU and multi-machine runs use ``torchrun`` (DDP): ``torchrun --nproc_per_node=N -m genvs
train ...``; the trainer reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from genvs.checkpoint import CheckpointError, config_differences, load_checkpoint
from genvs.config import from_preset
from genvs.data import SRNDataset
from genvs.data.batches import StepBatches
from genvs.denoiser import denoiser_config
from genvs.field import field_config
from genvs.fitting import PRECISIONS, FitSettings, Fitter, join_processes, process_device
from genvs.model import PRESETS as MODEL_PRESETS
from genvs.model import STAGES, GeNVS, GeNVSConfig, architecture, load_model
from genvs.sampling import sample_novel_views
from genvs.viz.images import field_rgb, save_contact_sheet

__all__ = ["SpeedConfig", "TrainConfig", "PRESETS", "GPU_SPEED", "train_config", "train_split", "Trainer",
           "export_model"]


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
        compile_mode: ``torch.compile``'s mode with ``compile``: "default", or "reduce-overhead" (CUDA graphs: a
            step's kernels replayed from one recorded graph, fewer launches from the host; one graph per shape).
    """

    tf32: bool = True
    channels_last: bool = False
    compile: bool = False
    fused_adamw: bool = False
    compile_mode: str = "default"

    def __post_init__(self):
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {self.compile_mode!r}; valid: {COMPILE_MODES}")


COMPILE_MODES = ("default", "reduce-overhead")
"""``torch.compile`` modes :class:`SpeedConfig` offers."""


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
            part.compile(backend=COMPILE_BACKEND, mode=speed.compile_mode)  # aot_eager ignores the mode


def export_model(run: str | Path, out: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write a run's EMA weights alone, floating-point tensors in ``dtype``, as a saved model for sampling.

    A training checkpoint carries the raw weights, the EMA weights and two AdamW moments (four
    copies in float32); the export keeps the one copy sampling uses, at half the bytes in float16:
    ``2 x parameters`` bytes (:meth:`genvs.model.GeNVS.save_pretrained`, with the run's training config beside
    the model's). :func:`genvs.model.load_model` reads it.

    Args:
        run: a run folder (its latest checkpoint) or a checkpoint's ``.json``.
        out: the folder to write (``step_N.safetensors``, ``step_N.json``, ``latest.json``).
    Returns:
        the path of the exported checkpoint's ``.json``.
    """
    model, stored = load_model(run)
    training = stored.get("training", {key: value for key, value in stored.items() if key not in ("model", "step")})
    return model.save_pretrained(out, stored["step"], dtype, training=training)


def train_split(data: str | Path | SRNDataset, image_size: int) -> SRNDataset:
    """The train split of SRN-format root ``data`` at ``image_size``, every view of each object; ``data`` itself if
    it is that split already read.

    Raises:
        ValueError: ``data`` is an :class:`genvs.data.SRNDataset` of another split, image size or views per item.
    """
    if not isinstance(data, SRNDataset):
        return SRNDataset(data, split="train", views_per_item=None, image_size=image_size)
    read = {"split": data.split, "image_size": data.image_size, "views_per_item": data.views_per_item,
            "seed": data.seed}
    if read != {"split": "train", "image_size": image_size, "views_per_item": None, "seed": 0}:
        raise ValueError(f"{data.root}: a trainer needs the train split at {image_size} px with every view "
                         f"(views_per_item=None) and the default split seed 0, got {read}")
    return data


class Trainer:
    """Trains GeNVS on an SRN-format dataset, writing checkpoints, a loss log and sample grids to ``out``.

    Args:
        config: :class:`TrainConfig`.
        data: SRN-format root (its train split is used; its val split, if any, for sample grids), or its train split
            already read (``SRNDataset(root, split="train", views_per_item=None, image_size=...)`` at the model's
            image size): trainers made one after another on the same cars then list their folders once.
        out: the run folder: ``step_*.safetensors/.json`` checkpoints, ``log.csv`` (one row per
            ``log_every`` steps), ``samples/step_*.png`` and ``config.json``.
        steps: optimiser steps of the run (the cosine schedule ends there).
        resume: continue the run in ``out`` from its latest checkpoint (starts fresh if it has none).
        init: a run folder or checkpoint whose model weights start this run (the staged recipe, or a training
            leg from a saved model); its model's architecture must equal ``config.model``'s.
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

    def __init__(self, config: TrainConfig, data: str | Path | SRNDataset, out: str | Path, steps: int, *,
                 resume: bool = False,
                 init: str | Path | None = None, device: torch.device | str | None = None, log_every: int = 10,
                 sample_every: int | None = None, checkpoint_every: int | None = None, sample_objects: int = 4,
                 sample_steps: int = 20, keep_checkpoints: int = 2, workers: int | None = None, progress: bool = True):
        self.config, self.out = config, Path(out)
        self.device = process_device(device)
        join_processes(self.device)
        self.sample_objects, self.sample_steps = sample_objects, sample_steps
        self.sample_every = max(1, steps // 10) if sample_every is None else sample_every
        if workers is None:
            workers = min(4, os.cpu_count() or 1) if self.device.type == "cuda" else 0

        self.dataset = train_split(data, config.model.field.encoder.image_size)
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
        settings = FitSettings(steps, config.warmup_steps, config.min_lr_fraction, config.weight_decay,
                               config.grad_clip, config.grad_accumulation, config.ema_power, config.ema_max,
                               config.precision, config.speed.fused_adamw, config.seed)
        self.fitter = Fitter(self.model,
                             {name: (part, getattr(config, f"lr_{name}")) for name, part in trained.items()},
                             self._loss, self.batches, settings, out, dataclasses.asdict(config), device=self.device,
                             free_keys=("speed",), resume=resume, log_every=log_every,
                             checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, workers=workers,
                             images_per_batch=config.batch_size * config.target_views, progress=progress,
                             desc=f"training ({config.stage})")
        _speed_up(self.model, self.device, config.speed)
        if init is not None and not self.fitter.resumed:
            self._initialise_from(init)
        self._preview: dict[str, Tensor] | None = None

    # -- what the fitter holds -----------------------------------------------------------------

    @property
    def ema(self) -> GeNVS:
        """The EMA of the weights: what sampling uses."""
        return self.fitter.ema

    @property
    def step(self) -> int:
        """Optimiser steps done so far."""
        return self.fitter.step

    @property
    def steps(self) -> int:
        """The run's length in optimiser steps."""
        return self.fitter.steps

    @property
    def rank(self) -> int:
        """This process's rank (0 without torchrun)."""
        return self.fitter.rank

    def train_step(self, micro_batches) -> dict[str, float]:
        """One optimiser step (:meth:`genvs.fitting.Fitter.train_step`) on ``micro_batches`` (:meth:`micro_batches`)."""
        return self.fitter.train_step(micro_batches)

    def micro_batches(self, start: int | None = None):
        """The micro-batches of steps ``start`` (default: the current step) to the end of the run."""
        return self.fitter.micro_batches(start)

    def request_stop(self) -> None:
        """Stop the run after the step in progress, with a checkpoint (:meth:`genvs.fitting.Fitter.request_stop`)."""
        self.fitter.request_stop()

    def close(self) -> None:
        """End the process group of a torchrun run (a no-op in a single process)."""
        self.fitter.close()

    # -- GeNVS's own parts ---------------------------------------------------------------------

    def _loss(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """:meth:`genvs.model.GeNVS.losses` of one micro-batch, through DDP's wrapper when there is one."""
        return self.fitter.network(batch["images"], batch["K"], batch["c2w"], int(batch["n_inputs"]), generator,
                                   self.config.stage)

    def _initialise_from(self, init: str | Path) -> None:
        """Start from another run's weights (the staged recipe): its raw weights into the model, its EMA into the
        EMA (a saved model holds the EMA only: it starts both)."""
        step, state, config = load_checkpoint(init, device=self.device)
        stored, expected = config.get("model", {}), json.loads(json.dumps(dataclasses.asdict(self.config.model)))
        if architecture(stored) != architecture(expected):
            raise CheckpointError(f"{init}: its model differs from this run's (the staged recipe needs the same model "
                                  "in every stage): "
                                  f"{config_differences(architecture(stored), architecture(expected))}")
        self.model.load_state_dict(state.get("model", state["ema"]))
        self.fitter.ema.load_state_dict(state["ema"])
        changed = config_differences(stored, expected)
        self.fitter.note(f"initialised the model from {init} (step {step}): " +
                         ("its raw weights and its EMA" if "model" in state
                          else "its EMA weights (a saved model), in both") +
                         (f"; training settings changed: {changed}" if changed else ""))

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
        def with_samples(record: dict) -> None:
            if self.sample_every and (record["step"] % self.sample_every == 0 or record["last"]):
                record["samples"] = self.write_samples()
            if callback is not None:
                callback(record)

        return self.fitter.run(until, with_samples, time_limit)

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
            self._preview = {key: value.to(self.device)
                             for key, value in self.preview_batch(self.sample_objects).items()}
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
