import dataclasses
import json
import math

import pytest
import torch
from test_sampling import batch_invariant, perturbed

from genvs.data.srn import SRNFormatError
from genvs.data.synthetic import make_dataset
from genvs.evaluation import METHODS, PROTOCOLS, EvaluationConfig, evaluate, results_table, target_view_ids
from genvs.model import GeNVS, genvs_config
from genvs.routes import RenderRoute
from genvs.sampling import sampling_options


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
        assert set(row) == {"psnr", "ssim", "sharpness", "detail", "consistency", "consistency_gain"}
        assert all(len(row[name]["per_object"]) == 2 and math.isfinite(row[name]["mean"]) for name in row)
    assert results["views"] == [{"input": 0, "targets": [1, 3, 5]}] * 2
    assert results["examples"]["truth"].shape == (1, 3, 3, 32, 32)
    assert results["examples"]["autoregressive"].shape == (1, 3, 3, 32, 32)
    again = evaluate(model, cars, config, lpips=False, examples=0, progress=False)
    assert again["metrics"] == results["metrics"]
    other_seed = evaluate(model, cars, dataclasses.replace(config, seed=1), lpips=False, examples=0, progress=False)
    assert other_seed["metrics"]["stochastic"] != results["metrics"]["stochastic"]
    assert other_seed["metrics"]["regression"] == results["metrics"]["regression"]  # no randomness in regression


def test_the_field_alone_scores_as_in_the_full_protocol_without_sampling(cars, model, monkeypatch):
    """methods=("regression",) gives the regression's (and the truth's) scores of the whole protocol, bit for bit,
    and never calls a sampler."""
    import genvs.routes
    import genvs.sampling

    config = dataclasses.replace(PROTOCOLS["smoke"], target_views=3, steps=2)
    full = evaluate(model, cars, config, lpips=False, examples=0, progress=False)

    def no_sampling(*args, **kwargs):
        raise AssertionError("the field alone must not sample")

    monkeypatch.setattr(genvs.sampling, "sample_images", no_sampling)
    monkeypatch.setattr(genvs.routes, "generate_trajectory", no_sampling)
    alone = evaluate(model, cars, dataclasses.replace(config, methods=("regression",)), lpips=False, examples=0,
                     progress=False)
    assert list(alone["metrics"]) == ["regression", "truth"]
    assert alone["metrics"]["regression"] == full["metrics"]["regression"]
    assert alone["metrics"]["truth"] == full["metrics"]["truth"]
    def same(a, b):  # NaN (nothing to score) equals NaN here
        return json.dumps(a) == json.dumps(b)

    assert same(alone["attribute_metrics"]["regression"], full["attribute_metrics"]["regression"])


def test_a_sampler_returning_the_truth_scores_perfectly(cars, model, monkeypatch):
    # Replace the sampler by a copy of the truth: its PSNR must be infinite, SSIM, sharpness and detail 1, and the
    # probe must read in it what it reads in the truth.
    import genvs.sampling

    def perfect(denoiser, cond, **options):  # the 5 targets are sampled in one chunk: views 0, 2, 3, 4 and 5
        return views["images"][1:1 + cond.shape[0]]

    from genvs.data import SRNDataset
    dataset = SRNDataset(cars, split="test", views_per_item=None, image_size=32)
    views = dataset.load_views(0, [1, 0, 2, 3, 4, 5])
    monkeypatch.setattr(genvs.sampling, "sample_images", perfect)
    config = EvaluationConfig(max_objects=1, input_view=1, target_views=0, steps=2)
    results = evaluate(model, cars, config, lpips=False, progress=False)
    row = results["metrics"]["deterministic"]
    assert math.isinf(row["psnr"]["mean"])
    assert row["ssim"]["mean"] == pytest.approx(1.0) and row["sharpness"]["mean"] == pytest.approx(1.0)
    assert row["detail"]["mean"] == pytest.approx(1.0)
    attributes = results["attribute_metrics"]
    for name in ("seen_accuracy", "unseen_confidence", "unseen_tv"):  # input view 1 shows the left side and the
        truth = attributes["truth"][name]["mean"]                    # roof; views 2 and 4 the right side
        assert math.isfinite(truth) and attributes["deterministic"][name]["mean"] == pytest.approx(truth)
    assert attributes["deterministic"]["disagreement_unseen"]["mean"] == 0  # both draws are the truth
    # KID's unbiased estimate for a copy of the truth is at or below 0 (no diagonal terms in k_xx, k_yy)
    assert attributes["deterministic"]["kid"]["mean"] <= 0 < attributes["regression"]["kid"]["mean"]


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

    import genvs.routes

    generate_trajectory, batch_sizes = genvs.routes.generate_trajectory, []

    def recording(model, images, *args, **options):  # how many objects each call generates
        batch_sizes.append(images.shape[0])
        return generate_trajectory(model, images, *args, **options)

    monkeypatch.setattr(genvs.routes, "generate_trajectory", recording)
    batched, alone = PROTOCOLS["smoke"], dataclasses.replace(PROTOCOLS["smoke"], object_batch=1)
    assert batched.object_batch == 2
    unet_model = copy.deepcopy(model)
    perturbed(unet_model.denoiser)
    for evaluated, exact in ((batch_invariant(model), True), (unet_model, False)):
        batch_sizes.clear()
        together = evaluate(evaluated, cars, batched, lpips=False, examples=0, progress=False)["metrics"]
        one_by_one = evaluate(evaluated, cars, alone, lpips=False, examples=0, progress=False)["metrics"]
        assert batch_sizes == [2, 2, 1, 1, 1, 1]  # two draws each (the attribute metrics)
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
    with pytest.raises(ValueError, match="include 'regression'"):
        EvaluationConfig(methods=("stochastic",))
    with pytest.raises(ValueError, match="must be among"):
        EvaluationConfig(methods=("regression", "heun"))
    with pytest.raises(SRNFormatError, match="has 6 views, no input view 64"):
        evaluate(model, cars, EvaluationConfig(max_objects=1, input_view=64), lpips=False, progress=False)


