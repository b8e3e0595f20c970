"""Figures for the TAKD (teacher assistant) and ESKD (early-stopped teacher) experiments.

Inputs are the frames of kdlib.experiments.teacher_assistant / early_stopped_teacher
(fractions); axes are labelled in percent.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _require(df, cols, name):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; it has {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{name} is empty: nothing to plot")


def plot_takd(chains: pd.DataFrame, size_tau: float, dataset: str | None = None):
    """Student accuracy against the assistant's ECE at tau (left) and its parameter count
    (right), one point per (assistant, seed) chain at `size_tau`, one row of panels per
    (teacher, student) group; plain KD (no assistant) drawn as a dashed line (mean over
    seeds). One data set only: `dataset` picks it (required when the frame holds several,
    so that CIFAR-100 and Tiny-ImageNet rows never share a plot). Returns the Figure."""
    _require(chains, ["tau", "assistant_name", "assistant_ece_at_tau", "assistant_params",
                      "student_accuracy", "teacher", "student"], "chains")
    sub = chains[np.isclose(chains["tau"], size_tau)]
    if "dataset" in sub.columns:
        present = sorted(sub["dataset"].unique())
        if dataset is None and len(present) > 1:
            raise ValueError(f"chains hold several data sets {present}; pass dataset= (one "
                             "plot per data set)")
        if dataset is not None:
            sub = sub[sub["dataset"] == dataset]
    if sub.empty:
        raise ValueError(f"no chains at tau {size_tau}"
                         + (f" on {dataset}" if dataset else "")
                         + f"; taus present: {sorted(chains['tau'].unique())}")
    groups = list(sub.groupby(["teacher", "student"], sort=True))
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.6 * len(groups)), sharey="row",
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*X"
    for row, ((t, s), g) in zip(axes, groups):
        plain = g[g["assistant_name"] == "none"]
        ta = g[g["assistant_name"] != "none"]
        for i, (name, h) in enumerate(ta.groupby("assistant_name", sort=False)):
            style = {"color": colors[i % len(colors)], "marker": markers[i % len(markers)],
                     "alpha": 0.75}
            row[0].scatter(100 * h["assistant_ece_at_tau"], 100 * h["student_accuracy"],
                           label=f"{name} ({h['assistant_params'].iloc[0] / 1e3:.0f}k)",
                           **style)
            row[1].scatter(h["assistant_params"] / 1e3, 100 * h["student_accuracy"], **style)
        for ax in row:
            if not plain.empty:
                ax.axhline(100 * plain["student_accuracy"].mean(), color="grey", ls="--",
                           label="plain KD (no assistant)" if ax is row[0] else None)
            ax.grid(alpha=0.3)
        row[0].set_xlabel(f"assistant test ECE at tau = {size_tau:g} (%)")
        row[1].set_xlabel("assistant parameters (thousands)")
        row[0].set_ylabel("student test accuracy (%)")
        row[0].set_title(f"{t} -> assistant -> {s}", fontsize=10)
        row[0].legend(fontsize=8)
    where = f" on {dataset}" if dataset else ""
    fig.suptitle(f"TAKD at tau = {size_tau:g}{where}: each point one (assistant, seed) chain")
    fig.tight_layout()
    return fig


def plot_checkpoints(curve: pd.DataFrame, chosen=(), milestones=()):
    """Teacher test accuracy (left) and ECE at each temperature (right) over its training
    epochs; dotted verticals at the `chosen` checkpoints, grey at the lr `milestones`."""
    _require(curve, ["teacher", "epoch", "temperature", "accuracy", "ece"], "curve")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for teacher, g in curve.groupby("teacher", sort=False):
        acc = g.groupby("epoch")["accuracy"].first()
        axes[0].plot(acc.index, 100 * acc.to_numpy(), marker="o", ms=3, label=teacher)
        for tau, h in g.groupby("temperature"):
            h = h.sort_values("epoch")
            axes[1].plot(h["epoch"], 100 * h["ece"], marker="o", ms=3,
                         label=f"{teacher}, tau = {tau:g}")
    for ax in axes:
        for m in milestones:
            ax.axvline(m, color="grey", lw=0.8)
        for c in chosen:
            ax.axvline(c, color="k", ls=":", lw=1)
        ax.set_xlabel("teacher epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("teacher test accuracy (%)")
    axes[1].set_ylabel("teacher test ECE at tau (%)")
    fig.suptitle("Teacher checkpoints (grey: lr decays; dotted: checkpoints distilled)")
    fig.tight_layout()
    return fig


def plot_few_vs_full(table: pd.DataFrame):
    """From early_stopped_teacher.few_vs_full_table (percent): teacher ECE at tau (left) and
    student accuracy with its std over seeds (right) against tau, few- vs full-trained."""
    _require(table, ["teacher", "training", "temperature", "teacher_ece_at_tau",
                     "student_accuracy", "student_accuracy_std"], "table")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (teacher, training), g in table.groupby(["teacher", "training"], sort=False):
        g = g.sort_values("temperature")
        label = f"{teacher}, {training}-trained"
        axes[0].plot(g["temperature"], g["teacher_ece_at_tau"], marker="o", label=label)
        axes[1].errorbar(g["temperature"], g["student_accuracy"],
                         yerr=g["student_accuracy_std"].fillna(0), marker="o", capsize=3,
                         label=label)
    axes[0].set_ylabel("teacher test ECE at tau (%)")
    axes[1].set_ylabel("student test accuracy (%), mean and std")
    for ax in axes:
        ax.set_xlabel("distillation temperature tau")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
