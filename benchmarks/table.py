"""Print one table per device of the latest results: training, feature rendering and sampling, per preset.

Reads ``benchmarks/results/training*.json`` (bench_training.py) and ``sampling*.json``
(bench_sampling.py); a cell is blank where that preset was not measured on that device.

    python benchmarks/table.py
"""

from __future__ import annotations

import json
from collections import defaultdict

from common import RESULTS_DIR

COLUMNS = [  # (header, source file, field in its per-preset row, format)
    ("train s/step", "training", "seconds_per_step", "{:.3f}"),
    ("train images/s", "training", "target_images_per_s", "{:.1f}"),
    ("render s/view", "sampling", "render_seconds", "{:.3f}"),
    ("sample s/view", "sampling", "sample_seconds_per_view", "{:.2f}"),
    ("batched s/view", "sampling", "batched_sample_seconds_per_view", "{:.2f}"),
    ("batching speed-up", "sampling", "batching_speedup", "{:.2f}x"),
]


def collect() -> tuple[dict, dict]:
    """``rows[device][preset][source] = row`` and ``notes[device]``: what each file says about its run."""
    rows, notes = defaultdict(lambda: defaultdict(dict)), defaultdict(list)
    for source in ("training", "sampling"):
        for path in sorted(RESULTS_DIR.glob(f"{source}*.json")):
            result = json.loads(path.read_text())
            for row in result["presets"]:
                rows[result["device"]][row["preset"]][source] = row
            extra = f", {result['presets'][0]['steps']} steps" if source == "sampling" else ""
            notes[result["device"]].append(f"{path.name}: torch {result['torch']}, "
                                           f"{result['torch_threads']} thread(s), "
                                           f"load {result['load_average_1min']}{extra}, {result['date']}")
    return rows, notes


def main() -> None:
    rows, notes = collect()
    for device, presets in rows.items():
        print(f"\n{device}")
        print("| preset | " + " | ".join(header for header, *_ in COLUMNS) + " |")
        print("|---|" + "---:|" * len(COLUMNS))
        for preset, sources in presets.items():
            cells = [form.format(sources[source][field]) if source in sources else ""
                     for _, source, field, form in COLUMNS]
            print(f"| {preset} | " + " | ".join(cells) + " |")
        for note in notes[device]:
            print(f"  {note}")


if __name__ == "__main__":
    main()
