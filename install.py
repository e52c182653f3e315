"""Install genvs from this clone into the running Python, keeping what is already there.

    python install.py                 # from a shell
    runpy.run_path("install.py")      # the first cell of every lesson, when genvs is not importable (Colab)

uv (a fast installer, itself a wheel; installed with pip if missing) installs genvs editable with the version
ranges of pyproject.toml, so a torch, torchvision or numpy that lies inside them stays as it is, and adds only
what is missing. overrides.txt lifts dctorch's ``numpy<2`` (its note says why), so numpy 2 stays too. The same
Python process can import genvs at once: no restart, unless a package this session had already imported was
replaced (then it says so). `make install` builds .venv another way: the exact versions of constraints.txt.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def installed_versions() -> dict[str, str]:
    """``{distribution name: version}`` of every package the running Python sees."""
    return {dist.metadata["Name"]: dist.version for dist in importlib.metadata.distributions()}


def uv_command() -> list[str]:
    """The command that runs uv with this Python: ``[python, -m, uv]``, pip-installing uv first if missing."""
    if importlib.util.find_spec("uv") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv"], check=True)
        importlib.invalidate_caches()
    return [sys.executable, "-m", "uv"]


def stale_modules(replaced: set[str]) -> list[str]:
    """Top-level modules this process has imported that belong to a distribution in ``replaced``."""
    return sorted({module for module, names in importlib.metadata.packages_distributions().items()
                   if module in sys.modules and not module.startswith("_") and replaced.intersection(names)})


def install(root: Path = ROOT) -> dict[str, tuple[str | None, str]]:
    """Install genvs from ``root`` (editable) into this Python; returns ``{name: (old version or None, new)}``."""
    start = time.perf_counter()
    before = installed_versions()
    subprocess.run([*uv_command(), "pip", "install", "--quiet", "--python", sys.executable,
                    "--override", str(root / "overrides.txt"), "--editable", str(root)], check=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # this process started before the install and has not read its .pth file
    importlib.invalidate_caches()
    after = installed_versions()
    changes = {name: (before.get(name), new) for name, new in after.items() if before.get(name) != new}
    added = sorted(name for name, (old, _) in changes.items() if old is None)
    replaced = {name: change for name, change in changes.items() if change[0] is not None}
    print(f"installed genvs from {root} in {time.perf_counter() - start:.0f} s: {len(added)} packages added, "
          + (", ".join(f"{name} {old} -> {new}" for name, (old, new) in sorted(replaced.items())) or "none replaced"))
    stale = stale_modules(set(replaced))
    if stale:
        print(f"this session had already imported {', '.join(stale)}, which the install replaced: restart it "
              "(Colab: Runtime > Restart session) and run this cell again.")
    return changes


if __name__ == "__main__":
    install()
