"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically; no pickle.

A checkpoint is any nested state -- dicts and lists of tensors, numbers, strings, booleans and
``None``, such as ``{"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": 10}``
-- plus the run's config as a JSON-able dict. In a run folder, checkpoint ``N`` is two files::

    step_000000N.safetensors   every tensor of the state, keyed by its path ("optimiser/state/0/exp_avg")
    step_000000N.json          the config and the state with each tensor replaced by {"__tensor__": path}

and ``latest.json`` names the newest complete one. Each file is written to a temporary name,
flushed to disk (``fsync``), moved into place with ``os.replace`` (atomic on POSIX and Windows)
and its folder flushed, and ``latest.json`` is replaced last: a crash or a power cut at any
moment leaves the previous checkpoint as the latest, intact.
Loading reads only safetensors and JSON, so a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "prune_checkpoints",
           "config_differences", "flatten_state", "unflatten_state"]

LATEST = "latest.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, or does not match the expected config; the message says which."""


def flatten_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, Tensor]]:
    """Split nested state into a JSON-able skeleton and a flat ``{path: tensor}`` dict.

    Dict keys become strings in the path (``"optimiser/state/0/exp_avg"``); integer keys are
    remembered so :func:`unflatten_state` restores them (optimiser states are keyed by int).
    """
    if isinstance(state, Tensor):
        return {"__tensor__": prefix}, {prefix: state.detach().cpu().contiguous().clone()}
    if isinstance(state, dict):
        skeleton, tensors = {"__dict__": []}, {}
        for key, value in state.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise CheckpointError(f"{prefix or 'state'}: keys must be strings or ints, got {key!r}")
            child, child_tensors = flatten_state(value, f"{prefix}/{key}" if prefix else str(key))
            skeleton["__dict__"].append([key, child])
            tensors.update(child_tensors)
        return skeleton, tensors
    if isinstance(state, (list, tuple)):
        pieces = [flatten_state(value, f"{prefix}/{index}") for index, value in enumerate(state)]
        return {"__list__": [skeleton for skeleton, _ in pieces]}, {k: v for _, t in pieces for k, v in t.items()}
    if state is None or isinstance(state, (bool, int, float, str)):
        return state, {}
    raise CheckpointError(f"{prefix or 'state'}: cannot store a {type(state).__name__} (tensors, numbers, "
                          f"strings, booleans, None, and dicts or lists of them only)")


def unflatten_state(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state` (tuples come back as lists)."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {key: unflatten_state(value, tensors) for key, value in skeleton["__dict__"]}
        return [unflatten_state(value, tensors) for value in skeleton["__list__"]]
    return skeleton


def _write_atomically(path: Path, write) -> None:
    """Call ``write(temporary_path)``, then move the result to ``path`` in one step, durably.

    The file's bytes reach the disk (``fsync``) before the rename, and the rename itself (the
    folder's entry) after it: a power cut can leave the old file or the new one, never a name
    pointing at unwritten data.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        with temporary.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk (POSIX; Windows cannot open a folder, and does not need it)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_checkpoint(run_dir: str | Path, step: int, state: dict, config: dict) -> Path:
    """Write checkpoint ``step`` of ``state`` into ``run_dir`` and make it the latest.

    Args:
        run_dir: the run's folder (created).
        step: training step, used in the file names.
        state: nested state (see the module docstring).
        config: the run's config as a JSON-able dict (``dataclasses.asdict`` of a config).
    Returns:
        the path of the ``.json`` file of the new checkpoint.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    skeleton, tensors = flatten_state(state)
    name = f"step_{step:09d}"
    tensor_path, json_path = run_dir / f"{name}.safetensors", run_dir / f"{name}.json"
    _write_atomically(tensor_path, lambda path: save_file(tensors, str(path)))
    record = {"format": FORMAT_VERSION, "step": step, "tensors": tensor_path.name, "config": config, "state": skeleton}
    _write_atomically(json_path, lambda path: path.write_text(json.dumps(record, indent=1)))
    _write_atomically(run_dir / LATEST, lambda path: path.write_text(json.dumps({"checkpoint": json_path.name})))
    return json_path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``.json`` file of the newest complete checkpoint in ``run_dir``, or None if there is none."""
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    return pointer.parent / json.loads(pointer.read_text())["checkpoint"]


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints of ``run_dir`` (never the latest); return what was deleted."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return []
    older = sorted(path for path in Path(run_dir).glob("step_*.json") if path.name < latest.name)
    removed = older[: max(0, len(older) - max(keep, 1) + 1)]
    for json_path in removed:
        json_path.with_suffix(".safetensors").unlink(missing_ok=True)
        json_path.unlink()
    return removed


def load_checkpoint(path: str | Path, expected_config: dict | None = None,
                    device: torch.device | str = "cpu") -> tuple[int, dict, dict]:
    """Read a checkpoint: a run folder (its latest checkpoint) or a checkpoint's ``.json`` file.

    Args:
        path: run folder or ``step_*.json``.
        expected_config: if given, the stored config must equal it.
        device: where the tensors are loaded.
    Returns:
        ``(step, state, config)``.
    Raises:
        CheckpointError: nothing to load, unreadable files, or a config that differs from
            ``expected_config`` (the message lists the differing keys and both values).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    json_path = latest_checkpoint(path) if path.is_dir() else path
    if json_path is None:
        raise CheckpointError(f"{path}: no checkpoint here (no {LATEST}); has this run saved one yet?")
    try:
        record = json.loads(json_path.read_text())
        tensors = load_file(str(json_path.with_name(record["tensors"])), device=str(device))
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        raise CheckpointError(f"{json_path}: cannot read this checkpoint ({error})") from None
    if record.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{json_path}: checkpoint format {record.get('format')!r}, "
                              f"this genvs reads {FORMAT_VERSION}")
    if expected_config is not None:
        expected_config = json.loads(json.dumps(expected_config))  # as stored: tuples become lists
        if record["config"] != expected_config:
            raise CheckpointError(f"{json_path}: its config does not match: "
                                  f"{config_differences(record['config'], expected_config)}")
    return record["step"], unflatten_state(record["state"], tensors), record["config"]


def config_differences(stored: dict, expected: dict, prefix: str = "") -> str:
    """``"key: checkpoint has A, expected B; ..."`` for every differing (nested) key of two config dicts."""
    lines = []
    for key in sorted(set(stored) | set(expected), key=str):
        name = f"{prefix}{key}"
        old, new = stored.get(key, "<missing>"), expected.get(key, "<missing>")
        if isinstance(old, dict) and isinstance(new, dict):
            nested = config_differences(old, new, f"{name}.")
            lines += [nested] if nested else []
        elif old != new:
            lines.append(f"{name}: checkpoint has {old!r}, expected {new!r}")
    return "; ".join(lines)
