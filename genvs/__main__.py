"""Command line: ``python -m genvs make-data | train | export | sample | evaluate | train-probe | train-base |
train-controlnet | train-multiview | train-raycond | turntables | demo``.

    python -m genvs make-data --out data/generated/cars --objects 100 --views 50 --size 64 --seed 0
    python -m genvs train --data data/generated/cars --preset cpu --steps 2000 --out runs/cpu
    python -m genvs train ... --out runs/cpu --resume                 # continue after a stop
    python -m genvs train ... --set lr_denoiser=1e-5 --set model.rgb_weight=0.5
    torchrun --nproc_per_node=8 -m genvs train --preset paper ...   # 8 GPUs (DDP)
    python -m genvs export --checkpoint runs/cpu --out data/checkpoints/cpu   # EMA weights only, fp16
    python -m genvs sample --checkpoint runs/cpu --image car.png --pose pose.txt --intrinsics intrinsics.txt
    python -m genvs evaluate --checkpoint runs/cpu --data data/generated/cars --out outputs/eval
    python -m genvs evaluate --checkpoint runs/paper --data data/srn_cars --protocol srn --out outputs/eval_srn
    python -m genvs train-probe --data data/generated/reference_cars_32 --out data/checkpoints/probe
    python -m genvs train-base --data data/generated/reference_cars_32              # lesson 07's base U-Net
    python -m genvs train-controlnet --data data/generated/reference_cars_32        # ... and its ControlNet
    python -m genvs evaluate ... --controlnet data/checkpoints/controlnet           # score both routes
    python -m genvs train-multiview --data data/generated/reference_cars_32         # lesson 08's multi-view route
    python -m genvs train-raycond --data data/generated/reference_cars_32           # ... and its 2D-only route
    python -m genvs turntables --out outputs/turntables.json                        # every route's orbits, scored
    python -m genvs demo --out outputs/demo

Bad arguments or input files stop with one ``error: ...`` line on stderr naming the problem, exit status 2;
every number is checked against its range before any work starts (``--size 3``: "argument --size: must be an
integer in [16, 1024], got 3").
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

__all__ = ["main"]


def _input_error(message: str) -> NoReturn:
    """Stop on bad input: ``error: <message>`` as one line on stderr, exit status 2, no usage text or traceback."""
    print("error: " + " ".join(message.splitlines()), file=sys.stderr)
    sys.exit(2)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one ``error: ...`` line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        _input_error(f"{message} (see: {self.prog} --help)")


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


def _device(args: argparse.Namespace) -> str:
    """The device of ``--device`` (default: cuda when available, else cpu); one it cannot use is an input error."""
    import torch

    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.empty(0, device=name)
    except (RuntimeError, AssertionError, NotImplementedError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        _input_error(f"--device {name}: torch cannot use this device here ({reason}); use cpu, cuda or cuda:N")
    return name


def _make_data(args: argparse.Namespace) -> None:
    from genvs.data.synthetic import make_dataset

    start = time.perf_counter()
    out = make_dataset(args.out, n_objects=args.objects, n_views=args.views, image_size=args.size, seed=args.seed)
    n_images = args.objects * args.views
    print(f"wrote {args.objects} objects x {args.views} views to {out} in {time.perf_counter() - start:.1f} s "
          f"({n_images} images)")


def _write_orbit(model, view: dict, out: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Generate an orbit from one view; write orbit.mp4, orbit.gif, orbit_contact_sheet.png and frames/NNN.png
    under ``out``. The video's and GIF's panels are upscaled (nearest) to at least 256 px (a 32 px model's: x8);
    the frames are the samples at the model's own size."""
    import torch

    from genvs.cameras import trajectory_from
    from genvs.sampling import generate_trajectory, sampling_options
    from genvs.viz import field_rgb, save_contact_sheet, save_frames, trajectory_frames, write_video

    poses = trajectory_from(view["c2w"][0], args.frames, elevation_swing_deg=args.swing)
    result = generate_trajectory(model, view["images"], view["K"], view["c2w"], view["K"].expand(args.frames, 3, 3),
                                 poses, seed=args.seed, **sampling_options(args.mode, args.steps, args.churn))
    field = model.config.field
    video_frames = trajectory_frames(result, field.near, field.far)  # panels >= 256 px (32 px images: x8)
    video = write_video(video_frames, out / "orbit.mp4", fps=8)
    gif = write_video(video_frames, out / "orbit.gif", fps=8)  # plays anywhere: browsers, READMEs, image viewers
    frames = save_frames(result["samples"], out / "frames")[0].parent  # the samples themselves, at the model's size
    shown = torch.linspace(0, args.frames - 1, min(args.frames, 8)).round().long()
    rgb = field_rgb(result["features"][shown], view["images"].shape[-1])
    sheet = save_contact_sheet([torch.cat([view["images"], result["samples"][shown]]),
                                torch.cat([view["images"], rgb])], out / "orbit_contact_sheet.png")
    return {"video": video, "GIF": gif, "contact sheet": sheet, "frames": frames}


