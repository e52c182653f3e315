import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch

from genvs.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from genvs.data import SRNDataset
from genvs.data.batches import StepBatches
from genvs.data.synthetic import make_dataset
from genvs.fitting import lr_factor, read_log
from genvs.model import GeNVS, architecture, load_model
from genvs.training import Trainer, export_model, train_config, train_split

# the smoke model with small batches: about 0.1 s a step on one thread
CONFIG = train_config("smoke", batch_size=2, target_views=1, warmup_steps=3)


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    """6 synthetic cars x 6 views at 32 px: 4 train, 1 val, 1 test."""
    return make_dataset(tmp_path_factory.mktemp("cars"), n_objects=6, n_views=6, image_size=32, seed=0, progress=False)


def _trainer(cars, out, steps, config=CONFIG, **options) -> Trainer:
    options = {"sample_every": 0, "checkpoint_every": 0, "progress": False, **options}
    return Trainer(config, cars, out, steps, **options)


def _parameters(run_dir, part="model"):
    return load_checkpoint(run_dir)[1][part]


def test_a_trainer_takes_its_train_split_already_read(cars, tmp_path):
    read = SRNDataset(cars, split="train", views_per_item=None, image_size=32)
    from_read, from_path = _trainer(read, tmp_path / "read", 1), _trainer(cars, tmp_path / "path", 1)
    assert from_read.dataset is read and len(read) == 4
    torch.testing.assert_close(from_read.batches[3], from_path.batches[3])  # the same cars, views and draws
    with pytest.raises(ValueError, match="train split at 32 px"):
        train_split(SRNDataset(cars, split="train", views_per_item=None, image_size=16), 32)
    with pytest.raises(ValueError, match="'views_per_item': 2"):
        train_split(SRNDataset(cars, split="train", views_per_item=2, image_size=32), 32)
    with pytest.raises(ValueError, match="'split': 'val'"):
        train_split(SRNDataset(cars, split="val", views_per_item=None, image_size=32), 32)


def test_batches_are_a_pure_function_of_seed_and_index(cars):
    dataset = SRNDataset(cars, split="train", views_per_item=None)
    batches = StepBatches(dataset, batch_size=3, max_inputs=3, target_views=2, seed=0)
    first, again, other = batches[7], batches[7], batches[8]
    torch.testing.assert_close(first, again)
    assert not torch.equal(first["c2w"], other["c2w"])
    n_inputs = {int(batches[index]["n_inputs"]) for index in range(40)}
    assert n_inputs == {1, 2, 3}  # 1 to max_inputs input views, all drawn
    views = first["images"].shape[1]
    assert views == int(first["n_inputs"]) + 2 and first["images"].shape == (3, views, 3, 32, 32)
    for poses in first["c2w"]:  # every view of an object is a different camera: targets are never inputs
        assert torch.cdist(poses[:, :3, 3], poses[:, :3, 3]).add(torch.eye(views)).min() > 1e-3
    objects = {tuple(item[0, :3, 3].tolist()) for item in first["c2w"]}
    assert len(objects) == 3 or len(dataset) < 3  # distinct objects
    # draw() tells a micro-batch's objects and input views without loading it: the loaded batch's own
    objects, n_inputs, _ = batches.draw(7)
    assert n_inputs == int(first["n_inputs"]) and len(set(objects)) == 3
    for b, index in enumerate(objects):  # each loaded view is one of that object's cameras on disk
        cameras = dataset.load_views(index, list(range(dataset.objects[index].n_views)))["c2w"]
        assert all(any(torch.equal(view, camera) for camera in cameras) for view in first["c2w"][b])
    with pytest.raises(ValueError, match="fewer than 9 views"):
        StepBatches(dataset, batch_size=2, max_inputs=3, target_views=6, seed=0)


def test_learning_rate_warms_up_linearly_then_decays_as_a_cosine():
    warmup, total, floor = 10, 110, 0.1
    assert lr_factor(0, warmup, total, floor) == pytest.approx(0.1)
    assert lr_factor(9, warmup, total, floor) == pytest.approx(1.0)
    assert lr_factor(10, warmup, total, floor) == pytest.approx(1.0)
    assert lr_factor(60, warmup, total, floor) == pytest.approx(floor + (1 - floor) * 0.5)  # half-way: cos(pi/2) = 0
    assert lr_factor(110, warmup, total, floor) == pytest.approx(floor)
    assert lr_factor(500, warmup, total, floor) == pytest.approx(floor)


