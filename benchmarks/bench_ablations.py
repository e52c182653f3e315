"""GeNVS's design choices, measured: variants of the `lesson` model trained alike and scored on the protocol.

Each variant is one leg from scratch (`genvs.legs.run_leg`: the same preset, data, steps, warmup + cosine schedule
and seed) that differs from GeNVS in one choice, then scored on the 20-car `synthetic` protocol:

- ``feature_image``: GeNVS as shipped: the denoiser conditioned on the field's 16-channel feature image;
- ``rgb_render``: the denoiser conditioned on the field's RGB render alone (the render's first three channels, those
  the RGB loss supervises; `model.denoiser.cond_channels=3`), everything else equal.

Equal optimiser steps, batches and images; the RGB variant's denoiser reads 13 fewer input channels (a few hundred
fewer parameters). A variant whose folder already holds ``leg.json`` is read, not trained again.

    python benchmarks/bench_ablations.py --data data/generated/reference_cars_32_v3 \\
        --protocol-data data/generated/reference_cars_32 --steps 3000 --out outputs/ablation

Writes ``benchmarks/results/ablations.json``: per variant its overrides, leg record (steps, target images, minutes)
and the protocol's rows (mean, standard deviation and per-car values) for the metrics below.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import device_arguments, write_result

from genvs.config import with_overrides
from genvs.legs import run_leg
from genvs.training import PRESETS

VARIANTS: dict[str, dict[str, str]] = {
    "feature_image": {},
    "rgb_render": {"model.denoiser.cond_channels": "3"},
}
METRICS = {"metrics": ("psnr", "ssim", "detail", "consistency", "consistency_gain"),
           "attribute_metrics": ("seen_accuracy", "unseen_confidence", "unseen_tv", "kid")}


def rows(evaluation: dict) -> dict:
    """The kept metrics of every method of a protocol result: ``{method: {metric: {mean, std, per_object}}}``."""
    kept = {}
    for table, names in METRICS.items():
        for method, scores in evaluation[table].items():
            kept.setdefault(method, {}).update({name: scores[name] for name in names if name in scores})
    return kept


def main() -> None:
    def more(parser):
        parser.add_argument("--data", default="data/generated/reference_cars_32_v3")
        parser.add_argument("--protocol-data", default="data/generated/reference_cars_32")
        parser.add_argument("--steps", type=int, default=3000)
        parser.add_argument("--out", type=Path, default=Path("outputs/ablation"))
        parser.add_argument("--where", default=None, help="where the legs ran, for their records")

    args = device_arguments(__doc__, more=more)
    results = {}
    for name, overrides in VARIANTS.items():
        folder = args.out / name
        if not (folder / "leg.json").is_file():
            config = with_overrides(PRESETS["lesson"], overrides)
            run_leg(config, args.data, args.protocol_data, folder, args.steps, device=args.device, where=args.where)
        record = json.loads((folder / "leg.json").read_text())
        if record["steps"] != args.steps:
            raise SystemExit(f"{folder}: a leg of {record['steps']} steps, not --steps {args.steps}")
        evaluation = json.loads((folder / "evaluation.json").read_text())
        results[name] = {"overrides": overrides, "leg": {key: record[key] for key in ("steps", "target_images",
                                                                                         "minutes", "where")},
                         "rows": rows(evaluation)}
    write_result("ablations", {"preset": "lesson", "data": args.data, "protocol_data": args.protocol_data,
                               "steps": args.steps, "variants": results})


if __name__ == "__main__":
    main()
