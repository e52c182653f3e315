"""End-to-end CLI: python -m genvs make-data | demo, run as a learner would."""

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
