"""Command line: ``python -m genvs make-data | train | export | leg | score-leg | ship-leg | sample | evaluate |
train-probe | train-base | train-controlnet | train-multiview | train-raycond | turntables | demo``.

    python -m genvs make-data --out data/generated/cars --objects 100 --views 50 --size 64 --seed 0
    python -m genvs train --data data/generated/cars --preset cpu --steps 2000 --out runs/cpu
    python -m genvs train ... --out runs/cpu --resume                 # continue after a stop
    python -m genvs train ... --set lr_denoiser=1e-5 --set model.rgb_weight=0.5
    torchrun --nproc_per_node=8 -m genvs train --preset paper ...   # 8 GPUs (DDP)
    python -m genvs export --checkpoint runs/cpu --out models/cpu    # EMA weights only, fp16
    python -m genvs sample --checkpoint runs/cpu --image car.png --pose pose.txt --intrinsics intrinsics.txt
    python -m genvs evaluate --checkpoint runs/cpu --data data/generated/cars --out outputs/eval
    python -m genvs evaluate --checkpoint runs/paper --data data/srn_cars --protocol srn --out outputs/eval_srn
    python -m genvs train-probe --data data/generated/reference_cars_32 --out models/probe
    python -m genvs train-base --data data/generated/reference_cars_32              # lesson 07's base U-Net
    python -m genvs train-controlnet --data data/generated/reference_cars_32        # ... and its ControlNet
    python -m genvs evaluate ... --controlnet genvs/shipped/controlnet              # score both routes
    python -m genvs train-multiview --data data/generated/reference_cars_32         # lesson 08's multi-view route
    python -m genvs train-raycond --data data/generated/reference_cars_32           # ... and its 2D-only route
    python -m genvs turntables --out outputs/turntables.json                        # every route's orbits, scored
    python -m genvs demo --out outputs/demo

Models default to the shipped ones (genvs/shipped/NAME, or $GENVS_MODELS/NAME). Bad arguments or input files stop
with one ``error: ...`` line on stderr naming the value or file, exit status 2, no usage text and no traceback;
every number is checked against its range before any work starts (``--size 3``: "argument --size: must be an
integer in [16, 1024], got 3").
"""

from __future__ import annotations

import argparse
import os

from genvs.cli import data, evaluation, routes, sampling, training
from genvs.cli.options import InputError, OneLineParser, stop

__all__ = ["main", "build_parser", "EXPECTED"]

EXPECTED = (InputError, ValueError, OSError)
"""The failures a command reports as bad input: a refused value (InputError), a value or file a module refuses
(ValueError, with CheckpointError and SRNFormatError), a file that is missing or unreadable (OSError)."""


def build_parser() -> OneLineParser:
    """The parser of every command; each command's ``run`` default is its handler."""
    parser = OneLineParser(prog="python -m genvs", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (data, training, sampling, evaluation, routes):
        group.add_commands(commands)
    return parser


def describe(error: Exception) -> str:
    """An expected failure as one message naming the file or value (an OSError: its file first)."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run its command; any expected failure, from the parser or
    the command, stops with one ``error:`` line and exit status 2 (:func:`genvs.cli.options.stop`).
    ``GENVS_TRACEBACK=1`` shows the whole traceback instead (to tell a bug from a bad input)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except EXPECTED as error:
        if os.environ.get("GENVS_TRACEBACK", "0") not in ("", "0"):
            raise
        stop(describe(error))
