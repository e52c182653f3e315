import shutil

import pytest
import torch

from genvs.artefacts import is_shipped
from genvs.checkpoint import CheckpointError
from genvs.data.cars import ATTRIBUTES
from genvs.data.srn import SRNFormatError
from genvs.data.synthetic import make_dataset
from genvs.probe import (
    AttributeProbe,
    ProbeConfig,
    _masked_cross_entropy,
    attribute_views,
    blend_confidence,
    blended_views,
    load_probe,
    probe_accuracy,
    save_probe,
    train_probe,
)


@pytest.fixture(scope="module")
def new_cars(tmp_path_factory):
    """Cars of a seed the shipped probe never saw: 12 objects x 6 views at 32 px."""
    return make_dataset(tmp_path_factory.mktemp("cars"), n_objects=12, n_views=6, image_size=32, seed=7,
                        progress=False)


def test_the_shipped_probe_reads_cars_it_never_saw(new_cars):
    assert is_shipped("probe"), "the attribute probe ships in genvs/shipped/probe"
    probe, record = load_probe()
    views = attribute_views(new_cars, "train", 32)
    accuracy = probe_accuracy(probe, views)
    assert accuracy["all"]["views"] > 50 and accuracy["all"]["accuracy"] >= 0.95
    assert record["accuracy"]["all"]["accuracy"] >= 0.95  # as measured when it was trained
    # what it reads depends on the attribute's colour: repaint nothing, change the label, and it is wrong
    wrong = {**views, "labels": {name: (label + 1) % len(ATTRIBUTES[name]) for name, label in views["labels"].items()}}
    assert probe_accuracy(probe, wrong)["all"]["accuracy"] < 0.1


def test_the_shipped_probe_reads_an_average_of_the_values_as_uncertain(new_cars):
    # What a regression predicts for a side it cannot see is the average of the possible values: a calibrated
    # probe must not read it as surely as a true view (it was trained on blends with soft labels).
    probe, _ = load_probe()
    confidence = blend_confidence(probe, new_cars, attribute_views(new_cars, "train", 32), seed=0, image_size=32,
                                  n_blends=40)
    assert confidence["true"] > 0.95 and confidence["equal_blend"] < confidence["true"] - 0.25
    assert confidence["chance"] == pytest.approx(1 / 3, abs=0.2)


def test_blends_mix_one_attribute_and_label_it_with_the_mixture(new_cars):
    views = attribute_views(new_cars, "train", 32)
    blends = blended_views(new_cars, views, n_blends=6, seed=0, image_size=32)
    assert blends["images"].shape == (6, 3, 32, 32) and blends["images"].abs().max() <= 1
    soft = torch.zeros(6, dtype=torch.long)
    for name, targets in blends["targets"].items():
        torch.testing.assert_close(targets.sum(-1), torch.ones(6))
        soft += (targets.amax(-1) < 1).long()
    assert (soft == 1).all()  # exactly one attribute per blend has a soft label (Dirichlet weights are never one-hot)


def test_attribute_views_label_each_view_with_what_it_shows(new_cars):
    views = attribute_views(new_cars, "test", 32)
    assert views["images"].shape == (6, 3, 32, 32)
    assert not (views["shows"]["left_panel"] & views["shows"]["right_panel"]).any()
    assert all(int(views["labels"][name].max()) < len(values) for name, values in ATTRIBUTES.items())


def test_the_loss_counts_each_attribute_only_where_it_is_shown():
    logits = {"a": torch.tensor([[2.0, 0.0], [0.0, 1.0]]), "b": torch.tensor([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])}
    labels = {"a": torch.tensor([0, 0]), "b": torch.tensor([2, 1])}
    shows = {"a": torch.tensor([True, False]), "b": torch.tensor([True, True])}
    log_softmax = {name: value.log_softmax(-1) for name, value in logits.items()}
    expected = -(log_softmax["a"][0, 0] + log_softmax["b"][0, 2] + log_softmax["b"][1, 1]) / 3
    torch.testing.assert_close(_masked_cross_entropy(logits, labels, shows), expected)
    relabelled = {**labels, "a": torch.tensor([0, 1])}  # only a view that does not show "a" changes
    torch.testing.assert_close(_masked_cross_entropy(logits, relabelled, shows), expected)


def test_a_trained_probe_saves_and_loads_with_its_record(new_cars, tmp_path):
    probe, record = train_probe(new_cars, ProbeConfig(steps=5, batch_size=8, width=8, blends=4), progress=False)
    assert record["train_views"] == 60 and set(record["accuracy"]) == {*ATTRIBUTES, "all"}
    assert set(record["blend_confidence"]) == {"true", "equal_blend", "chance"}
    save_probe(probe, tmp_path / "probe", record)
    loaded, loaded_record = load_probe(tmp_path / "probe")
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    for name, probabilities in probe.predict(images).items():
        torch.testing.assert_close(loaded.predict(images)[name], probabilities)
    assert loaded_record["accuracy"] == record["accuracy"] and isinstance(loaded, AttributeProbe)


def test_missing_probe_or_labels_say_what_to_do(tmp_path, new_cars):
    with pytest.raises(CheckpointError, match="train-probe"):
        load_probe(tmp_path / "nowhere")
    unlabelled = shutil.copytree(new_cars, tmp_path / "cars")
    (unlabelled / "cars_val" / "car_00010" / "attributes.json").unlink()
    with pytest.raises(SRNFormatError, match="car_00010: no attributes.json"):
        attribute_views(unlabelled, "val", 32)
