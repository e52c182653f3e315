"""Run profiles and configs.

``GENVS_SMOKE=1`` (CI) makes every lesson use tiny sizes so it finishes in well under a minute on
2 CPU cores; without it, lessons run their default CPU sizes (minutes) and show real results.
Later modules add dataclass configs with named presets here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TypeVar

__all__ = ["SMOKE", "by_profile", "generated_data_dir", "from_preset"]

T = TypeVar("T")

SMOKE: bool = os.environ.get("GENVS_SMOKE", "0") not in ("", "0", "false", "False")


def by_profile(smoke: T, default: T) -> T:
    """The value for the current run profile: ``smoke`` under ``GENVS_SMOKE=1``, else ``default``."""
    return smoke if SMOKE else default


def from_preset(presets: dict[str, T], preset: str, kind: str, **overrides) -> T:
    """``presets[preset]`` (a dataclass config) with ``overrides`` replaced.

    Raises:
        ValueError: naming the unknown ``kind`` preset and the valid ones.
    """
    if preset not in presets:
        raise ValueError(f"unknown {kind} preset {preset!r}; valid presets: {sorted(presets)}")
    return dataclasses.replace(presets[preset], **overrides)


def generated_data_dir(name: str) -> Path:
    """Folder for generated dataset ``name``: ``$GENVS_DATA/name``, default ``<repo>/data/generated/name``.

    Regenerated from a seed whenever needed, so it is safe to delete.
    """
    base = os.environ.get("GENVS_DATA") or Path(__file__).resolve().parents[1] / "data" / "generated"
    return Path(base) / name
