"""End-to-end CLI: python -m genvs make-data | train | demo, run as a learner would."""

import subprocess
import sys

import imageio.v3 as iio

from genvs.data import SRNDataset


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genvs", *args], capture_output=True, text=True, cwd=cwd)


def test_make_data_writes_an_srn_dataset_the_reader_accepts(tmp_path):
    result = _run("make-data", "--out", str(tmp_path / "cars"), "--objects", "3", "--views", "4", "--size", "16")
    assert result.returncode == 0, result.stderr
    assert "3 objects x 4 views" in result.stdout
    for split in ("train", "val", "test"):
        item = SRNDataset(tmp_path / "cars", split=split, views_per_item=None)[0]
        assert item["images"].shape[1:] == (3, 16, 16)


def test_demo_writes_a_contact_sheet(tmp_path):
    result = _run("demo", "--out", str(tmp_path / "demo"), "--objects", "3", "--views", "3", "--size", "16")
    assert result.returncode == 0, result.stderr
    sheet = iio.imread(tmp_path / "demo" / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    assert str(tmp_path / "demo" / "contact_sheet.png") in result.stdout


def test_bad_arguments_get_clear_errors(tmp_path):
    result = _run("make-data", "--out", str(tmp_path), "--objects", "0")
    assert result.returncode == 2 and "--objects must be a positive integer" in result.stderr
    result = _run("make-data", "--objects", "3")
    assert result.returncode == 2 and "--out" in result.stderr
    result = _run("fly")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_train_runs_resumes_and_explains_bad_input(tmp_path):
    data, run = tmp_path / "cars", tmp_path / "run"
    assert _run("make-data", "--out", str(data), "--objects", "5", "--views", "6", "--size", "32").returncode == 0
    train = ["train", "--data", str(data), "--preset", "smoke", "--out", str(run), "--set", "batch_size=2",
             "--sample-every", "0"]
    result = _run(*train, "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "trained steps 0..2" in result.stdout and (run / "log.csv").is_file()

    result = _run(*train, "--steps", "3")
    assert result.returncode == 2 and "already holds a run" in result.stderr and "--resume" in result.stderr
    result = _run(*train, "--steps", "3", "--resume", "--set", "lr_denoiser=0.5")
    assert result.returncode == 2 and "lr_denoiser: checkpoint has 0.001, expected 0.5" in result.stderr
    result = _run(*train, "--steps", "3", "--resume")
    assert result.returncode == 0 and "trained steps 2..3" in result.stdout, result.stderr

    bad = {
        ("--data", str(tmp_path / "nowhere")): "no such folder",
        ("--preset", "huge"): "invalid choice: 'huge'",
        ("--set", "lr=1"): "unknown config key 'lr'",
        ("--set", "lr_field"): "expected key=value",
        ("--steps", "0"): "--steps must be a positive integer",
        ("--init", str(tmp_path / "nowhere")): "no such checkpoint file or run folder",
    }
    required = {"--data": str(data), "--preset": "smoke", "--steps": "1", "--out": str(tmp_path / "other")}
    for (flag, value), message in bad.items():
        arguments = {**required, flag: value}  # replaces a required value or adds an option
        result = _run("train", *[item for pair in arguments.items() for item in pair])
        assert result.returncode == 2 and message in result.stderr, (flag, value, result.stderr[-500:])
