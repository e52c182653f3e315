"""``train``, ``export``, ``leg``, ``score-leg``, ``ship-leg`` and ``train-probe``: fitting GeNVS (one process or
under torchrun), shipping its EMA weights, training it in legs that add up, and fitting the attribute probe the
evaluation reads hidden sides with."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genvs.artefacts import shipped_path
from genvs.cli.options import COUNT, INDEX, TRAIN_PRESETS, InputError, add_shipped

__all__ = ["add_commands"]

DTYPES = ("fp16", "bf16", "fp32")
"""``export --dtype`` choices."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``train``, ``export``, ``leg``, ``score-leg``, ``ship-leg`` and ``train-probe``."""
    train = commands.add_parser("train", help="train GeNVS on SRN-format data (one process, or under torchrun)")
    train.add_argument("--data", required=True, type=Path, help="SRN-format root (cars_train/ ...)")
    train.add_argument("--preset", required=True, choices=TRAIN_PRESETS, help="training preset")
    train.add_argument("--steps", required=True, type=COUNT, help="optimiser steps of the whole run")
    train.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, log.csv, samples/")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument("--init", type=Path, help="start from this run's model weights (staged training)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. lr_denoiser=1e-5 or model.denoiser.dropout=0.1")
    train.add_argument("--device", help="default: cuda:LOCAL_RANK if available, else cpu")
    train.add_argument("--log-every", type=COUNT, default=10)
    train.add_argument("--sample-every", type=INDEX, help="default: a tenth of the run; 0: never")
    train.add_argument("--checkpoint-every", type=INDEX, help="default: a tenth of the run; 0: only at the end")
    train.add_argument("--workers", type=INDEX, help="data-loading processes (default: 4 on CUDA, 0 on the CPU)")
    train.set_defaults(run=train_command)

    export = commands.add_parser("export", help="a run's EMA weights alone, in fp16: a small checkpoint for sampling")
    export.add_argument("--checkpoint", required=True, type=Path, help="a run folder or a step_*.json checkpoint")
    export.add_argument("--out", required=True, type=Path, help="folder to write the exported checkpoint into")
    export.add_argument("--dtype", choices=DTYPES, default="fp16")
    export.set_defaults(run=export_command)

    leg = commands.add_parser("leg", help="one training leg: train (from --init or from scratch), export, score on "
                              "the 20-car protocol, write its record (genvs.legs)")
    leg.add_argument("--data", required=True, type=Path, help="SRN-format root to train on (its cars_train/)")
    leg.add_argument("--protocol-data", type=Path, help="SRN-format root scored on (its cars_test/; default: --data)")
    leg.add_argument("--preset", choices=TRAIN_PRESETS, default="lesson", help="training preset (default: lesson)")
    leg.add_argument("--steps", required=True, type=COUNT, help="the leg's optimiser steps (its own warmup + decay)")
    leg.add_argument("--out", required=True, type=Path, help="leg folder: the run, export/, evaluation.json, leg.json")
    leg.add_argument("--init", type=Path, help="start from this saved model, e.g. genvs/shipped/lesson "
                                               "(default: from scratch)")
    leg.add_argument("--resume", action="store_true", help="continue the leg in --out (a finished one is re-scored)")
    leg.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    leg.add_argument("--device", help="default: cuda if available, else cpu")
    leg.add_argument("--where", help="where the leg ran, for the legs table (default: the device in words)")
    leg.add_argument("--checkpoint-every", type=INDEX, help="default: a tenth of the leg; 0: only at the end")
    add_shipped(leg, "--against", "lesson", "model whose evaluation.json the leg is compared with")
    leg.set_defaults(run=leg_command)

    score = commands.add_parser("score-leg", help="score a leg trained elsewhere (e.g. a GPU call that came back "
                                                  "with export/, config.json and log.csv) and write its record")
    score.add_argument("--leg", required=True, type=Path, help="the leg folder (export/, config.json, log.csv)")
    score.add_argument("--protocol-data", required=True, type=Path, help="SRN-format root scored on (its cars_test/)")
    score.add_argument("--where", required=True, help="where the leg trained, for the legs table")
    score.add_argument("--init", type=Path, help="the model it started from, e.g. genvs/shipped/lesson (default: "
                                                 "recorded as from scratch)")
    score.add_argument("--device", help="default: cuda if available, else cpu")
    add_shipped(score, "--against", "lesson", "model whose evaluation.json the leg is compared with")
    score.set_defaults(run=score_leg_command)

    ship = commands.add_parser("ship-leg", help="replace the shipped model by a leg's export if no headline row is "
                                                "worse by more than one spread")
    ship.add_argument("--leg", required=True, type=Path, help="a folder the leg command wrote")
    add_shipped(ship, "--to", "lesson", "shipped model folder to replace")
    ship.add_argument("--force", action="store_true", help="ship even if a row got worse (or nothing to compare)")
    ship.set_defaults(run=ship_leg_command)

    probe = commands.add_parser("train-probe", help="train the attribute probe the evaluation reads attributes with")
    probe.add_argument("--data", required=True, type=Path, help="synthetic cars (make-data) with attributes.json")
    probe.add_argument("--out", type=Path, default=shipped_path("probe"),
                       help="folder for the probe (default: the shipped one, probe)")
    probe.add_argument("--steps", type=COUNT, help="training steps (default 600)")
    probe.add_argument("--seed", type=INDEX)
    probe.set_defaults(run=train_probe_command)


