"""End-to-end CLI: python -m genvs make-data | train | sample | evaluate | demo, run as a learner would."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from genvs.data import SRNDataset
from genvs.data.synthetic import make_dataset
from genvs.training import Trainer, train_config


def _run(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genvs", *args], capture_output=True, text=True, cwd=cwd,
                          env=None if env is None else {**os.environ, **env})


def _run_here(capsys, *args: str) -> tuple[int, list[str]]:
    """``python -m genvs *args`` inside this process (no interpreter start-up, about 8 s saved a call): its exit
    status and the lines it wrote to stderr."""
    from genvs.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    return status, capsys.readouterr().err.splitlines()


def _flags(options: dict[str, str]) -> list[str]:
    """``{"--pose": "p.txt"}`` -> ``["--pose", "p.txt"]``."""
    return [item for pair in options.items() for item in pair]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Tiny synthetic cars (32 px) and a smoke model trained one step on them: ``(data folder, run folder)``."""
    root = tmp_path_factory.mktemp("smoke")
    data = make_dataset(root / "cars", n_objects=5, n_views=6, image_size=32, seed=0, progress=False)
    Trainer(train_config("smoke", batch_size=2), data, root / "run", 1, sample_every=0, progress=False).run()
    return data, root / "run"


def _held_out_view(data) -> dict[str, str]:
    """``sample``'s input flags for view 0 of the first test car of ``data``."""
    car = sorted((data / "cars_test").iterdir())[0]
    return {"--image": str(car / "rgb" / "000000.png"), "--pose": str(car / "pose" / "000000.txt"),
            "--intrinsics": str(car / "intrinsics.txt")}


def _write_pose(path: Path, c2w: np.ndarray) -> str:
    """Write ``c2w [4, 4]`` as a pose file (16 numbers, row-major); returns its path as a flag value."""
    path.write_text(" ".join(repr(float(value)) for value in c2w.ravel()))
    return str(path)


def test_make_data_writes_an_srn_dataset_the_reader_accepts(tmp_path):
    result = _run("make-data", "--out", str(tmp_path / "cars"), "--objects", "3", "--views", "4", "--size", "16")
    assert result.returncode == 0, result.stderr
    assert "3 objects x 4 views" in result.stdout
    for split in ("train", "val", "test"):
        item = SRNDataset(tmp_path / "cars", split=split, views_per_item=None)[0]
        assert item["images"].shape[1:] == (3, 16, 16)


