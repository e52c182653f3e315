"""Run profiles and configs.

``GENVS_SMOKE=1`` (CI) makes every lesson use tiny sizes so it finishes in well under a minute on
2 CPU cores; without it, lessons run their default CPU sizes (minutes) and show real results, and
larger ones where a CUDA GPU is present (:func:`by_profile`, :func:`default_device`).
Configs are frozen dataclasses with named presets (:func:`from_preset`); a run's config is
stored as JSON (:func:`config_from_dict` reads it back) and changed from the command line with
``key=value`` strings (:func:`with_overrides`).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch

__all__ = ["SMOKE", "by_profile", "default_device", "generated_data_dir", "from_preset", "config_from_dict",
           "with_overrides"]

T = TypeVar("T")

SMOKE: bool = os.environ.get("GENVS_SMOKE", "0") not in ("", "0", "false", "False")


def by_profile(smoke: T, default: T, cuda: T | None = None) -> T:
    """The value for the current run profile: ``smoke`` under ``GENVS_SMOKE=1``; else ``cuda`` where a CUDA
    GPU is present and ``cuda`` is given (e.g. more training steps for a lesson on Colab's T4); else ``default``."""
    if SMOKE:
        return smoke
    return cuda if cuda is not None and torch.cuda.is_available() else default


def default_device() -> torch.device:
    """Where genvs computes unless told otherwise (the lessons, the CLI's ``--device``, the trainer, the benchmarks):
    the first CUDA GPU when there is one, else the CPU.

    On the CPU torch uses as many threads as the machine has cores (``torch.get_num_threads()``), unless the
    environment says otherwise (``OMP_NUM_THREADS=1``, as ``make test`` and CI set it); ``benchmarks/bench_threads.py``
    measures what the threads buy on the lessons' workloads.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def from_preset(presets: dict[str, T], preset: str, kind: str, **overrides) -> T:
    """``presets[preset]`` (a dataclass config) with ``overrides`` replaced.

    Raises:
        ValueError: naming the unknown ``kind`` preset and the valid ones.
    """
    if preset not in presets:
        raise ValueError(f"unknown {kind} preset {preset!r}; valid presets: {sorted(presets)}")
    return dataclasses.replace(presets[preset], **overrides)


def generated_data_dir(name: str) -> Path:
    """Folder for generated dataset ``name``: ``$GENVS_DATA/name``; by default ``<repo>/data/generated/name`` in a
    clone of the repository, and ``~/.cache/genvs/generated/name`` (``$XDG_CACHE_HOME``) for an installed package.

    Regenerated from a seed whenever needed, so it is safe to delete.
    """
    if os.environ.get("GENVS_DATA"):
        return Path(os.environ["GENVS_DATA"]) / name
    clone = Path(__file__).resolve().parents[1]
    if (clone / "pyproject.toml").is_file():
        return clone / "data" / "generated" / name
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "genvs" / "generated" / name


def config_from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
    """Rebuild dataclass config ``cls`` from ``dataclasses.asdict`` output read back from JSON.

    Nested configs are rebuilt recursively and lists become tuples where the field is a tuple.

    Raises:
        ValueError: naming keys that ``cls`` does not have.
    """
    hints, names = typing.get_type_hints(cls), [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} has no {unknown}; its keys are {names}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(hint, value)
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def with_overrides(config: T, overrides: Mapping[str, str]) -> T:
    """``config`` with dotted ``key=value`` overrides parsed by each field's type.

    ``{"lr_denoiser": "1e-5", "model.denoiser.dropout": "0.1", "model.denoiser.depths": "2,2,4"}``;
    booleans read ``true/false``, tuples are comma-separated, optional fields accept ``none``.
    Each changed config is validated again by its ``__post_init__``.

    Raises:
        ValueError: naming an unknown key (with the valid keys at that level) or a value that
            does not parse as the field's type.
    """
    for key, text in overrides.items():
        config = _override(config, key.split("."), text, key)
    return config


def _override(config: T, path: list[str], text: str, key: str) -> T:
    names = [field.name for field in dataclasses.fields(config)]
    name = path[0]
    if name not in names:
        raise ValueError(f"unknown config key {key!r}: {type(config).__name__} has {names}")
    current = getattr(config, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown config key {key!r}: {name} is a value, not a group of keys")
        value = _override(current, path[1:], text, key)
    elif dataclasses.is_dataclass(current):
        raise ValueError(f"config key {key!r} is a group; set one of its keys: "
                         f"{[f'{key}.{field.name}' for field in dataclasses.fields(current)]}")
    else:
        value = _parse(text, typing.get_type_hints(type(config))[name], key)
    return dataclasses.replace(config, **{name: value})


def _parse(text: str, hint: Any, key: str) -> Any:
    """``text`` as a value of type ``hint`` (bool, int, float, str, ``tuple[X, ...]``, ``X | None``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() == "none" and type(None) in args:
            return None
        (hint,) = [arg for arg in args if arg is not type(None)]
        return _parse(text, hint, key)
    if origin is tuple:
        return tuple(_parse(part, args[0], key) for part in text.split(",") if part.strip())
    if hint is bool:
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.strip().lower() not in words:
            raise ValueError(f"{key}={text!r}: expected true or false")
        return words[text.strip().lower()]
    try:
        return hint(text.strip())
    except ValueError:
        raise ValueError(f"{key}={text!r}: expected {hint.__name__}") from None
