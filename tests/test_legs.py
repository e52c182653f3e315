import json

import pytest

from genvs.artefacts import shipped_path
from genvs.data.synthetic import make_dataset
from genvs.legs import HEADLINE, compare, comparison_table, headline_scores, leg_record, legs_table, run_leg, ship_leg
from genvs.training import PRESETS


def _scores(**means) -> dict:
    scores = {row: {"mean": 1.0, "std": 0.1} for row in HEADLINE}
    for row, mean in means.items():
        scores[row.replace("_", " ")] = {"mean": mean, "std": 0.1}
    return scores


def test_headline_scores_read_an_evaluation_file():
    results = json.loads((shipped_path("lesson") / "evaluation.json").read_text())
    scores = headline_scores(results)
    assert list(scores) == list(HEADLINE)
    stochastic = results["metrics"]["stochastic"]["psnr"]
    assert scores["stochastic PSNR"] == {"mean": stochastic["mean"], "std": stochastic["std"]}
    assert scores["unseen TV to prior"]["mean"] == results["attribute_metrics"]["stochastic"]["unseen_tv"]["mean"]
    del results["attribute_metrics"]["stochastic"]
    with pytest.raises(KeyError, match="unseen TV to prior"):
        headline_scores(results)


def test_a_row_moves_when_the_means_differ_by_more_than_one_spread():
    reference = _scores()
    verdicts = compare(_scores(**{"stochastic PSNR": 1.11, "regression PSNR": 0.89, "unseen TV to prior": 0.85,
                                  "stochastic detail": 1.09}), reference)
    assert verdicts["stochastic PSNR"] == "better" and verdicts["regression PSNR"] == "worse"
    assert verdicts["unseen TV to prior"] == "better"  # lower is better
    assert verdicts["stochastic detail"] == "within" and verdicts["seen accuracy"] == "within"
    assert compare(_scores(**{"unseen TV to prior": 1.2}), reference)["unseen TV to prior"] == "worse"
    table = comparison_table(_scores(**{"unseen TV to prior": 1.2}), reference, ("v2", "v3")).splitlines()
    assert table[0] == "| row | v2 | v3 | v3 vs v2 |" and len(table) == 2 + len(HEADLINE)
    assert "| unseen TV to prior | 1.000 ± 0.100 | 1.200 ± 0.100 | worse |" in table


def _write_run(folder, steps=(10, 20, 30), seconds=(30.0, 60.0, 90.0)):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"batch_size": 4, "target_views": 2, "grad_accumulation": 3}))
    rows = ["step,loss,seconds"] + [f"{step},0.5,{second}" for step, second in zip(steps, seconds)]
    (folder / "log.csv").write_text("\n".join(rows) + "\n")


def test_a_leg_record_counts_steps_images_and_minutes(tmp_path):
    _write_run(tmp_path / "run")
    results = json.loads((shipped_path("lesson") / "evaluation.json").read_text())
    record = leg_record(tmp_path / "run", results, "CPU: 1 thread", "genvs/shipped/lesson", world_size=2)
    assert record["steps"] == 30 and record["target_images"] == 30 * 4 * 2 * 3 * 2
    assert record["minutes"] == 3.0 and record["init"] == "genvs/shipped/lesson"
    table = legs_table([record, record]).splitlines()
    assert len(table) == 4 and table[2].startswith("| 1 | CPU: 1 thread | `genvs/shipped/lesson` | 30 | 1,440 | 3 |")
    assert f"{results['metrics']['stochastic']['psnr']['mean']:.2f} ±" in table[3]


def _write_leg(folder, scores, step):
    (folder / "export").mkdir(parents=True)
    (folder / "export" / f"step_{step:09d}.safetensors").write_bytes(b"new weights")
    (folder / "export" / "latest.json").write_text(json.dumps({"checkpoint": f"step_{step:09d}.json"}))
    (folder / "leg.json").write_text(json.dumps({"steps": step, "scores": scores}))
    results = {"metrics": {}, "checkpoint": {"path": str(folder / "export"), "step": step}}
    for row, (section, method, metric, _) in HEADLINE.items():
        results.setdefault(section, {}).setdefault(method, {})[metric] = scores[row]
    (folder / "evaluation.json").write_text(json.dumps(results))


def test_ship_leg_replaces_the_weights_only_when_no_row_got_worse(tmp_path):
    shipped = tmp_path / "shipped"
    _write_leg(tmp_path / "first", _scores(), 100)
    with pytest.raises(ValueError, match="nothing to compare"):
        ship_leg(tmp_path / "first", shipped)
    assert ship_leg(tmp_path / "first", shipped, force=True) == {}
    _write_leg(tmp_path / "worse", _scores(**{"seen accuracy": 0.5}), 200)
    with pytest.raises(ValueError, match=r"\['seen accuracy'\]: not shipped"):
        ship_leg(tmp_path / "worse", shipped)
    assert sorted(path.name for path in shipped.glob("step_*")) == ["step_000000100.safetensors"]
    _write_leg(tmp_path / "better", _scores(**{"stochastic detail": 1.5}), 300)
    verdicts = ship_leg(tmp_path / "better", shipped)
    assert verdicts["stochastic detail"] == "better" and set(verdicts.values()) == {"better", "within"}
    assert sorted(path.name for path in shipped.glob("step_*")) == ["step_000000300.safetensors"]
    assert [record["steps"] for record in json.loads((shipped / "legs.json").read_text())] == [100, 300]
    assert json.loads((shipped / "evaluation.json").read_text())["checkpoint"]["path"] == str(shipped)


def test_run_leg_trains_exports_scores_and_a_second_leg_starts_from_the_first(tmp_path):
    data = make_dataset(tmp_path / "cars", n_objects=10, n_views=8, image_size=32, seed=0, progress=False)
    first, examples = run_leg(PRESETS["smoke"], data, data, tmp_path / "leg1", 3, progress=False)
    assert first["steps"] == 3 and first["init"] is None and first["target_images"] == 3 * 4 * 2
    assert (tmp_path / "leg1" / "export" / "step_000000003.safetensors").is_file()
    evaluation = json.loads((tmp_path / "leg1" / "evaluation.json").read_text())
    assert evaluation["protocol"]["max_objects"] == 20 and len(evaluation["objects"]) == 1  # the one test car
    assert first["scores"] == headline_scores(evaluation)
    assert examples["input"].shape == (1, 3, 32, 32) and examples["stochastic"].shape[:2] == (1, 3)
    second, _ = run_leg(PRESETS["smoke"], data, data, tmp_path / "leg2", 2, init=tmp_path / "leg1" / "export",
                     progress=False)
    assert second["steps"] == 2 and second["init"] == str(tmp_path / "leg1" / "export")