def test_every_method_and_the_truth_are_warped_with_one_depth(cars, model, monkeypatch):
    """Consistency scores differences between images, not between depths: one depth and opacity for all."""
    import genvs.evaluation as evaluation

    seen = []

    def recording(frames, depth, opacity, K, c2w):
        seen.append((depth, opacity))
        return {"psnr": torch.zeros(frames.shape[0] - 1), "gain": torch.zeros(frames.shape[0] - 1)}

    monkeypatch.setattr(evaluation, "reprojection_consistency", recording)
    config = dataclasses.replace(PROTOCOLS["smoke"], max_objects=1, target_views=3, steps=2)
    results = evaluate(model, cars, config, lpips=False, progress=False)
    assert len(seen) == len(METHODS) + 1 and all("consistency" in results["metrics"][name]
                                                 for name in (*METHODS, "truth"))
    depth, opacity = seen[0]
    assert depth.shape == (3, 32, 32)  # the image size
    for other_depth, other_opacity in seen[1:]:
        assert torch.equal(other_depth, depth) and torch.equal(other_opacity, opacity)


def test_attribute_scores_by_hand():
    # One object, 2 draws, 3 targets; attribute "a" (2 values, true value 0) is seen in target 0, unseen in
    # target 1 and not shown in target 2.
    from genvs.evaluation import SHOWN_IN_BOTH, SHOWN_IN_TARGET_ONLY, _per_object_attribute_scores, _unseen_tv

    probabilities = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]],    # draw 0 reads 0, 1, (0)
                                  [[0.6, 0.4], [0.7, 0.3], [0.1, 0.9]]])   # draw 1 reads 0, 0, (1)
    reads = {"label": {"a": 0}, "kind": {"a": torch.tensor([SHOWN_IN_BOTH, SHOWN_IN_TARGET_ONLY, 0])},
             "probabilities": {"m": {"a": probabilities}}}
    scores = _per_object_attribute_scores(reads, "m")
    assert scores == pytest.approx({"seen_accuracy": 1.0, "unseen_confidence": 0.8, "disagreement_seen": 0.0,
                                    "disagreement_unseen": 1.0})
    # the unseen reads over both draws are {1, 0}: exactly the uniform prior of 2 values
    assert _unseen_tv([reads], "m") == 0.0
    assert _unseen_tv([reads, reads, {**reads, "probabilities": {"m": {"a": probabilities[:, :, [1, 0]]}}}], "m") == \
        pytest.approx(0.0)
    one_sided = {**reads, "probabilities": {"m": {"a": torch.tensor([[[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]]])}}}
    assert _unseen_tv([one_sided], "m") == pytest.approx(0.5)  # always value 0: TV((1, 0), (1/2, 1/2))
    assert set(_per_object_attribute_scores(one_sided, "m")) == {"seen_accuracy", "unseen_confidence"}  # 1 draw


