"""Command line: ``python -m genvs make-data | demo``.

    python -m genvs make-data --out data/generated/cars --objects 100 --views 50 --size 64 --seed 0
    python -m genvs demo --out outputs/demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _make_data(args: argparse.Namespace) -> None:
    from genvs.data.synthetic import make_dataset

    start = time.perf_counter()
    out = make_dataset(args.out, n_objects=args.objects, n_views=args.views, image_size=args.size, seed=args.seed)
    n_images = args.objects * args.views
    print(f"wrote {args.objects} objects x {args.views} views to {out} in {time.perf_counter() - start:.1f} s "
          f"({n_images} images)")


def _demo(args: argparse.Namespace) -> None:
    """Make a small synthetic dataset and write a contact sheet of objects and views."""
    from genvs.data import SRNDataset
    from genvs.data.synthetic import make_dataset
    from genvs.viz import save_contact_sheet

    start = time.perf_counter()
    out = Path(args.out)
    data_dir = make_dataset(out / "data", n_objects=args.objects, n_views=args.views, image_size=args.size,
                            seed=args.seed)
    dataset = SRNDataset(data_dir, split="train", views_per_item=min(args.views, 8))
    sheet = save_contact_sheet([dataset[i]["images"] for i in range(min(len(dataset), 8))], out / "contact_sheet.png")
    print(f"synthetic dataset: {data_dir}")
    print(f"contact sheet:     {sheet}")
    print(f"done in {time.perf_counter() - start:.1f} s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m genvs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    make_data = commands.add_parser("make-data", help="render synthetic cars in the SRN layout")
    make_data.add_argument("--out", required=True, type=Path, help="output folder (cars_train/val/test inside)")
    make_data.add_argument("--objects", type=int, default=100, help="number of cars (split 80/10/10)")
    make_data.add_argument("--views", type=int, default=50, help="views per car")
    make_data.add_argument("--size", type=int, default=64, help="image size in pixels (square)")
    make_data.add_argument("--seed", type=int, default=0)
    make_data.set_defaults(run=_make_data)

    demo = commands.add_parser("demo", help="the main job: data, then a contact sheet under --out")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--objects", type=int, default=20)
    demo.add_argument("--views", type=int, default=24)
    demo.add_argument("--size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def _positive(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("objects", "views", "size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    _positive(parser, args)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
