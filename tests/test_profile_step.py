"""benchmarks/profile_step.py: its dry run on the CPU (the GPU profile's code path with the smoke preset)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_times_both_precisions_and_profiles_the_step(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "profile_step.py"), "--dry-run", "--out",
                             str(tmp_path)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert profile["device"] == "cpu" and set(profile["runs"]) == {"batch2_fp32", "batch2_bf16"}
    for run in profile["runs"].values():
        assert len(run["step_s_all"]) == 2 and 0 <= run["data_wait_s"] < run["step_s"]
        assert run["kernel_launches_per_step"] is None  # no CUDA kernels on the CPU
        # the host profile is of a whole training step: convolutions (encoder, U-Net), the field's volume sampling
        assert "conv" in run["top_host_ops"] and "grid_sampler_3d" in run["top_host_ops"]