def test_demo_trains_then_writes_an_orbit_video_and_gif_with_readable_panels(tmp_path):
    result = _run("demo", "--out", str(tmp_path / "demo"), "--preset", "smoke", "--objects", "6", "--views", "6",
                  "--train-minutes", "0.02", "--frames", "3", "--steps", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    sheet = iio.imread(tmp_path / "demo" / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    video = iio.imread(tmp_path / "demo" / "orbit.mp4", plugin="FFMPEG")
    gif = iio.imread(tmp_path / "demo" / "orbit.gif", index=None)
    # 3 frames of 4 panels (sample | field RGB | depth | opacity): the smoke model's 32 px images upscaled x8
    assert video.shape[:3] == gif.shape[:3] == (3, 256, 4 * 256)
    assert np.array_equal(gif[:, ::8, ::8].repeat(8, 1).repeat(8, 2), gif)  # nearest: each pixel an 8 x 8 block
    assert iio.imread(tmp_path / "demo" / "frames" / "000.png").shape == (32, 32, 3)  # the sample itself
    for name in ("contact_sheet.png", "orbit.mp4", "orbit.gif", "orbit_contact_sheet.png"):
        assert str(tmp_path / "demo" / name) in result.stdout
    assert "256 px panels (32 px images x8, nearest)" in result.stdout
    assert "no shipped checkpoint" in result.stdout and (tmp_path / "demo" / "run" / "latest.json").is_file()


def test_sample_turns_a_wide_view_into_an_orbit_on_the_chosen_device(smoke_run, tmp_path):
    data, run = smoke_run
    view = _held_out_view(data)
    # the 32 px car widened to 40x32 with white margins, the principal point moved with it: the crop undoes this
    with Image.open(view["--image"]) as image:
        pixels = np.asarray(image.convert("RGB"))
    Image.fromarray(np.pad(pixels, ((0, 0), (4, 4), (0, 0)), constant_values=255)).save(tmp_path / "wide.png")
    focal, cx, cy = (float(value) for value in Path(view["--intrinsics"]).read_text().split()[:3])
    (tmp_path / "intrinsics.txt").write_text(f"{focal} {cx + 4} {cy} 0\n0. 0. 0.\n1.\n32 40\n")
    result = _run("sample", "--checkpoint", str(run), "--image", str(tmp_path / "wide.png"), "--pose", view["--pose"],
                  "--intrinsics", str(tmp_path / "intrinsics.txt"), "--out", str(tmp_path / "orbit"), "--frames", "4",
                  "--steps", "2", "--churn", "0.2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "note: wide.png is 40x32: centre-cropped to 32x32 (K adjusted)" in result.stdout.splitlines()
    frames = sorted((tmp_path / "orbit" / "frames").glob("*.png"))
    assert len(frames) == 4 and all(iio.imread(path).shape == (32, 32, 3) for path in frames)  # the model's size
    assert iio.imread(tmp_path / "orbit" / "orbit.mp4", plugin="FFMPEG").shape[0] == 4


def test_sample_stops_on_broken_input_with_one_line_naming_the_file(smoke_run, tmp_path, capsys):
    data, run = smoke_run
    view = _held_out_view(data)
    c2w = np.array(Path(view["--pose"]).read_text().split(), dtype=np.float64).reshape(4, 4)
    nan, sheared, turned = c2w.copy(), c2w.copy(), c2w.copy()
    nan[0, 3] = np.nan
    sheared[:3, :3] = c2w[:3, :3] @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    turned[:3, :3] = c2w[:3, :3] @ np.diag([-1.0, 1.0, -1.0])  # half a turn about its own y axis: faces away
    (tmp_path / "car.png").write_text("not an image")
    (tmp_path / "step_000001.json").write_text("{ not json")
    cases = {  # name: (flags that replace good ones, the file the line must name, what it must say)
        "pose with NaN": ({"--pose": _write_pose(tmp_path / "nan.txt", nan)}, "nan.txt", "NaN"),
        "sheared rotation": ({"--pose": _write_pose(tmp_path / "sheared.txt", sheared)}, "sheared.txt",
                             "not a rotation"),
        "camera turned away": ({"--pose": _write_pose(tmp_path / "turned.txt", turned)}, "turned.txt",
                               "looks away from the object"),
        "not an image": ({"--image": str(tmp_path / "car.png")}, "car.png", "unreadable image"),
        "missing file": ({"--intrinsics": str(tmp_path / "missing.txt")}, "missing.txt", "no such file"),
        "unreadable checkpoint": ({"--checkpoint": str(tmp_path / "step_000001.json")}, "step_000001.json",
                                  "cannot read this checkpoint"),
        "unknown device": ({"--device": "gpu7"}, "gpu7", "torch cannot use this device"),
    }
    for index, (case, (changes, named, problem)) in enumerate(cases.items()):
        options = {"--checkpoint": str(run), **view, "--out": str(tmp_path / "orbit"), **changes}
        arguments = ("sample", *_flags(options), "--frames", "2", "--steps", "1")
        if index == 0:  # as a learner types it: the real process, its exit status, no traceback
            result = _run(*arguments)
            status, lines = result.returncode, result.stderr.splitlines()
        else:
            status, lines = _run_here(capsys, *arguments)
        assert (status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0]
                and problem in lines[0]), (case, status, lines)
    assert not (tmp_path / "orbit").exists()


def test_churn_is_edms_per_step_gamma_from_0_to_sqrt_2_minus_1():
    from genvs.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["demo"]).churn == 0.4
    for churn in (0.0, math.sqrt(2) - 1):  # EDM: gamma <= sqrt(2) - 1 keeps the raised sigma below sqrt(2) sigma
        assert parser.parse_args(["demo", "--churn", repr(churn)]).churn == churn


OUT_OF_RANGE = {  # arguments: the line that refuses them
    ("make-data", "--out", "cars", "--size", "3"): "argument --size: must be an integer in [16, 1024], got 3",
    ("make-data", "--out", "cars", "--objects", "many"): "argument --objects: must be an integer >= 1, got 'many'",
    ("make-data", "--out", "cars", "--seed", "-1"): "argument --seed: must be an integer >= 0, got -1",
    ("train", "--data", "cars", "--preset", "smoke", "--out", "run", "--steps", "0"):
        "argument --steps: must be an integer >= 1, got 0",
    ("train", "--data", "cars", "--preset", "smoke", "--out", "run", "--steps", "2", "--log-every", "0"):
        "argument --log-every: must be an integer >= 1, got 0",
    ("demo", "--frames", "0"): "argument --frames: must be an integer >= 1, got 0",
    ("demo", "--churn", "0.5"): f"argument --churn: must be a number in [0, {math.sqrt(2) - 1:g}], got 0.5",
    ("demo", "--churn", "-0.1"): f"argument --churn: must be a number in [0, {math.sqrt(2) - 1:g}], got -0.1",
    ("demo", "--train-minutes", "nan"): "argument --train-minutes: must be a number > 0, got nan",
    ("demo", "--swing", "120"): "argument --swing: must be a number in [-90, 90], got 120",
    ("sample", "--checkpoint", "run", "--image", "car.png", "--pose", "p.txt", "--intrinsics", "i.txt",
     "--frames", "0"):
        "argument --frames: must be an integer >= 1, got 0",
    ("evaluate", "--checkpoint", "run", "--data", "cars", "--guided", "1", "-0.5"):
        "argument --guided: must be a number >= 0, got -0.5",
    ("evaluate", "--checkpoint", "run", "--data", "cars", "--guidance", "-1"):
        "argument --guidance: must be a number >= 0, got -1",
    ("evaluate", "--checkpoint", "run", "--data", "cars", "--target-batch", "0"):
        "argument --target-batch: must be an integer >= 1, got 0",
    ("train-base", "--data", "cars", "--batch-size", "0"): "argument --batch-size: must be an integer >= 1, got 0",
    ("train-controlnet", "--data", "cars", "--lr", "0"): "argument --lr: must be a number > 0, got 0",
    ("turntables", "--frames", "1"): "argument --frames: must be an integer >= 2, got 1",
}


@pytest.mark.parametrize("arguments", list(OUT_OF_RANGE), ids=[" ".join(args[:1] + args[-2:]) for args in OUT_OF_RANGE])
def test_a_number_out_of_its_range_is_refused_with_one_line_naming_the_flag_and_the_range(arguments, tmp_path,
                                                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative --out folders land here, if anything were written
    status, lines = _run_here(capsys, *arguments)
    assert status == 2 and lines == [f"error: {OUT_OF_RANGE[arguments]} (see: python -m genvs {arguments[0]} --help)"]
    assert list(tmp_path.iterdir()) == []


def test_every_numeric_option_of_every_command_has_a_range():
    """Each option that parses a number refuses -1e30 and nan as out of range: none is a bare int or float."""
    import argparse

    from genvs.cli import build_parser

    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    numeric = [(f"{name} {action.option_strings[0]}", action) for name, parser in commands.choices.items()
               for action in parser._actions if action.option_strings and action.type not in (None, Path, str)]
    assert len(numeric) > 40
    for option, action in numeric:
        for value in ("-1e30", "nan"):
            try:
                action.type(value)
            except argparse.ArgumentTypeError as error:
                assert str(error).startswith("must be "), (option, error)
            except ValueError as error:
                pytest.fail(f"{option} {value}: a bare type's error ({error}), no range")
            else:
                pytest.fail(f"{option} accepts {value}")


def test_export_then_evaluate_writes_every_result_and_says_why_lpips_was_skipped(tmp_path):
    data = make_dataset(tmp_path / "cars", n_objects=20, n_views=5, image_size=32, seed=0, progress=False)
    Trainer(train_config("smoke", batch_size=2), data, tmp_path / "run", 1, sample_every=0, progress=False).run()
    result = _run("export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "shipped"))
    assert result.returncode == 0 and "fp16 EMA weights" in result.stdout, result.stderr
    no_weights = {"TORCH_HOME": str(tmp_path / "torch_home")}  # wherever this runs, no LPIPS backbone on disk
    result = _run("evaluate", "--checkpoint", str(tmp_path / "shipped"), "--data", str(data), "--out",
                  str(tmp_path / "eval"), "--protocol", "smoke", "--steps", "2", "--targets", "2",
                  "--guided", "1", "0.5", env=no_weights)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results) == {"protocol", "data", "objects", "views", "image_size", "lpips", "attributes", "metrics",
                            "attribute_metrics", "seconds", "device", "torch", "checkpoint"}
    assert results["protocol"]["steps"] == 2 and results["protocol"]["target_views"] == 2
    assert results["checkpoint"]["step"] == 1 and len(results["objects"]) == 2
    assert set(results["metrics"]) == {"regression", "deterministic", "stochastic", "autoregressive", "guided w=1",
                                       "guided w=0.5", "truth"}
    # guidance 1 is plain conditional sampling: on the same condition and seeds, the deterministic row exactly
    assert results["metrics"]["guided w=1"] == results["metrics"]["deterministic"]
    assert results["metrics"]["guided w=0.5"]["psnr"] != results["metrics"]["deterministic"]["psnr"]
    for method in ("regression", "deterministic", "stochastic", "autoregressive"):
        for metric in ("psnr", "ssim", "sharpness", "detail", "consistency"):
            assert set(results["metrics"][method][metric]) == {"mean", "std", "per_object"}
        assert set(results["attribute_metrics"][method]) >= {"seen_accuracy", "unseen_confidence", "unseen_tv", "kid"}
    assert results["lpips"]["available"] is False
    looked_for = str(tmp_path / "torch_home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    assert looked_for in results["lpips"]["reason"] and "LPIPS skipped" in result.stdout
    assert "| stochastic |" in (tmp_path / "eval" / "results.md").read_text()
    assert iio.imread(tmp_path / "eval" / "examples.png").ndim == 3
    result = _run("evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(data), "--input-view", "9",
                  "--out", str(tmp_path / "eval2"))
    assert result.returncode == 2 and "has 5 views, no input view 9" in result.stderr
    result = _run("evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(data),
                  "--out", str(tmp_path / "eval3"), "--protocol", "smoke", "--steps", "1",
                  "--no-attributes", "--no-lpips")
    assert result.returncode == 0 and "attribute metrics skipped: not asked for" in result.stdout, result.stderr


def test_train_probe_writes_a_probe_the_evaluation_can_use(tmp_path, capsys):
    data = make_dataset(tmp_path / "cars", n_objects=10, n_views=5, image_size=32, seed=0, progress=False)
    result = _run("train-probe", "--data", str(data), "--out", str(tmp_path / "probe"), "--steps", "3")
    assert result.returncode == 0 and "held-out accuracy" in result.stdout, result.stderr
    Trainer(train_config("smoke", batch_size=2), data, tmp_path / "run", 1, sample_every=0, progress=False).run()
    result = _run("evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(data),
                  "--out", str(tmp_path / "eval"), "--protocol", "smoke", "--steps", "1", "--no-lpips",
                  "--probe", str(tmp_path / "probe"))
    assert result.returncode == 0 and "unseen: probe confidence" in result.stdout, result.stderr
    status, lines = _run_here(capsys, "train-probe", "--data", str(tmp_path / "nowhere"), "--out",
                              str(tmp_path / "probe2"))
    assert status == 2 and len(lines) == 1 and "nowhere" in lines[0]


def test_the_controlnet_route_trains_and_is_evaluated_beside_genvs(smoke_run, tmp_path):
    data = make_dataset(tmp_path / "cars", n_objects=10, n_views=7, image_size=32, seed=0, progress=False)
    result = _run("train-base", "--data", str(data), "--preset", "smoke", "--steps", "2", "--batch-size", "4",
                  "--out", str(tmp_path / "base"))
    assert result.returncode == 0 and "2 steps in" in result.stdout, result.stderr
    result = _run("train-controlnet", "--data", str(data), "--checkpoint", str(smoke_run[1]), "--base",
                  str(tmp_path / "base"), "--steps", "1", "--batch-size", "2", "--out", str(tmp_path / "controlnet"))
    assert result.returncode == 0 and "1 steps in" in result.stdout, result.stderr
    result = _run("evaluate", "--checkpoint", str(smoke_run[1]), "--data", str(data), "--out", str(tmp_path / "eval"),
                  "--protocol", "smoke", "--steps", "1", "--no-lpips", "--controlnet", str(tmp_path / "controlnet"),
                  "--controlnet-base", str(tmp_path / "base"), "--guidance", "1.5")
    assert result.returncode == 0 and "| controlnet |" in result.stdout, result.stderr
    assert "controlnet" in json.loads((tmp_path / "eval" / "results.json").read_text())["metrics"]
    result = _run("train-controlnet", "--data", str(data), "--checkpoint", str(smoke_run[1]), "--base",
                  str(tmp_path / "nowhere"), "--out", str(tmp_path / "controlnet2"))
    assert result.returncode == 2 and "nowhere: no UNet2DConditionModel here" in result.stderr, result.stderr
    assert "train-base" in result.stderr


def test_lesson_08s_routes_train_and_their_turntables_are_scored(smoke_run, tmp_path):
    data = make_dataset(tmp_path / "cars", n_objects=10, n_views=7, image_size=32, seed=0, progress=False)
    assert _run("train-base", "--data", str(data), "--preset", "smoke", "--steps", "1", "--batch-size", "2",
                "--out", str(tmp_path / "base")).returncode == 0
    common = ["--data", str(data), "--base", str(tmp_path / "base"), "--steps", "1", "--batch-size", "2"]
    result = _run("train-multiview", *common, "--checkpoint", str(smoke_run[1]), "--controlnet",
                  str(tmp_path / "nowhere"), "--out", str(tmp_path / "multiview"))
    assert result.returncode == 2 and "nowhere: no ControlNetModel here" in result.stderr, result.stderr
    assert "train-controlnet" in result.stderr
    assert _run("train-controlnet", *common, "--checkpoint", str(smoke_run[1]), "--out",
                str(tmp_path / "controlnet")).returncode == 0
    result = _run("train-multiview", *common, "--checkpoint", str(smoke_run[1]), "--controlnet",
                  str(tmp_path / "controlnet"), "--out", str(tmp_path / "multiview"), "--cameras")
    assert result.returncode == 0 and "1 steps in" in result.stdout, result.stderr
    assert (tmp_path / "multiview" / "camera_embedding.fp16.safetensors").is_file()  # the turntables use it below
    result = _run("train-raycond", *common, "--out", str(tmp_path / "raycond"))
    assert result.returncode == 0 and "1 steps in" in result.stdout, result.stderr
    paths = [f"--{name}" for name in ("base", "controlnet", "multiview", "raycond")]
    result = _run("turntables", "--data", str(data), "--checkpoint", str(smoke_run[1]), "--objects", "1",
                  "--frames", "3", "--steps", "1", "--out", str(tmp_path / "turntables.json"),
                  *[part for flag in paths for part in (flag, str(tmp_path / flag[2:]))])
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "turntables.json").read_text())
    assert set(written["scores"]) == {"genvs_independent", "genvs_autoregressive", "controlnet", "multiview_chunked",
                                      "multiview_autoregressive", "2d_only", "truth"}
    assert all(len(rows) == 1 for rows in written["per_object"].values()) and written["config"]["n_frames"] == 3
    assert "psnr" in written["scores"]["2d_only"] and "psnr" not in written["scores"]["truth"]  # no truth vs itself
    assert "multiview_chunked" in result.stdout
    # one route re-scored alone: the other rows are kept as they are in the file, that route's is made again
    written["scores"]["controlnet"]["psnr"]["mean"] = -1.0
    (tmp_path / "turntables.json").write_text(json.dumps(written))
    common = ["--data", str(data), "--checkpoint", str(smoke_run[1]), "--objects", "1", "--frames", "3",
              "--out", str(tmp_path / "turntables.json"), "--base", str(tmp_path / "base"),
              "--raycond", str(tmp_path / "raycond"), "--routes", "2d_only"]
    result = _run("turntables", *common, "--steps", "1")
    assert result.returncode == 0 and "2d_only" in result.stdout and "controlnet" not in result.stdout, result.stderr
    again = json.loads((tmp_path / "turntables.json").read_text())
    assert again["scores"]["controlnet"]["psnr"]["mean"] == -1.0
    assert again["scores"]["2d_only"] == written["scores"]["2d_only"]  # the same seeds make the same orbits
    result = _run("turntables", *common, "--steps", "2")
    assert result.returncode == 2 and "made with other settings ({'steps': 1}" in result.stderr, result.stderr


def test_bad_arguments_get_one_line_and_exit_status_2_from_the_real_command(tmp_path, capsys):
    result = _run("make-data", "--out", str(tmp_path), "--objects", "0")  # as a learner types it
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "error: argument --objects: must be an integer >= 1, got 0 (see: python -m genvs make-data --help)"]
    for arguments, message in ((["make-data", "--objects", "3"], "the following arguments are required: --out"),
                               (["fly"], "argument command: invalid choice: 'fly'")):
        status, lines = _run_here(capsys, *arguments)
        assert status == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines


