"""What the command line accepts and how it refuses: range-checked numbers, the options several commands share,
and :class:`InputError`, the one kind of stop a handler raises for a bad value.

Nothing here imports torch: the parser is built and a bad argument refused in a fraction of a second. The
choices that live in torch-heavy modules (training presets, sampling modes, ...) are mirrored here as plain
constants; ``tests/test_cli.py`` checks that they match their modules.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, NoReturn

from genvs.artefacts import shipped_path

__all__ = ["InputError", "stop", "OneLineParser", "number", "COUNT", "INDEX", "POSITIVE", "SCALE", "IMAGE_SIZE",
           "TRAIN_PRESETS", "SAMPLING_MODES", "MAX_CHURN", "PROTOCOLS", "BASE_PRESETS", "GUIDANCE_SCALE",
           "TURNTABLE_ROUTES", "add_device", "add_orbit", "add_fit", "add_shipped", "device"]

TRAIN_PRESETS = ("colab-t4", "cpu", "lesson", "paper", "smoke")
"""The names of :data:`genvs.training.PRESETS`."""
SAMPLING_MODES = ("stochastic", "deterministic", "unconditional", "guided")
""":data:`genvs.sampling.SAMPLING_MODES`."""
MAX_CHURN = 2 ** 0.5 - 1
""":data:`genvs.sampling.MAX_CHURN`: EDM's cap on the per-step churn."""
PROTOCOLS = ("smoke", "srn", "synthetic")
"""The names of :data:`genvs.evaluation.PROTOCOLS`."""
BASE_PRESETS = ("lesson", "smoke")
"""The names of :data:`genvs.controlnet.BASE_PRESETS`."""
GUIDANCE_SCALE = 2.0
""":data:`genvs.controlnet.GUIDANCE_SCALE`: the ControlNet routes' classifier-free guidance scale."""
TURNTABLE_ROUTES = ("genvs_independent", "genvs_autoregressive", "controlnet", "multiview_chunked",
                    "multiview_autoregressive", "2d_only")
"""The routes of lesson 08's table: the keys of :data:`genvs.turntable.ROUTE_MODELS`."""


class InputError(Exception):
    """A value or file given on the command line that the command cannot use; its message names it."""


def stop(message: str) -> NoReturn:
    """The CLI's one way out on bad input: ``error: <message>`` as one line on stderr, exit status 2."""
    print("error: " + " ".join(message.splitlines()), file=sys.stderr)
    sys.exit(2)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one ``error: ...`` line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        stop(f"{message} (see: {self.prog} --help)")


def number(kind: type, at_least: float | None = None, at_most: float | None = None,
           above: float | None = None) -> Callable[[str], float]:
    """An argparse ``type=``: parses ``kind`` (int or float) and refuses a value outside
    ``[at_least, at_most]`` (``above``: a strict lower bound), or a float that is not finite, naming the range."""
    noun = "an integer" if kind is int else "a number"
    if at_least is not None and at_most is not None:
        allowed = f"{noun} in [{at_least:g}, {at_most:g}]"
    else:
        bounds = [f">= {at_least:g}" if at_least is not None else "", f"> {above:g}" if above is not None else "",
                  f"<= {at_most:g}" if at_most is not None else ""]
        allowed = " ".join([noun, *filter(None, bounds)])

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if (not math.isfinite(value) or (at_least is not None and value < at_least)
                or (at_most is not None and value > at_most) or (above is not None and value <= above)):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    return parse


COUNT = number(int, at_least=1)       # objects, views, frames, steps, batch sizes
INDEX = number(int, at_least=0)       # seeds, indices, "0: all" counts, intervals where 0 means never
POSITIVE = number(float, above=0)     # learning rates, minutes
SCALE = number(float, at_least=0)     # guidance scales
IMAGE_SIZE = number(int, at_least=16, at_most=1024)  # below 16 px a car is a few pixels; SRN and GeNVS use 128


def add_device(command: argparse.ArgumentParser) -> None:
    """``--device``: where the model runs (read with :func:`device`)."""
    command.add_argument("--device", help="where the model runs, e.g. cpu, cuda, cuda:1 (default: cuda if "
                                          "available, else cpu)")


def add_orbit(command: argparse.ArgumentParser) -> None:
    """The options of an orbit of sampled views: frames, swing, sampling mode, steps, churn, seed."""
    command.add_argument("--frames", type=COUNT, default=24, help="frames of the orbit")
    command.add_argument("--swing", type=number(float, at_least=-90, at_most=90), default=10.0,
                         help="elevation swing of the orbit, degrees (-90..90; negative: down first)")
    command.add_argument("--mode", choices=SAMPLING_MODES, default="stochastic", help="sampling mode")
    command.add_argument("--steps", type=COUNT, default=25, help="sampler steps")
    command.add_argument("--churn", type=number(float, at_least=0, at_most=MAX_CHURN), default=0.4,
                         help="EDM's per-step churn gamma of --mode stochastic: sigma is raised to "
                              "(1 + churn) sigma before each step; 0..0.4142 (sqrt(2) - 1)")
    command.add_argument("--seed", type=INDEX, default=0)


def add_fit(command: argparse.ArgumentParser, default_steps: int) -> None:
    """The options of fitting one network of the diffusers routes: data, steps, lr, batch size, seed, resume, device."""
    command.add_argument("--data", required=True, type=Path, help="SRN-format root (its cars_train/ is used)")
    command.add_argument("--steps", type=COUNT, default=default_steps, help="optimiser steps")
    command.add_argument("--lr", type=POSITIVE, help="peak learning rate")
    command.add_argument("--batch-size", type=COUNT, help="images (base) or objects (ControlNet) per step")
    command.add_argument("--seed", type=INDEX)
    command.add_argument("--resume", action="store_true",
                         help="continue the run in --out from its checkpoint (out/checkpoints/), exactly")
    add_device(command)


def add_shipped(command: argparse.ArgumentParser, flag: str, artefact: str, help: str) -> None:
    """A folder option whose default is shipped artefact ``artefact`` (:mod:`genvs.artefacts`)."""
    command.add_argument(flag, type=Path, default=shipped_path(artefact),
                         help=f"{help} (default: the shipped one, {artefact})")


def device(args: argparse.Namespace) -> str:
    """The device of ``--device`` (default: cuda when available, else cpu).

    Raises:
        InputError: torch cannot use the device here.
    """
    import torch

    from genvs.config import default_device

    name = args.device or str(default_device())
    try:
        torch.empty(0, device=name)
    except (RuntimeError, AssertionError, NotImplementedError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise InputError(f"--device {name}: torch cannot use this device here ({reason}); use cpu, cuda or "
                         f"cuda:N") from None
    return name