def _demo(args: argparse.Namespace) -> None:
    """Data, a model (shipped checkpoint, or trained for a bounded time), then an orbit of a held-out car."""
    from genvs.data import SRNDataset
    from genvs.data.synthetic import make_dataset
    from genvs.training import PRESETS, SHIPPED_CHECKPOINTS, Trainer, load_model, shipped_checkpoint
    from genvs.viz import panel_scale, save_contact_sheet

    start = time.perf_counter()
    device = _device(args)
    out, config = Path(args.out), PRESETS[args.preset]
    size = config.model.field.encoder.image_size
    data_dir = make_dataset(out / "data", n_objects=args.objects, n_views=args.views, image_size=size,
                            seed=args.data_seed)
    dataset = SRNDataset(data_dir, split="train", views_per_item=min(args.views, 8))
    sheet = save_contact_sheet([dataset[i]["images"] for i in range(min(len(dataset), 8))], out / "contact_sheet.png")
    shipped = shipped_checkpoint(args.preset)
    if shipped is not None:
        print(f"loading the shipped checkpoint {shipped} (its model card: {shipped / 'MODEL_CARD.md'})")
        model, _ = load_model(shipped, device=device)
    else:
        print(f"no shipped checkpoint in {SHIPPED_CHECKPOINTS / args.preset}: training the {args.preset!r} preset "
              f"for at most {args.train_minutes:g} min in {out / 'run'} (run demo again to train it further)")
        trainer = Trainer(config, data_dir, out / "run", args.train_steps, resume=True, device=device, sample_every=0,
                          checkpoint_every=0)
        trainer.run(time_limit=args.train_minutes * 60)
        model, _ = load_model(out / "run", device=device)
    held_out = next(SRNDataset(data_dir, split=split, views_per_item=None, image_size=size)
                    for split in ("test", "val", "train") if (data_dir / f"cars_{split}").is_dir())
    car = held_out[0]
    view = {key: car[key][:1] for key in ("images", "K", "c2w")}
    paths = _write_orbit(model, view, out, args)
    scale = panel_scale(size)
    print(f"synthetic dataset:   {data_dir}")
    print(f"contact sheet:       {sheet}")
    for name, path in paths.items():
        print(f"orbit {name + ':':<15}{path}")
    print(f"the orbit: {args.frames} frames around a held-out car, generated from one view; each frame shows "
          f"sample | field RGB | depth | opacity, {size * scale} px panels ({size} px images x{scale}, nearest)")
    print(f"done in {time.perf_counter() - start:.1f} s")


def _sample(args: argparse.Namespace) -> None:
    """An orbit of novel views from the user's own SRN-format view.

    Broken input (a missing or unreadable file, a pose that is not rigid, a camera that does not see the
    object at the origin within the model's depth range, a bad ``--device``) stops with one line naming the
    file and the problem, exit status 2. A non-square image is centre-cropped, with a note.
    """
    from genvs.checkpoint import CheckpointError
    from genvs.data.srn import SRNFormatError, read_view
    from genvs.training import load_model

    device = _device(args)
    try:
        model, config = load_model(args.checkpoint, device=device)
        field = model.config.field
        view = read_view(args.image, args.pose, args.intrinsics, image_size=field.encoder.image_size,
                         depth_range=(field.near, field.far))
    except (CheckpointError, SRNFormatError) as error:
        _input_error(str(error))
    if view["cropped_from"] is not None:
        height, width = view["cropped_from"]
        side = min(height, width)
        print(f"note: {args.image.name} is {width}x{height}: centre-cropped to {side}x{side} (K adjusted)")
    print(f"checkpoint step {config['step']}: {args.frames} frames, {args.mode} sampling, {args.steps} steps")
    for name, path in _write_orbit(model, view, Path(args.out), args).items():
        print(f"{name + ':':<15}{path}")


