"""genvs.viz.figures: the course's own figures."""

import matplotlib

matplotlib.use("Agg")


from genvs import viz


def test_course_map_names_every_lesson_and_draws_every_pipeline_stage_in_a_box():
    from matplotlib.patches import FancyBboxPatch

    figure = viz.plot_course_map()
    ax = figure.axes[0]
    texts = {text.get_text().replace("\n", " "): text.get_position() for text in ax.texts}
    for lesson in ["00", "01", "02", "03", "04", "05", "06"]:
        assert lesson in texts, f"lesson {lesson} is not on the map"
    boxes = [patch.get_bbox() for patch in ax.patches if isinstance(patch, FancyBboxPatch)]
    stages = ["photo + camera", "encoder (2D CNN)", "frustum feature volume", "volume rendering", "feature image",
              "EDM denoiser", "novel view"]
    for stage in stages:
        x, y = texts[stage]
        assert any(box.contains(x, y) for box in boxes), f"no box around {stage!r}"
    assert any("autoregressive" in text for text in texts)
    matplotlib.pyplot.close(figure)
