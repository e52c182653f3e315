"""The repository's size budget: what every clone carries, and what travels to a lent GPU machine."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MIB = 40  # the GPU machine takes at most 64 MiB of working tree, wheels and outputs included (docs/PACKAGE.md)


def _tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no tracked files to measure")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in listing.decode().split("\0") if name]


def test_tracked_files_stay_within_the_budget():
    sizes = {path: path.stat().st_size for path in _tracked_files() if path.is_file()}
    total = sum(sizes.values()) / 2**20
    largest = sorted(sizes, key=sizes.get, reverse=True)[:5]
    assert total <= BUDGET_MIB, (
        f"tracked files are {total:.1f} MiB, over the {BUDGET_MIB} MiB budget; largest: "
        + ", ".join(f"{path.relative_to(ROOT)} ({sizes[path] / 2**20:.1f} MiB)" for path in largest))