def test_resuming_continues_exactly(cars, tmp_path):
    straight = _trainer(cars, tmp_path / "straight", steps=20)
    straight.run()
    _trainer(cars, tmp_path / "stopped", steps=20).run(until=10)  # as if killed after step 10's checkpoint
    assert load_checkpoint(tmp_path / "stopped")[0] == 10
    resumed = _trainer(cars, tmp_path / "stopped", steps=20, resume=True)
    assert resumed.step == 10
    resumed.run()
    resumed_state, straight_state = load_checkpoint(tmp_path / "stopped")[1], load_checkpoint(tmp_path / "straight")[1]
    for part in ("model", "ema"):
        torch.testing.assert_close(resumed_state[part], straight_state[part], rtol=0, atol=0)
    torch.testing.assert_close(resumed_state["optimiser"]["state"], straight_state["optimiser"]["state"],
                               rtol=0, atol=0)
    stopped, straight = read_log(tmp_path / "stopped"), read_log(tmp_path / "straight")
    assert [row["step"] for row in stopped] == [row["step"] for row in straight] == [10.0, 20.0]
    assert [row["loss"] for row in stopped] == [row["loss"] for row in straight]


def test_an_existing_run_is_never_overwritten_and_a_different_config_is_refused(cars, tmp_path):
    _trainer(cars, tmp_path / "run", steps=2).run()
    with pytest.raises(FileExistsError, match="--resume"):
        _trainer(cars, tmp_path / "run", steps=2)
    with pytest.raises(CheckpointError, match="lr_denoiser: checkpoint has 0.001, expected 0.5"):
        _trainer(cars, tmp_path / "run", steps=4, config=train_config("smoke", batch_size=2, target_views=1,
                                                                     warmup_steps=3, lr_denoiser=0.5), resume=True)


def test_two_processes_compute_what_one_process_accumulating_two_batches_does(cars, tmp_path, capsys):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "genvs",
               "train", "--data", str(cars), "--preset", "smoke", "--steps", "3", "--out", str(tmp_path / "ddp"),
               "--set", "batch_size=2", "--set", "target_views=1", "--set", "warmup_steps=3", "--sample-every", "0",
               "--device", "cpu"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained steps 0..3" in result.stdout
    config = train_config("smoke", batch_size=2, target_views=1, warmup_steps=3, grad_accumulation=2)
    _trainer(cars, tmp_path / "one", steps=3, config=config).run()
    two, one = _parameters(tmp_path / "ddp"), _parameters(tmp_path / "one")
    differences = {name: (two[name] - one[name]).abs().max().item() for name in one if one[name].is_floating_point()
                   and "running" not in name}  # batch-norm statistics: DDP keeps rank 0's
    assert max(differences.values()) < 1e-4, sorted(differences.items(), key=lambda item: -item[1])[:3]
    initial = GeNVS(config.model, seed=config.seed).state_dict()  # and training did move the weights
    assert not torch.equal(two["field.mlp.0.weight"], initial["field.mlp.0.weight"])
    # the checkpoint knows it came from 2 processes; resuming it in 1 continues, and says what changes
    assert load_checkpoint(tmp_path / "ddp")[1]["world_size"] == 2
    capsys.readouterr()
    resumed = _trainer(cars, tmp_path / "ddp", steps=4, config=train_config("smoke", batch_size=2, target_views=1,
                                                                            warmup_steps=3), resume=True)
    assert "saved by 2 process(es) and resumes with 1" in capsys.readouterr().out
    resumed.run()
    assert load_checkpoint(tmp_path / "ddp")[0] == 4


