"""The fitting core: one loop that trains everything in genvs (GeNVS, the diffusers routes, the attribute probe).

A trained thing supplies its network, its parameter groups (``{name: (module, lr)}``), a loss and its batches; the
core does the rest, the same way for all of them. Each optimiser step ``t`` of a run is a pure function of the
weights, the optimiser state and the seed: micro-batch ``a`` of process ``rank`` is number ``i = (t A + a) W + rank``
of the run, its data is ``batches[i]`` and every random number its loss needs comes from a generator seeded
``derive_seed(seed, i)`` (and the global RNGs, seeded the same way, for library code such as dropout). So resuming
from a checkpoint at step ``t`` continues exactly as if the run had never stopped, the data loader may use any number
of workers, and ``W`` processes compute the same steps as one process accumulating ``W`` times as many micro-batches.

One step, with ``A`` micro-batches of gradient accumulation and ``W`` processes::

    g = (1 / (A W)) sum_{processes} sum_{a < A} grad L(batch_{t, a, rank})    (DDP averages over processes)
    g <- g * min(1, grad_clip / ||g||)                                          (gradient clipping)
         (||g|| not finite: fp16 skips the step, as its gradient scaler does; fp32 and bf16 stop the run)
    theta <- AdamW(theta, g, lr_part(t))      lr(t) = lr * warmup(t) * cosine(t)  (per part)
    theta_ema <- decay(t) theta_ema + (1 - decay(t)) theta                       (EMA, for sampling)

where ``decay(t) = min(ema_max, 1 - (1 + t)^-ema_power)`` (k-diffusion's ``EMAWarmup``).

A run folder holds ``step_N.safetensors/.json`` checkpoints (:mod:`genvs.checkpoint`: weights, EMA, optimiser,
schedules), ``log.csv`` (one row per ``log_every`` steps) and ``config.json``. A run stops at its last step, at
``until``, after a time limit, or when :meth:`Fitter.request_stop` is called (from a signal handler, a callback or
another thread): each writes a checkpoint to resume from. Multi-GPU runs use ``torchrun`` (DDP):
:func:`process_device` and :func:`join_processes` read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
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

from genvs.checkpoint import (
    CheckpointError,
    config_differences,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from genvs.config import default_device
from genvs.denoiser import k_diffusion
from genvs.seeding import derive_seed, seeded_rng

__all__ = ["PRECISIONS", "FitSettings", "Fitter", "lr_factor", "process_device", "join_processes", "read_log"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Autocast dtypes by name (``fp16`` also scales the loss: ``torch.amp.GradScaler``)."""

Loss = Callable[[dict, torch.Generator], dict[str, Tensor]]
"""``loss(batch, generator) -> {"loss": scalar to minimise, other scalars to log}``; the batch is on the device."""


@dataclass(frozen=True)
class FitSettings:
    """How the parameters move: the same knobs for every trained thing.

    Attributes:
        steps: optimiser steps of the run (the cosine schedule ends there).
        warmup_steps: linear learning-rate warmup from 0.
        min_lr_fraction: the cosine decay ends at this fraction of each learning rate.
        weight_decay: AdamW's decoupled weight decay.
        grad_clip: largest gradient norm (over all parameters); 0 turns clipping off.
        grad_accumulation: micro-batches per optimiser step.
        ema_power, ema_max: the EMA decay schedule (module docstring).
        precision: "fp32", "bf16" or "fp16" autocast (fp16 with gradient scaling).
        fused_adamw: AdamW's fused kernel, all parameters in one launch (same numbers up to rounding).
        seed: every step's randomness (module docstring).
    """

    steps: int
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    grad_accumulation: int = 1
    ema_power: float = 0.75
    ema_max: float = 0.9999
    precision: str = "fp32"
    fused_adamw: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {sorted(PRECISIONS)}")
        if self.grad_accumulation < 1:
            raise ValueError(f"grad_accumulation must be >= 1, got {self.grad_accumulation}")


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_fraction: float) -> float:
    """``warmup(t) * cosine(t)``: linear from 0 over ``warmup_steps``, then cosine down to ``min_fraction``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def process_device(requested: torch.device | str | None = None) -> torch.device:
    """This process's device: ``requested`` (a bare ``"cuda"`` is ``cuda:LOCAL_RANK``), by default
    ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested is None:
        requested = default_device()
    device = torch.device(requested)
    return torch.device("cuda", local_rank) if device.type == "cuda" and device.index is None else device


def join_processes(device: torch.device) -> tuple[int, int]:
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


