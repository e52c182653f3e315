"""Download, here, the wheels that `benchmarks/gpu_job.py` needs on the GPU machine, into `.whl/`.

The GPU machine has Python 3.12 with torch, torchvision and most of the scientific stack (numpy, scipy,
scikit-image, pillow, matplotlib, imageio, safetensors, torchmetrics, tqdm, einops, torchdiffeq, requests,
regex, attrs, packaging), and no network. What `import genvs` and `import k_diffusion` need beyond that is
listed in :data:`PACKAGES`, each with the import that needs it; the versions are those of the project's `.venv`
(`pip freeze --all`), the wheels are for CPython 3.12 on manylinux x86-64 (pure-Python wheels where the package
has no compiled code), fetched without their dependencies.

    .venv/bin/python benchmarks/fetch_wheels.py            # writes .whl/ (ignored by git), prints what travels

The job installs them itself (`gpu_job.py`, :func:`install_wheels`): name `.whl` in the device tool's `carry`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
WHEELS = REPO / ".whl"
TRAVEL_LIMIT = 64 * 2**20
"""What the device tool carries to the GPU machine: the working tree (tracked files and untracked ones git does not
ignore) and the paths named in ``carry`` (here ``.whl``), 64 MiB in all."""

PACKAGES = {
    "k-diffusion": "genvs.denoiser: import k_diffusion",
    "clip-anytorch": "k_diffusion.evaluation: import clip",
    "ftfy": "clip's tokenizer",
    "wcwidth": "ftfy",
    "setuptools": "clip: from pkg_resources import packaging (gone from setuptools 81 on; installed only if missing)",
    "clean-fid": "k_diffusion.evaluation: from cleanfid.inception_torchscript import InceptionV3W",
    "dctorch": "k_diffusion.layers: from dctorch import functional",
    "jsonmerge": "k_diffusion.config: from jsonmerge import merge",
    "jsonschema": "jsonmerge",
    "jsonschema-specifications": "jsonschema",
    "referencing": "jsonschema",
    "rpds-py": "referencing",
    "kornia": "genvs.metrics: import kornia (SSIM, blur)",
    "kornia_rs": "kornia",
    "torchsde": "k_diffusion.sampling: import torchsde",
    "trampoline": "torchsde",
}
"""Distributions the GPU machine lacks, each with what imports it."""

PYTHON_VERSION = "3.12"
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
             *(f"manylinux_2_{minor}_x86_64" for minor in (5, 12, 17, 24, 27, 28, 31, 34, 35, 39))]
"""pip matches platform tags exactly: every manylinux tag a current wheel may carry."""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(names: list[str]) -> dict[str, str]:
    """``name -> version`` as ``pip freeze --all`` lists them in the project's .venv."""
    if not VENV_PYTHON.exists():
        raise SystemExit(f"{VENV_PYTHON} does not exist: run `make install` first")
    frozen = subprocess.run([str(VENV_PYTHON), "-m", "pip", "freeze", "--all"], check=True, capture_output=True,
                            text=True).stdout
    versions = {}
    for line in frozen.splitlines():
        name, pinned, version = line.partition("==")
        if pinned:
            versions[_normal(name)] = version
    missing = [name for name in names if _normal(name) not in versions]
    if missing:
        raise SystemExit(f"{missing} not installed in {VENV_PYTHON}: run `make install` first")
    return {name: versions[_normal(name)] for name in names}


def download(pins: dict[str, str], dest: Path) -> list[Path]:
    """Download ``name==version`` for each pin (no dependencies, wheels only, CPython 3.12 manylinux x86-64)
    into ``dest``; returns the wheel files."""
    abi = f"cp{PYTHON_VERSION.replace('.', '')}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
               "--abi", "none", *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
               "-d", str(dest), *(f"{name}=={version}" for name, version in pins.items())]
    subprocess.run(command, check=True)
    return sorted(dest.glob("*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=WHEELS, help="folder to (re)write (default: .whl/)")
    args = parser.parse_args()
    pins = pinned_versions(list(PACKAGES))
    with tempfile.TemporaryDirectory() as folder:
        wheels = download(pins, Path(folder))
        if args.dest.exists():
            shutil.rmtree(args.dest)  # one version of each: two would stop the install
        args.dest.mkdir(parents=True)
        for wheel in wheels:
            shutil.move(str(wheel), args.dest / wheel.name)
    total = 0
    for wheel in sorted(args.dest.glob("*.whl")):
        size = wheel.stat().st_size
        total += size
        print(f"{size / 1e6:7.2f} MB  {wheel.name}")
    print(f"{total / 1e6:7.2f} MB  in all, {len(pins)} wheels in {args.dest}")
    tree = tree_bytes()
    print(f"what travels: the working tree {tree / 2**20:.1f} MiB + wheels {total / 2**20:.1f} MiB = "
          f"{(tree + total) / 2**20:.1f} MiB of {TRAVEL_LIMIT / 2**20:.0f} MiB")
    if tree + total > TRAVEL_LIMIT:
        raise SystemExit(f"{(tree + total) / 2**20:.1f} MiB is over the {TRAVEL_LIMIT / 2**20:.0f} MiB that travel "
                         "to the GPU machine")


def tree_bytes() -> int:
    """Bytes of the working tree that travels: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return sum((REPO / name).stat().st_size for name in listed if name and (REPO / name).is_file())


if __name__ == "__main__":
    main()
