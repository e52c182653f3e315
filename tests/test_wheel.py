"""genvs as a wheel: built from this tree, installed non-editable into a fresh environment, run from another folder.

The shipped models are package data (genvs/shipped/), so the installed package loads every one of them and runs the
demo without the clone. Building and installing need no network here: pip builds where it can, else uv builds
offline with the setuptools in its cache, and uv installs the dependencies from the cache `make install` filled
(skipped, saying why, where neither can build or install offline).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).with_name("uv")

LOAD_EVERY_MODEL = textwrap.dedent("""
    import genvs, torch
    from genvs.artefacts import ARTEFACTS, shipped
    from genvs.controlnet import load_base, load_controlnet
    from genvs.model import load_model
    from genvs.probe import load_probe

    assert "site-packages" in genvs.__file__, genvs.__file__
    model, stored = load_model(shipped("lesson"))
    probe, record = load_probe()
    base = load_base()
    controlnets = {name: load_controlnet(artefact=name) for name in ("controlnet", "multiview", "raycond")}
    print(sorted(ARTEFACTS), stored["step"], sum(p.numel() for p in model.parameters()))
""")


def _build_wheel(out: Path) -> Path:
    """The wheel of this tree in ``out``: ``pip wheel --no-deps .``, else ``uv build --wheel --offline``."""
    attempts = [[sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "-w", str(out), str(ROOT)],
                [str(UV), "build", "--wheel", "--offline", "--out-dir", str(out), str(ROOT)]]
    for command in attempts:
        if subprocess.run(command, capture_output=True, text=True, timeout=600).returncode == 0:
            return next(out.glob("genvs-*.whl"))
    pytest.skip("neither pip nor uv can build the wheel offline here (no setuptools in reach)")


def test_an_installed_wheel_loads_every_shipped_model_and_runs_the_demo(tmp_path):
    wheel = _build_wheel(tmp_path / "dist")
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True).stdout
    assert "genvs/shipped/lesson/MODEL_CARD.md" in names and "genvs/shipped/probe/latest.json" in names
    environment = tmp_path / "env"
    subprocess.run([str(UV), "venv", "--python", sys.executable, str(environment)], check=True, capture_output=True)
    python = environment / "bin" / "python"
    install = subprocess.run([str(UV), "pip", "install", "--offline", "--python", str(python), "-c",
                              str(ROOT / "constraints.txt"), "--override", str(ROOT / "overrides.txt"), str(wheel)],
                             capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        pytest.skip(f"uv cannot install the dependencies offline here: {install.stderr.strip()[-300:]}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    loaded = subprocess.run([str(python), "-c", LOAD_EVERY_MODEL], cwd=elsewhere, capture_output=True, text=True,
                            timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "'controlnet', 'controlnet_base', 'lesson', 'multiview', 'probe', 'raycond'" in loaded.stdout
    demo = subprocess.run([str(python), "-m", "genvs", "demo", "--out", "orbit", "--frames", "3", "--steps", "2"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=900,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "loading the shipped checkpoint" in demo.stdout and "site-packages" in demo.stdout
    assert (elsewhere / "orbit" / "contact_sheet.png").is_file()
