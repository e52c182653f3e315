"""Does joint attention help once the views know their cameras? The held-out loss gap, measured along training.

Lesson 08's multi-view ControlNet, fine-tuned camera-blind, learned to tolerate the other views but not to use
them: its held-out loss with joint attention equals its loss with per-view attention. Here the same fine-tuning
runs camera-aware (`train_multiview(..., cameras=True)`: each view's rays, relative to the group's first camera,
on the queries and keys of every attention layer), from lesson 07's ControlNet, and at every ``--every`` steps its
EMA is scored on held-out groups twice, with joint and with per-view attention, on the same noise, sigma and
dropped renders (`genvs.multiview.group_loss`). The gap is paired, group by group::

    gap = L(per-view) - L(joint)        > 0: the other views help

reported as its mean and standard error over the groups, overall and per noise band (sigma < 0.5, 0.5-2, 2-8,
> 8). The shipped camera-blind route is scored the same way, as the reference.

    python benchmarks/bench_joint_attention.py --data data/generated/reference_cars_32 --steps 600 --every 150
    python benchmarks/bench_joint_attention.py --data data/generated/reference_cars_32_v3 --steps 20000 \
        --every 2500 --batch-size 64 --device cuda --out outputs/multiview_cameras      # the GPU leg's recipe

Writes ``benchmarks/results/joint_attention.json`` (the run itself goes to ``--out``).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from common import device_arguments, write_result

from genvs.artefacts import shipped_path
from genvs.controlnet import load_base, load_controlnet
from genvs.data.batches import StepBatches
from genvs.data.srn import SRNDataset
from genvs.denoiser import sample_training_sigmas
from genvs.model import load_model
from genvs.multiview import MULTIVIEW_FIT, group_loss, multiview_route, train_multiview
from genvs.seeding import derive_seed

BANDS = ((0.0, 0.5), (0.5, 2.0), (2.0, 8.0), (8.0, float("inf")))


def held_out_gap(model, denoiser, batches: StepBatches, n_batches: int, device: torch.device) -> dict:
    """Joint and per-view held-out losses of ``denoiser`` on ``n_batches`` groups batches, and their paired gap."""
    joint, alone, sigmas = [], [], []
    with torch.no_grad():
        for index in range(n_batches):
            batch = {key: value.to(device) for key, value in batches[index].items()}
            seed = derive_seed(7, index)
            for joint_attention, losses in ((True, joint), (False, alone)):
                losses.append(group_loss(model, denoiser, batch, MULTIVIEW_FIT,
                                         torch.Generator(device).manual_seed(seed), joint=joint_attention).cpu())
            # group_loss draws sigma first from the same generator: the same draw, recovered for the bands
            sigmas.append(sample_training_sigmas(batch["images"].shape[0], MULTIVIEW_FIT.noise_mean,
                                                 MULTIVIEW_FIT.noise_std, torch.Generator(device).manual_seed(seed),
                                                 device).cpu())
    joint, alone, sigmas = torch.cat(joint), torch.cat(alone), torch.cat(sigmas)
    gap = alone - joint

    def summary(mask: torch.Tensor) -> dict:
        values = gap[mask]
        return {"groups": int(mask.sum()), "gap": float(values.mean()),
                "gap_sem": float(values.std() / values.numel() ** 0.5) if values.numel() > 1 else float("nan")}

    return {"joint": float(joint.mean()), "per_view": float(alone.mean()), **summary(torch.ones_like(gap, dtype=bool)),
            "bands": {f"{low:g}-{high:g}": summary((sigmas >= low) & (sigmas < high)) for low, high in BANDS}}


def main() -> None:
    def more(parser):
        parser.add_argument("--data", default="data/generated/reference_cars_32")
        parser.add_argument("--out", default="outputs/joint_attention")
        parser.add_argument("--steps", type=int, default=600)
        parser.add_argument("--every", type=int, default=150)
        parser.add_argument("--lr", type=float, default=1e-3)
        parser.add_argument("--batch-size", type=int, default=MULTIVIEW_FIT.batch_size, help="groups per step")
        parser.add_argument("--held-out-batches", type=int, default=20, help="batches of 8 validation groups")

    args = device_arguments(__doc__, more=more)
    model, _ = load_model(shipped_path("lesson"), device=args.device)
    base, start = load_base(device=args.device), load_controlnet(device=args.device)
    size = base.config.sample_size
    held_out = StepBatches(SRNDataset(args.data, split="val", views_per_item=None, image_size=size),
                           MULTIVIEW_FIT.batch_size, 2, MULTIVIEW_FIT.target_views, seed=123)
    fit = dataclasses.replace(MULTIVIEW_FIT, lr=args.lr, batch_size=args.batch_size)
    reference = held_out_gap(model, multiview_route(device=args.device), held_out, args.held_out_batches,
                             args.device)
    print(f"shipped camera-blind route: gap {reference['gap']:+.4f} ± {reference['gap_sem']:.4f}")
    rows, seconds = [], 0.0
    for until in range(args.every, args.steps + 1, args.every):
        start_time = time.perf_counter()
        route, record = train_multiview(model, args.data, args.out, args.steps, base, start, fit, device=args.device,
                                        save_every=args.every, resume=until > args.every, until=until, cameras=True)
        seconds += time.perf_counter() - start_time
        scores = held_out_gap(model, route, held_out, args.held_out_batches, args.device)
        rows.append({"step": until, "target_images": until * fit.batch_size * fit.target_views,
                     "training_seconds": seconds, **scores})
        print(f"step {until}: joint {scores['joint']:.4f}, per view {scores['per_view']:.4f}, "
              f"gap {scores['gap']:+.4f} ± {scores['gap_sem']:.4f}")
    write_result("joint_attention", {"data": args.data, "fit": dataclasses.asdict(fit), "steps": args.steps,
                                     "held_out_groups": rows[0]["groups"], "device": str(args.device),
                                     "camera_blind_shipped": reference, "camera_aware": rows})


if __name__ == "__main__":
    main()
