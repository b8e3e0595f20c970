"""Figures for the feature-space experiments: t-SNE panels (paper Figure 5), the teacher's
ECE over temperature with the chosen temperatures, and student accuracy against the
teacher's ECE per distillation loss (paper Figure 7)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def _check_xy(xy, labels, title: str) -> tuple[np.ndarray, np.ndarray]:
    xy = np.asarray(xy, dtype=float)
    labels = np.asarray(labels)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"panel {title!r}: points must be N x 2, got shape {xy.shape}")
    if labels.shape != (len(xy),):
        raise ValueError(f"panel {title!r}: need one label per point ({len(xy)}), got shape "
                         f"{labels.shape}")
    return xy, labels.astype(int)


def tsne_panels(panels: dict, class_names=None, point_size: float = 6.0,
                panel_size: float = 4.2) -> Figure:
    """Side-by-side scatter plots of 2-D embeddings coloured (and marked) by class.

    panels: {title: (xy N x 2, labels N ints)} or {title: (xy, labels, mask N bools)},
    drawn left to right; points where mask is True get a black ring (e.g. the points whose
    feature-space neighbours are mostly of other classes). class_names: names for the
    legend, indexed by label (default: the label numbers).
    """
    if not isinstance(panels, dict) or not panels:
        raise ValueError("panels must be a non-empty dict {title: (xy, labels)}")
    checked, masks = {}, {}
    for t, v in panels.items():
        if not isinstance(v, (tuple, list)) or len(v) not in (2, 3):
            raise ValueError(f"panel {t!r} must be (xy, labels) or (xy, labels, mask)")
        checked[str(t)] = _check_xy(v[0], v[1], t)
        if len(v) == 3:
            mask = np.asarray(v[2], dtype=bool)
            if mask.shape != (len(checked[str(t)][0]),):
                raise ValueError(f"panel {t!r}: mask must have one entry per point")
            masks[str(t)] = mask
    classes = np.unique(np.concatenate([lab for _, lab in checked.values()]))
    names = ([str(c) for c in range(classes.max() + 1)] if class_names is None
             else [str(c) for c in class_names])
    if classes.max() >= len(names):
        raise ValueError(f"class_names has {len(names)} names but labels go up to "
                         f"{classes.max()}")
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(checked), figsize=(panel_size * len(checked), panel_size),
                             squeeze=False)
    for ax, (title, (xy, lab)) in zip(axes[0], checked.items()):
        for i, c in enumerate(classes):
            sel = lab == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=point_size, color=cmap(i % cmap.N),
                       marker=MARKERS[i % len(MARKERS)], label=names[c], linewidths=0)
        if title in masks and masks[title].any():
            m = masks[title]
            ax.scatter(xy[m, 0], xy[m, 1], s=point_size * 5, facecolors="none",
                       edgecolors="k", linewidths=0.6, label="_confused")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, texts = axes[0][0].get_legend_handles_labels()
    keep = [i for i, t in enumerate(texts) if not t.startswith("_")]
    handles, texts = [handles[i] for i in keep], [texts[i] for i in keep]
    fig.legend(handles, texts, loc="center right", markerscale=2.5, fontsize=8,
               title="class")
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    return fig


def teacher_ece_curve(curve: pd.DataFrame, picks: dict | None = None, ax=None) -> Figure:
    """The teacher's ECE (percent) against the temperature; picks ({label: tau}) are marked."""
    missing = [c for c in ("temperature", "ece") if c not in curve.columns]
    if missing:
        raise ValueError(f"curve lacks columns {missing}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
    else:
        fig = ax.figure
    c = curve.sort_values("temperature")
    ax.plot(c["temperature"], 100 * c["ece"], "o-", color="0.3", ms=4)
    for i, (label, tau) in enumerate((picks or {}).items()):
        row = c[np.isclose(c["temperature"], tau)]
        if row.empty:
            raise ValueError(f"pick {label}={tau} is not a temperature of the curve")
        ax.plot([tau], [100 * row["ece"].iloc[0]], "o", ms=10, mfc="none",
                color=f"C{i}", label=f"{label} (tau={tau:g})")
    ax.set_xlabel("temperature tau")
    ax.set_ylabel("teacher ECE at tau (%)")
    if picks:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


FIGURE7_COLORS = {"kd": "tab:blue", "dist": "tab:orange", "fitnet": "tab:green",
                  "fitnet_ce": "tab:red"}
"""One colour per loss (KD and DIST as in kdlib.plots.beyond.LOSS_COLORS)."""
FIGURE7_LABELS = {"fitnet": "FitNet: KD(tau) + hint", "fitnet_ce": "hint only: CE + hint",
                  "kd": "KD(tau)", "dist": "DIST(tau)"}
HINT_ONLY = "fitnet_ce"


def accuracy_vs_teacher_ece(df: pd.DataFrame, losses=None) -> Figure:
    """Two panels (paper Figure 7 / Figure 2 style): left, student accuracy (%) per loss and
    the teacher's ECE at tau (%) against the temperature; right, student accuracy against
    the teacher's ECE at tau. Points are seed means, bars one standard deviation. The
    hint-only arm (loss "fitnet_ce": CE + hint, no temperature) is a horizontal line with
    a +-1 sd band in both panels.

    df: one row per (loss, temperature, seed) with accuracy and teacher_ece_at_tau
    (fractions), as returned by kdlib.experiments.feature_kd.run (the hint-only rows have
    NaN temperature and ECE).
    """
    need = ["loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks columns {missing}")
    losses = list(dict.fromkeys(df["loss"])) if losses is None else list(losses)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    twin = left.twinx()
    tempered = df[df["loss"] != HINT_ONLY]
    ece = tempered.groupby("temperature")["teacher_ece_at_tau"].mean() * 100
    twin.plot(ece.index, ece.values, "k--", lw=1, label="teacher ECE at tau")
    twin.set_ylabel("teacher ECE at tau (%)")
    for i, loss in enumerate(losses):
        color = FIGURE7_COLORS.get(loss, f"C{i + 4}")
        label = FIGURE7_LABELS.get(loss, loss)
        if loss == HINT_ONLY:
            acc = df.loc[df["loss"] == loss, "accuracy"] * 100
            mean, sd = float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
            for ax in (left, right):
                ax.axhline(mean, color=color, lw=1.5, label=label)
                ax.axhspan(mean - sd, mean + sd, color=color, alpha=0.12, lw=0)
            continue
        g = df[df["loss"] == loss].groupby("temperature")
        mean, std = g["accuracy"].mean() * 100, g["accuracy"].std(ddof=1).fillna(0) * 100
        e = g["teacher_ece_at_tau"].mean() * 100
        left.errorbar(mean.index, mean.values, yerr=std.values, fmt="o-", color=color,
                      capsize=3, ms=4, label=label)
        right.errorbar(e.values, mean.values, yerr=std.values, fmt="o", color=color,
                       capsize=3, ms=5, label=label)
        for t, x, y in zip(mean.index, e.values, mean.values):
            right.annotate(f"{t:g}", (x, y), textcoords="offset points", xytext=(4, 3),
                           fontsize=7, color=color)
    left.set_xlabel("temperature tau")
    left.set_ylabel("student test accuracy (%)")
    left.set_xscale("log", base=2)
    left.set_xticks(sorted(tempered["temperature"].dropna().unique()))
    left.get_xaxis().set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    lines = left.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    left.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="best")
    right.set_xlabel("teacher ECE at tau (%)  [labels: tau]")
    right.set_ylabel("student test accuracy (%)")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