def test_draws_add_attribute_scores_without_changing_the_other_metrics(cars, model):
    config = dataclasses.replace(PROTOCOLS["smoke"], max_objects=2, target_views=4, steps=2)
    two = evaluate(model, cars, config, lpips=False, progress=False)
    one = evaluate(model, cars, dataclasses.replace(config, draws=1), lpips=False, progress=False)
    assert two["metrics"] == one["metrics"]
    assert "disagreement_unseen" in two["attribute_metrics"]["stochastic"]
    assert "disagreement_unseen" not in one["attribute_metrics"]["stochastic"]
    table = results_table(two)
    assert "unseen: probe confidence" in table and "| truth |" in table.split("Hidden-side")[1]


def test_attribute_metrics_are_skipped_with_the_reason(cars, model, tmp_path):
    import shutil

    config = dataclasses.replace(PROTOCOLS["smoke"], max_objects=1, steps=1)
    results = evaluate(model, cars, config, lpips=False, attributes=False, progress=False)
    assert results["attribute_metrics"] == {} and "not asked for" in results_table(results)
    unlabelled = shutil.copytree(cars, tmp_path / "cars")
    for path in (unlabelled / "cars_test").rglob("attributes.json"):
        path.unlink()  # as real SRN cars: no labels
    results = evaluate(model, unlabelled, config, lpips=False, progress=False)
    assert results["attribute_metrics"] == {} and "has no attributes.json" in results["attributes"]["reason"]


def test_a_route_is_sampled_on_the_same_condition_and_seeds_as_the_samplers(cars, model):
    # a route that is GeNVS's own denoiser with the stochastic options must score exactly as the stochastic method
    config = dataclasses.replace(PROTOCOLS["smoke"], max_objects=2, target_views=3, steps=2)
    routes = {"copy": RenderRoute(model, options=sampling_options("stochastic", config.steps))}
    results = evaluate(model, cars, config, lpips=False, progress=False, routes=routes, examples=1)
    assert list(results["metrics"]) == ["regression", "deterministic", "stochastic", "copy", "autoregressive", "truth"]
    assert results["metrics"]["copy"] == results["metrics"]["stochastic"]
    same = [json.dumps(results["attribute_metrics"][method], sort_keys=True) for method in ("copy", "stochastic")]
    assert same[0] == same[1]  # as JSON: NaN (an object with nothing to score) equals NaN there
    assert torch.equal(results["examples"]["copy"], results["examples"]["stochastic"])
    with pytest.raises(ValueError, match="clash"):
        evaluate(model, cars, config, lpips=False, progress=False, routes={"stochastic": routes["copy"]})


def test_the_samplers_sample_the_input_only_render_chunk_by_chunk_from_the_chunks_seed(cars, model):
    """The two samplers' predictions are sample_images of GeNVS's denoiser on the input-only field's render of each
    chunk of target_batch targets, seeded derive_seed(s_i, t): the protocol's seeds, computed here by hand."""
    from genvs.data import SRNDataset
    from genvs.denoiser import k_diffusion
    from genvs.sampling import sample_images
    from genvs.seeding import derive_seed

    config = dataclasses.replace(PROTOCOLS["smoke"], max_objects=1, target_views=5, steps=2, target_batch=2,
                                 methods=("regression", "deterministic", "stochastic"))
    results = evaluate(model, cars, config, lpips=False, attributes=False, progress=False, examples=1)
    views = SRNDataset(cars, split="test", views_per_item=None, image_size=32).load_views(0, [0, 1, 2, 3, 4])
    seed = derive_seed(config.seed, 0)  # object 0, draw 0
    for mode in ("deterministic", "stochastic"):
        chunks = []
        for start in (0, 2):  # the examples keep 3 targets: chunks [0, 1] and [2, 3]
            with k_diffusion.utils.eval_mode(model), torch.no_grad():
                encoded = model.field.encode(views["images"][None, :1], views["K"][None, :1], views["c2w"][None, :1])
                cond, _ = model.condition(encoded, views["K"][None, 1 + start:3 + start],
                                          views["c2w"][None, 1 + start:3 + start])
            chunks.append(sample_images(model.denoiser, cond, seed=derive_seed(seed, start),
                                        **sampling_options(mode, config.steps)))
        assert torch.equal(results["examples"][mode][0], torch.cat(chunks)[:3])
