import dataclasses
import math

import pytest
import torch

from genvs.data.srn import SRNFormatError
from genvs.data.synthetic import make_dataset
from genvs.evaluation import METHODS, PROTOCOLS, EvaluationConfig, evaluate, results_table, target_view_ids
from genvs.model import GeNVS, genvs_config
from test_sampling import batch_invariant, perturbed


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cars"), n_objects=20, n_views=6, image_size=32, seed=0,
                        progress=False)


@pytest.fixture(scope="module")
def model():
    return GeNVS(genvs_config("smoke"), seed=0)


def test_target_views_are_spread_in_order_without_the_input():
    assert target_view_ids(10, 0, 3) == [1, 5, 9]
    assert target_view_ids(10, 4, 0) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert target_view_ids(251, 64, 0) == [view for view in range(251) if view != 64]  # SRN cars' protocol
    assert target_view_ids(5, 2, 99) == [0, 1, 3, 4]


def test_evaluation_scores_every_method_reproducibly(cars, model):
    config = dataclasses.replace(PROTOCOLS["smoke"], target_views=3, steps=2, target_batch=2)
    results = evaluate(model, cars, config, lpips=False, examples=1, progress=False)
    assert list(results["metrics"]) == [*METHODS, "truth"]
    for method in METHODS:
        row = results["metrics"][method]
        assert set(row) == {"psnr", "ssim", "sharpness", "consistency"}
        assert all(len(row[name]["per_object"]) == 2 and math.isfinite(row[name]["mean"]) for name in row)
    assert results["views"] == [{"input": 0, "targets": [1, 3, 5]}] * 2
    assert results["examples"]["truth"].shape == (1, 3, 3, 32, 32)
    assert results["examples"]["autoregressive"].shape == (1, 3, 3, 32, 32)
    again = evaluate(model, cars, config, lpips=False, examples=0, progress=False)
    assert again["metrics"] == results["metrics"]
    other_seed = evaluate(model, cars, dataclasses.replace(config, seed=1), lpips=False, examples=0, progress=False)
    assert other_seed["metrics"]["stochastic"] != results["metrics"]["stochastic"]
    assert other_seed["metrics"]["regression"] == results["metrics"]["regression"]  # no randomness in regression


def test_a_sampler_returning_the_truth_scores_perfectly(cars, model, monkeypatch):
    # Replace the sampler by a copy of the truth: its PSNR must be infinite, SSIM 1 and sharpness 1.
    import genvs.evaluation as evaluation

    def perfect(denoiser, cond, **options):  # the 3 targets are sampled in one chunk: views 1, 3 and 5
        return views["images"][1:1 + cond.shape[0]]

    from genvs.data import SRNDataset
    dataset = SRNDataset(cars, split="test", views_per_item=None, image_size=32)
    views = dataset.load_views(0, [0, 1, 3, 5])
    monkeypatch.setattr(evaluation, "sample_images", perfect)
    config = EvaluationConfig(max_objects=1, target_views=3, steps=2)
    row = evaluate(model, cars, config, lpips=False, progress=False)["metrics"]["deterministic"]
    assert math.isinf(row["psnr"]["mean"])
    assert row["ssim"]["mean"] == pytest.approx(1.0) and row["sharpness"]["mean"] == pytest.approx(1.0)


def test_results_table_has_a_row_per_method_and_says_why_lpips_is_missing(cars, model):
    config = dataclasses.replace(PROTOCOLS["smoke"], max_objects=1, steps=1)
    results = evaluate(model, cars, config, lpips=False, progress=False)
    table = results_table(results)
    for method in METHODS:
        assert f"| {method} |" in table
    assert "PSNR (dB)" in table and "LPIPS skipped: not asked for" in table


def test_objects_are_batched_in_order_with_equal_target_counts():
    from genvs.evaluation import _object_batches

    assert _object_batches([3, 3, 3, 2, 2, 3], 2) == [[0, 1], [2], [3, 4], [5]]
    assert _object_batches([3, 3, 3, 2, 2, 3], 10) == [[0, 1, 2], [3, 4], [5]]
    assert _object_batches([3, 3, 3], 1) == [[0], [1], [2]]


def test_batching_objects_changes_scores_by_float_rounding_only(cars, model, monkeypatch):
    """The smoke protocol generates its 2 objects' trajectories in one batch: the same metrics JSON as one object at
    a time with networks independent of the batch (every random number is per object); with the smoke model (its
    U-Net perturbed, else it would output c_skip x exactly) the same but for the autoregressive scores' float
    rounding (measured: up to 2e-6, against 1e-5 allowed; the other methods are not batched)."""
    import copy

    import genvs.evaluation as evaluation

    generate_trajectory, batch_sizes = evaluation.generate_trajectory, []

    def recording(model, images, *args, **options):  # how many objects each call generates
        batch_sizes.append(images.shape[0])
        return generate_trajectory(model, images, *args, **options)

    monkeypatch.setattr(evaluation, "generate_trajectory", recording)
    batched, alone = PROTOCOLS["smoke"], dataclasses.replace(PROTOCOLS["smoke"], object_batch=1)
    assert batched.object_batch == 2
    unet_model = copy.deepcopy(model)
    perturbed(unet_model.denoiser)
    for evaluated, exact in ((batch_invariant(model), True), (unet_model, False)):
        batch_sizes.clear()
        together = evaluate(evaluated, cars, batched, lpips=False, examples=0, progress=False)["metrics"]
        one_by_one = evaluate(evaluated, cars, alone, lpips=False, examples=0, progress=False)["metrics"]
        assert batch_sizes == [2, 1, 1]
        if exact:
            assert together == one_by_one
            continue
        assert {method: row for method, row in together.items() if method != "autoregressive"} == \
            {method: row for method, row in one_by_one.items() if method != "autoregressive"}
        for metric, values in together["autoregressive"].items():
            assert values["per_object"] == pytest.approx(one_by_one["autoregressive"][metric]["per_object"],
                                                         rel=0, abs=1e-5), metric


def test_bad_protocols_are_refused_with_the_reason(cars, model):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        EvaluationConfig(steps=0)
    with pytest.raises(ValueError, match="object_batch must be >= 1"):
        EvaluationConfig(object_batch=0)
    with pytest.raises(SRNFormatError, match="has 6 views, no input view 64"):
        evaluate(model, cars, EvaluationConfig(max_objects=1, input_view=64), lpips=False, progress=False)


def test_every_method_and_the_truth_are_warped_with_one_depth(cars, model, monkeypatch):
    """Consistency scores differences between images, not between depths: one depth and opacity for all."""
    import genvs.evaluation as evaluation

    seen = []

    def recording(frames, depth, opacity, K, c2w):
        seen.append((depth, opacity))
        return {"psnr": torch.zeros(frames.shape[0] - 1)}

    monkeypatch.setattr(evaluation, "reprojection_consistency", recording)
    config = dataclasses.replace(PROTOCOLS["smoke"], max_objects=1, target_views=3, steps=2)
    results = evaluate(model, cars, config, lpips=False, progress=False)
    assert len(seen) == len(METHODS) + 1 and all("consistency" in results["metrics"][name] for name in (*METHODS, "truth"))
    depth, opacity = seen[0]
    assert depth.shape == (3, 32, 32)  # the image size
    for other_depth, other_opacity in seen[1:]:
        assert torch.equal(other_depth, depth) and torch.equal(other_opacity, opacity)
