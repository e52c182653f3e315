
"""benchmarks/gpu_job.py: the dry run on the CPU (the GPU job's code path at tiny sizes), its time budgets, and
the offline install of carried wheels."""

import dataclasses
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
import types
import zipfile
from pathlib import Path

import pytest
import torch

from genvs.model import load_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_job.py"
PHASES = ("data", "training_benchmark", "sampling_benchmark", "final_training", "export", "evaluation", "figure")


def _job(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", *args], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    return result, time.perf_counter() - start


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """``gpu_job.py --dry-run`` with its default budget: ``(out folder, results)``."""
    root = tmp_path_factory.mktemp("gpu_job")
    result, _ = _job("--out", str(root / "out"), "--work", str(root / "work"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "out", json.loads((root / "out" / "results.json").read_text())


def test_dry_run_completes_every_phase_with_finite_figures(dry_run):
    out, results = dry_run
    statuses = {phase: results[phase]["status"] for phase in PHASES}
    assert set(statuses.values()) == {"done"}, statuses
    assert results["device"]["torch"] and results["device"]["name"].startswith("cpu")
    assert results["device"]["peak_flops_per_s"] is None and "MFU is null" in results["device"]["peak_note"]
    largest = results["training_benchmark"]["presets"]["smoke"]["largest_batch"]
    assert largest == {"limit": 8, "tries": {"4": "fits", "8": "fits"}, "batch_size": 8}  # no out of memory on the CPU
    assert results["training_benchmark"]["presets"]["smoke"]["batch_size"] == 8
    for preset in results["training_benchmark"]["presets"].values():
        assert set(preset["modes"]) == {"fp32_eager", "bf16_eager", "bf16_compile"}
        for mode in preset["modes"].values():
            assert mode["status"] == "done"
            for key in ("step_s", "images_per_s", "warmup_s", "flops_per_step"):
                assert _finite_number(mode[key]) and mode[key] > 0, (key, mode)
            assert mode["mfu"] is None  # no peak known for the CPU
        assert _finite_number(preset["compile_warmup_extra_s"])
    for precision in ("fp32", "bf16"):
        by_steps = results["sampling_benchmark"]["seconds_per_view"][precision]
        assert all(_finite_number(seconds) and seconds > 0 for views in by_steps.values() for seconds in views.values())
    final = results["final_training"]
    assert final["steps"] >= 1 and _finite_number(final["final_losses"]["loss"]) and final["loss_curve"]
    metrics = results["evaluation"]["metrics"]
    assert set(metrics) >= {"regression", "deterministic", "stochastic", "autoregressive"}
    assert _finite_number(metrics["stochastic"]["psnr"]["mean"])
    assert results["evaluation"]["attributes"]["available"]  # synthetic cars and the shipped probe
    assert _finite_number(results["evaluation"]["attribute_metrics"]["stochastic"]["unseen_confidence"]["mean"])


def test_dry_run_folder_is_flat_and_small_and_its_export_loads(dry_run, tmp_path):
    out, results = dry_run
    files = sorted(path.name for path in out.iterdir())
    assert all(path.is_file() for path in out.iterdir()) and len(files) <= 8, files
    assert {"results.json", "gpu_job.log", "samples.png"} <= set(files)
    assert all(path.stat().st_size <= 16 * 2**20 for path in out.iterdir())
    parts = results["export"]["parts"]
    assert parts == [name for name in files if name.startswith("model_fp16.tar.part")]
    archive = b"".join((out / name).read_bytes() for name in parts)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path, filter="data")
    model, config = load_model(tmp_path / "model_fp16")
    assert config["step"] == results["final_training"]["steps"]
    assert "final_training:" in (out / "gpu_job.log").read_text()


def test_too_few_minutes_skip_phases_instead_of_overrunning(tmp_path):
    minutes = 0.1
    result, seconds = _job("--out", str(tmp_path / "out"), "--minutes", str(minutes))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    statuses = [results[phase]["status"] for phase in PHASES]
    assert all(status.startswith(("skipped", "interrupted", "done")) for status in statuses), statuses
    assert "skipped: out of time" in statuses
    ready = results["setup"]["ready_after_s"]  # the interpreter and imports, before any phase can stop
    assert seconds < max(minutes * 60, ready) + 15


@pytest.fixture(scope="module")
def gpu_job():
    spec = importlib.util.spec_from_file_location("gpu_job", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_job"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_job")


def test_a_phase_past_its_budget_is_interrupted_and_recorded(gpu_job, tmp_path):
    clock = gpu_job.Clock(total_s=600)
    job = gpu_job.Job(tmp_path, tmp_path, gpu_job.dry_plan(), clock, {"job": {}})
    job.phase("slow", lambda record: (record.update(started=True), time.sleep(5)), budget_s=1.2)
    job.phase("late", lambda record: None, budget_s=0.5)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["slow"]["status"].startswith("interrupted: out of time") and results["slow"]["started"]
    assert results["slow"]["seconds"] < 3
    assert results["late"]["status"] == "skipped: out of time"


def test_peak_flops_come_from_the_first_matching_datasheet_entry(gpu_job):
    assert gpu_job.peak_flops("NVIDIA H200")["bf16"] == 989.4e12
    assert gpu_job.peak_flops("NVIDIA H100 PCIe")["tf32"] == 378e12
    assert gpu_job.peak_flops("NVIDIA A100-SXM4-80GB")["bf16"] == 312e12
    assert gpu_job.peak_flops("Tesla T4") is None


def test_gpu_evaluation_is_the_synthetic_protocol_with_all_objects_in_one_batch(gpu_job):
    from genvs.evaluation import PROTOCOLS
    protocol, synthetic = gpu_job.gpu_plan().protocol, PROTOCOLS["synthetic"]
    assert protocol.object_batch == synthetic.max_objects == 20
    assert dataclasses.replace(protocol, object_batch=1) == synthetic  # nothing else differs


def test_skipping_the_benchmarks_trains_on_a_speed_probe_of_the_final_config(tmp_path):
    result, _ = _job("--out", str(tmp_path / "out"), "--skip", "training_benchmark,sampling_benchmark")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["training_benchmark"]["status"] == results["sampling_benchmark"]["status"] == "skipped: --skip"
    assert set(results["data"]["sets"]) == {"train"}  # the 128 px benchmark cars are not rendered
    probe, final = results["final_training"]["speed_probe"], results["final_training"]
    assert _finite_number(probe["steps_per_s"]) and probe["steps_per_s"] > 0
    assert final["status"] == "done" and final["steps"] == final["planned_steps"] >= 1
    assert results["evaluation"]["status"] == "done"
    bad, _ = _job("--out", str(tmp_path / "bad"), "--skip", "final_training")
    assert bad.returncode != 0 and "may skip" in bad.stderr


def test_the_final_64_px_model_fits_the_shipped_model_budget(gpu_job):
    from genvs.model import GeNVS
    config = gpu_job.FINAL_64.model
    assert config.field.encoder.image_size == config.denoiser.image_size == 64
    parameters = sum(parameter.numel() for parameter in GeNVS(config, seed=0).parameters())
    assert parameters * 2 < 30 * 2**20  # fp16 export: 2 bytes per parameter


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel of module ``name`` (``VALUE = 42``)."""
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{file},,\n" for file in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as wheel:
        for file, text in files.items():
            wheel.writestr(file, text)
    return path


def test_carried_wheels_install_offline_and_become_importable(gpu_job, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    (tmp_path / "wheels").mkdir()
    _wheel(tmp_path / "wheels", "genvs_carried_demo")
    done = gpu_job.install_wheels(tmp_path / "wheels", tmp_path / "site")
    assert done["installed"] == ["genvs_carried_demo-0.1-py3-none-any.whl"] and "--no-index" in done["command"]
    assert sys.path[0] == str(tmp_path / "site") and os.environ["PYTHONPATH"].startswith(str(tmp_path / "site"))
    import genvs_carried_demo
    assert genvs_carried_demo.VALUE == 42
    sys.modules.pop("genvs_carried_demo")
    with pytest.raises(SystemExit, match="fetch_wheels"):
        gpu_job.install_wheels(tmp_path / "empty", tmp_path / "site")


# -- the leg: gpu_job.py --leg ------------------------------------------------------------------

LEG_PHASES = ("data", "throughput", "leg_training", "export", "evaluation", "figure")
SHIPPED = REPO / "genvs" / "shipped" / "lesson"


@pytest.fixture(scope="module")
def leg_dry_run(tmp_path_factory):
    """``gpu_job.py --leg --dry-run``: ``(out folder, results)``."""
    root = tmp_path_factory.mktemp("gpu_leg")
    result, _ = _job("--leg", "--out", str(root / "out"), "--work", str(root / "work"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "out", json.loads((root / "out" / "results.json").read_text())


def test_leg_dry_run_times_each_setting_and_trains_the_chosen_one_from_the_shipped_model(leg_dry_run):
    _, results = leg_dry_run
    assert {phase: results[phase]["status"] for phase in LEG_PHASES} == dict.fromkeys(LEG_PHASES, "done")
    assert results["data"]["sets"]["leg"]["train_cars"] == 16  # 20 cars split 80/10/10
    settings = results["throughput"]["settings"]
    assert set(settings) == {f"batch{batch}_{mode}" for batch in (2, 4) for mode in ("fp32_eager", "bf16_eager")}
    for entry in settings.values():
        assert entry["status"] == "done" and entry["correct"]
        assert _finite_number(entry["images_per_s"]) and 0 <= entry["data_wait_s"] < entry["step_s"]
        # no loader workers in the dry run: the step times include the loading, the loader adds no limit
        assert entry["loader_images_per_s"] is None and entry["sustained_images_per_s"] == entry["images_per_s"]
        assert entry["gpu_busy_fraction"] is None  # no CUDA kernels on the CPU
        # the same shipped weights, batch and noise: fp32 and bf16 first losses agree to bf16 rounding
        reference = settings[f"batch{entry['batch_size']}_fp32_eager"]["first_losses"]["loss"]
        assert entry["first_losses"]["loss"] == pytest.approx(reference, rel=0.03)
    chosen, training = results["throughput"]["chosen"], results["leg_training"]
    assert training["setting"] == chosen and training["init"] == "genvs/shipped/lesson"
    assert training["steps"] == 3 and training["target_images"] == 3 * chosen["batch_size"] * 2
    factor = min(math.sqrt(chosen["batch_size"] / 4), 2.0)  # the lesson preset trained 4 objects a step
    assert training["learning_rates"]["lr_denoiser"] == pytest.approx(3e-3 * factor)
    shipped = json.loads((SHIPPED / "evaluation.json").read_text())
    summary = results["summary"]
    assert summary["before"]["stochastic PSNR"]["mean"] == shipped["metrics"]["stochastic"]["psnr"]["mean"]
    assert summary["after"] == results["evaluation"]["leg"]["scores"] and summary["batch_size"] == chosen["batch_size"]
    assert summary["device"].startswith("cpu") and summary["torch"] == torch.__version__
    # the smoke protocol scores 2 cars, the shipped evaluation 20: never a reason to ship
    assert results["evaluation"]["same_protocol_as_shipped"] is False and summary["ship"] is False


def test_leg_comes_back_as_a_folder_that_ship_leg_takes(leg_dry_run, tmp_path):
    from genvs.legs import ship_leg
    out, results = leg_dry_run
    files = sorted(path.name for path in out.iterdir())
    assert {"results.json", "gpu_job.log", "samples.png"} <= set(files) and len(files) <= 8
    assert all(path.stat().st_size <= 16 * 2**20 for path in out.iterdir())
    parts = results["export"]["parts"]
    assert parts == [name for name in files if name.startswith("leg.tar.part")]
    with tarfile.open(fileobj=io.BytesIO(b"".join((out / name).read_bytes() for name in parts))) as tar:
        tar.extractall(tmp_path, filter="data")
    leg = tmp_path / "leg"
    assert json.loads((leg / "leg.json").read_text()) == results["evaluation"]["leg"]
    shipped = tmp_path / "shipped"
    shutil.copytree(SHIPPED, shipped)
    before, _ = load_model(shipped)
    ship_leg(leg, shipped, force=True)  # force: the dry run's smoke scores are not the protocol's
    after, config = load_model(shipped)
    trained, _ = load_model(leg / "export")
    assert config["step"] == 3 and len(list(shipped.glob("*.safetensors"))) == 1
    assert all(torch.equal(a, b) for a, b in zip(after.state_dict().values(), trained.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(after.state_dict().values(), before.state_dict().values()))
    assert json.loads((shipped / "legs.json").read_text())[-1] == results["evaluation"]["leg"]


def _setting(batch: int, mode: str, images_per_s: float, loss: float, status: str = "done") -> dict:
    return {"batch_size": batch, "mode": mode, "status": status, "sustained_images_per_s": images_per_s,
            "warmup_s": 1.0, "first_losses": {"loss": loss}}


def test_the_leg_takes_the_fastest_correct_setting_and_a_larger_batch_only_if_clearly_faster(gpu_job):
    settings = {"64_fp32": _setting(64, "fp32_eager", 1000, 0.100), "64_bf16": _setting(64, "bf16_eager", 1200, 0.101),
                "128_fp32": _setting(128, "fp32_eager", 1240, 0.120),  # 3% faster than 64_bf16: not enough
                "128_bf16": _setting(128, "bf16_eager", 3000, 0.150),  # faster, but its loss is off by 25%
                "256_fp32": _setting(256, "fp32_eager", 1400, 0.110),  # 17% faster than 64_bf16
                "256_compile": _setting(256, "bf16_compile", 9000, float("nan"))}
    chosen = gpu_job.choose_setting(settings)
    assert chosen["name"] == "256_fp32" and chosen["batch_size"] == 256
    assert not settings["128_bf16"]["correct"] and not settings["256_compile"]["correct"]
    assert settings["64_bf16"]["correct"] and settings["128_fp32"]["correct"]
    settings["256_fp32"]["sustained_images_per_s"] = 1250
    assert gpu_job.choose_setting(settings)["name"] == "64_bf16"
    settings["64_compile"] = _setting(64, "bf16_compile", 2400, 0.101)  # twice 64_bf16's speed after compiling
    settings["64_compile"]["warmup_s"] = 150.0
    assert gpu_job.choose_setting(settings)["name"] == "64_compile"  # the warm-up not counted
    assert gpu_job.choose_setting(settings, train_s=240)["name"] == "64_bf16"  # 2400 x 90 s < 1200 x 239 s
    assert gpu_job.choose_setting(settings, train_s=600)["name"] == "64_compile"  # 2400 x 450 s > 1200 x 599 s
    with pytest.raises(RuntimeError, match="no correct setting"):
        gpu_job.choose_setting({"64_bf16": _setting(64, "bf16_eager", 1200, 0.1)})  # no fp32 reference at 64


def test_leg_learning_rates_follow_the_square_root_rule_up_to_its_cap(gpu_job):
    from genvs.training import train_config
    base = train_config("lesson")
    for batch, factor in ((4, 1.0), (9, 1.5), (16, 2.0), (256, 2.0)):
        config, rates = gpu_job.leg_config(base, batch, "bf16", None)
        assert rates["factor"] == pytest.approx(factor) and config.batch_size == batch
        assert config.lr_field == pytest.approx(base.lr_field * factor) and config.precision == "bf16"
        assert not config.speed.compile and config.model == base.model
    compiled, _ = gpu_job.leg_config(base, 64, "bf16", "reduce-overhead")
    assert compiled.speed.compile and compiled.speed.compile_mode == "reduce-overhead"


def test_a_sweep_stopped_by_its_time_box_chooses_among_the_settings_it_measured(gpu_job, tmp_path, monkeypatch):
    def measures_one_then_runs_out(job, record, data, modes):
        record["settings"]["batch2_fp32_eager"] = _setting(2, "fp32_eager", 20.0, 0.1)
        raise gpu_job.OutOfTime()

    monkeypatch.setattr(gpu_job, "sweep", measures_one_then_runs_out)
    job = gpu_job.Job(tmp_path, tmp_path, gpu_job.dry_leg_plan(), gpu_job.Clock(total_s=600), {"job": {}})
    job.state.train_sets["leg"] = None  # the stand-in sweep reads no cars
    record = {}
    gpu_job.throughput(job, record)
    assert record["chosen"]["name"] == "batch2_fp32_eager" and job.state.setting == record["chosen"]
    assert record["stopped"] == "at its time box, after 1 of 4 settings"


def test_the_leg_plan_scores_the_shipped_models_protocol_on_its_cars(gpu_job):
    from genvs.data.synthetic import split_names
    from genvs.evaluation import EvaluationConfig
    plan, shipped = gpu_job.leg_plan(), json.loads((SHIPPED / "evaluation.json").read_text())
    spec = plan.data["leg"]
    test_cars = [f"car_{index:05d}" for index, split in enumerate(split_names(spec.n_objects)) if split == "test"]
    assert test_cars[:20] == shipped["objects"]  # extra training cars leave the test split as it was
    assert spec.image_size == shipped["image_size"] and spec.seed == 0 and spec.extra_train_objects >= 2520
    protocol = {key: tuple(value) if isinstance(value, list) else value for key, value in shipped["protocol"].items()}
    assert dataclasses.replace(plan.protocol, object_batch=1) == EvaluationConfig(**protocol)
    assert plan.init == SHIPPED and plan.base.model.field.encoder.image_size == shipped["image_size"]


def test_the_loader_sustains_its_workers_times_what_one_process_builds(gpu_job):
    class SlowBatches:
        def __getitem__(self, index):
            time.sleep(0.05)  # one micro-batch of 16 objects x 2 targets takes 0.05 s to build

    class Trainer:
        batches, config = SlowBatches(), types.SimpleNamespace(batch_size=16, target_views=2)

    rate = gpu_job.loader_images_per_s(Trainer(), workers=8)
    assert rate["load_s_per_micro_batch"] == pytest.approx(0.05, abs=0.02)
    assert 3000 < rate["loader_images_per_s"] <= 8 * 32 / 0.05  # sleeping never takes less than asked
    assert gpu_job.loader_images_per_s(Trainer(), workers=0)["loader_images_per_s"] is None


def test_the_largest_batch_is_the_last_doubling_before_out_of_memory(gpu_job, tmp_path, monkeypatch):
    from genvs.training import train_config
    tried = []

    def memory_for_24_objects(job, config, data, folder):
        tried.append(config.batch_size)
        if config.batch_size > 24:
            raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(gpu_job, "one_step_with_most_inputs", memory_for_24_objects)
    job = gpu_job.Job(tmp_path, tmp_path, gpu_job.dry_plan(), gpu_job.Clock(total_s=600), {"job": {}})
    entry = {}
    config = gpu_job.fit_largest_batch(job, "paper", train_config("paper"), tmp_path, 256, entry)
    assert tried == [8, 16, 32] and config.batch_size == 16 and config.precision == "bf16"  # the preset's own
    assert entry["largest_batch"] == {"limit": 256, "tries": {"8": "fits", "16": "fits", "32": "out of memory"},
                                      "batch_size": 16}