def test_a_non_finite_loss_stops_the_run_before_the_weights_change(cars, tmp_path, monkeypatch):
    trainer = _trainer(cars, tmp_path / "run", steps=5)
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}

    def broken(*args, **kwargs):
        loss = trainer.model.field.mlp[0].weight.sum() * float("nan")
        return {"loss": loss, "rgb": loss.detach()}

    monkeypatch.setattr(trainer.model, "losses", broken)
    with pytest.raises(FloatingPointError, match="step 0: non-finite loss .*--resume"):
        trainer.run()
    torch.testing.assert_close(trainer.model.state_dict(), before, rtol=0, atol=0)


def test_an_interrupted_run_saves_a_checkpoint_to_resume_from(cars, tmp_path):
    trainer = _trainer(cars, tmp_path / "run", steps=10, log_every=1)

    def interrupt(record):
        if record["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run(callback=interrupt)
    assert load_checkpoint(tmp_path / "run")[0] == 3


def test_staged_training_trains_only_its_parts_and_hands_weights_on(cars, tmp_path):
    field_run = _trainer(cars, tmp_path / "field", steps=3, config=train_config("smoke", stage="field", batch_size=2))
    start = {name: value.clone() for name, value in field_run.model.state_dict().items()}
    records = field_run.run()
    assert "denoising" not in records[-1]
    trained = field_run.model.state_dict()
    assert all(torch.equal(trained[name], start[name]) for name in start if name.startswith("denoiser."))
    assert not torch.equal(trained["field.mlp.0.weight"], start["field.mlp.0.weight"])

    denoiser_run = _trainer(cars, tmp_path / "denoiser", steps=3, init=tmp_path / "field",
                            config=train_config("smoke", stage="denoiser", batch_size=2))
    denoiser_run.run()
    final = denoiser_run.model.state_dict()
    assert all(torch.equal(final[name], trained[name]) for name in trained if name.startswith("field."))
    assert any(not torch.equal(final[name], trained[name]) for name in trained if name.startswith("denoiser."))

    other_model = train_config("smoke", stage="denoiser", batch_size=2, model=dataclasses.replace(
        CONFIG.model, field=dataclasses.replace(CONFIG.model.field, mlp_hidden=2 * CONFIG.model.field.mlp_hidden)))
    with pytest.raises(CheckpointError, match=f"field.mlp_hidden: checkpoint has {CONFIG.model.field.mlp_hidden}, "):
        _trainer(cars, tmp_path / "mismatch", steps=1, init=tmp_path / "field", config=other_model)


def test_a_stage_may_change_how_the_model_trains_but_not_the_model(cars, tmp_path):
    """GeNVS's recipe raises the training noise between stages: the weights carry over unchanged."""
    _trainer(cars, tmp_path / "first", steps=1).run()
    model = CONFIG.model
    retuned = dataclasses.replace(model, rgb_weight=model.rgb_weight + 0.5, max_input_views=1,
                                  denoiser=dataclasses.replace(model.denoiser,
                                                               noise_mean=model.denoiser.noise_mean + 1.0,
                                                               cond_dropout=0.0, dropout=0.2))
    assert architecture(dataclasses.asdict(retuned)) == architecture(dataclasses.asdict(model))
    second = _trainer(cars, tmp_path / "second", steps=1, init=tmp_path / "first",
                      config=train_config("smoke", batch_size=2, model=retuned))
    torch.testing.assert_close(second.model.state_dict(), load_checkpoint(tmp_path / "first")[1]["model"],
                               rtol=0, atol=0)
    assert second.model.config.denoiser.noise_mean == model.denoiser.noise_mean + 1.0
    for changed in ({"sigma_data": 1.0}, {"channels": tuple(2 * c for c in model.denoiser.channels)}):
        other = dataclasses.replace(model, denoiser=dataclasses.replace(model.denoiser, **changed))
        assert architecture(dataclasses.asdict(other)) != architecture(dataclasses.asdict(model)), changed


def test_a_run_writes_its_log_samples_and_a_model_that_loads(cars, tmp_path):
    seen = []
    trainer = _trainer(cars, tmp_path / "run", steps=4, log_every=2, sample_every=4, sample_steps=2, sample_objects=2)
    records = trainer.run(callback=seen.append)
    assert [record["step"] for record in seen] == [2, 4] and "samples" in seen[-1]
    rows = seen[-1]["samples"]
    assert len(rows) == 1 and rows[0].shape == (1 + 3 * 3, 3, 32, 32)  # 1 val object: input + 3 x (truth, rgb, sample)
    assert (tmp_path / "run" / "samples" / "step_000000004.png").is_file()
    log = read_log(tmp_path / "run")
    assert [row["step"] for row in log] == [2, 4] and all(math.isfinite(row["loss"]) for row in log)
    assert log[-1]["loss"] == pytest.approx(records[-1]["loss"])
    model, config = load_model(tmp_path / "run")
    assert config["step"] == 4 and not model.training
    torch.testing.assert_close(model.state_dict(), trainer.ema.state_dict())


def test_bf16_autocast_runs_on_the_same_code_path(cars, tmp_path):
    trainer = _trainer(cars, tmp_path / "run", steps=1, config=train_config("smoke", batch_size=2, precision="bf16"))
    (record,) = trainer.run()
    assert math.isfinite(record["loss"])


def test_a_time_limit_stops_the_run_at_a_resumable_step(cars, tmp_path):
    records = _trainer(cars, tmp_path / "run", steps=50, log_every=10).run(time_limit=0.0)
    assert [record["step"] for record in records] == [1]  # logged like a last step
    assert load_checkpoint(tmp_path / "run")[0] == 1
    assert _trainer(cars, tmp_path / "run", steps=50, resume=True).step == 1


def test_an_export_keeps_the_ema_weights_in_half_the_bytes_and_loads_for_sampling(cars, tmp_path):
    _trainer(cars, tmp_path / "run", steps=2).run()
    exported = export_model(tmp_path / "run", tmp_path / "shipped")
    step, state, _ = load_checkpoint(tmp_path / "shipped")
    assert step == 2 and list(state) == ["ema"]
    assert all(tensor.dtype == torch.float16 for tensor in state["ema"].values() if tensor.is_floating_point())
    n_bytes = sum(tensor.numel() * tensor.element_size() for tensor in state["ema"].values())
    assert exported.with_suffix(".safetensors").stat().st_size < n_bytes + 100_000  # tensors + a small header
    trained, _ = load_model(tmp_path / "run")
    shipped, config = load_model(tmp_path / "shipped")
    assert config["step"] == 2 and next(shipped.parameters()).dtype == torch.float32
    for name, value in shipped.state_dict().items():  # equal to the EMA weights up to fp16 rounding
        torch.testing.assert_close(value, trained.state_dict()[name].half().to(value.dtype))
    with pytest.raises(CheckpointError, match="only \\['ema'\\] weights"):
        load_model(tmp_path / "shipped", ema=False)


def test_the_shipped_checkpoint_loads_and_samples_a_view(tmp_path):
    from genvs.artefacts import shipped
    from genvs.sampling import sample_novel_views

    folder = shipped("lesson")
    model, config = load_model(folder)
    assert f"step {config['step']}" in (folder / "MODEL_CARD.md").read_text()
    size = model.config.field.encoder.image_size
    cars = make_dataset(tmp_path, n_objects=3, n_views=2, image_size=size, seed=1, progress=False)
    views = SRNDataset(cars, split="test", views_per_item=2)[0]
    result = sample_novel_views(model, views["images"][None, :1], views["K"][None, :1], views["c2w"][None, :1],
                                views["K"][None, 1:], views["c2w"][None, 1:], steps=2, seed=0)
    assert result["samples"].shape == (1, 1, 3, size, size) and result["samples"].isfinite().all()


def _trained_parameters(trainer, part="model"):
    """The trained parts' parameters of the model or the EMA, by name, as copies."""
    module = trainer.model if part == "model" else trainer.ema
    trained = {name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad}
    return {name: value.detach().clone() for name, value in module.named_parameters() if name in trained}


def test_a_non_finite_gradient_with_a_finite_loss_stops_before_the_weights_the_ema_or_a_checkpoint(cars, tmp_path):
    trainer = _trainer(cars, tmp_path / "run", steps=5, checkpoint_every=1)
    model, ema = _trained_parameters(trainer), _trained_parameters(trainer, "ema")
    trainer.model.field.mlp[0].weight.register_hook(lambda gradient: gradient * float("nan"))  # the loss stays finite
    with pytest.raises(FloatingPointError, match=r"step 0: non-finite gradient .* in field \(1 tensors, e\.g\. "
                                                 r"field\.mlp\.0\.weight\), with a finite loss .*--resume"):
        trainer.run()
    torch.testing.assert_close(_trained_parameters(trainer), model, rtol=0, atol=0)
    torch.testing.assert_close(_trained_parameters(trainer, "ema"), ema, rtol=0, atol=0)
    assert latest_checkpoint(tmp_path / "run") is None


def test_fp16_skips_a_step_with_an_inf_gradient_and_carries_on(cars, tmp_path):
    trainer = _trainer(cars, tmp_path / "run", steps=4, log_every=1,
                       config=train_config("smoke", batch_size=2, target_views=1, precision="fp16"))
    initial, initial_ema = _trained_parameters(trainer), _trained_parameters(trainer, "ema")
    poisoned = [0]  # the first backward pass gets an inf gradient in the denoiser

    def poison(gradient):
        if poisoned[0] == 0:
            poisoned[0] = 1
            return gradient + float("inf")
        return gradient

    next(trainer.model.denoiser.parameters()).register_hook(poison)
    after_step = {}
    records = trainer.run(callback=lambda record: after_step.setdefault(
        record["step"], (_trained_parameters(trainer), _trained_parameters(trainer, "ema"))))
    first = records[0]
    assert not math.isfinite(first["grad_norm"]) and math.isfinite(first["loss"])
    assert first["loss_scale"] == 2.0**15  # GradScaler's 2^16, halved by the skipped step
    torch.testing.assert_close(after_step[1][0], initial, rtol=0, atol=0)  # the step changed nothing
    torch.testing.assert_close(after_step[1][1], initial_ema, rtol=0, atol=0)
    assert any(math.isfinite(record["grad_norm"]) for record in records[1:])
    final = _trained_parameters(trainer)
    assert all(value.isfinite().all() for value in final.values())
    assert any(not torch.equal(final[name], initial[name]) for name in final)  # later steps did train
    assert all(value.isfinite().all() for value in load_checkpoint(tmp_path / "run")[1]["ema"].values())


def test_the_ema_follows_its_decay_formula(cars, tmp_path):
    """theta_ema(t) = d(t) theta_ema(t-1) + (1 - d(t)) theta(t), d(t) = min(ema_max, 1 - (1 + t)^-ema_power)."""
    config = train_config("smoke", batch_size=2, target_views=1, warmup_steps=3, ema_power=0.75, ema_max=0.6)
    trainer = _trainer(cars, tmp_path / "run", steps=5, log_every=1, config=config)
    snapshots = [(_trained_parameters(trainer), _trained_parameters(trainer, "ema"))]
    trainer.run(callback=lambda record: snapshots.append((_trained_parameters(trainer),
                                                          _trained_parameters(trainer, "ema"))))
    decays = [min(0.6, 1 - (1 + t) ** -0.75) for t in range(5)]  # 0, 0.405, 0.56, 0.6 (capped), 0.6
    for t, decay in enumerate(decays):
        (model, ema), previous_ema = snapshots[t + 1], snapshots[t][1]
        for name in ema:
            torch.testing.assert_close(ema[name], decay * previous_ema[name] + (1 - decay) * model[name],
                                       rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(snapshots[-1][0][name], snapshots[-1][1][name]) for name in snapshots[-1][0])


def test_init_from_an_earlier_stage_starts_the_ema_from_its_ema(cars, tmp_path):
    field_run = _trainer(cars, tmp_path / "field", steps=3, config=train_config("smoke", stage="field", batch_size=2))
    field_run.run()
    raw, averaged = load_checkpoint(tmp_path / "field")[1]["model"], load_checkpoint(tmp_path / "field")[1]["ema"]
    assert not torch.equal(raw["field.mlp.0.weight"], averaged["field.mlp.0.weight"])
    denoiser_config = train_config("smoke", stage="denoiser", batch_size=2)
    staged = _trainer(cars, tmp_path / "denoiser", steps=1, init=tmp_path / "field", config=denoiser_config)
    torch.testing.assert_close(staged.model.state_dict(), raw, rtol=0, atol=0)
    torch.testing.assert_close(staged.ema.state_dict(), averaged, rtol=0, atol=0)
    export_model(tmp_path / "field", tmp_path / "export", dtype=torch.float32)  # EMA only: it starts both
    from_export = _trainer(cars, tmp_path / "from_export", steps=1, init=tmp_path / "export", config=denoiser_config)
    torch.testing.assert_close(from_export.model.state_dict(), averaged, rtol=0, atol=0)
    torch.testing.assert_close(from_export.ema.state_dict(), averaged, rtol=0, atol=0)


def test_each_process_selects_its_gpu_before_the_process_group_and_the_backend_follows_the_device(monkeypatch):
    from genvs import fitting

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", str(device))))
    monkeypatch.setattr(fitting.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(fitting.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    for requested in (None, "cuda"):
        calls.clear()
        device = fitting.process_device(requested)
        assert fitting.join_processes(device) == (3, 4) and str(device) == "cuda:1"
        assert calls == [("set_device", "cuda:1"), ("init", "nccl")]
    calls.clear()
    device = fitting.process_device("cpu")  # --device cpu on a GPU machine
    assert fitting.join_processes(device) == (3, 4) and device.type == "cpu"
    assert calls == [("init", "gloo")]


def test_a_step_waits_for_the_device_once_however_many_micro_batches(cars, tmp_path, monkeypatch):
    """Losses and the gradient norm reach the host together, once per optimiser step (3 micro-batches here)."""
    config = train_config("smoke", batch_size=2, target_views=1, warmup_steps=3, grad_accumulation=3)
    trainer = _trainer(cars, tmp_path / "run", steps=2, config=config)
    loader = trainer.micro_batches()
    micro_batches = [next(loader) for _ in range(3)]  # loaded on the host first: reading them is no GPU sync
    reads = []
    for method in ("tolist", "item", "__float__", "__bool__"):
        original = getattr(torch.Tensor, method)

        def reading(tensor, *args, _original=original, _method=method, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if not caller.endswith(os.path.join("torch", "optim", "optimizer.py")):  # AdamW's step counters: host
                reads.append(_method)
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, reading)
    record = trainer.train_step(iter(micro_batches))
    monkeypatch.undo()
    assert reads == ["tolist"], reads
    assert (set(record) == {"loss", "denoising", "rgb", "opacity", "grad_norm"}
            and all(map(math.isfinite, record.values())))


@pytest.mark.parametrize("option", ["tf32", "compile"])
def test_each_speed_option_computes_the_losses_and_gradients_of_the_plain_path(cars, tmp_path, monkeypatch, option):
    """One micro-batch's losses and gradients with a speed option on equal the plain path's (compile with the
    aot_eager backend: dynamo's graph capture and autograd tracing, without inductor's minutes of C++ code
    generation on a CPU).

    Both paths run in float64, where rounding cannot reach the tolerance. In float32, summing in another order
    moved the smoke encoder's first-layer gradients by up to 2.3e-6 (relative 4e-3: batch norm over layer4's 2
    values per channel amplifies rounding about 3e4-fold), by amounts that differ from machine to machine; the
    same amplification of float64's rounding (eps 2.2e-16) stays below 1e-11, far inside rtol 1e-8, while a
    graph that computes anything else still fails.
    """
    import dataclasses

    from genvs import training

    monkeypatch.setattr(training, "COMPILE_BACKEND", "aot_eager")
    plain = train_config("smoke", batch_size=2, target_views=1, speed=training.SpeedConfig(tf32=False))
    fast = dataclasses.replace(plain, speed=dataclasses.replace(plain.speed, **{option: True}))
    results = {}
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # weights, noise and noise levels; the data are cast below
    try:
        for name, config in (("plain", plain), ("fast", fast)):
            trainer = _trainer(cars, tmp_path / name, steps=1, config=config)
            parts = (trainer.model.field.encoder, trainer.model.field.mlp, trainer.model.denoiser.inner_model)
            assert all((part._compiled_call_impl is not None) == (config.speed.compile) for part in parts)
            batch = {key: value.double() if torch.is_tensor(value) and value.is_floating_point() else value
                     for key, value in trainer.batches[0].items()}
            losses = trainer.fitter.micro_batch_losses(batch, 0)
            assert losses["loss"].dtype == torch.float64
            losses["loss"].backward()
            results[name] = ({key: value.item() for key, value in losses.items()},
                             {key: p.grad.clone() for key, p in trainer.model.named_parameters() if p.grad is not None})
    finally:
        torch.set_default_dtype(default_dtype)
    (plain_losses, plain_grads), (fast_losses, fast_grads) = results["plain"], results["fast"]
    assert fast_losses == pytest.approx(plain_losses, rel=1e-10)
    assert fast_grads.keys() == plain_grads.keys() and len(plain_grads) > 10
    assert plain_grads["field.encoder.backbone.conv1.weight"].abs().max() > 0  # the far end of the backward pass
    for key, gradient in plain_grads.items():
        assert gradient.dtype == torch.float64, key
        torch.testing.assert_close(fast_grads[key], gradient, rtol=1e-8, atol=1e-14, msg=lambda text: f"{key}: {text}")


def test_fused_adamw_makes_the_plain_update(cars, tmp_path):
    """One optimiser step from the same weights and gradients: the fused kernel moves every weight as the plain one."""
    import dataclasses

    from genvs.training import SpeedConfig

    plain = train_config("smoke", batch_size=2, target_views=1, warmup_steps=1, speed=SpeedConfig(tf32=False))
    fused = dataclasses.replace(plain, speed=SpeedConfig(tf32=False, fused_adamw=True))
    weights = {}
    for name, config in (("plain", plain), ("fused", fused)):
        trainer = _trainer(cars, tmp_path / name, steps=1, config=config)
        initial = _trained_parameters(trainer)
        trainer.run()
        weights[name] = _trained_parameters(trainer)
    moved = [key for key in initial if not torch.equal(weights["plain"][key], initial[key])]
    assert len(moved) > 10
    for key, value in weights["plain"].items():
        torch.testing.assert_close(weights["fused"][key], value, rtol=1e-5, atol=1e-7, msg=key)


def test_channels_last_computes_the_plain_models_losses_and_gradients(cars, tmp_path):
    """The encoder and U-Net in NHWC give the plain model's losses and gradients up to float rounding.

    In eval mode: in training mode the smoke encoder's batch norm normalises layer4's 1x1 maps over 2
    images, 2 values per channel, which turns any rounding difference (another layout, another kernel)
    into O(1) changes of the output.
    """
    import dataclasses

    from genvs.training import SpeedConfig

    plain = train_config("smoke", batch_size=2, target_views=1, speed=SpeedConfig(tf32=False))
    results = {}
    for channels_last in (False, True):
        config = dataclasses.replace(plain, speed=SpeedConfig(tf32=False, channels_last=channels_last))
        model = _trainer(cars, tmp_path / str(channels_last), steps=1, config=config).model.eval()
        conv = model.field.encoder.backbone.conv1.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        batch = StepBatches(SRNDataset(cars, split="train", views_per_item=None), 2, 3, 1, seed=0)[0]
        losses = model.losses(batch["images"], batch["K"], batch["c2w"], int(batch["n_inputs"]),
                              torch.Generator().manual_seed(0))
        losses["loss"].backward()
        results[channels_last] = ({key: value.item() for key, value in losses.items()},
                                  torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    (plain_losses, plain_grads), (fast_losses, fast_grads) = results[False], results[True]
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    assert ((fast_grads - plain_grads).norm() / plain_grads.norm()).item() < 1e-4


def test_data_loading_workers_deliver_the_batches_of_the_training_process(cars, tmp_path):
    in_process = _trainer(cars, tmp_path / "a", steps=2)
    assert in_process.fitter.workers == 0  # the CPU default
    with_workers = _trainer(cars, tmp_path / "b", steps=2, workers=2)
    for expected, loaded in zip(in_process.micro_batches(), with_workers.micro_batches()):
        torch.testing.assert_close(loaded, expected, rtol=0, atol=0)
