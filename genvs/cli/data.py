"""``make-data``: procedural synthetic cars written in the SRN layout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from genvs.cli.options import COUNT, IMAGE_SIZE, INDEX

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``make-data``."""
    make_data = commands.add_parser("make-data", help="render synthetic cars in the SRN layout")
    make_data.add_argument("--out", required=True, type=Path, help="output folder (cars_train/val/test inside)")
    make_data.add_argument("--objects", type=COUNT, default=100, help="number of cars (split 80/10/10)")
    make_data.add_argument("--extra-train", type=INDEX, default=0,
                           help="more training cars after the --objects (their val and test cars stay the same)")
    make_data.add_argument("--views", type=COUNT, default=50, help="views per car")
    make_data.add_argument("--size", type=IMAGE_SIZE, default=64, help="image size in pixels (square), 16..1024")
    make_data.add_argument("--seed", type=INDEX, default=0)
    make_data.add_argument("--workers", type=COUNT, default=1,
                           help="processes rendering side by side (the files are the same for any number)")
    make_data.set_defaults(run=make_data_command)


def make_data_command(args: argparse.Namespace) -> None:
    """Write ``--objects`` cars of ``--views`` views each under ``--out``."""
    from genvs.data.synthetic import make_dataset

    start = time.perf_counter()
    out = make_dataset(args.out, n_objects=args.objects, n_views=args.views, image_size=args.size, seed=args.seed,
                       extra_train_objects=args.extra_train, workers=args.workers)
    n_objects = args.objects + args.extra_train
    print(f"wrote {n_objects} objects x {args.views} views to {out} in {time.perf_counter() - start:.1f} s "
          f"({n_objects * args.views} images)")
