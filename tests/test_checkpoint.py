import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from genvs import checkpoint
from genvs.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from genvs.field import field_config


def _model_and_optimiser(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 2))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def _train(model, optimiser, steps: int, generator: torch.Generator) -> None:
    for _ in range(steps):
        x = torch.randn(16, 4, generator=generator)
        loss = (model(x) - x[:, :2]).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def test_nested_state_round_trips_exactly(tmp_path):
    state = {"weights": {"a": torch.randn(3, 4), "b": torch.arange(5)}, "by_int": {0: torch.ones(2), 7: "seven"},
             "list": [1, 2.5, None, True, torch.zeros(1, dtype=torch.bfloat16)], "name": "run"}
    config = {"preset": "cpu", "sizes": (16, 32)}
    save_checkpoint(tmp_path, 3, state, config)
    step, loaded, loaded_config = load_checkpoint(tmp_path, expected_config=config)
    assert step == 3 and loaded_config == {"preset": "cpu", "sizes": [16, 32]}
    torch.testing.assert_close(loaded["weights"]["a"], state["weights"]["a"])
    assert torch.equal(loaded["weights"]["b"], state["weights"]["b"])
    assert set(loaded["by_int"]) == {0, 7} and loaded["by_int"][7] == "seven"
    assert loaded["list"][:4] == [1, 2.5, None, True] and loaded["list"][4].dtype == torch.bfloat16


def test_files_are_safetensors_and_json_only(tmp_path):
    model, optimiser = _model_and_optimiser()
    json_path = save_checkpoint(tmp_path, 12, {"model": model.state_dict(), "optimiser": optimiser.state_dict()}, {})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["latest.json", "step_000000012.json",
                                                                 "step_000000012.safetensors"]
    record = json.loads(json_path.read_text())
    assert record["step"] == 12 and record["tensors"] == "step_000000012.safetensors"
    assert latest_checkpoint(tmp_path) == json_path


def test_resuming_from_a_checkpoint_continues_exactly(tmp_path):
    straight, straight_optimiser = _model_and_optimiser()
    _train(straight, straight_optimiser, 20, torch.Generator().manual_seed(1))

    first, first_optimiser = _model_and_optimiser()
    generator = torch.Generator().manual_seed(1)
    _train(first, first_optimiser, 10, generator)
    save_checkpoint(tmp_path, 10, {"model": first.state_dict(), "optimiser": first_optimiser.state_dict(),
                                   "generator": generator.get_state()}, {})
    _, state, _ = load_checkpoint(tmp_path)
    resumed, resumed_optimiser = _model_and_optimiser(seed=99)  # different initial weights: all must come from the file
    resumed.load_state_dict(state["model"])
    resumed_optimiser.load_state_dict(state["optimiser"])
    resumed_generator = torch.Generator()
    resumed_generator.set_state(state["generator"])
    _train(resumed, resumed_optimiser, 10, resumed_generator)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(3)}, {})

    def crash(tensors, filename):
        with open(filename, "wb") as half_written:
            half_written.write(b"\x00" * 10)
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, {"w": torch.zeros(3)}, {})
    step, state, _ = load_checkpoint(tmp_path)
    assert step == 1 and torch.equal(state["w"], torch.ones(3))
    assert not list(tmp_path.glob(".*tmp*")) and not (tmp_path / "step_000000002.safetensors").exists()


def test_a_crash_before_the_pointer_moves_keeps_the_previous_latest(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(3)}, {})
    replace = checkpoint.os.replace

    def crash_on_pointer(source, target):
        if str(target).endswith("latest.json"):
            raise OSError("disk full")
        replace(source, target)

    monkeypatch.setattr(checkpoint.os, "replace", crash_on_pointer)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 2, {"w": torch.zeros(3)}, {})
    assert load_checkpoint(tmp_path)[0] == 1


def test_mismatched_config_and_missing_checkpoints_give_clear_errors(tmp_path):
    config = dataclasses.asdict(field_config("smoke"))
    save_checkpoint(tmp_path, 5, {"w": torch.ones(1)}, config)
    other = dataclasses.asdict(field_config("smoke", mlp_hidden=48, near=0.7))
    with pytest.raises(CheckpointError, match=r"mlp_hidden: checkpoint has 32, expected 48; near: checkpoint has 0\.8"):
        load_checkpoint(tmp_path, expected_config=other)
    nested = dataclasses.asdict(field_config("smoke"))
    nested["encoder"]["depth_planes"] = 4
    with pytest.raises(CheckpointError, match=r"encoder\.depth_planes: checkpoint has 8, expected 4"):
        load_checkpoint(tmp_path, expected_config=nested)
    assert load_checkpoint(tmp_path, expected_config=config)[0] == 5
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="empty_run: no checkpoint here"):
        load_checkpoint(tmp_path / "empty_run")
    with pytest.raises(CheckpointError, match="nowhere: no such checkpoint file or run folder"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "step_000000005.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read this checkpoint"):
        load_checkpoint(tmp_path)


def test_unsupported_values_are_refused_with_their_path():
    with pytest.raises(CheckpointError, match="model/extra: cannot store a set"):
        checkpoint.flatten_state({"model": {"extra": {1, 2}}})


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through Linux's /proc")
def test_every_file_reaches_the_disk_before_its_rename_and_the_rename_after(tmp_path, monkeypatch):
    """fsync(file) -> os.replace -> fsync(folder), for both files and the latest pointer, in that order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, target):
        events.append(("replace", str(source), str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path, 3, {"weights": torch.ones(2)}, {"lr": 1.0})
    replaces = [event for event in events if event[0] == "replace"]
    assert [Path(target).name for _, _, target in replaces] == ["step_000000003.safetensors", "step_000000003.json",
                                                                 "latest.json"]
    for _, temporary, target in replaces:
        at = events.index(("replace", temporary, target))
        assert events[at - 1] == ("fsync", str(Path(temporary).resolve())), events  # the bytes first
        assert events[at + 1] == ("fsync", str(Path(target).parent.resolve())), events  # then the folder entry
    assert load_checkpoint(tmp_path)[0] == 3
