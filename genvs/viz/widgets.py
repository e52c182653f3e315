"""Notebook widgets: a dataset browser, a slider over a run's sample grids, a panel that generates novel views.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping

import imageio.v3 as iio
import matplotlib.pyplot as plt

from genvs.cameras import rotate_around
from genvs.viz.images import field_rgb, masked_depth, to_display
from genvs.viz.plots import plot_cameras, show_images

__all__ = ['dataset_browser', 'samples_browser', 'GenerationPanel']


def dataset_browser(dataset, image_scale: float = 3.0):
    """An ipywidgets browser over an SRN-format dataset: pick an object and a view.

    Shows the image next to a 3D plot of all that object's cameras (the shown one in red).
    ``dataset`` is a :class:`genvs.data.SRNDataset` built with ``views_per_item=None``.
    """
    import ipywidgets as widgets

    cache: dict[int, dict] = {}

    def show(object_index: int, view: int):
        item = cache.setdefault(object_index, dataset[object_index])
        view = min(view, item["images"].shape[0] - 1)
        figure = plt.figure(figsize=(2 * image_scale, image_scale))
        image_ax = figure.add_subplot(1, 2, 1)
        image_ax.imshow(to_display(item["images"][view]).permute(1, 2, 0).numpy(), interpolation="nearest")
        image_ax.set_title(f"{item['object_id']} view {int(item['view_ids'][view])}", fontsize=9)
        image_ax.axis("off")
        camera_ax = figure.add_subplot(1, 2, 2, projection="3d")
        plot_cameras(item["c2w"], item["K"], item["images"].shape[-2:], ax=camera_ax, highlight=[view],
                     frustum_depth=0.15)
        plt.show()

    n_views = dataset.objects[0].n_views
    return widgets.interactive(
        show,
        object_index=widgets.IntSlider(0, 0, len(dataset) - 1, description="object"),
        view=widgets.IntSlider(0, 0, n_views - 1, description="view"),
    )


def samples_browser(run_dir: str | Path, image_scale: float = 2.0):
    """A slider over a run's ``samples/step_*.png`` grids: watch the samples change during training."""
    import ipywidgets as widgets

    paths = sorted(Path(run_dir).glob("samples/step_*.png"))
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no samples/step_*.png yet (sample grids are written during training)")
    steps = [int(path.stem.split("_")[1]) for path in paths]

    def show(step: int):
        image = iio.imread(paths[steps.index(step)])
        plt.figure(figsize=(image.shape[1] / 80 * image_scale / 2, image.shape[0] / 80 * image_scale / 2))
        plt.imshow(image, interpolation="nearest")
        plt.axis("off")
        plt.title(f"step {step}")
        plt.show()

    return widgets.interactive(show, step=widgets.SelectionSlider(options=steps, value=steps[-1], description="step"))


class GenerationPanel:
    """Widgets to sample one novel view: object, camera offsets, sampler settings, a Generate button.

    The target camera is the object's input camera moved by the azimuth and elevation sliders
    (:func:`genvs.cameras.rotate_around`); Generate shows the input, the feature field's RGB,
    depth and opacity for that camera, and the sample, side by side.

    Args:
        model: a trained :class:`genvs.model.GeNVS`; the field's RGB, depth and opacity shown are its render.
        objects: name -> one input view ``{"images": [1, 3, H, W], "K": [1, 3, 3], "c2w": [1, 4, 4]}``.
        routes: name -> a :class:`genvs.routes.Route` (default ``{"GeNVS": RenderRoute(model)}``), called with the
            controls' sampler options and the seed as its one object's seed; with more than one, a dropdown picks
            the route (lesson 07: GeNVS's own denoiser or the ControlNet route, each a
            :class:`genvs.routes.RenderRoute`).
    Display ``panel.widget``; ``panel.generate()`` does what the button does and keeps ``panel.result``.
    """

    def __init__(self, model, objects: dict[str, dict], routes: Mapping | None = None):
        import ipywidgets as widgets

        from genvs.routes import RenderRoute
        from genvs.sampling import CHURN_SAMPLERS, SAMPLERS

        self.model, self.objects, self.churn_samplers, self.result = model, objects, CHURN_SAMPLERS, None
        self.routes = routes or {"GeNVS": RenderRoute(model)}
        self.controls = {
            "object": widgets.Dropdown(options=list(objects), description="object"),
            "route": widgets.Dropdown(options=list(self.routes), description="route",
                                      layout=widgets.Layout(display=None if len(self.routes) > 1 else "none")),
            "azimuth": widgets.FloatSlider(value=60.0, min=-180.0, max=180.0, step=5.0, description="azimuth °"),
            "elevation": widgets.FloatSlider(value=0.0, min=-30.0, max=30.0, step=5.0, description="elevation °"),
            "sampler": widgets.Dropdown(options=list(SAMPLERS), value="euler", description="sampler"),
            "steps": widgets.IntSlider(value=25, min=2, max=100, description="steps"),
            "churn": widgets.FloatSlider(value=0.4, min=0.0, max=0.41, step=0.01, description="churn γ"),
            "guidance": widgets.FloatSlider(value=1.0, min=0.0, max=4.0, step=0.25, description="guidance"),
            "seed": widgets.IntText(value=0, description="seed"),
        }
        button = widgets.Button(description="Generate", button_style="primary")
        self.output = widgets.Output()
        button.on_click(lambda _: self._show())
        self.widget = widgets.VBox([widgets.HBox(list(self.controls.values())[:5]),
                                    widgets.HBox(list(self.controls.values())[5:] + [button]), self.output])

    def generate(self) -> dict:
        """Sample the view the controls describe; returns (and keeps) ``samples [1, 1, 3, H, W]`` and the field's
        render of the target, ``features [1, 1, C, s, s]``, ``depth`` and ``opacity [1, 1, s, s]``, on the CPU."""
        from genvs.sampling import render_condition

        value = {name: control.value for name, control in self.controls.items()}
        view = self.objects[value["object"]]
        target = rotate_around(view["c2w"][0], math.radians(value["azimuth"]), math.radians(value["elevation"]))
        churn = value["churn"] if value["sampler"] in self.churn_samplers else 0.0  # EDM's per-step gamma
        cameras = (view["images"][None], view["K"][None], view["c2w"][None], view["K"][None], target[None, None])
        samples = self.routes[value["route"]](*cameras, [value["seed"]], sampler=value["sampler"],
                                              steps=value["steps"], churn=churn, guidance_scale=value["guidance"])
        _, rendered = render_condition(self.model, *cameras)
        self.result = {"samples": samples, **{name: tensor.cpu() for name, tensor in rendered.items()}}
        return self.result

    def _show(self) -> None:
        self.output.clear_output(wait=True)
        with self.output:
            start = time.perf_counter()
            result = self.generate()
            seconds = time.perf_counter() - start
            images = self.objects[self.controls["object"].value]["images"]
            show_images([images[0], field_rgb(result["features"][0, 0], images.shape[-1]),
                         masked_depth(result["depth"][0, 0], result["opacity"][0, 0]), result["opacity"][0, 0],
                         result["samples"][0, 0]],
                        titles=["input", "field RGB", "field depth", "field opacity", f"sample ({seconds:.1f} s)"],
                        size=2.2, maps=[None, None, "depth", "opacity", None])
            plt.show()
