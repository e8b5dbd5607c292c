"""What the loss figure draws: a variant's mean only where all its runs have a value, the runs
that went on drawn on their own, and a legend that names every line and lies outside the plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from analysis import figures, loss_figures


def _frames():
    steps = np.arange(100, 1100, 100)
    rows = []
    for run_id, last, offset in (("a", 1000, 0.0), ("b", 600, 0.2)):  # b stopped early at 600
        for step in steps[steps <= last]:
            rows.append(
                {"run_id": run_id, "metric": "val/loss", "step": step, "value": 7.0 - step / 1000 + offset}
            )
    runs = pd.DataFrame({"run_id": ["a", "b"], "variant": ["vanilla"] * 2, "size": ["tiny"] * 2})
    return pd.DataFrame(rows), runs


def _line(fig, label):
    [ax] = fig.axes
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_mean_stops_where_the_shortest_run_stops_and_the_longer_run_goes_on_alone(tmp_path):
    curves, runs = _frames()
    fig = loss_figures.loss_curves(curves, runs, floors=[6.2], margin=0.25, expected_floors=[6.3])
    mean = _line(fig, "vanilla: mean of 2 runs, band min\u2013max")
    assert mean.get_xdata().max() == 600  # not a jump to run a's value alone at 700
    assert np.allclose(mean.get_ydata(), 7.1 - mean.get_xdata() / 1000)
    [ax] = fig.axes
    alone = [
        line
        for line in ax.get_lines()
        if line.get_label().startswith("_") and len(line.get_xdata()) and line.get_xdata().max() == 1000
    ]
    assert len(alone) == 1 and alone[0].get_xdata().min() == 600
    labels = ax.get_legend_handles_labels()[1]
    assert labels == [
        "vanilla: mean of 2 runs, band min\u2013max",
        "thin: a run past its variant's shortest",
        "L* of the data = 6.30",
        "context-free floor of the validation targets = 6.20",
        "escape level: 0.25 below it",
    ]
    # The legend is beside the axes, in the saved image: it ends right of the axes' right edge.
    [png, _] = figures.save(fig, tmp_path, "loss")
    fig.draw_without_rendering()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 > axes.x1
    scale = figures.STYLE["savefig.dpi"] / fig.dpi
    assert Image.open(png).size[0] >= (legend.x1 - axes.x0) * scale


def test_the_legend_lies_inside_the_figure_whatever_renders_it():
    """A notebook's inline image crops to what is in the layout: the legend beside the plot is in
    the figure itself, on plain and broken step axes, and the axes keep their width."""
    curves, runs = _frames()
    for segments in (None, [(0, 300), (500, 1000)]):
        fig = loss_figures.loss_curves(curves, runs, floors=[6.2], margin=0.25, segments=segments)
        fig.draw_without_rendering()
        legend = fig.axes[-1].get_legend().get_window_extent()
        assert 0 <= legend.x0 and legend.x1 <= fig.bbox.x1 and legend.y1 <= fig.bbox.y1
        plot = sum(ax.get_position().width for ax in fig.axes) * fig.get_figwidth()
        assert plot > 0.6 * figures.STYLE["figure.figsize"][0]


def test_runs_of_equal_length_draw_no_thin_lines():
    curves, runs = _frames()
    curves = curves[curves["step"] <= 600]
    fig = loss_figures.loss_curves(curves, runs)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["vanilla: mean of 2 runs, band min\u2013max"]
    assert [line.get_label() for line in fig.axes[0].get_lines()] == labels
