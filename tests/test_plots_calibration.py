import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from kdlib import calibration
from kdlib.experiments import calibration_explorer as ce
from kdlib.plots import calibration as cplots

PROBS = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.95, 0.05]])
LABELS = torch.tensor([1, 0, 0, 0])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def bars(ax, color):
    """Rectangles of `ax` drawn in `color` (hex), in drawing order."""
    import matplotlib.colors as mc

    rgb = mc.to_rgb(color)
    return [p for p in ax.patches if mc.to_rgb(p.get_facecolor()[:3]) == rgb]


def test_reliability_figure_bars_are_the_bin_statistics():
    b = calibration.reliability_bins(PROBS, LABELS, n_bins=4)  # bins at .25 width
    fig = cplots.reliability_figure(b, title="t", annotation="ECE x")
    assert isinstance(fig, Figure)
    ax, hist_ax = fig.axes
    acc_bars = bars(ax, cplots.ACCURACY_COLOR)
    # non-empty bins: (.5,.75] with {.6,.7} acc 1/2, (.75,1] with {.8,.95} acc 1
    assert [round(r.get_x(), 6) for r in acc_bars] == [0.5, 0.75]
    assert [r.get_height() for r in acc_bars] == pytest.approx([0.5, 1.0])
    assert [r.get_width() for r in acc_bars] == pytest.approx([0.25, 0.25])
    gap_bars = bars(ax, cplots.GAP_COLOR)
    # gaps: |0.65 - 0.5| from 0.5 up; |0.875 - 1| from 0.875 up
    assert [r.get_y() for r in gap_bars] == pytest.approx([0.5, 0.875])
    assert [r.get_height() for r in gap_bars] == pytest.approx([0.15, 0.125])
    assert [r.get_height() for r in hist_ax.patches] == [2, 2]
    assert hist_ax.get_yscale() == "log" and ax.get_title() == "t"
    assert any(t.get_text() == "ECE x" for t in ax.texts)


def test_reliability_grid_equal_mass_edges():
    b = ce.binned_calibration(PROBS, LABELS, n_bins=2, binning="equal_mass")
    fig = cplots.reliability_grid({"a": b, "b": b}, annotations={"b": "note"})
    assert len(fig.axes) == 4 and len(fig.legends) == 1  # one legend for the grid
    acc_bars = bars(fig.axes[0], cplots.ACCURACY_COLOR)
    # confidences .6 .7 | .8 .95: edges at the extremes and halfway between the bins
    assert [r.get_x() for r in acc_bars] == pytest.approx([0.6, 0.75])
    assert [r.get_width() for r in acc_bars] == pytest.approx([0.15, 0.2])
    assert [r.get_height() for r in acc_bars] == pytest.approx([0.5, 1.0])
    with pytest.raises(ValueError, match="non-empty dict"):
        cplots.reliability_grid({})


def test_reliability_rejects_bad_bins():
    with pytest.raises(TypeError, match="edges, confidence"):
        cplots.reliability_figure(object())
    b = calibration.reliability_bins(PROBS, LABELS, n_bins=4)
    bad = ce.BinnedCalibration(b.edges[:-1], b.confidence, b.accuracy, b.count)
    with pytest.raises(ValueError, match="M \\+ 1"):
        cplots.reliability_figure(bad)


def test_temperature_curves_mark_minimum_and_fitted_t():
    t = np.geomspace(0.25, 10, 9)
    ece = (np.log(t) - np.log(2.0)) ** 2 / 10
    nll = 1 + (np.log(t) - np.log(1.5)) ** 2
    fig = cplots.temperature_curves({"a": {"temperatures": t, "ece": ece, "nll": nll,
                                           "fitted_t": 1.5}})
    ax_ece, ax_nll = fig.axes
    assert ax_ece.get_xscale() == "log" and ax_nll.get_xscale() == "log"
    curve, best = ax_ece.lines[0], ax_ece.lines[1]
    np.testing.assert_allclose(curve.get_xdata(), t)
    assert best.get_xdata()[0] == pytest.approx(t[np.argmin(ece)])
    star = [ln for ln in ax_nll.lines if ln.get_marker() == "*"][0]
    assert star.get_xdata()[0] == 1.5
    assert ax_ece.yaxis.get_major_formatter()(0.05, 0) == "5%"
    assert ax_ece.get_yscale() == "log" and ax_nll.get_yscale() == "log"
    zero = cplots.temperature_curves({"a": {"temperatures": t, "ece": 0 * ece, "nll": nll}})
    assert zero.axes[0].get_yscale() == "linear"  # an ECE of 0 has no place on a log axis
    with pytest.raises(ValueError, match="same non-zero length"):
        cplots.temperature_curves({"a": {"temperatures": t, "ece": ece[:3], "nll": nll}})
    with pytest.raises(ValueError, match="> 0"):
        cplots.temperature_curves({"a": {"temperatures": -t, "ece": ece, "nll": nll}})


def test_explorer_figure_marker():
    b = calibration.reliability_bins(PROBS, LABELS, n_bins=4)
    t = np.array([0.5, 1.0, 2.0])
    n_open = len(plt.get_fignums())
    fig = cplots.explorer_figure(b, t, [0.1, 0.2, 0.3], marker=(1.3, 0.25))
    assert len(plt.get_fignums()) == n_open  # not registered with pyplot
    curve_ax = fig.axes[2]
    dot = [ln for ln in curve_ax.lines if ln.get_marker() == "o"][0]
    assert (dot.get_xdata()[0], dot.get_ydata()[0]) == (1.3, 0.25)
