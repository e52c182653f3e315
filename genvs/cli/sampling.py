"""``sample`` and ``demo``: an orbit of novel views from one view, the user's own or a held-out synthetic car's
(``demo``: data and a model first, the shipped one or one trained for a bounded time)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from genvs.cli.options import COUNT, INDEX, POSITIVE, TRAIN_PRESETS, add_device, add_orbit, device

__all__ = ["add_commands"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``sample`` and ``demo``."""
    sample = commands.add_parser("sample", help="an orbit of novel views from one SRN-format view")
    sample.add_argument("--checkpoint", required=True, type=Path, help="a run folder or a step_*.json checkpoint")
    sample.add_argument("--image", required=True, type=Path, help="the input image (PNG, RGB or RGBA)")
    sample.add_argument("--pose", required=True, type=Path, help="its camera-to-world pose (16 numbers)")
    sample.add_argument("--intrinsics", required=True, type=Path, help="intrinsics.txt or a per-view 3x3 K file")
    sample.add_argument("--out", type=Path, default=Path("outputs/sample"))
    add_device(sample)
    add_orbit(sample)
    sample.set_defaults(run=sample_command)

    demo = commands.add_parser("demo", help="the main job: data, a model, an orbit video of a held-out car")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--preset", choices=TRAIN_PRESETS, default="lesson",
                      help="the model: the shipped one of this preset (genvs/shipped/PRESET), else trained here")
    demo.add_argument("--objects", type=COUNT, default=40)
    demo.add_argument("--views", type=COUNT, default=24)
    demo.add_argument("--data-seed", type=INDEX, default=1,
                      help="seed of the synthetic cars (the shipped checkpoint was trained on seed 0's: these are new)")
    demo.add_argument("--train-minutes", type=POSITIVE, default=4.0,
                      help="training time without a shipped checkpoint")
    demo.add_argument("--train-steps", type=COUNT, default=1000, help="length of the demo's training run")
    add_device(demo)
    add_orbit(demo)
    demo.set_defaults(run=demo_command)


def write_orbit(model, view: dict, out: Path, args: argparse.Namespace) -> dict[str, Path]:
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


def sample_command(args: argparse.Namespace) -> None:
    """An orbit of novel views from the user's own SRN-format view; a non-square image is centre-cropped, with a
    note. Everything is read and checked before anything is written."""
    from genvs.data.srn import read_view
    from genvs.model import load_model

    model, config = load_model(args.checkpoint, device=device(args))
    field = model.config.field
    view = read_view(args.image, args.pose, args.intrinsics, image_size=field.encoder.image_size,
                     depth_range=(field.near, field.far))
    if view["cropped_from"] is not None:
        height, width = view["cropped_from"]
        side = min(height, width)
        print(f"note: {args.image.name} is {width}x{height}: centre-cropped to {side}x{side} (K adjusted)")
    print(f"checkpoint step {config['step']}: {args.frames} frames, {args.mode} sampling, {args.steps} steps")
    for name, path in write_orbit(model, view, Path(args.out), args).items():
        print(f"{name + ':':<15}{path}")


def demo_model(args: argparse.Namespace, data: Path, where: str):
    """The demo's model: the shipped one of ``--preset`` if there is one, else a bounded training run's."""
    from genvs.artefacts import ARTEFACTS, is_shipped, models_folder, shipped_path
    from genvs.model import load_model
    from genvs.training import PRESETS, Trainer

    if args.preset in ARTEFACTS and is_shipped(args.preset):
        folder = shipped_path(args.preset)
        print(f"loading the shipped checkpoint {folder} (its model card: {folder / 'MODEL_CARD.md'})")
        return load_model(folder, device=where)[0]
    run = Path(args.out) / "run"
    print(f"no shipped checkpoint in {models_folder() / args.preset}: training the {args.preset!r} preset "
          f"for at most {args.train_minutes:g} min in {run} (run demo again to train it further)")
    trainer = Trainer(PRESETS[args.preset], data, run, args.train_steps, resume=True, device=where, sample_every=0,
                      checkpoint_every=0)
    trainer.run(time_limit=args.train_minutes * 60)
    return load_model(run, device=where)[0]


def demo_command(args: argparse.Namespace) -> None:
    """Data, a model (shipped, or trained for a bounded time), then an orbit of a held-out car."""
    from genvs.data import SRNDataset
    from genvs.data.synthetic import make_dataset
    from genvs.training import PRESETS
    from genvs.viz import panel_scale, save_contact_sheet

    start = time.perf_counter()
    where = device(args)
    out = Path(args.out)
    size = PRESETS[args.preset].model.field.encoder.image_size
    data = make_dataset(out / "data", n_objects=args.objects, n_views=args.views, image_size=size,
                        seed=args.data_seed)
    dataset = SRNDataset(data, split="train", views_per_item=min(args.views, 8))
    sheet = save_contact_sheet([dataset[i]["images"] for i in range(min(len(dataset), 8))], out / "contact_sheet.png")
    model = demo_model(args, data, where)
    held_out = next(SRNDataset(data, split=split, views_per_item=None, image_size=size)
                    for split in ("test", "val", "train") if (data / f"cars_{split}").is_dir())
    car = held_out[0]
    view = {key: car[key][:1] for key in ("images", "K", "c2w")}
    paths = write_orbit(model, view, out, args)
    scale = panel_scale(size)
    print(f"synthetic dataset:   {data}")
    print(f"contact sheet:       {sheet}")
    for name, path in paths.items():
        print(f"orbit {name + ':':<15}{path}")
    print(f"the orbit: {args.frames} frames around a held-out car, generated from one view; each frame shows "
          f"sample | field RGB | depth | opacity, {size * scale} px panels ({size} px images x{scale}, nearest)")
    print(f"done in {time.perf_counter() - start:.1f} s")
