"""genvs.viz.widgets: the generation panel samples what its sliders describe, with the route it is set to."""

import math

import matplotlib

matplotlib.use("Agg")

import torch

from genvs import cameras, viz


def test_the_generation_panel_samples_the_camera_its_sliders_describe():
    from genvs.model import PRESETS, GeNVS
    from genvs.sampling import sample_novel_views

    model = GeNVS(PRESETS["smoke"], seed=0)
    size = PRESETS["smoke"].field.encoder.image_size
    view = {"images": torch.zeros(1, 3, size, size), "K": cameras.make_intrinsics(1.0 * size, size / 2, size / 2)[None],
            "c2w": cameras.orbit(1)}
    panel = viz.GenerationPanel(model, {"car": view})
    panel.controls["steps"].value = 2
    panel.controls["azimuth"].value = 0.0
    at_input = panel.generate()
    panel.controls["azimuth"].value = 90.0
    turned = panel.generate()
    assert turned["samples"].shape == (1, 1, 3, size, size) and turned["depth"].shape == (1, 1, 16, 16)
    assert not torch.equal(at_input["features"], turned["features"])  # the field is rendered from the new camera
    target = cameras.rotate_around(view["c2w"][0], math.radians(90.0), 0.0)  # the sliders' camera, sampled directly
    expected = sample_novel_views(model, view["images"][None], view["K"][None], view["c2w"][None], view["K"][None],
                                  target[None, None], sampler="euler", steps=2, churn=0.4, guidance_scale=1.0, seed=0)
    assert all(torch.equal(turned[key], expected[key]) for key in ("samples", "features", "depth", "opacity"))
    panel.controls["seed"].value = 1
    assert not torch.equal(panel.generate()["samples"], turned["samples"])


def test_the_generation_panel_samples_with_the_route_it_is_set_to():
    from test_sampling import perturbed

    from genvs.model import PRESETS, GeNVS
    from genvs.routes import RenderRoute

    model = GeNVS(PRESETS["smoke"], seed=0)
    other = perturbed(GeNVS(PRESETS["smoke"], seed=0).denoiser)  # another denoiser of the same render
    size = PRESETS["smoke"].field.encoder.image_size
    view = {"images": torch.zeros(1, 3, size, size), "K": cameras.make_intrinsics(1.0 * size, size / 2, size / 2)[None],
            "c2w": cameras.orbit(1)}
    panel = viz.GenerationPanel(model, {"car": view}, routes={"GeNVS": RenderRoute(model),
                                                              "other": RenderRoute(model, other)})
    panel.controls["steps"].value = 2
    own = panel.generate()["samples"]
    default = viz.GenerationPanel(model, {"car": view})  # one route, GeNVS's: no route dropdown shown
    default.controls["steps"].value = 2
    assert torch.equal(default.generate()["samples"], own) and default.controls["route"].layout.display == "none"
    panel.controls["route"].value = "other"
    assert not torch.equal(panel.generate()["samples"], own)
    panel.controls["route"].value = "GeNVS"
    assert torch.equal(panel.generate()["samples"], own)
