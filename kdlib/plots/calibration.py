"""Calibration figures: reliability diagrams with a confidence histogram, and ECE / NLL as
functions of the softmax temperature.

Bins are any object with `edges` ((M + 1,) nondecreasing in [0, 1]), `confidence`, `accuracy` ((M,),
NaN for empty bins) and `count` ((M,) ints): `calibration.ReliabilityBins` or
`experiments.calibration_explorer.BinnedCalibration`. ECE values are fractions; the axes
show percent. Notebook figures are pyplot figures (the inline backend shows them at the end
of the cell); `explorer_figure` is a bare `matplotlib.figure.Figure` outside pyplot, so that
the widget's redraws never pile up in pyplot's figure list.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullFormatter

ACCURACY_COLOR = "#3b6fb6"
GAP_COLOR = "#d9534f"
COUNT_COLOR = "#7a7a7a"
CURVE_COLORS = ("#3b6fb6", "#e08a1e", "#3a9a5b", "#9b59b6", "#c0392b", "#16a085")


def _bin_arrays(bins):
    try:
        edges = np.asarray(bins.edges, dtype=np.float64)
        conf = np.asarray(bins.confidence, dtype=np.float64)
        acc = np.asarray(bins.accuracy, dtype=np.float64)
        count = np.asarray(bins.count, dtype=np.int64)
    except AttributeError as err:
        raise TypeError(
            "bins must have edges, confidence, accuracy and count (e.g. "
            f"calibration.reliability_bins(...)), got {type(bins).__name__}"
        ) from err
    m = count.shape[0]
    if edges.shape != (m + 1,) or conf.shape != (m,) or acc.shape != (m,):
        raise ValueError(
            f"bins need edges of shape (M + 1,) and confidence/accuracy/count of shape (M,); "
            f"got edges {edges.shape}, confidence {conf.shape}, accuracy {acc.shape}, "
            f"count {count.shape}"
        )
    return edges, conf, acc, count


def draw_reliability(ax, hist_ax, bins, *, title: str | None = None,
                     annotation: str | None = None, log_counts: bool = True,
                     legend: bool = True) -> None:
    """Reliability diagram on `ax` (accuracy bars per bin against the diagonal, the gap to
    each bin's mean confidence hatched) and the samples per bin on `hist_ax` (or None).
    legend: draw the legend inside `ax` (grids put one legend on the figure instead)."""
    edges, conf, acc, count = _bin_arrays(bins)
    full = count > 0
    left, width = edges[:-1][full], np.diff(edges)[full]
    ax.plot([0, 1], [0, 1], ls="--", color="black", lw=1, label="perfect calibration")
    ax.bar(left, acc[full], width=width, align="edge", color=ACCURACY_COLOR, alpha=0.85,
           edgecolor="white", linewidth=0.5, label="accuracy")
    low = np.minimum(acc[full], conf[full])
    ax.bar(left, np.abs(conf[full] - acc[full]), bottom=low, width=width, align="edge",
           facecolor=(*to_rgb(GAP_COLOR), 0.2), edgecolor=GAP_COLOR, hatch="///",
           linewidth=0.8, label="gap to mean confidence")
    ax.plot(conf[full], acc[full], "o", ms=3, color="black", label="(mean conf, acc)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    if legend:
        ax.legend(loc="upper left", fontsize=7, framealpha=0.85)
    if title:
        ax.set_title(title, fontsize=10)
    if annotation:
        ax.text(0.97, 0.03, annotation, transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, family="monospace",
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})
    if hist_ax is None:
        ax.set_xlabel("confidence")
        return
    hist_ax.bar(left, count[full], width=width, align="edge", color=COUNT_COLOR,
                edgecolor="white", linewidth=0.5)
    hist_ax.set_xlim(0, 1)
    if log_counts:
        hist_ax.set_yscale("log")
        hist_ax.set_ylim(0.7, max(10.0, count.max() * 2.0))
    hist_ax.set_xlabel("confidence")
    hist_ax.set_ylabel("samples" + (" (log)" if log_counts else ""))


def reliability_figure(bins, *, title: str | None = None, annotation: str | None = None,
                       log_counts: bool = True, figsize=(4.2, 5.0)) -> Figure:
    """One reliability diagram with its confidence histogram below: a Figure."""
    fig = plt.figure(figsize=figsize, layout="constrained")
    ax, hist_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    draw_reliability(ax, hist_ax, bins, title=title, annotation=annotation,
                     log_counts=log_counts)
    return fig


def reliability_grid(bins_by_name: dict, *, annotations: dict | None = None,
                     log_counts: bool = True, panel_size=(3.8, 4.8)) -> Figure:
    """Reliability diagrams side by side, one column per entry of {title: bins}."""
    if not isinstance(bins_by_name, dict) or not bins_by_name:
        raise ValueError("bins_by_name must be a non-empty dict {title: bins}")
    annotations = annotations or {}
    k = len(bins_by_name)
    fig = plt.figure(figsize=(panel_size[0] * k, panel_size[1]), layout="constrained")
    axes = fig.subplots(2, k, sharex=True, height_ratios=[3, 1], squeeze=False)
    for j, (name, bins) in enumerate(bins_by_name.items()):
        draw_reliability(axes[0, j], axes[1, j], bins, title=str(name),
                         annotation=annotations.get(name), log_counts=log_counts,
                         legend=False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), fontsize=8,
               frameon=False)
    return fig


def _percent(v, _pos=None) -> str:
    return f"{100 * v:.3g}%"


def _percent_axis(ax, log: bool = False) -> None:
    """Fractions shown as percent; log: logarithmic, minor ticks labelled at 2 and 5 x 10^k."""
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: _percent(v) if round(v / 10 ** np.floor(np.log10(v))) in (2, 5)
            else ""))
    ax.yaxis.set_major_formatter(FuncFormatter(_percent))


TEMPERATURE_TICKS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)


def _temperature_axis(ax) -> None:
    """Log-x temperature axis with plain tick labels (0.25, 0.5, 1, 2, ...)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(TEMPERATURE_TICKS))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("temperature T")


