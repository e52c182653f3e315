"""The fitting core: every trained thing in genvs resumes exactly, and the step lives in one module."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from genvs.controlnet import CONTROLNET_FIT, base_config, build_base, train_controlnet
from genvs.data.synthetic import make_dataset
from genvs.fitting import FitSettings, Fitter, read_log
from genvs.model import GeNVS, genvs_config
from genvs.probe import ProbeConfig, train_probe

PACKAGE = Path(__file__).resolve().parents[1] / "genvs"


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cars"), n_objects=6, n_views=6, image_size=32, seed=0, progress=False)


def _same(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


@pytest.mark.parametrize("pattern", [r"clip_grad", r"ema_update\(", r"optimi[sz]er\.step\(|scaler\.step\("])
def test_the_step_is_written_once_in_the_package(pattern):
    """Gradient clipping, the EMA update and the optimiser step each appear in exactly one module: the core."""
    found = sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
                   if re.search(pattern, path.read_text()))
    assert found == ["fitting.py"], found


class Line(torch.utils.data.Dataset):
    """Batch ``i``: points on ``y = 3 x - 1`` with noise drawn from ``i`` alone."""

    def __len__(self):
        return 2**62

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        x = torch.randn(16, 1, generator=generator)
        return {"x": x, "y": 3 * x - 1 + 0.01 * torch.randn(16, 1, generator=generator)}


def test_a_fitted_line_finds_its_slope_and_the_log_follows_the_schedule(tmp_path):
    """An analytic case: least squares on ``y = 3 x - 1`` reaches slope 3 and intercept -1; the logged learning
    rates follow warmup then cosine decay."""
    line = torch.nn.Linear(1, 1)

    def loss(batch, generator):
        return {"loss": ((line(batch["x"]) - batch["y"]) ** 2).mean()}

    settings = FitSettings(steps=400, warmup_steps=20, min_lr_fraction=0.1, weight_decay=0.0, grad_clip=0.0,
                           ema_max=0.9)
    fitter = Fitter(line, {"line": (line, 0.05)}, loss, Line(), settings, tmp_path, {"task": "line"}, log_every=1,
                    progress=False)
    fitter.run()
    assert line.weight.item() == pytest.approx(3.0, abs=0.02) and line.bias.item() == pytest.approx(-1.0, abs=0.02)
    assert fitter.ema.weight.item() == pytest.approx(3.0, abs=0.05)
    rates = [row["lr_line"] for row in read_log(tmp_path)]
    assert rates[0] == pytest.approx(0.05 * 2 / 20)  # logged after step 1: the schedule's value for step 2
    assert max(rates) == pytest.approx(0.05) and rates[-1] == pytest.approx(0.05 * 0.1)


def test_a_stop_request_ends_the_run_with_a_checkpoint_to_resume_from(tmp_path):
    line = torch.nn.Linear(1, 1)

    def loss(batch, generator):
        return {"loss": ((line(batch["x"]) - batch["y"]) ** 2).mean()}

    fitter = Fitter(line, {"line": (line, 0.05)}, loss, Line(), FitSettings(steps=50), tmp_path, {}, log_every=1,
                    checkpoint_every=0, progress=False)

    def stop_at_7(record):
        if record["step"] == 7:
            fitter.request_stop()

    records = fitter.run(callback=stop_at_7)
    assert fitter.step == 8 and records[-1]["last"] and (tmp_path / "step_000000008.json").is_file()
    again = torch.nn.Linear(1, 1)
    resumed = Fitter(again, {"line": (again, 0.05)}, loss, Line(), FitSettings(steps=50), tmp_path, {}, resume=True,
                     progress=False)
    assert resumed.step == 8 and resumed.resumed and torch.equal(again.weight, line.weight)


def test_a_diffusers_route_resumes_exactly(cars, tmp_path):
    """ControlNet training: 4 steps straight equal 2 steps, a stop, a resume and 2 more, bit for bit."""
    model = GeNVS(genvs_config("smoke"), seed=0)
    base = build_base(base_config("smoke"), seed=0)
    fit = dataclasses.replace(CONTROLNET_FIT, batch_size=2, target_views=2, lr=1e-2, warmup_steps=1)
    straight, _ = train_controlnet(model, cars, tmp_path / "straight", 4, base, fit, save_every=0, progress=False)
    train_controlnet(model, cars, tmp_path / "stopped", 4, base, fit, save_every=0, progress=False, until=2)
    assert json_step(tmp_path / "stopped" / "checkpoints") == 2
    resumed, record = train_controlnet(model, cars, tmp_path / "stopped", 4, base, fit, save_every=0, progress=False,
                                       resume=True)
    _same(resumed.state_dict(), straight.state_dict())
    assert record["steps"] == 4
    assert ([row["loss"] for row in read_log(tmp_path / "stopped")] ==
            [row["loss"] for row in read_log(tmp_path / "straight")])


def test_the_probe_resumes_exactly(cars, tmp_path):
    config = ProbeConfig(steps=6, batch_size=8, width=8, blends=4, warmup_steps=2)
    straight, _ = train_probe(cars, config, progress=False, run_dir=tmp_path / "straight")
    train_probe(cars, config, progress=False, run_dir=tmp_path / "stopped", until=3)
    assert json_step(tmp_path / "stopped") == 3
    resumed, _ = train_probe(cars, config, progress=False, run_dir=tmp_path / "stopped", resume=True)
    _same(resumed.state_dict(), straight.state_dict())


def json_step(folder: Path) -> int:
    """The step of the latest checkpoint in ``folder``."""
    from genvs.checkpoint import load_checkpoint

    return load_checkpoint(folder)[0]
