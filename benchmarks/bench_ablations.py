"""GeNVS's design choices, measured: variants of the `lesson` model trained alike and scored on the protocol.

Each variant trains from scratch with `genvs.legs.run_leg` (the same preset, data, warmup + cosine schedule and seed)
for ``--steps`` optimiser steps in all, differs from GeNVS in one choice, and is scored on the 20-car `synthetic`
protocol:

- ``feature_image``: GeNVS as shipped: the denoiser conditioned on the field's 16-channel feature image, the field
  and the denoiser trained jointly;
- ``rgb_render``: the denoiser conditioned on the field's RGB render alone (the render's first three channels, those
  the RGB loss supervises; `model.denoiser.cond_channels=3`), everything else equal;
- ``staged``: the same model trained in stages (`stage`, :data:`genvs.model.STAGES`): half the steps train the
  encoder and field alone on the RGB loss, then half train the denoiser alone on the frozen field (the second leg
  starts from the first's export). Equal steps and target images in all; each part sees half of them.

A variant's legs share its steps equally; the RGB variant's denoiser reads 13 fewer input channels (a few hundred
fewer parameters). A leg whose folder already holds ``leg.json`` is read, not trained again.

    python benchmarks/bench_ablations.py --data data/generated/reference_cars_32_v3 \\
        --protocol-data data/generated/reference_cars_32 --steps 3000 --out outputs/ablation

Writes ``benchmarks/results/ablations.json``: per variant its legs (folder, overrides, steps, target images,
minutes, where) and the protocol's rows of its last leg (mean, standard deviation and per-car values) for the
metrics below.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import device_arguments, write_result

from genvs.config import with_overrides
from genvs.legs import run_leg
from genvs.training import PRESETS

VARIANTS: dict[str, tuple[tuple[str, dict[str, str]], ...]] = {
    "feature_image": (("feature_image", {}),),
    "rgb_render": (("rgb_render", {"model.denoiser.cond_channels": "3"}),),
    "staged": (("staged_field", {"stage": "field"}), ("staged", {"stage": "denoiser"})),
}
"""Each variant's legs, in order: (folder under ``--out``, overrides of the `lesson` preset)."""
METRICS = {"metrics": ("psnr", "ssim", "detail", "consistency", "consistency_gain"),
           "attribute_metrics": ("seen_accuracy", "unseen_confidence", "unseen_tv", "kid")}


def rows(evaluation: dict) -> dict:
    """The kept metrics of every method of a protocol result: ``{method: {metric: {mean, std, per_object}}}``."""
    kept = {}
    for table, names in METRICS.items():
        for method, scores in evaluation[table].items():
            kept.setdefault(method, {}).update({name: scores[name] for name in names if name in scores})
    return kept


def train_leg(folder: Path, overrides: dict[str, str], args, steps: int, init: Path | None) -> dict:
    """One leg of a variant, trained and scored unless ``folder`` holds it already; its record's kept keys."""
    if not (folder / "leg.json").is_file():
        config = with_overrides(PRESETS["lesson"], overrides)
        run_leg(config, args.data, args.protocol_data, folder, steps, init=init, device=args.device, where=args.where)
    record = json.loads((folder / "leg.json").read_text())
    if record["steps"] != steps:
        raise SystemExit(f"{folder}: a leg of {record['steps']} steps, not the {steps} this variant needs")
    return {"folder": folder.name, "overrides": overrides,
            **{key: record[key] for key in ("steps", "target_images", "minutes", "where")}}


def main() -> None:
    def more(parser):
        parser.add_argument("--data", default="data/generated/reference_cars_32_v3")
        parser.add_argument("--protocol-data", default="data/generated/reference_cars_32")
        parser.add_argument("--steps", type=int, default=3000)
        parser.add_argument("--out", type=Path, default=Path("outputs/ablation"))
        parser.add_argument("--where", default=None, help="where the legs ran, for their records")

    args = device_arguments(__doc__, more=more)
    results = {}
    for name, legs in VARIANTS.items():
        records, init = [], None
        for folder_name, overrides in legs:
            folder = args.out / folder_name
            records.append(train_leg(folder, overrides, args, args.steps // len(legs), init))
            init = folder / "export"
        evaluation = json.loads((folder / "evaluation.json").read_text())
        results[name] = {"legs": records, "rows": rows(evaluation)}
    write_result("ablations", {"preset": "lesson", "data": args.data, "protocol_data": args.protocol_data,
                               "steps": args.steps, "variants": results})


if __name__ == "__main__":
    main()
