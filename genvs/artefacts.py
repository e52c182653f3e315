"""The trained models that ship with genvs, found alike in a clone and in an installed wheel.

Each shipped artefact is one folder, ``<models>/<name>/``, with its weights (safetensors), its config (JSON) and a
``MODEL_CARD.md``. ``<models>`` is the package's own ``genvs/shipped/`` (package data: a wheel carries it), or the
folder named by the environment variable ``GENVS_MODELS`` (same layout: models trained elsewhere, or kept outside
the package). Nothing here loads a model: each model's own module reads its folder
(:meth:`genvs.model.GeNVS.from_pretrained`, :func:`genvs.probe.load_probe`, :func:`genvs.controlnet.load_base`, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MODELS_ENV", "ARTEFACTS", "models_folder", "shipped_path", "shipped", "is_shipped"]

MODELS_ENV = "GENVS_MODELS"
"""The environment variable that names another folder of shipped models (default: the package's ``shipped/``)."""

ARTEFACTS: dict[str, str] = {
    "lesson": "the GeNVS reference model: lessons 02-08 and make demo (python -m genvs train, then export)",
    "probe": "the attribute probe the evaluation reads hidden-side attributes with (python -m genvs train-probe)",
    "controlnet_base": "the ControlNet route's frozen base U-Net, lesson 07 (python -m genvs train-base)",
    "controlnet": "the ControlNet on GeNVS's rendered features, lesson 07 (python -m genvs train-controlnet)",
    "multiview": "the multi-view ControlNet with cross-view attention, lesson 08 (python -m genvs train-multiview)",
    "raycond": "the 2D-only route, a ControlNet on the input view and rays, lesson 08 (python -m genvs train-raycond)",
}
"""Every shipped artefact: its name (its folder) and what it is, with the command that makes one."""


def models_folder() -> Path:
    """The folder holding the shipped models: ``$GENVS_MODELS`` if set, else the package's ``shipped/``."""
    override = os.environ.get(MODELS_ENV)
    return Path(override) if override else Path(__file__).resolve().parent / "shipped"


def shipped_path(name: str) -> Path:
    """Where shipped artefact ``name`` lives (``<models>/<name>``), whether or not it is there.

    Raises:
        KeyError: naming an unknown artefact and the known ones.
    """
    if name not in ARTEFACTS:
        raise KeyError(f"no shipped artefact {name!r}; the shipped ones are {sorted(ARTEFACTS)}")
    return models_folder() / name


def is_shipped(name: str) -> bool:
    """Whether artefact ``name``'s folder exists and holds files."""
    folder = shipped_path(name)
    return folder.is_dir() and any(folder.iterdir())


def shipped(name: str) -> Path:
    """The folder of shipped artefact ``name``.

    Raises:
        FileNotFoundError: the folder is missing or empty; the message names it, ``GENVS_MODELS`` and the
            command that makes the artefact.
    """
    if not is_shipped(name):
        raise FileNotFoundError(f"{shipped_path(name)}: no {ARTEFACTS[name]} here. The shipped models live in "
                                f"genvs/shipped/ of the package, or in the folder ${MODELS_ENV} names")
    return shipped_path(name)
