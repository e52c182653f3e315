"""Command line: ``python -m genvs make-data | train | demo``.

    python -m genvs make-data --out data/generated/cars --objects 100 --views 50 --size 64 --seed 0
    python -m genvs train --data data/generated/cars --preset cpu --steps 2000 --out runs/cpu
    python -m genvs train ... --out runs/cpu --resume                 # continue after a stop
    python -m genvs train ... --set lr_denoiser=1e-5 --set model.rgb_weight=0.5
    torchrun --nproc_per_node=8 -m genvs train --preset paper ...   # 8 GPUs (DDP)
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


def _overrides(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, str]:
    """``--set key=value`` pairs as a dict."""
    overrides = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            parser.error(f"--set {pair!r}: expected key=value, e.g. --set lr_denoiser=1e-5")
        overrides[key.strip()] = value
    return overrides


def _train(args: argparse.Namespace) -> None:
    """Build the config and the trainer (bad input: a usage error), then train."""
    from genvs.config import with_overrides
    from genvs.training import PRESETS, Trainer

    parser = args.parser
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such folder. Point it at SRN-format data (cars_train/, cars_val/, ...) "
                     f"or make synthetic cars first: python -m genvs make-data --out {args.data}")
    try:
        config = with_overrides(PRESETS[args.preset], _overrides(parser, args.set))
        trainer = Trainer(config, args.data, args.out, args.steps, resume=args.resume, init=args.init,
                          device=args.device, log_every=args.log_every, sample_every=args.sample_every,
                          checkpoint_every=args.checkpoint_every, workers=args.workers)
    except (ValueError, FileExistsError) as error:  # CheckpointError and SRNFormatError are ValueErrors
        parser.error(str(error))
    start = trainer.step
    try:
        records = trainer.run()
    except KeyboardInterrupt:
        sys.exit(f"stopped at step {trainer.step}, checkpoint saved; continue with the same command and --resume")
    except FloatingPointError as error:
        sys.exit(str(error))
    finally:
        trainer.close()
    if trainer.rank == 0 and records:
        seconds = sum(record["seconds"] for record in records)
        print(f"trained steps {start}..{trainer.step} in {seconds:.1f} s of training "
              f"({(trainer.step - start) / seconds:.2f} steps/s, {records[-1]['images_per_s']:.1f} target images/s); "
              f"final loss {records[-1]['loss']:.4f}")
        print(f"run folder: {args.out} (log.csv, samples/, checkpoints)")


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

    from genvs.training import PRESETS as TRAIN_PRESETS

    train = commands.add_parser("train", help="train GeNVS on SRN-format data (one process, or under torchrun)")
    train.add_argument("--data", required=True, type=Path, help="SRN-format root (cars_train/ ...)")
    train.add_argument("--preset", required=True, choices=sorted(TRAIN_PRESETS), help="training preset")
    train.add_argument("--steps", required=True, type=int, help="optimiser steps of the whole run")
    train.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, log.csv, samples/")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument("--init", type=Path, help="start from this run's model weights (staged training)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. lr_denoiser=1e-5 or model.denoiser.dropout=0.1")
    train.add_argument("--device", help="default: cuda:LOCAL_RANK if available, else cpu")
    train.add_argument("--log-every", type=int, default=10)
    train.add_argument("--sample-every", type=int, help="default: a tenth of the run; 0: never")
    train.add_argument("--checkpoint-every", type=int, help="default: a tenth of the run; 0: only at the end")
    train.add_argument("--workers", type=int, default=0, help="data-loading processes")
    train.set_defaults(run=_train, parser=train)

    demo = commands.add_parser("demo", help="the main job: data, then a contact sheet under --out")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--objects", type=int, default=20)
    demo.add_argument("--views", type=int, default=24)
    demo.add_argument("--size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def _positive(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("objects", "views", "size", "steps"):
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
