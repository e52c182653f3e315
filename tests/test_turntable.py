import kornia
import pytest
import torch

from genvs.cameras import trajectory_from
from genvs.data.srn import SRNDataset
from genvs.data.synthetic import make_dataset, read_attributes
from genvs.metrics import reprojection_consistency
from genvs.probe import dataset_seed
from genvs.turntable import TurntableConfig, compare_turntables, true_orbit

SIZE = 32


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cars"), n_objects=10, n_views=6, image_size=SIZE, seed=3,
                        progress=False)


def test_the_true_orbit_is_what_the_dataset_wrote(cars):
    dataset = SRNDataset(cars, split="test", views_per_item=None)
    views = dataset.load_views(0, list(range(6)))
    truth = true_orbit(dataset.objects[0].folder, dataset_seed(cars), views["K"][0], views["c2w"], SIZE)
    # the PNGs hold 8 bits: the re-rendered views equal them to within one step of 2/255 in [-1, 1]
    assert (truth["images"] - views["images"]).abs().max() <= 2 / 255 + 1e-6
    record = read_attributes(dataset.objects[0].folder)
    for index, view in enumerate(record["views"]):
        assert {name for name, shows in truth["shows"].items() if shows[index]} == set(view["shows"])
    assert ((truth["depth"] > 0) == (truth["opacity"] > 0)).all() and truth["opacity"].any()


def test_a_route_that_returns_the_truth_scores_as_the_truth_and_a_frozen_frame_does_not(cars):
    def oracle(images, K, c2w, K_t, c2w_t, seeds):
        dataset = SRNDataset(cars, split="test", views_per_item=None)
        return torch.stack([true_orbit(dataset.objects[0].folder, dataset_seed(cars), K_t[0, 0], c2w_t[0],
                                       SIZE)["images"]])

    def frozen(images, K, c2w, K_t, c2w_t, seeds):  # the input view at every frame: no turn at all
        return images[:, :1].expand(-1, c2w_t.shape[1], -1, -1, -1)

    config = TurntableConfig(n_objects=1, n_frames=6)
    result = compare_turntables({"oracle": oracle, "frozen": frozen}, cars, None, config, progress=False)
    scores = {name: {metric: value["mean"] for metric, value in row.items()} for name, row in result["scores"].items()}
    assert scores["oracle"]["consistency"] == scores["truth"]["consistency"] > 15
    assert scores["oracle"]["psnr"] == float("inf") and scores["oracle"]["ssim"] == pytest.approx(1.0)
    assert scores["frozen"]["consistency"] < scores["truth"]["consistency"] - 3  # the true depth catches a still car
    assert torch.equal(result["frames"]["frozen"][0, 3], result["inputs"]["images"][0, 0])
    with pytest.raises(ValueError, match="fewer than n_objects"):
        compare_turntables({}, cars, None, TurntableConfig(n_objects=5), progress=False)


def test_the_consistency_gain_ranks_the_true_orbit_first_where_the_warp_psnr_prefers_blur(cars):
    dataset = SRNDataset(cars, split="test", views_per_item=None)
    view = dataset.load_views(0, [0])
    c2w = trajectory_from(view["c2w"][0], 12)
    K = view["K"].expand(12, 3, 3)
    truth = true_orbit(dataset.objects[0].folder, dataset_seed(cars), view["K"][0], c2w, SIZE)
    frozen = truth["images"].clone()
    frozen[6] = frozen[5]  # one frame does not turn with the camera
    noise = torch.randn(truth["images"].shape, generator=torch.Generator().manual_seed(0))
    orbits = {"truth": truth["images"], "blurred": kornia.filters.gaussian_blur2d(truth["images"], (5, 5), (0.5, 0.5)),
              "frozen": frozen, "noisy": truth["images"] + 0.1 * noise}
    scores = {name: reprojection_consistency(frames, truth["depth"], truth["opacity"], K, c2w)
              for name, frames in orbits.items()}
    psnr, gain = ({name: float(score[key].nanmean()) for name, score in scores.items()} for key in ("psnr", "gain"))
    assert psnr["blurred"] > psnr["truth"]  # the reason for the gain (measured: 23.0 dB against 22.3)
    for other in ("blurred", "frozen", "noisy"):  # measured: truth 8.2 dB; blurred 6.9, frozen 6.6, noisy 6.6
        assert gain[other] < gain["truth"] - 1


def test_route_compute_counts_every_model_a_route_trained_or_stands_on():
    from genvs.turntable import ROUTE_MODELS, route_compute

    controlnet = route_compute("controlnet")
    assert list(controlnet["models"]) == ["lesson", "controlnet_base", "controlnet"]  # the frozen field and base count
    # the model cards' figures: 2000 steps x 8 cars x 4 targets; 1,379,232 and 3,645,891 parameters; v3's one leg
    assert controlnet["models"]["controlnet"]["target_images"] == 2000 * 8 * 4
    assert controlnet["models"]["controlnet"]["parameters"] == 1_379_232
    assert controlnet["models"]["controlnet_base"]["parameters"] == 3_645_891
    assert controlnet["models"]["lesson"]["target_images"] == 96_000
    for key in ("parameters", "target_images", "minutes"):
        assert controlnet[key] == pytest.approx(sum(model[key] for model in controlnet["models"].values()))
    two_d = route_compute("2d_only")
    assert two_d["models"].keys() == {"controlnet_base", "raycond"}  # no field
    # what the field buys, on equal terms: the 2D-only route saw as many training images as lesson 07's route with
    # the field it stands on (its card: 5000 steps x 8 cars x 4 targets, on the same base)
    assert two_d["models"]["raycond"]["target_images"] == 5000 * 8 * 4
    assert two_d["target_images"] == controlnet["target_images"]
    assert set(ROUTE_MODELS) == {"genvs_independent", "genvs_autoregressive", "controlnet", "multiview_chunked",
                                 "multiview_autoregressive", "2d_only"}


def test_training_compute_says_which_record_is_missing(tmp_path):
    from genvs.turntable import training_compute

    with pytest.raises(FileNotFoundError, match="no legs.json"):
        training_compute(tmp_path)
