"""genvs.viz.figures: the course's own figures."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")


from genvs import viz


def test_course_map_names_every_lesson_and_draws_every_pipeline_stage_in_a_box():
    from matplotlib.patches import FancyBboxPatch

    figure = viz.plot_course_map()
    ax = figure.axes[0]
    texts = {text.get_text().replace("\n", " "): text.get_position() for text in ax.texts}
    lessons = sorted(path.name[:2] for path in (Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(lessons) >= 10
    for lesson in lessons:  # every lesson in notebooks/
        assert lesson in texts, f"lesson {lesson} is not on the map"
    assert all(0 <= ax.transLimits.transform(position)[1] <= 1 for position in texts.values()), "text off the map"
    boxes = [patch.get_bbox() for patch in ax.patches if isinstance(patch, FancyBboxPatch)]
    stages = ["photo + camera", "encoder (2D CNN)", "frustum feature volume", "volume rendering", "feature image",
              "EDM denoiser", "novel view"]
    for stage in stages:
        x, y = texts[stage]
        assert any(box.contains(x, y) for box in boxes), f"no box around {stage!r}"
    assert any("autoregressive" in text for text in texts)
    matplotlib.pyplot.close(figure)