def _export(args: argparse.Namespace) -> None:
    """The EMA weights of a run, in half precision, as a small checkpoint to ship or share."""
    import torch

    from genvs.checkpoint import CheckpointError
    from genvs.training import export_model

    try:
        path = export_model(args.checkpoint, args.out, dtype={"fp16": torch.float16, "bf16": torch.bfloat16,
                                                               "fp32": torch.float32}[args.dtype])
    except CheckpointError as error:
        args.parser.error(str(error))
    tensors = path.with_suffix(".safetensors")
    print(f"wrote {path} and {tensors.name} ({tensors.stat().st_size / 1e6:.1f} MB, {args.dtype} EMA weights)")


EVALUATION_OPTIONS = {"split": "split", "max_objects": "max_objects", "input_view": "input_view", "targets": "target_views",
                      "steps": "steps", "seed": "seed", "target_batch": "target_batch", "object_batch": "object_batch",
                      "draws": "draws"}


def _evaluate(args: argparse.Namespace) -> None:
    """Score the regression baseline and GeNVS's samplers on held-out objects; write JSON, markdown and a figure."""
    import dataclasses
    import json

    from genvs.checkpoint import CheckpointError
    from genvs.data.srn import SRNFormatError
    from genvs.controlnet import controlnet_route
    from genvs.evaluation import PROTOCOLS, evaluate, results_table
    from genvs.probe import load_probe
    from genvs.sampling import sampling_options
    from genvs.training import load_model
    from genvs.viz import plot_evaluation_examples

    chosen = {field: getattr(args, option) for option, field in EVALUATION_OPTIONS.items()
              if getattr(args, option) is not None}
    device = _device(args)
    try:
        config = dataclasses.replace(PROTOCOLS[args.protocol], **chosen)
        model, checkpoint = load_model(args.checkpoint, device=device)
        attributes = (False if args.no_attributes else
                      load_probe(args.probe, device=device)[0] if args.probe is not None else True)
        routes = {f"guided w={scale:g}": (model.denoiser, sampling_options("guided", config.steps, guidance_scale=scale))
                  for scale in args.guided}
        if args.controlnet is not None:
            route = controlnet_route(args.controlnet_base, args.controlnet, device)
            routes["controlnet"] = (route, {**sampling_options("stochastic", config.steps),
                                            "guidance_scale": args.guidance})
        results = evaluate(model, args.data, config, device=device, lpips=not args.no_lpips, attributes=attributes,
                           routes=routes)
    except (ValueError, FileNotFoundError, CheckpointError, SRNFormatError) as error:
        args.parser.error(str(error))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    examples = results.pop("examples")
    results["checkpoint"] = {"path": str(args.checkpoint), "step": checkpoint["step"]}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = results_table(results)
    (out / "results.md").write_text(f"Checkpoint {args.checkpoint} (step {checkpoint['step']}), data {args.data}\n\n"
                                     + table)
    plot_evaluation_examples(examples).savefig(out / "examples.png", dpi=120)
    print(table)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'examples.png'}")


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


DEVICE_HELP = "where the model runs, e.g. cpu, cuda, cuda:1 (default: cuda if available, else cpu)"


def _train_probe(args: argparse.Namespace) -> None:
    """Train the attribute probe on synthetic cars' training views, test it on their test split, save it."""
    import dataclasses
    import json

    from genvs.data.srn import SRNFormatError
    from genvs.probe import ProbeConfig, save_probe, train_probe

    config = dataclasses.replace(ProbeConfig(), **{name: getattr(args, name) for name in ("steps", "seed")
                                                   if getattr(args, name) is not None})
    try:
        probe, record = train_probe(args.data, config)
    except SRNFormatError as error:
        args.parser.error(str(error))
    save_probe(probe, args.out, record)
    print(json.dumps(record["accuracy"], indent=1))
    print(f"held-out accuracy {record['accuracy']['all']['accuracy']:.4f} on {record['accuracy']['all']['views']} "
          f"(view, attribute) pairs; {record['seconds']:.0f} s; saved to {args.out}")