def test_train_runs_resumes_and_explains_bad_input(tmp_path, capsys):
    data, run = tmp_path / "cars", tmp_path / "run"
    assert _run("make-data", "--out", str(data), "--objects", "5", "--views", "6", "--size", "32").returncode == 0
    train = ["train", "--data", str(data), "--preset", "smoke", "--out", str(run), "--set", "batch_size=2",
             "--sample-every", "0"]
    result = _run(*train, "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "trained steps 0..2" in result.stdout and (run / "log.csv").is_file()

    status, lines = _run_here(capsys, *train, "--steps", "3")
    assert status == 2 and len(lines) == 1 and "already holds a run" in lines[0] and "--resume" in lines[0]
    status, lines = _run_here(capsys, *train, "--steps", "3", "--resume", "--set", "lr_denoiser=0.5")
    assert status == 2 and len(lines) == 1 and "lr_denoiser: checkpoint has 0.001, expected 0.5" in lines[0]
    result = _run(*train, "--steps", "3", "--resume")
    assert result.returncode == 0 and "trained steps 2..3" in result.stdout, result.stderr

    bad = {
        ("--data", str(tmp_path / "nowhere")): "no such folder",
        ("--preset", "huge"): "invalid choice: 'huge'",
        ("--set", "lr=1"): "unknown config key 'lr'",
        ("--set", "lr_field"): "expected key=value",
        ("--steps", "0"): "argument --steps: must be an integer >= 1, got 0",
        ("--init", str(tmp_path / "nowhere")): "no such checkpoint file or run folder",
    }
    required = {"--data": str(data), "--preset": "smoke", "--steps": "1", "--out": str(tmp_path / "other")}
    for (flag, value), message in bad.items():
        arguments = {**required, flag: value}  # replaces a required value or adds an option
        status, lines = _run_here(capsys, "train", *_flags(arguments))
        assert status == 2 and len(lines) == 1 and message in lines[0], (flag, value, lines)


def test_the_parser_imports_and_refuses_a_bad_value_without_torch():
    """The CLI's parser and its number checks import no torch-heavy module: ``--help`` and a bad value are instant."""
    code = ("import sys\n"
            "from genvs.cli import build_parser\n"
            "import genvs.__main__\n"
            "try:\n"
            "    build_parser().parse_args(['make-data', '--out', 'cars', '--size', '3'])\n"
            "except SystemExit as stop:\n"
            "    assert stop.code == 2\n"
            "print(sorted(name for name in ('torch', 'diffusers', 'numpy') if name in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
    assert result.stderr.startswith("error: argument --size: must be an integer in [16, 1024], got 3")


def test_the_parsers_plain_constants_are_the_modules_own_and_models_default_to_the_shipped_ones():
    from genvs import controlnet, evaluation, sampling, training, turntable
    from genvs.artefacts import shipped_path
    from genvs.cli import build_parser, options

    assert options.TRAIN_PRESETS == tuple(sorted(training.PRESETS))
    assert options.SAMPLING_MODES == sampling.SAMPLING_MODES and options.MAX_CHURN == sampling.MAX_CHURN
    assert options.PROTOCOLS == tuple(sorted(evaluation.PROTOCOLS))
    assert options.BASE_PRESETS == tuple(sorted(controlnet.BASE_PRESETS))
    assert options.GUIDANCE_SCALE == controlnet.GUIDANCE_SCALE
    assert options.TURNTABLE_ROUTES == tuple(turntable.ROUTE_MODELS)
    args = build_parser().parse_args(["train-multiview", "--data", "cars"])
    assert (args.checkpoint, args.base, args.controlnet, args.out) == (
        shipped_path("lesson"), shipped_path("controlnet_base"), shipped_path("controlnet"), shipped_path("multiview"))


BAD_FILES = {  # arguments ({run}: a trained smoke run, {missing}: no such folder, {plain}: a folder, not SRN): the path
    ("train", "--data", "{plain}", "--preset", "smoke", "--steps", "1", "--out", "{out}"): "{plain}",
    ("export", "--checkpoint", "{missing}", "--out", "{out}"): "{missing}",
    ("sample", "--checkpoint", "{missing}", "--image", "car.png", "--pose", "pose.txt", "--intrinsics", "K.txt",
     "--out", "{out}"): "{missing}",
    ("evaluate", "--checkpoint", "{missing}", "--data", "{plain}", "--out", "{out}"): "{missing}",
    ("evaluate", "--checkpoint", "{run}", "--data", "{plain}", "--protocol", "smoke", "--no-lpips", "--no-attributes",
     "--out", "{out}"): "{plain}",
    ("evaluate", "--checkpoint", "{run}", "--data", "{plain}", "--probe", "{missing}", "--out", "{out}"): "{missing}",
    ("train-probe", "--data", "{plain}", "--out", "{out}"): "{plain}",
    ("train-base", "--data", "{plain}", "--preset", "smoke", "--out", "{out}"): "{plain}",
    ("train-controlnet", "--data", "{plain}", "--checkpoint", "{missing}", "--out", "{out}"): "{missing}",
    ("train-controlnet", "--data", "{plain}", "--checkpoint", "{run}", "--out", "{out}"): "{plain}",
    ("train-multiview", "--data", "{plain}", "--checkpoint", "{run}", "--controlnet", "{missing}", "--out", "{out}"):
        "{missing}",
    ("train-multiview", "--data", "{plain}", "--checkpoint", "{run}", "--out", "{out}"): "{plain}",
    ("train-raycond", "--data", "{plain}", "--base", "{missing}", "--out", "{out}"): "{missing}",
    ("train-raycond", "--data", "{plain}", "--out", "{out}"): "{plain}",
    ("turntables", "--checkpoint", "{missing}", "--out", "{out}/t.json"): "{missing}",
    ("leg", "--data", "{missing}", "--steps", "1", "--out", "{out}"): "{missing}",
    ("leg", "--data", "{plain}", "--preset", "smoke", "--steps", "1", "--out", "{out}"): "{plain}",
    ("ship-leg", "--leg", "{missing}", "--to", "{out}"): "{missing}",
    ("score-leg", "--leg", "{missing}", "--protocol-data", "{plain}", "--where", "here"): "{missing}",
    ("score-leg", "--leg", "{run}", "--protocol-data", "{missing}", "--where", "here"): "{missing}",
    ("turntables", "--data", "{plain}", "--checkpoint", "{run}", "--out", "{out}/t.json"): "{plain}",
}


@pytest.mark.parametrize("arguments", list(BAD_FILES), ids=[f"{args[0]} {BAD_FILES[args][1:-1]}" for args in BAD_FILES])
def test_a_missing_or_ill_formed_file_is_one_line_naming_its_path(arguments, smoke_run, tmp_path, capsys):
    """Each command that reads a file: a missing checkpoint or model folder, or a data folder that is not SRN,
    stops with one ``error:`` line naming the path (no traceback, no usage text), exit 2, nothing written."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not a dataset")
    paths = {"run": str(smoke_run[1]), "missing": str(tmp_path / "missing"), "plain": str(tmp_path / "plain"),
             "out": str(tmp_path / "out")}
    status, lines = _run_here(capsys, *(argument.format(**paths) for argument in arguments))
    named = BAD_FILES[arguments].format(**paths)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines
    assert "usage:" not in lines[0] and not (tmp_path / "out").exists()


def test_a_missing_file_from_the_real_command_is_one_line_without_traceback(tmp_path):
    result = _run("export", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"error: {tmp_path / 'missing'}: no such checkpoint file or run folder"]


def test_a_route_run_refuses_to_overwrite_and_resumes_with_resume(tmp_path, capsys, monkeypatch):
    from genvs.checkpoint import CheckpointError
    from genvs.cli import main

    data = make_dataset(tmp_path / "cars", n_objects=6, n_views=4, image_size=32, seed=0, progress=False)
    command = ["train-base", "--data", str(data), "--preset", "smoke", "--batch-size", "2",
               "--out", str(tmp_path / "base")]
    main([*command, "--steps", "2"])
    assert "2 steps in" in capsys.readouterr().out
    status, lines = _run_here(capsys, *command, "--steps", "3")
    assert status == 2 and len(lines) == 1 and "already holds a run" in lines[0] and "--resume" in lines[0]
    main([*command, "--steps", "3", "--resume"])
    assert "3 steps in" in capsys.readouterr().out
    monkeypatch.setenv("GENVS_TRACEBACK", "1")  # the whole traceback instead of one line, for telling bugs apart
    with pytest.raises(CheckpointError, match="nowhere"):
        main(["export", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "export")])


def test_a_leg_trains_scores_and_ships_only_when_no_row_got_worse(tmp_path, capsys):
    from genvs.cli import main

    data = make_dataset(tmp_path / "cars", n_objects=10, n_views=8, image_size=32, seed=0, progress=False)
    leg = tmp_path / "leg"
    main(["leg", "--data", str(data), "--preset", "smoke", "--steps", "2", "--out", str(leg), "--where", "here",
          "--against", str(tmp_path / "nothing")])
    out = capsys.readouterr().out
    assert "| 1 | here | scratch | 2 | 16 |" in out
    assert (leg / "examples.png").is_file() and (leg / "leg.json").is_file()
    status, lines = _run_here(capsys, "ship-leg", "--leg", str(leg), "--to", str(tmp_path / "shipped"))
    assert status == 2 and "nothing to compare" in lines[0] and not (tmp_path / "shipped").exists()
    main(["ship-leg", "--leg", str(leg), "--to", str(tmp_path / "shipped"), "--force"])
    assert "nothing to compare with" in capsys.readouterr().out
    returned = tmp_path / "returned"  # what a GPU call brings back: the export, config and log, no checkpoints
    for name in ("export", "config.json", "log.csv"):
        (shutil.copytree if name == "export" else shutil.copy)(leg / name, returned / name)
    main(["score-leg", "--leg", str(returned), "--protocol-data", str(data), "--where", "GPU: elsewhere",
          "--init", "genvs/shipped/lesson", "--against", str(tmp_path / "nothing")])
    assert "| 1 | GPU: elsewhere | `genvs/shipped/lesson` | 2 | 16 |" in capsys.readouterr().out
    rescored, original = (json.loads((folder / "leg.json").read_text()) for folder in (returned, leg))
    assert rescored["scores"] == original["scores"] and rescored["steps"] == original["steps"] == 2
    assert (tmp_path / "shipped" / "step_000000002.safetensors").is_file()
    main(["leg", "--data", str(data), "--preset", "smoke", "--steps", "2", "--out", str(tmp_path / "leg2"),
          "--init", str(tmp_path / "shipped"), "--against", str(tmp_path / "shipped")])
    assert "| row | " in capsys.readouterr().out  # the side-by-side table against the shipped leg
