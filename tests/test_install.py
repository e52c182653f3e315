"""install.py tried as a learner in Colab meets it: a fresh Python that already has numpy 2 and torch, both
imported in the running kernel, then lesson 00's first cell verbatim and the rest of lesson 00 in that same kernel.

It builds a virtual environment and installs packages, so it needs the package index (skipped, saying so, where
the index cannot be reached); uv's cache, filled by `make install`, makes it take seconds instead of downloads.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).with_name("uv")
LESSON = ROOT / "notebooks" / "00_setup_and_data.ipynb"
COLAB = ("numpy", "torch", "torchvision", "ipykernel", "nbclient", "nbformat")  # what Colab has before genvs

RUN_LESSON = textwrap.dedent("""
    import sys, time
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    lesson, out = sys.argv[1], sys.argv[2]
    notebook = nbformat.read(lesson, as_version=4)
    first = nbformat.v4.new_code_cell("import numpy, torch  # imported before the setup cell, as in a Colab session")
    last = nbformat.v4.new_code_cell("import json, sys, genvs, numpy, torch\\n"
                                     "print(json.dumps({'python': sys.executable, 'genvs': genvs.__file__, "
                                     "'numpy': numpy.__version__, 'torch': torch.__version__}))")
    notebook.cells = [first, *notebook.cells, last]
    start = time.perf_counter()
    NotebookClient(notebook, kernel_name="python3", timeout=900,
                   resources={"metadata": {"path": str(Path(lesson).parent)}}).execute()
    print(f"lesson ran in {time.perf_counter() - start:.1f} s")
    nbformat.write(notebook, out)
""")


def _index_reachable() -> bool:
    """Whether the package index answers (pip asks it for uv's versions)."""
    try:
        return subprocess.run([sys.executable, "-m", "pip", "index", "versions", "uv"], capture_output=True,
                              timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _installed(python: Path) -> dict[str, str]:
    """``{name: version}`` of what ``python``'s environment holds, as uv lists it."""
    listing = subprocess.run([str(UV), "pip", "list", "--python", str(python), "--format", "json"],
                             capture_output=True, text=True, check=True).stdout
    return {package["name"].lower(): package["version"] for package in json.loads(listing)}


def _outputs_text(notebook: dict) -> str:
    return "\n".join("".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
                     for cell in notebook["cells"] if cell["cell_type"] == "code" for output in cell["outputs"])


@pytest.mark.skipif(not UV.exists(), reason="uv is not in this environment: make install puts it in .venv")
def test_the_colab_cell_installs_genvs_beside_numpy_2_and_torch_and_lesson_00_runs_without_a_restart(
        tmp_path, constraints):
    if not _index_reachable():
        pytest.skip("the package index cannot be reached: a fresh environment cannot be built here")
    colab, python = tmp_path / "colab", tmp_path / "colab" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(colab)], check=True)
    subprocess.run([str(UV), "pip", "install", "--quiet", "--python", str(python),
                    *[f"{name}=={constraints[name]}" for name in COLAB]], check=True)
    before = _installed(python)
    assert before["numpy"].startswith("2.") and "genvs" not in before

    environment = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    environment.update(GENVS_SMOKE="1", OMP_NUM_THREADS="1", PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}")
    script = tmp_path / "run_lesson.py"
    script.write_text(RUN_LESSON)
    result = subprocess.run([str(python), str(script), str(LESSON), str(tmp_path / "ran.ipynb")], cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]

    notebook = json.loads((tmp_path / "ran.ipynb").read_text())
    printed = _outputs_text(notebook)
    setup = _outputs_text({"cells": [notebook["cells"][2]]})  # the lesson's own first code cell, after ours
    assert "installed genvs from" in setup and "none replaced" in setup, setup
    assert "restart" not in printed.lower()
    final = json.loads(_outputs_text({"cells": notebook["cells"][-1:]}).strip().splitlines()[-1])
    assert Path(final["python"]).parent == python.parent  # the lesson ran in the fresh environment's kernel
    assert Path(final["genvs"]).is_relative_to(ROOT)  # genvs imported from the clone, in the same kernel
    after = _installed(python)
    assert (after["numpy"], after["torch"], after["torchvision"]) == (before["numpy"], before["torch"],
                                                                       before["torchvision"])
    assert final["numpy"] == before["numpy"] and final["torch"].split("+")[0] == before["torch"].split("+")[0]
    changed = {name for name, old in before.items() if after.get(name) != old}
    assert changed == set(), f"the cell replaced {changed}"
    print(setup.strip(), result.stdout.strip(), sep="\n")
