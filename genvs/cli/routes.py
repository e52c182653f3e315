"""``train-base``, ``train-controlnet``, ``train-multiview``, ``train-raycond``: the diffusers routes of lessons
07 and 08, each one network fitted on frozen others, written as a diffusers folder (by default the shipped one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genvs.cli.options import BASE_PRESETS, add_fit, add_shipped, device

__all__ = ["add_commands"]

GENVS_HELP = "the GeNVS model whose frozen field renders the features"
BASE_HELP = "the frozen base U-Net's folder"
OUT_HELP = "diffusers folder to write"


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``train-base``, ``train-controlnet``, ``train-multiview`` and ``train-raycond``."""
    base = commands.add_parser("train-base", help="train lesson 07's base U-Net (unconditional, diffusers)")
    add_fit(base, 1500)
    base.add_argument("--preset", choices=BASE_PRESETS, default="lesson", help="base U-Net config")
    add_shipped(base, "--out", "controlnet_base", OUT_HELP)
    base.set_defaults(run=train_base_command)

    controlnet = commands.add_parser("train-controlnet", help="train lesson 07's ControlNet on GeNVS's rendered "
                                                              "features")
    add_fit(controlnet, 1000)
    add_shipped(controlnet, "--checkpoint", "lesson", GENVS_HELP)
    add_shipped(controlnet, "--base", "controlnet_base", BASE_HELP)
    add_shipped(controlnet, "--out", "controlnet", OUT_HELP)
    controlnet.set_defaults(run=train_controlnet_command)

    multiview = commands.add_parser("train-multiview", help="fine-tune lesson 07's ControlNet for lesson 08's "
                                                            "multi-view joint denoising")
    add_fit(multiview, 600)
    add_shipped(multiview, "--checkpoint", "lesson", GENVS_HELP)
    add_shipped(multiview, "--base", "controlnet_base", BASE_HELP)
    add_shipped(multiview, "--controlnet", "controlnet", "the ControlNet to start from")
    add_shipped(multiview, "--out", "multiview", OUT_HELP)
    multiview.add_argument("--cameras", action="store_true",
                           help="also train a camera embedding: every view's rays, relative to the group's first "
                                "view, on the queries and keys of every attention layer")
    multiview.set_defaults(run=train_multiview_command)

    raycond = commands.add_parser("train-raycond", help="train lesson 08's 2D-only route (input image + rays)")
    add_fit(raycond, 5000)  # lesson 07's route's target images, its field included (genvs.raycond's docstring)
    add_shipped(raycond, "--base", "controlnet_base", BASE_HELP)
    add_shipped(raycond, "--out", "raycond", OUT_HELP)
    raycond.set_defaults(run=train_raycond_command)


def fit_config(args: argparse.Namespace, defaults):
    """``defaults`` (a :class:`genvs.controlnet.FitConfig`) with the options given on the command line."""
    import dataclasses

    chosen = {name: getattr(args, name) for name in ("lr", "batch_size", "seed") if getattr(args, name) is not None}
    return dataclasses.replace(defaults, **chosen)


def print_fit(record: dict, out: Path) -> None:
    """One line on a finished fit: steps, time, loss first -> last, where it was saved."""
    print(f"{record['steps']} steps in {record['seconds']:.0f} s ({record['steps_per_second']:.2f} steps/s); loss "
          f"{record['loss_first']:.4f} -> {record['loss_last']:.4f}; saved to {out}")


def train_base_command(args: argparse.Namespace) -> None:
    """Train lesson 07's base U-Net unconditionally on the training views; save it as a diffusers folder."""
    from genvs.controlnet import BASE_FIT, base_config, train_base

    _, record = train_base(args.data, args.out, args.steps, base_config(args.preset), fit_config(args, BASE_FIT),
                           device=device(args), resume=args.resume)
    print_fit(record, args.out)


def train_controlnet_command(args: argparse.Namespace) -> None:
    """Train lesson 07's ControlNet on the frozen base and the frozen field of a GeNVS checkpoint."""
    from genvs.controlnet import CONTROLNET_FIT, load_base, train_controlnet
    from genvs.model import load_model

    where = device(args)
    model, _ = load_model(args.checkpoint, device=where)
    base = load_base(args.base, device=where)
    _, record = train_controlnet(model, args.data, args.out, args.steps, base, fit_config(args, CONTROLNET_FIT),
                                 device=where, resume=args.resume)
    print_fit(record, args.out)


def train_multiview_command(args: argparse.Namespace) -> None:
    """Fine-tune lesson 07's ControlNet into lesson 08's multi-view one (joint attention over groups of views)."""
    from genvs.controlnet import load_base, load_controlnet
    from genvs.model import load_model
    from genvs.multiview import MULTIVIEW_FIT, train_multiview

    where = device(args)
    model, _ = load_model(args.checkpoint, device=where)
    base, controlnet = load_base(args.base, device=where), load_controlnet(args.controlnet, device=where)
    _, record = train_multiview(model, args.data, args.out, args.steps, base, controlnet,
                                fit_config(args, MULTIVIEW_FIT), device=where, resume=args.resume,
                                cameras=args.cameras)
    print_fit(record, args.out)


def train_raycond_command(args: argparse.Namespace) -> None:
    """Train lesson 08's 2D-only route: a ControlNet on the input image and the cameras' rays, no field."""
    from genvs.controlnet import CONTROLNET_FIT, load_base
    from genvs.raycond import train_raycond

    where = device(args)
    _, record = train_raycond(args.data, args.out, args.steps, load_base(args.base, device=where),
                              fit_config(args, CONTROLNET_FIT), device=where, resume=args.resume)
    print_fit(record, args.out)
