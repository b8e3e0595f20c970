"""Figures of the GMM optimal-teacher experiment (paper section 3.2, Table 1)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, hsv_to_rgb
from matplotlib.patches import Ellipse

ARM_COLORS = {"one-hot": "tab:red", "posterior": "tab:blue"}


def class_colormap(num_classes: int) -> ListedColormap:
    """num_classes colours with hues spread by the golden ratio, so that classes with
    neighbouring indices (often neighbouring regions) get distant hues; light shades so that
    points and ellipses drawn on top stay visible."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    hues = (np.arange(num_classes) * 0.618033988749895) % 1.0
    sat = np.where(np.arange(num_classes) % 2 == 0, 0.45, 0.3)
    hsv = np.stack([hues, sat, np.full(num_classes, 0.95)], axis=1)
    return ListedColormap(hsv_to_rgb(hsv))


def covariance_ellipse(mean, cov, n_sigma: float = 2.0, **kwargs) -> Ellipse:
    """The n_sigma contour of a 2-D Gaussian as a matplotlib Ellipse (axes 2 n_sigma
    sqrt(eigenvalues), rotated along the eigenvectors)."""
    cov = np.asarray(cov, dtype=float)
    if cov.shape != (2, 2):
        raise ValueError(f"cov must be 2 x 2, got shape {cov.shape}")
    vals, vecs = np.linalg.eigh(cov)
    if vals.min() <= 0:
        raise ValueError(f"cov must be positive definite, got eigenvalues {vals.tolist()}")
    angle = float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])))
    width, height = 2 * n_sigma * np.sqrt(vals[1]), 2 * n_sigma * np.sqrt(vals[0])
    return Ellipse(tuple(np.asarray(mean, float)), width, height, angle=angle, **kwargs)


def decision_regions(grids: dict, extent, gmm=None, points=None, agreement=None,
                     n_sigma: float = 2.0, title: str | None = None):
    """One panel per decision grid (e.g. one-hot student, posterior student, Bayes rule).

    grids: {panel title: H x W int array of classes, row 0 at extent's ymin}. extent:
    (xmin, xmax, ymin, ymax). gmm: a GaussianMixtureTask whose n_sigma ellipses are drawn on
    top; points: optional (x N x 2, y N) test points drawn small in black. agreement:
    optional {panel: fraction agreeing with the Bayes rule} shown in the titles.
    """
    if not grids:
        raise ValueError("grids must hold at least one panel")
    num_classes = int(max(int(np.max(g)) for g in grids.values())) + 1
    if gmm is not None:
        num_classes = max(num_classes, int(gmm.num_classes))
    cmap = class_colormap(num_classes)
    fig, axes = plt.subplots(1, len(grids), figsize=(4.6 * len(grids), 4.6), squeeze=False,
                             sharex=True, sharey=True)
    for ax, (name, grid) in zip(axes[0], grids.items()):
        ax.imshow(np.asarray(grid), origin="lower", extent=extent, cmap=cmap, vmin=-0.5,
                  vmax=num_classes - 0.5, interpolation="nearest", aspect="equal")
        if points is not None:
            x = np.asarray(points[0])
            ax.scatter(x[:, 0], x[:, 1], s=1, c="k", alpha=0.25, linewidths=0)
        if gmm is not None:
            for mu, cov in zip(gmm.means, gmm.covariances):
                ax.add_patch(covariance_ellipse(mu, cov, n_sigma, fill=False, lw=0.6,
                                                ec="k", alpha=0.7))
        label = name
        if agreement is not None and name in agreement:
            label += f"\n{100 * agreement[name]:.1f}% of the grid = Bayes rule"
        ax.set_title(label, fontsize=10)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xlabel("$x_1$")
    axes[0, 0].set_ylabel("$x_2$")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def run_accuracies(runs: pd.DataFrame, paper: pd.DataFrame | None = None,
                   bayes: dict | None = None):
    """Per task, each run's test accuracy (%) for one-hot and posterior, ours (filled) and
    the paper's (open), with the Bayes accuracy as a dashed line.

    runs: kdlib.experiments.gmm_optimal_teacher.runs_frame rows. paper: paper_table("table1").
    bayes: {classes: Bayes accuracy in %}.
    """
    classes = sorted(runs["classes"].unique())
    fig, axes = plt.subplots(1, len(classes), figsize=(4.4 * len(classes), 3.6), squeeze=False)
    for ax, c in zip(axes[0], classes):
        for i, arm in enumerate(("one-hot", "posterior")):
            ours = runs[(runs["classes"] == c) & (runs["arm"] == arm)]["accuracy_pct"]
            jitter = np.linspace(-0.08, 0.08, max(len(ours), 1))[:len(ours)]
            ax.scatter(i - 0.12 + jitter, ours, color=ARM_COLORS[arm], s=22,
                       label="ours" if i == 0 else None)
            if paper is not None:
                theirs = paper[(paper["classes"] == c) & (paper["target"] == arm)]
                ax.scatter(i + 0.12 + np.linspace(-0.08, 0.08, len(theirs)),
                           theirs["test_accuracy"], facecolors="none",
                           edgecolors=ARM_COLORS[arm], s=22,
                           label="paper" if i == 0 else None)
        if bayes is not None and c in bayes:
            ax.axhline(bayes[c], ls="--", color="k", lw=1, label="Bayes (our test set)")
        ax.set_xticks([0, 1], ["one-hot", "posterior"])
        ax.set_title(f"{c} classes")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def accuracy_vs_target_ece(summary: pd.DataFrame):
    """Student accuracy (%, run mean +- std) against the target's ECE (%) on the training
    set, one panel per task, points labelled by the target temperature tau.

    summary: kdlib.experiments.gmm_optimal_teacher.arm_summary rows; the one-hot arm (its
    target ECE is NaN) is drawn as a dotted line at its mean accuracy.
    """
    classes = sorted(summary["classes"].unique())
    fig, axes = plt.subplots(1, len(classes), figsize=(4.6 * len(classes), 3.6), squeeze=False)
    for ax, c in zip(axes[0], classes):
        s = summary[(summary["classes"] == c) & summary["target_ece_pct"].notna()]
        s = s.sort_values("temperature")
        ax.errorbar(s["target_ece_pct"], s["accuracy_mean"], yerr=s["accuracy_std"],
                    fmt="o", color="tab:blue", capsize=3)
        for _, r in s.iterrows():
            ax.annotate(f"tau={r['temperature']:g}", (r["target_ece_pct"], r["accuracy_mean"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        if len(s):
            ax.axhline(float(s["bayes_accuracy_pct"].iloc[0]), ls="--", color="k", lw=1,
                       label="Bayes")
        onehot = summary[(summary["classes"] == c) & (summary["arm"] == "one-hot")]
        if len(onehot):
            ax.axhline(float(onehot["accuracy_mean"].iloc[0]), ls=":", color="tab:red", lw=1.5,
                       label="one-hot labels")
        ax.legend(fontsize=8)
        ax.set_xlabel("target ECE on the training set (%)")
        ax.set_ylabel("student test accuracy (%)")
        ax.set_title(f"{c} classes")
    fig.tight_layout()
    return fig