def _fit_config(args: argparse.Namespace, defaults):
    """``defaults`` (a :class:`genvs.controlnet.FitConfig`) with the options given on the command line."""
    import dataclasses

    chosen = {name: getattr(args, name) for name in ("lr", "batch_size", "seed") if getattr(args, name) is not None}
    return dataclasses.replace(defaults, **chosen)


def _print_fit(record: dict, out: Path) -> None:
    print(f"{record['steps']} steps in {record['seconds']:.0f} s ({record['steps_per_second']:.2f} steps/s); loss "
          f"{record['loss_first']:.4f} -> {record['loss_last']:.4f}; saved to {out}")


def _train_base(args: argparse.Namespace) -> None:
    """Train lesson 07's base U-Net unconditionally on the training views; save it as a diffusers folder."""
    from genvs.controlnet import BASE_FIT, base_config, train_base
    from genvs.data.srn import SRNFormatError

    try:
        _, record = train_base(args.data, args.out, args.steps, base_config(args.preset), _fit_config(args, BASE_FIT),
                               device=_device(args))
    except (ValueError, SRNFormatError) as error:
        args.parser.error(str(error))
    _print_fit(record, args.out)


def _train_controlnet(args: argparse.Namespace) -> None:
    """Train lesson 07's ControlNet on the frozen base and the frozen field of a GeNVS checkpoint."""
    from genvs.checkpoint import CheckpointError
    from genvs.controlnet import CONTROLNET_FIT, load_base, train_controlnet
    from genvs.data.srn import SRNFormatError
    from genvs.training import load_model

    device = _device(args)
    try:
        model, _ = load_model(args.checkpoint, device=device)
        base = load_base(args.base, device=device)
        _, record = train_controlnet(model, args.data, args.out, args.steps, base, _fit_config(args, CONTROLNET_FIT),
                                     device=device)
    except (ValueError, FileNotFoundError, CheckpointError, SRNFormatError) as error:
        args.parser.error(str(error))
    _print_fit(record, args.out)


def _train_multiview(args: argparse.Namespace) -> None:
    """Fine-tune lesson 07's ControlNet into lesson 08's multi-view one (joint attention over groups of views)."""
    from genvs.checkpoint import CheckpointError
    from genvs.controlnet import load_base, load_controlnet
    from genvs.data.srn import SRNFormatError
    from genvs.multiview import MULTIVIEW_FIT, train_multiview
    from genvs.training import load_model

    device = _device(args)
    try:
        model, _ = load_model(args.checkpoint, device=device)
        base, controlnet = load_base(args.base, device=device), load_controlnet(args.controlnet, device=device)
        _, record = train_multiview(model, args.data, args.out, args.steps, base, controlnet,
                                    _fit_config(args, MULTIVIEW_FIT), device=device)
    except (ValueError, FileNotFoundError, CheckpointError, SRNFormatError) as error:
        args.parser.error(str(error))
    _print_fit(record, args.out)


def _train_raycond(args: argparse.Namespace) -> None:
    """Train lesson 08's 2D-only route: a ControlNet on the input image and the cameras' rays, no field."""
    from genvs.controlnet import CONTROLNET_FIT, load_base
    from genvs.data.srn import SRNFormatError
    from genvs.raycond import train_raycond

    device = _device(args)
    try:
        _, record = train_raycond(args.data, args.out, args.steps, load_base(args.base, device=device),
                                  _fit_config(args, CONTROLNET_FIT), device=device)
    except (ValueError, FileNotFoundError, SRNFormatError) as error:
        args.parser.error(str(error))
    _print_fit(record, args.out)