def overrides(pairs: list[str]) -> dict[str, str]:
    """``--set key=value`` pairs as a dict.

    Raises:
        InputError: a pair without ``=`` or without a key.
    """
    chosen = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise InputError(f"--set {pair!r}: expected key=value, e.g. --set lr_denoiser=1e-5")
        chosen[key.strip()] = value
    return chosen


def train_command(args: argparse.Namespace) -> None:
    """Build the config and the trainer, then train; a stop (Ctrl-C) leaves a checkpoint to ``--resume`` from."""
    from genvs.config import with_overrides
    from genvs.training import PRESETS, Trainer

    if not args.data.is_dir():
        raise InputError(f"--data {args.data}: no such folder. Point it at SRN-format data (cars_train/, cars_val/, "
                         f"...) or make synthetic cars first: python -m genvs make-data --out {args.data}")
    config = with_overrides(PRESETS[args.preset], overrides(args.set))
    trainer = Trainer(config, args.data, args.out, args.steps, resume=args.resume, init=args.init,
                      device=args.device, log_every=args.log_every, sample_every=args.sample_every,
                      checkpoint_every=args.checkpoint_every, workers=args.workers)
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


def export_command(args: argparse.Namespace) -> None:
    """The EMA weights of a run, in ``--dtype``, as a small checkpoint to ship or share."""
    import torch

    from genvs.training import export_model

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    path = export_model(args.checkpoint, args.out, dtype=dtype)
    tensors = path.with_suffix(".safetensors")
    print(f"wrote {path} and {tensors.name} ({tensors.stat().st_size / 1e6:.1f} MB, {args.dtype} EMA weights)")


def leg_command(args: argparse.Namespace) -> None:
    """Train, export and score one leg; print its row of the legs table and how it compares with ``--against``."""
    from genvs.config import with_overrides
    from genvs.legs import run_leg
    from genvs.training import PRESETS

    for option, folder in (("--data", args.data), ("--protocol-data", args.protocol_data)):
        if folder is not None and not folder.is_dir():
            raise InputError(f"{option} {folder}: no such folder (SRN-format data; make-data writes synthetic cars)")
    config = with_overrides(PRESETS[args.preset], overrides(args.set))
    record, examples = run_leg(config, args.data, args.protocol_data or args.data, args.out, args.steps, init=args.init,
                               resume=args.resume, device=args.device, where=args.where,
                               checkpoint_every=args.checkpoint_every)
    if record:  # rank 0
        report_leg(args.out, record, examples, args.against)


def score_leg_command(args: argparse.Namespace) -> None:
    """Score a leg folder's export on the protocol and write its record, as the leg command does after training."""
    from genvs.config import default_device
    from genvs.legs import score_leg

    for option, folder in (("--protocol-data", args.protocol_data), ("--leg", args.leg / "export")):
        if not folder.is_dir():
            raise InputError(f"{option} {folder}: no such folder")
    record, examples = score_leg(args.leg, args.protocol_data, init=args.init, where=args.where,
                                 device=args.device or default_device())
    report_leg(args.leg, record, examples, args.against)


def report_leg(out: Path, record: dict, examples: dict, against: Path) -> None:
    """Save a scored leg's examples figure; print its legs-table row and its headline rows beside ``against``'s."""
    import json

    from genvs.legs import comparison_table, headline_scores, legs_table
    from genvs.viz import plot_evaluation_examples

    plot_evaluation_examples(examples).savefig(out / "examples.png", dpi=120)
    print(legs_table([record]))
    if (against / "evaluation.json").is_file():
        print(comparison_table(record["scores"], headline_scores(json.loads((against / "evaluation.json").read_text())),
                               (str(against), str(out))))
    print(f"written: {out / 'export'}, {out / 'evaluation.json'}, {out / 'leg.json'}, {out / 'examples.png'}")


def ship_leg_command(args: argparse.Namespace) -> None:
    """Copy a leg's export over the shipped model when it is no worse on the protocol's headline rows."""
    from genvs.legs import ship_leg

    if not (args.leg / "leg.json").is_file():
        raise InputError(f"--leg {args.leg}: no leg.json there; run the leg command first")
    try:
        verdicts = ship_leg(args.leg, args.to, force=args.force)
    except ValueError as error:
        raise InputError(str(error)) from None
    print(", ".join(f"{row} {verdict}" for row, verdict in verdicts.items()) or "nothing to compare with")
    print(f"shipped {args.leg / 'export'} to {args.to}; update {args.to / 'MODEL_CARD.md'} "
          "(genvs.legs.legs_table gives its legs table)")


def train_probe_command(args: argparse.Namespace) -> None:
    """Train the attribute probe on synthetic cars' training views, test it on their test split, save it."""
    import dataclasses
    import json

    from genvs.probe import ProbeConfig, save_probe, train_probe

    chosen = {name: getattr(args, name) for name in ("steps", "seed") if getattr(args, name) is not None}
    probe, record = train_probe(args.data, dataclasses.replace(ProbeConfig(), **chosen))
    save_probe(probe, args.out, record)
    print(json.dumps(record["accuracy"], indent=1))
    print(f"held-out accuracy {record['accuracy']['all']['accuracy']:.4f} on {record['accuracy']['all']['views']} "
          f"(view, attribute) pairs; {record['seconds']:.0f} s; saved to {args.out}")