def _curve_arrays(temperatures, values, what: str):
    t = np.asarray(temperatures, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 1 or t.shape != v.shape or t.size == 0:
        raise ValueError(f"temperatures and {what} must be 1-D of the same non-zero length, "
                         f"got shapes {t.shape} and {v.shape}")
    if not (t > 0).all():
        raise ValueError("temperatures must all be > 0 (the axis is logarithmic)")
    return t, v


def draw_ece_curve(ax, temperatures, ece, *, label: str | None = None, color=None,
                   best: bool = True, marker: tuple | None = None,
                   log_y: bool = False) -> None:
    """ECE (fraction, shown in percent) against temperature on a log-x axis. best: mark the
    grid's ECE-minimizing temperature; marker: (T, ece) drawn as a large dot (the explorer);
    log_y: logarithmic ECE axis (ignored when an ECE is 0)."""
    t, v = _curve_arrays(temperatures, ece, "ece")
    line, = ax.plot(t, v, color=color, lw=1.6, label=label)
    if best:
        i = int(np.argmin(v))
        ax.plot([t[i]], [v[i]], "v", color=line.get_color(), ms=7)
    if marker is not None:
        ax.plot([marker[0]], [marker[1]], "o", color="black", ms=9, zorder=5,
                markerfacecolor=line.get_color())
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    _temperature_axis(ax)
    ax.set_ylabel("ECE")
    positive = bool((v > 0).all()) and (marker is None or marker[1] > 0)
    _percent_axis(ax, log=log_y and positive)


def draw_nll_curve(ax, temperatures, nll, *, fitted_t: float | None = None,
                   fitted_nll: float | None = None, label: str | None = None,
                   color=None) -> None:
    """Mean NLL (nats) against temperature on a log-x axis; the fitted T marked by a dashed
    line and a star at (fitted_t, fitted_nll) (fitted_nll None: read off the curve)."""
    t, v = _curve_arrays(temperatures, nll, "nll")
    line, = ax.plot(t, v, color=color, lw=1.6, label=label)
    if fitted_t is not None:
        if fitted_nll is None:
            fitted_nll = np.interp(np.log(fitted_t), np.log(t), v)
        ax.axvline(fitted_t, color=line.get_color(), lw=1.0, ls="--")
        ax.plot([fitted_t], [fitted_nll], "*", color=line.get_color(), ms=11)
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    _temperature_axis(ax)
    ax.set_ylabel("NLL (nats)")


def temperature_curves(curves: dict, *, log_ece: bool = True, figsize=(10.0, 3.8)) -> Figure:
    """ECE and NLL against temperature for several teachers, side by side.

    curves: {name: {"temperatures": [...], "ece": [...], "nll": [...], "fitted_t": T,
    "fitted_nll": NLL at T}} (the last two optional). Triangles mark each ECE minimum on the
    grid, stars and dashed lines the fitted T. The NLL axis is logarithmic, the ECE axis
    too when `log_ece` (small ECEs near the minimum stay visible beside the large ones at
    high T).
    """
    if not isinstance(curves, dict) or not curves:
        raise ValueError("curves must be a non-empty dict {name: {temperatures, ece, nll}}")
    fig = plt.figure(figsize=figsize, layout="constrained")
    ax_ece, ax_nll = fig.subplots(1, 2)
    for i, (name, c) in enumerate(curves.items()):
        color = CURVE_COLORS[i % len(CURVE_COLORS)]
        draw_ece_curve(ax_ece, c["temperatures"], c["ece"], label=str(name), color=color,
                       log_y=log_ece)
        draw_nll_curve(ax_nll, c["temperatures"], c["nll"], fitted_t=c.get("fitted_t"),
                       fitted_nll=c.get("fitted_nll"), label=str(name), color=color)
    ax_ece.set_title("ECE vs temperature (triangle: minimum)", fontsize=10)
    ax_nll.set_title("NLL vs temperature (star: fitted T)", fontsize=10)
    ax_ece.legend(fontsize=8, frameon=False)
    ax_nll.set_yscale("log")
    ax_nll.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_nll.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    return fig


def explorer_figure(bins, temperatures, ece, marker: tuple, *, title: str | None = None,
                    annotation: str | None = None, figsize=(9.0, 4.6)) -> Figure:
    """The explorer's view: reliability diagram + histogram (left) and the ECE curve with
    the current (T, ECE) marked (right). A bare Figure, not registered with pyplot."""
    fig = Figure(figsize=figsize, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 1], width_ratios=[1, 1])
    ax = fig.add_subplot(grid[0, 0])
    hist_ax = fig.add_subplot(grid[1, 0], sharex=ax)
    curve_ax = fig.add_subplot(grid[:, 1])
    draw_reliability(ax, hist_ax, bins, title=title, annotation=annotation, legend=False)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), fontsize=8,
               frameon=False)
    draw_ece_curve(curve_ax, temperatures, ece, color=CURVE_COLORS[0], marker=marker,
                   log_y=True)
    curve_ax.set_title("ECE vs temperature (dot: current T)", fontsize=10)
    return fig