def read_log(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``log.csv`` as dicts of floats (empty if there is no log yet)."""
    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(file)]


class Fitter:
    """Fits the ``parts`` of ``model`` to ``loss`` on ``batches`` (module docstring), in the run folder ``out``.

    Args:
        model: the whole network; the fitter keeps its EMA copy (``fitter.ema``). Parts that do not train should
            already be frozen (``requires_grad_(False)``), and modes set (``train()`` / ``eval()``).
        parts: the parameter groups, ``{name: (module, learning rate)}`` (modules inside ``model``).
        loss: ``loss(batch, generator) -> {"loss": ..., other parts}`` (:data:`Loss`).
        batches: micro-batch ``i`` is ``batches[i]``, a dict of tensors, a pure function of ``i``; None: every
            micro-batch is ``{}`` (the loss draws its data with the generator it is given).
        settings: :class:`FitSettings`.
        out: the run folder (checkpoints, ``log.csv``, ``config.json``); None: a run in memory, nothing written
            (and nothing to resume from).
        config: the run's config as a JSON-able dict: written to ``config.json`` and into every checkpoint, and
            compared when resuming (but for its keys in ``free_keys``, which change only how fast it computes).
        device: where it computes (:func:`process_device` chooses one); the process group, if any, has started
            (:func:`join_processes`).
        resume: continue the run in ``out`` from its latest checkpoint (starts at step 0 if it has none).
        log_every, checkpoint_every: intervals in steps (checkpoint default: a tenth of the run; 0: only the last).
        keep_checkpoints: newest checkpoints kept on disk.
        workers: data-loading processes (0: load in this process).
        images_per_batch: images a micro-batch trains on (for the log's ``images_per_s``).
        log_path: the CSV log (default ``out/log.csv``).
        on_save: called with the step after each checkpoint (process 0), e.g. to export the EMA weights.
        progress, desc: a tqdm progress bar and its label.
    Raises:
        FileExistsError: ``out`` already holds a run and ``resume`` is False (nothing is overwritten).
        genvs.checkpoint.CheckpointError: resuming a run whose config differs.
    """

    def __init__(self, model: nn.Module, parts: dict[str, tuple[nn.Module, float]], loss: Loss,
                 batches: torch.utils.data.Dataset | None, settings: FitSettings, out: str | Path | None,
                 config: dict, *, device: torch.device | str = "cpu", free_keys: tuple[str, ...] = (),
                 resume: bool = False, log_every: int = 10, checkpoint_every: int | None = None,
                 keep_checkpoints: int = 2, workers: int = 0, images_per_batch: int = 1,
                 log_path: str | Path | None = None, on_save: Callable[[int], None] | None = None,
                 progress: bool = True, desc: str = "training"):
        self.model, self.loss, self.batches, self.settings = model, loss, batches, settings
        self.out = None if out is None else Path(out)
        self.config, self.free_keys = json.loads(json.dumps(config)), free_keys
        self.device = torch.device(device)
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.log_every, self.keep_checkpoints, self.workers = max(1, log_every), keep_checkpoints, workers
        self.checkpoint_every = max(1, settings.steps // 10) if checkpoint_every is None else checkpoint_every
        self.images_per_batch, self.on_save = images_per_batch, on_save
        self.log_path = Path(log_path) if log_path is not None else None if out is None else self.out / "log.csv"
        self.progress, self.desc = progress and self.rank == 0, desc
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.optimiser = torch.optim.AdamW(
            [{"params": list(module.parameters()), "lr": lr, "name": name} for name, (module, lr) in parts.items()],
            weight_decay=settings.weight_decay, fused=settings.fused_adamw)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimiser,
            lambda step: lr_factor(step, settings.warmup_steps, settings.steps, settings.min_lr_fraction))
        self.ema_warmup = k_diffusion.utils.EMAWarmup(power=settings.ema_power, max_value=settings.ema_max)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.precision == "fp16")
        self.step, self.resumed, self._saved_step, self._stop_requested = 0, False, None, False
        self._network: nn.Module | None = None
        self._start(resume)

    # -- state ---------------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        """The run's length in optimiser steps."""
        return self.settings.steps

    def state(self) -> dict:
        """Everything a checkpoint holds: weights, EMA, optimiser, schedules, the run length and the number of
        processes."""
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimiser": self.optimiser.state_dict(), "scheduler": self.scheduler.state_dict(),
                "ema_warmup": self.ema_warmup.state_dict(), "scaler": self.scaler.state_dict(), "steps": self.steps,
                "world_size": self.world_size}

    def _start(self, resume: bool) -> None:
        if self.out is None:
            return
        existing = latest_checkpoint(self.out)
        if existing is not None and not resume:
            raise FileExistsError(f"{self.out} already holds a run (latest checkpoint {existing.name}); pass "
                                  f"resume=True (--resume) to continue it, or choose another output folder")
        if existing is not None:
            self.step, state, stored = load_checkpoint(existing, device=self.device)
            self._check_same_numbers(existing, stored)
            self._saved_step, self.resumed = self.step, True
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimiser.load_state_dict(state["optimiser"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.ema_warmup.load_state_dict(state["ema_warmup"])
            self.scaler.load_state_dict(state["scaler"])
            self.note(f"resumed {self.out} at step {self.step}" +
                      (f" (run length {state['steps']} -> {self.steps})" if state["steps"] != self.steps else ""))
            self._warn_if_world_size_changed(state.get("world_size", 1))  # checkpoints before this field: 1 process
        elif resume:
            self.note(f"nothing to resume in {self.out}: starting at step 0")
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.config, indent=1))
            self._truncate_log()

    def _check_same_numbers(self, checkpoint: Path, stored: dict) -> None:
        """Refuse to resume a run whose config differs from this one in anything but ``free_keys``."""
        stored, expected = ({key: value for key, value in config.items() if key not in self.free_keys}
                            for config in (stored, self.config))
        if stored != expected:
            raise CheckpointError(f"{checkpoint}: its config does not match: {config_differences(stored, expected)}")

    def _warn_if_world_size_changed(self, saved: int) -> None:
        """Resuming with another number of processes continues, with a warning of what changes."""
        if saved == self.world_size:
            return
        accumulation = self.settings.grad_accumulation
        self.note(f"warning: this run was saved by {saved} process(es) and resumes with {self.world_size}: each step "
                  f"now averages {self.world_size} x {accumulation} micro-batches (was {saved} x {accumulation}), and "
                  f"the steps from here see other data than an uninterrupted run would have. Resume with {saved} "
                  f"process(es) to continue exactly.")

    def note(self, message: str) -> None:
        """Print ``message`` once (process 0), without breaking the progress bar."""
        if self.rank == 0:
            tqdm.write(message)

    # -- one step ------------------------------------------------------------------------------

    def micro_index(self, step: int, micro: int) -> int:
        """The run-wide number of micro-batch ``micro`` of step ``step`` in this process (module docstring)."""
        return (step * self.settings.grad_accumulation + micro) * self.world_size + self.rank

    def micro_batches(self, start: int | None = None) -> Iterator[dict[str, Tensor]]:
        """The micro-batches of steps ``start`` (default: the current step) to the end of the run, in order."""
        first = self.step if start is None else start
        if self.batches is None:
            return iter(dict() for _ in range(first, self.steps) for _ in range(self.settings.grad_accumulation))
        indices = [self.micro_index(step, micro) for step in range(first, self.steps)
                   for micro in range(self.settings.grad_accumulation)]
        loader = torch.utils.data.DataLoader(self.batches, batch_size=None, sampler=indices, num_workers=self.workers,
                                             pin_memory=self.device.type == "cuda", persistent_workers=False)
        return iter(loader)

    @property
    def network(self) -> nn.Module:
        """``model``, wrapped in DDP when there are several processes (wrapped on first use, after any compiling)."""
        if self._network is None:
            self._network = self.model if self.world_size == 1 else DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        return self._network

    def micro_batch_losses(self, batch: dict[str, Tensor], index: int) -> dict[str, Tensor]:
        """Micro-batch ``index``'s losses: its tensors on the device (0-d ones, such as counts, stay on the host),
        its randomness from ``derive_seed(seed, index)``, under the run's autocast."""
        seed = derive_seed(self.settings.seed, index)
        generator = torch.Generator(self.device).manual_seed(seed)
        batch = {key: value.to(self.device, non_blocking=True) if value.dim() > 0 else value
                 for key, value in batch.items()}
        dtype = PRECISIONS[self.settings.precision]
        with seeded_rng(seed, self.device), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return self.loss(batch, generator)

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
        accumulation = self.settings.grad_accumulation
        mean_losses = 0.0  # [L] on the device: no host sync between micro-batches
        for micro in range(accumulation):
            last = micro == accumulation - 1
            sync = contextlib.nullcontext() if last or self.world_size == 1 else self.network.no_sync()
            with sync:
                losses = self.micro_batch_losses(next(micro_batches), self.micro_index(self.step, micro))
                self.scaler.scale(losses["loss"] / accumulation).backward()
            mean_losses = (mean_losses +
                           torch.stack([value.detach().float() for value in losses.values()]) / accumulation)
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
        if finite and self.settings.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(parameters, self.settings.grad_clip, grad_norm)
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
            f"checkpoint is {self.out and latest_checkpoint(self.out) or 'none yet'}; try a lower learning rate, "
            f"fp32 precision (--set precision=fp32) or a smaller grad_clip, then resume (--resume)")

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

    def request_stop(self) -> None:
        """Ask the run to stop after the step in progress (logged and checkpointed like a last step; resuming
        continues). Safe to call from a signal handler, a callback or another thread."""
        self._stop_requested = True

    def run(self, until: int | None = None, callback: Callable[[dict], None] | None = None,
            time_limit: float | None = None) -> list[dict]:
        """Train from the current step to ``steps`` (or to ``until``, as if stopped there).

        Args:
            until: stop after this step (a checkpoint is written there).
            time_limit: stop after the first step that ends this many seconds after the start.
            callback: called on process 0 with each log record (a dict: step, losses, learning rates,
                images_per_s, seconds, and ``last``: whether the run stops after it).
        Returns:
            the log records written by this call.
        """
        end = self.steps if until is None else min(until, self.steps)
        records, micro_batches = [], self.micro_batches()
        bar = tqdm(total=end, initial=self.step, desc=self.desc, disable=not self.progress)
        images_per_step = self.images_per_batch * self.settings.grad_accumulation * self.world_size
        seconds, last_logged, self._stop_requested = 0.0, self.step, False
        deadline = None if time_limit is None else time.perf_counter() + time_limit
        try:
            while self.step < end:
                clock = time.perf_counter()
                losses = self.train_step(micro_batches)
                seconds += time.perf_counter() - clock
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss']:.4f}")
                if self._agree(self._out_of_time(deadline)):
                    self.note(f"time limit of {time_limit:.0f} s reached at step {self.step}")
                    end = self.step
                if self._agree(self._stop_requested):
                    self.note(f"stop requested: stopping at step {self.step}")
                    end = self.step
                if self.step % self.log_every == 0 or self.step == end:
                    record = {"step": self.step, **losses, **self.learning_rates(),
                              "images_per_s": images_per_step * (self.step - last_logged) / seconds, "seconds": seconds}
                    seconds, last_logged = 0.0, self.step
                    self._log(record)
                    records.append({**record, "last": self.step == end})
                    if callback is not None and self.rank == 0:
                        callback(records[-1])
                if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                    self.save()
        except KeyboardInterrupt:
            self.note(f"interrupted at step {self.step}: saving a checkpoint to resume from")
            self.save()
            raise
        finally:
            bar.close()
        if self._saved_step != self.step:
            self.save()
        return records

    @staticmethod
    def _out_of_time(deadline: float | None) -> bool:
        return deadline is not None and time.perf_counter() >= deadline

    def _agree(self, flag: bool) -> bool:
        """``flag`` as process 0 has it, for every process (so all stop together); no device round trip alone."""
        if self.world_size == 1:
            return flag
        value = torch.tensor(float(flag), device=self.device)
        dist.broadcast(value, src=0)
        return bool(value)

    def close(self) -> None:
        """End the process group of a torchrun run (a no-op in a single process), once every process is here (a
        process leaving while another still talks to it can abort in gloo's threads)."""
        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def learning_rates(self) -> dict[str, float]:
        """The current learning rate of each part, ``{"lr_<part>": lr}``."""
        return {f"lr_{group['name']}": group["lr"] for group in self.optimiser.param_groups}

    def save(self) -> None:
        """Write a checkpoint of the current step (process 0), keep the newest ``keep_checkpoints``, then call
        ``on_save``."""
        if self.rank == 0 and self.out is not None:
            save_checkpoint(self.out, self.step, self.state(), self.config)
            prune_checkpoints(self.out, self.keep_checkpoints)
            if self.on_save is not None:
                self.on_save(self.step)
        if self.world_size > 1:
            dist.barrier()
        self._saved_step = self.step

    def _log(self, record: dict) -> None:
        if self.rank != 0 or self.log_path is None:
            return
        path = self.log_path
        new = not path.is_file()
        with path.open("a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(record))
            if new:
                writer.writeheader()
            writer.writerow(record)

    def _truncate_log(self) -> None:
        """Drop log rows after the step we start from (logged before a crash, never checkpointed)."""
        path = self.log_path
        if path is None or not path.is_file():
            return
        if self.step == 0:
            path.unlink()
            return
        with path.open(newline="") as file:
            rows = list(csv.reader(file))
        kept = rows[:1] + [row for row in rows[1:] if int(row[0]) <= self.step]
        with path.open("w", newline="") as file:
            csv.writer(file).writerows(kept)
