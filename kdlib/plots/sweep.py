"""Figures of the temperature sweep (paper Figures 2, 3, 4 and 6)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kdlib.analysis import fit_line

COLORS = {"kd": "tab:red", "dist": "tab:blue", "fitnet": "tab:green", "kd_ls": "tab:purple",
          "dkd": "tab:brown", "dkd_ls": "tab:pink"}
"""One colour per loss in every figure of the sweep."""
ARM_COLORS = {"raw": "tab:red", "calibrated": "tab:olive"}
"""The control's two arms: KD from the raw teacher and from teacher / T*."""


def _seed_means(df: pd.DataFrame) -> pd.DataFrame:
    return (df.groupby(["pair", "loss", "temperature"])
            .agg(acc=("accuracy", "mean"), acc_std=("accuracy", "std"),
                 ece=("teacher_ece_at_tau", "mean"), student_ece=("ece", "mean"))
            .reset_index())


def accuracy_and_ece_vs_temperature(df: pd.DataFrame):
    """Top: student accuracy (%) vs tau per loss, seed mean +- std (Figure 2). Bottom: the
    teacher's ECE (%) at tau and the students' own ECE (Figure 3). One column per pair."""
    m = _seed_means(df)
    pairs = list(dict.fromkeys(m["pair"]))
    fig, axes = plt.subplots(2, len(pairs), figsize=(4.8 * len(pairs), 6.4), squeeze=False,
                             sharex="col")
    for j, pair in enumerate(pairs):
        g = m[m.pair == pair]
        for loss, gl in g.groupby("loss"):
            c = COLORS.get(loss, "k")
            axes[0, j].errorbar(gl.temperature, 100 * gl.acc, yerr=100 * gl.acc_std.fillna(0),
                                marker="o", color=c, capsize=3, label=loss.upper())
            axes[1, j].plot(gl.temperature, 100 * gl.student_ece, ls="--", marker=".", color=c,
                            label=f"student ECE ({loss.upper()})")
        t = g.drop_duplicates("temperature")
        axes[1, j].plot(t.temperature, 100 * t.ece, marker="s", color="k", label="teacher ECE")
        axes[0, j].set_title(pair)
        axes[0, j].set_ylabel("student test accuracy (%)")
        axes[1, j].set_ylabel("ECE (%)")
        axes[1, j].set_xlabel("temperature tau")
        axes[0, j].legend()
        axes[1, j].legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_vs_teacher_ece(df: pd.DataFrame):
    """Student accuracy (%) against the teacher's ECE at tau (%), seed means, with a fitted
    line per loss (Figure 6). One panel per pair."""
    m = _seed_means(df)
    pairs = list(dict.fromkeys(m["pair"]))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.8 * len(pairs), 3.8), squeeze=False)
    for j, pair in enumerate(pairs):
        ax = axes[0, j]
        for loss, gl in m[m.pair == pair].groupby("loss"):
            c = COLORS.get(loss, "k")
            x, y = 100 * gl.ece.to_numpy(), 100 * gl.acc.to_numpy()
            ax.scatter(x, y, color=c, label=loss.upper())
            if len(x) >= 2 and np.ptp(x) > 0:
                slope, icpt = fit_line(x, y)
                xs = np.linspace(x.min(), x.max(), 2)
                ax.plot(xs, slope * xs + icpt, color=c, lw=1,
                        label=f"{loss.upper()} fit: {slope:+.3f} pt per ECE pt")
        ax.set_title(pair)
        ax.set_xlabel("teacher ECE at tau (%)")
        ax.set_ylabel("student test accuracy (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_vs_teacher_calibration(df: pd.DataFrame, title: str = ""):
    """Figure 4: a fixed tau, teachers of different calibration; student accuracy (%) against
    the teacher's ECE at tau (%), per loss, seed mean +- std. One "pair" per teacher."""
    g = (df.groupby(["pair", "loss"])
         .agg(acc=("accuracy", "mean"), acc_std=("accuracy", "std"),
              ece=("teacher_ece_at_tau", "mean"), tau=("temperature", "first"))
         .reset_index().sort_values("ece"))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for loss, gl in g.groupby("loss"):
        ax.errorbar(100 * gl.ece, 100 * gl.acc, yerr=100 * gl.acc_std.fillna(0), marker="o",
                    capsize=3, color=COLORS.get(loss, "k"), label=loss.upper())
    ax.set_xlabel(f"teacher ECE at tau = {g.tau.iloc[0]:g} (%)")
    ax.set_ylabel("student test accuracy (%)")
    ax.set_title(title or "one student, teachers of different calibration")
    ax.legend()
    fig.tight_layout()
    return fig


def figure4_architectures(f4: pd.DataFrame):
    """Figure 4 the paper's way: per group (one data set and student, one panel each), the
    student's accuracy (%) against the teacher's ECE at the fixed tau (%), one point per
    teacher architecture (labelled), per loss, seed mean +- std."""
    groups = list(dict.fromkeys(f4["group"]))
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5.2 * max(len(groups), 1), 4),
                             squeeze=False)
    for j, group in enumerate(groups):
        ax = axes[0, j]
        g = (f4[f4.group == group].groupby(["teacher_label", "loss"])
             .agg(acc=("accuracy", "mean"), acc_std=("accuracy", "std"),
                  ece=("teacher_ece_at_tau", "mean"), tau=("temperature", "first"))
             .reset_index().sort_values("ece"))
        for loss, gl in g.groupby("loss"):
            ax.errorbar(100 * gl.ece, 100 * gl.acc, yerr=100 * gl.acc_std.fillna(0),
                        marker="o", capsize=3, color=COLORS.get(loss, "k"), label=loss.upper())
        for _, r in g[g.loss == g.loss.iloc[0]].iterrows():
            ax.annotate(r.teacher_label, (100 * r.ece, 100 * r.acc), fontsize=7,
                        textcoords="offset points", xytext=(3, 4))
        ax.set_title(f"{group} (tau = {g.tau.iloc[0]:g})")
        ax.set_xlabel("teacher ECE at tau (%)")
        ax.set_ylabel("student test accuracy (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def calibrated_control(control: pd.DataFrame):
    """The calibrated-teacher control, one column per pair. Top: KD student accuracy (%)
    vs tau from the raw teacher and from teacher / T* (seed mean +- std); bottom: the
    calibrated-minus-raw gain (points, seed mean +- std) against the raw teacher's ECE at
    tau (%)."""
    from kdlib.calibrated_control import paired_gain

    pairs = list(dict.fromkeys(control["pair"]))
    fig, axes = plt.subplots(2, max(len(pairs), 1), figsize=(4.8 * max(len(pairs), 1), 6.4),
                             squeeze=False)
    gains = paired_gain(control)
    for j, pair in enumerate(pairs):
        c = control[control.pair == pair]
        for arm, ga in c.groupby("arm"):
            m = ga.groupby("temperature")["accuracy"].agg(["mean", "std"]).reset_index()
            axes[0, j].errorbar(m.temperature, 100 * m["mean"], yerr=100 * m["std"].fillna(0),
                                marker="o", capsize=3, color=ARM_COLORS.get(arm, "k"),
                                label=f"KD, {arm} teacher")
        g = (gains[gains.pair == pair].groupby("temperature")
             .agg(ece=("raw_teacher_ece_at_tau", "mean"), gain=("gain", "mean"),
                  sd=("gain", "std")).reset_index())
        axes[1, j].errorbar(100 * g.ece, 100 * g.gain, yerr=100 * g.sd.fillna(0), marker="o",
                            ls="none", capsize=3, color=ARM_COLORS["calibrated"])
        axes[1, j].axhline(0, color="0.5", lw=0.8)
        axes[0, j].set_title(pair)
        axes[0, j].set_xlabel("temperature tau")
        axes[0, j].set_ylabel("student test accuracy (%)")
        axes[0, j].legend(fontsize=8)
        axes[1, j].set_xlabel("raw teacher ECE at tau (%)")
        axes[1, j].set_ylabel("calibrated - raw (points)")
    fig.tight_layout()
    return fig