def _turntables(args: argparse.Namespace) -> None:
    """Lesson 08's table: every route's orbits of held-out synthetic cars, scored; written as JSON."""
    import json

    from genvs.checkpoint import CheckpointError
    from genvs.controlnet import controlnet_route
    from genvs.data.srn import SRNFormatError
    from genvs.multiview import multiview_route
    from genvs.probe import load_probe
    from genvs.raycond import raycond_route
    from genvs.training import load_model
    from genvs.turntable import TURNTABLE_METRICS, TurntableConfig, compare_turntables, standard_routes

    device = _device(args)
    config = TurntableConfig(n_objects=args.objects, n_frames=args.frames, steps=args.steps, seed=args.seed)
    try:
        model, _ = load_model(args.checkpoint, device=device)
        routes = standard_routes(model, config, controlnet_route(args.base, args.controlnet, device),
                                 multiview_route(args.base, args.multiview, device),
                                 raycond_route(args.base, args.raycond, device))
        probe, _ = load_probe(device=device)
        results = compare_turntables(routes, args.data, probe, config)
    except (ValueError, FileNotFoundError, CheckpointError, SRNFormatError) as error:
        args.parser.error(str(error))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = {key: results[key] for key in ("scores", "per_object", "seconds")}
    args.out.write_text(json.dumps({**kept, "config": vars(config)}, indent=1))
    for name, scores in results["scores"].items():
        print(f"{name:26s}" + " ".join(f"{metric} {scores[metric]['mean']:.3f}" for metric in TURNTABLE_METRICS
                                        if metric in scores))
    print(f"saved to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m genvs", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    make_data = commands.add_parser("make-data", help="render synthetic cars in the SRN layout")
    make_data.add_argument("--out", required=True, type=Path, help="output folder (cars_train/val/test inside)")
    make_data.add_argument("--objects", type=COUNT, default=100, help="number of cars (split 80/10/10)")
    make_data.add_argument("--views", type=COUNT, default=50, help="views per car")
    make_data.add_argument("--size", type=IMAGE_SIZE, default=64, help="image size in pixels (square), 16..1024")
    make_data.add_argument("--seed", type=INDEX, default=0)
    make_data.set_defaults(run=_make_data)

    from genvs.training import PRESETS as TRAIN_PRESETS

    train = commands.add_parser("train", help="train GeNVS on SRN-format data (one process, or under torchrun)")
    train.add_argument("--data", required=True, type=Path, help="SRN-format root (cars_train/ ...)")
    train.add_argument("--preset", required=True, choices=sorted(TRAIN_PRESETS), help="training preset")
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
    train.set_defaults(run=_train, parser=train)

    export = commands.add_parser("export", help="a run's EMA weights alone, in fp16: a small checkpoint for sampling")
    export.add_argument("--checkpoint", required=True, type=Path, help="a run folder or a step_*.json checkpoint")
    export.add_argument("--out", required=True, type=Path, help="folder to write the exported checkpoint into")
    export.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16")
    export.set_defaults(run=_export, parser=export)

    from genvs.sampling import MAX_CHURN, SAMPLING_MODES

    def orbit_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--frames", type=COUNT, default=24, help="frames of the orbit")
        command.add_argument("--swing", type=number(float, at_least=-90, at_most=90), default=10.0,
                             help="elevation swing of the orbit, degrees (-90..90; negative: down first)")
        command.add_argument("--mode", choices=SAMPLING_MODES, default="stochastic", help="sampling mode")
        command.add_argument("--steps", type=COUNT, default=25, help="sampler steps")
        command.add_argument("--churn", type=number(float, at_least=0, at_most=MAX_CHURN), default=0.4,
                             help="EDM's per-step churn gamma of --mode stochastic: sigma is raised to "
                                  "(1 + churn) sigma before each step; 0..0.4142 (sqrt(2) - 1)")
        command.add_argument("--seed", type=INDEX, default=0)

    sample = commands.add_parser("sample", help="an orbit of novel views from one SRN-format view")
    sample.add_argument("--checkpoint", required=True, type=Path, help="a run folder or a step_*.json checkpoint")
    sample.add_argument("--image", required=True, type=Path, help="the input image (PNG, RGB or RGBA)")
    sample.add_argument("--pose", required=True, type=Path, help="its camera-to-world pose (16 numbers)")
    sample.add_argument("--intrinsics", required=True, type=Path, help="intrinsics.txt or a per-view 3x3 K file")
    sample.add_argument("--out", type=Path, default=Path("outputs/sample"))
    sample.add_argument("--device", help=DEVICE_HELP)
    orbit_options(sample)
    sample.set_defaults(run=_sample)

    from genvs.controlnet import BASE_PRESETS, GUIDANCE_SCALE, SHIPPED_BASE, SHIPPED_CONTROLNET
    from genvs.evaluation import PROTOCOLS
    from genvs.multiview import SHIPPED_MULTIVIEW
    from genvs.raycond import SHIPPED_RAYCOND

    evaluation = commands.add_parser("evaluate", help="regression baseline vs GeNVS samplers on held-out objects")
    evaluation.add_argument("--checkpoint", required=True, type=Path, help="a run folder or a step_*.json checkpoint")
    evaluation.add_argument("--data", required=True, type=Path, help="SRN-format root (cars_test/ ...)")
    evaluation.add_argument("--out", type=Path, default=Path("outputs/evaluation"),
                            help="folder for results.json, results.md, examples.png")
    evaluation.add_argument("--protocol", choices=sorted(PROTOCOLS), default="synthetic",
                            help="named protocol; the options below override its values")
    evaluation.add_argument("--split", choices=("test", "val"), help="held-out split")
    evaluation.add_argument("--max-objects", type=INDEX, help="first N objects of the split (0: all)")
    evaluation.add_argument("--input-view", type=INDEX, help="index of each object's input view (SRN cars: 64)")
    evaluation.add_argument("--targets", type=INDEX, help="target views spread over the others (0: all)")
    evaluation.add_argument("--steps", type=COUNT, help="sampler steps")
    evaluation.add_argument("--seed", type=INDEX)
    evaluation.add_argument("--target-batch", type=COUNT, help="targets sampled together")
    evaluation.add_argument("--object-batch", type=COUNT,
                            help="objects whose autoregressive trajectories are generated together (memory)")
    evaluation.add_argument("--draws", type=COUNT, help="samples per object for the attribute metrics (2 seeds)")
    evaluation.add_argument("--device", help=DEVICE_HELP)
    evaluation.add_argument("--no-lpips", action="store_true", help="skip LPIPS even if its weights are on disk")
    evaluation.add_argument("--probe", type=Path, help="attribute probe folder (default: the shipped one)")
    evaluation.add_argument("--no-attributes", action="store_true", help="skip the hidden-side attribute metrics")
    evaluation.add_argument("--guided", type=SCALE, nargs="+", default=[], metavar="W",
                            help="also score GeNVS sampled deterministically with classifier-free guidance scale W, "
                                 "a row 'guided w=W' each (1: the deterministic row; below 1 leans on the "
                                 "unconditional model, above on the condition)")
    evaluation.add_argument("--controlnet", type=Path, help="also score lesson 07's ControlNet route (its folder) on "
                            "the same condition and seeds")
    evaluation.add_argument("--controlnet-base", type=Path, default=SHIPPED_BASE, help="the ControlNet's base U-Net")
    evaluation.add_argument("--guidance", type=SCALE, default=GUIDANCE_SCALE,
                            help="the ControlNet route's classifier-free guidance scale")
    evaluation.set_defaults(run=_evaluate, parser=evaluation)

    probe = commands.add_parser("train-probe", help="train the attribute probe the evaluation reads attributes with")
    probe.add_argument("--data", required=True, type=Path, help="synthetic cars (make-data) with attributes.json")
    probe.add_argument("--out", type=Path, default=Path("data/checkpoints/probe"), help="folder for the probe")
    probe.add_argument("--steps", type=COUNT, help="training steps (default 600)")
    probe.add_argument("--seed", type=INDEX)
    probe.set_defaults(run=_train_probe, parser=probe)

    def fit_options(command: argparse.ArgumentParser, default_steps: int) -> None:
        command.add_argument("--data", required=True, type=Path, help="SRN-format root (its cars_train/ is used)")
        command.add_argument("--steps", type=COUNT, default=default_steps, help="optimiser steps")
        command.add_argument("--lr", type=POSITIVE, help="peak learning rate")
        command.add_argument("--batch-size", type=COUNT, help="images (base) or objects (ControlNet) per step")
        command.add_argument("--seed", type=INDEX)
        command.add_argument("--device", help=DEVICE_HELP)

    base = commands.add_parser("train-base", help="train lesson 07's base U-Net (unconditional, diffusers)")
    fit_options(base, 1500)
    base.add_argument("--preset", choices=sorted(BASE_PRESETS), default="lesson", help="base U-Net config")
    base.add_argument("--out", type=Path, default=SHIPPED_BASE, help="diffusers folder to write")
    base.set_defaults(run=_train_base, parser=base)

    controlnet = commands.add_parser("train-controlnet", help="train lesson 07's ControlNet on GeNVS's rendered features")
    fit_options(controlnet, 1000)
    controlnet.add_argument("--checkpoint", type=Path, default=Path("data/checkpoints/lesson"),
                            help="the GeNVS model whose frozen field renders the features")
    controlnet.add_argument("--base", type=Path, default=SHIPPED_BASE, help="the frozen base U-Net's folder")
    controlnet.add_argument("--out", type=Path, default=SHIPPED_CONTROLNET, help="diffusers folder to write")
    controlnet.set_defaults(run=_train_controlnet, parser=controlnet)

    multiview = commands.add_parser("train-multiview", help="fine-tune lesson 07's ControlNet for lesson 08's "
                                                            "multi-view joint denoising")
    fit_options(multiview, 600)
    multiview.add_argument("--checkpoint", type=Path, default=Path("data/checkpoints/lesson"),
                           help="the GeNVS model whose frozen field renders the features")
    multiview.add_argument("--base", type=Path, default=SHIPPED_BASE, help="the frozen base U-Net's folder")
    multiview.add_argument("--controlnet", type=Path, default=SHIPPED_CONTROLNET, help="the ControlNet to start from")
    multiview.add_argument("--out", type=Path, default=SHIPPED_MULTIVIEW, help="diffusers folder to write")
    multiview.set_defaults(run=_train_multiview, parser=multiview)

    raycond = commands.add_parser("train-raycond", help="train lesson 08's 2D-only route (input image + rays)")
    fit_options(raycond, 2000)
    raycond.add_argument("--base", type=Path, default=SHIPPED_BASE, help="the frozen base U-Net's folder")
    raycond.add_argument("--out", type=Path, default=SHIPPED_RAYCOND, help="diffusers folder to write")
    raycond.set_defaults(run=_train_raycond, parser=raycond)

    turntables = commands.add_parser("turntables", help="lesson 08's table: every route's orbits, scored")
    turntables.add_argument("--data", type=Path, default=Path("data/generated/reference_cars_32"),
                            help="synthetic cars (their test split; the truth is re-rendered exactly)")
    turntables.add_argument("--checkpoint", type=Path, default=Path("data/checkpoints/lesson"), help="GeNVS model")
    turntables.add_argument("--base", type=Path, default=SHIPPED_BASE)
    turntables.add_argument("--controlnet", type=Path, default=SHIPPED_CONTROLNET)
    turntables.add_argument("--multiview", type=Path, default=SHIPPED_MULTIVIEW)
    turntables.add_argument("--raycond", type=Path, default=SHIPPED_RAYCOND)
    turntables.add_argument("--objects", type=COUNT, default=8)
    turntables.add_argument("--frames", type=number(int, at_least=2), default=12,
                            help="frames per orbit (consistency compares consecutive frames: at least 2)")
    turntables.add_argument("--steps", type=COUNT, default=25)
    turntables.add_argument("--seed", type=INDEX, default=0)
    turntables.add_argument("--device", help=DEVICE_HELP)
    turntables.add_argument("--out", type=Path, default=Path("outputs/turntables.json"))
    turntables.set_defaults(run=_turntables, parser=turntables)

    demo = commands.add_parser("demo", help="the main job: data, a model, an orbit video of a held-out car")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default="lesson",
                      help="the model: a shipped checkpoint of this preset (data/checkpoints/PRESET), else trained here")
    demo.add_argument("--objects", type=COUNT, default=40)
    demo.add_argument("--views", type=COUNT, default=24)
    demo.add_argument("--data-seed", type=INDEX, default=1,
                      help="seed of the synthetic cars (the shipped checkpoint was trained on seed 0's: these are new)")
    demo.add_argument("--train-minutes", type=POSITIVE, default=4.0,
                      help="training time without a shipped checkpoint")
    demo.add_argument("--train-steps", type=COUNT, default=1000, help="length of the demo's training run")
    demo.add_argument("--device", help=DEVICE_HELP)
    orbit_options(demo)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
