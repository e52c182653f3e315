"""The course's figures: GeNVS's data flow with the shapes of one training pass, and the map of the lessons.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

__all__ = ["plot_genvs_diagram", "plot_course_map"]


def plot_genvs_diagram(config, batch: int = 1, inputs: int = 1, targets: int = 1):
    """Draw GeNVS's data flow for ``config`` (a :class:`genvs.model.GeNVSConfig`), each arrow labelled with its shape.

    Returns the matplotlib figure.
    """
    encoder, field = config.field.encoder, config.field
    H, s, C = encoder.image_size, field.render_size, field.feature_channels
    D, h = encoder.depth_planes, encoder.volume_size
    n_samples = field.n_stratified + field.n_importance
    boxes = [  # (x, y, text, colour)
        (0.08, 0.75, "input views\n+ cameras", "#dddddd"),
        (0.29, 0.75, f"encoder\n{encoder.backbone} + ASPP\n+ decoder", "#cfe2f3"),
        (0.50, 0.75, "feature volumes\n(one per input view)", "#cfe2f3"),
        (0.71, 0.75, f"field: sample,\naverage views,\nMLP {field.mlp_hidden} wide", "#d9ead3"),
        (0.92, 0.75, f"volume\nrendering\n{n_samples} samples/ray", "#d9ead3"),
        (0.92, 0.40, "feature image\nupsampled\n(bilinear)", "#d9ead3"),
        (0.60, 0.40, "U-Net denoiser\nD(x; σ, c)", "#fce5cd"),
        (0.29, 0.40, "clean target\nestimate", "#fce5cd"),
        (0.60, 0.07, "noisy target\nx = y + σn", "#dddddd"),
    ]
    arrows = [  # (from, to, label)
        (0, 1, f"[{batch}·{inputs}, 3, {H}, {H}]"),
        (1, 2, f"[{batch}·{inputs}, {C}, {D}, {h}, {h}]"),
        (2, 3, "3D points on\ntarget rays"),
        (3, 4, f"σ, {C} features\nper point"),
        (4, 5, f"[{batch}·{targets}, {C}, {s}, {s}]"),
        (5, 6, f"c: [{batch}·{targets}, {C}, {H}, {H}]"),
        (8, 6, f"[{batch}·{targets}, 3, {H}, {H}]"),
        (6, 7, f"[{batch}·{targets}, 3, {H}, {H}]"),
    ]
    half_width, half_height = 0.078, 0.085
    figure, ax = plt.subplots(figsize=(12, 4.6))
    ax.set_axis_off()
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.03, 0.95))
    for x, y, text, colour in boxes:
        ax.add_patch(FancyBboxPatch((x - half_width, y - half_height), 2 * half_width, 2 * half_height,
                                    boxstyle="round,pad=0.005", facecolor=colour, edgecolor="#555555"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
    for start, end, label in arrows:
        (x0, y0), (x1, y1) = boxes[start][:2], boxes[end][:2]
        horizontal = abs(y1 - y0) < 1e-6
        dx = np.sign(x1 - x0) * half_width if horizontal else 0.0
        dy = 0.0 if horizontal else np.sign(y1 - y0) * half_height
        ax.annotate("", xy=(x1 - dx, y1 - dy), xytext=(x0 + dx, y0 + dy),
                    arrowprops={"arrowstyle": "->", "color": "#333333"})
        label_x, label_y = ((x0 + x1) / 2, y0 + half_height + 0.05) if horizontal else (x0 + 0.01, (y0 + y1) / 2)
        ax.text(label_x, label_y, label, ha="center" if horizontal else "left", va="center", fontsize=7.5,
                color="#1f4e79")
    ax.text(0.29, 0.2, "denoising loss\n(EDM, vs the true target)", ha="center", fontsize=8, color="#990000")
    ax.text(0.92, 0.13, "RGB loss: channels 0-2\nvs the target image\n(+ opacity regulariser)", ha="center",
            fontsize=8, color="#990000")
    ax.set_title(f"GeNVS: one forward pass of training ({H} px images, {s} px render)", fontsize=11)
    return figure


def plot_course_map():
    """Draw the course as a map: GeNVS's pipeline as boxes, the lessons that build each part, and each lesson's payoff.

    Top: photo -> encoder -> frustum feature volume -> volume rendering -> feature image -> EDM denoiser ->
    novel view, with the autoregressive loop back to the input; each box is coloured by, and labelled with,
    the lesson that builds it. Bottom: one row per lesson (00 to 09): what it builds and what you see at its end.
    Returns the matplotlib figure.
    """
    colours = {"00": "#e8e8e8", "01": "#d9ead3", "02": "#cfe2f3", "03": "#fce5cd", "04": "#ead1dc",
               "05": "#fff2cc", "06": "#d0e0e3", "07": "#f4cccc", "08": "#d9d2e9", "09": "#ffffff"}
    stages = [  # (box text, lessons that build it; the first one colours the box)
        ("photo\n+ camera", "00, 01"),
        ("encoder\n(2D CNN)", "02"),
        ("frustum\nfeature volume", "02"),
        ("volume\nrendering", "01"),
        ("feature\nimage", "02"),
        ("EDM\ndenoiser", "03"),
        ("novel\nview", "05"),
    ]
    lessons = [  # (number, title, what it builds, what you see at its end)
        ("00", "setup and data", "SRN-format data, cameras",
         "synthetic cars in the SRN format, camera frustums in 3D, a real SRN car whose poses check out"),
        ("01", "cameras and volume rendering", "pixel rays, volume rendering",
         "a voxel field fitted to one car renders views it never saw, with depth and opacity maps"),
        ("02", "image-to-volume encoder", "encoder, frustum volume, feature image",
         "a regression baseline: new views of new cars from one photo, in the right pose but blurry"),
        ("03", "EDM denoising", "the EDM denoiser",
         "a conditional denoiser whose samples are sharper than the blurry image it is conditioned on"),
        ("04", "joint training", "the whole model, trained end to end",
         "a small GeNVS trained live: loss curves and samples improving, a checkpoint you can resume"),
        ("05", "sampling, autoregressive generation", "samplers, the autoregressive loop",
         "novel views of new cars from one photo, and an orbit around the car as a video"),
        ("06", "evaluation", "metrics, the held-out protocol",
         "PSNR, SSIM, sharpness and consistency: sharp samples against the blurry regression"),
        ("07", "the ControlNet route", "a ControlNet on a frozen 2D U-Net",
         "a pretrained 2D model steered by the field's render: a second route to novel views"),
        ("08", "multi-view joint denoising", "cross-view attention, a 2D-only route",
         "six routes' turntables scored against the exact truth, each beside its training compute"),
        ("09", "what GeNVS buys, next steps", "the course's findings in one table",
         "what each part buys, GeNVS at scale, training on a GPU, capstone projects"),
    ]
    figure, ax = plt.subplots(figsize=(13, 8.6))
    ax.set_axis_off()
    ax.set(xlim=(0.0, 1.0), ylim=(0.44 - len(lessons) * 0.066, 0.95))
    half_width, half_height, y = 0.052, 0.06, 0.74
    xs = np.linspace(0.07, 0.93, len(stages))
    for x, (text, builders) in zip(xs, stages):
        ax.add_patch(FancyBboxPatch((x - half_width, y - half_height), 2 * half_width, 2 * half_height,
                                    boxstyle="round,pad=0.006", facecolor=colours[builders[:2]], edgecolor="#555555"))
        ax.text(x, y, text, ha="center", va="center", fontsize=9)
        ax.text(x, y - half_height - 0.035, f"lesson {builders}", ha="center", va="center", fontsize=8.5,
                fontweight="bold", color="#333333")
    for x0, x1 in zip(xs, xs[1:]):
        ax.annotate("", xy=(x1 - half_width - 0.006, y), xytext=(x0 + half_width + 0.006, y),
                    arrowprops={"arrowstyle": "->", "color": "#333333"})
    top, loop_y = y + half_height + 0.01, y + half_height + 0.07  # the autoregressive loop, above the boxes
    ax.plot([xs[-1], xs[-1], xs[0]], [top, loop_y, loop_y], color="#7f6000", linewidth=1.2)
    ax.annotate("", xy=(xs[0], top), xytext=(xs[0], loop_y), arrowprops={"arrowstyle": "->", "color": "#7f6000"})
    ax.text(0.5, loop_y + 0.03, "lesson 05: autoregressive generation, each generated view becomes another input",
            ha="center", va="center", fontsize=9, color="#7f6000")
    # Lesson 04 trains encoder ... denoiser together; lesson 06 scores the novel views.
    left, right = xs[1] - half_width, xs[5] + half_width
    ax.plot([left, left, right, right], [0.61, 0.595, 0.595, 0.61], color="#741b47", linewidth=1.2)
    ax.text((left + right) / 2, 0.57, "lesson 04: joint training of encoder, field and denoiser",
            ha="center", va="center", fontsize=9, color="#741b47")
    ax.text(xs[-1], 0.57, "lesson 06: scored\nagainst the truth", ha="center", va="center", fontsize=8.5,
            color="#134f5c")
    ax.text(0.07, 0.50, "lesson", fontsize=8.5, color="#555555", ha="center", va="center")
    ax.text(0.11, 0.50, "builds", fontsize=8.5, color="#555555", va="center")
    ax.text(0.38, 0.50, "what you see at the end", fontsize=8.5, color="#555555", va="center")
    for row, (number, title, builds, payoff) in enumerate(lessons):
        row_y = 0.44 - row * 0.066
        ax.add_patch(FancyBboxPatch((0.048, row_y - 0.022), 0.044, 0.044, boxstyle="round,pad=0.004",
                                    facecolor=colours[number], edgecolor="#555555"))
        ax.text(0.07, row_y, number, ha="center", va="center", fontsize=10, fontweight="bold")
        ax.text(0.11, row_y + 0.012, title, va="center", fontsize=9, fontweight="bold")
        ax.text(0.11, row_y - 0.016, builds, va="center", fontsize=8.5, color="#333333")
        ax.text(0.38, row_y, payoff, va="center", fontsize=9)
    ax.set_title("The course: GeNVS's pipeline, the lesson that builds each part, what each lesson shows",
                 fontsize=11.5)
    return figure
