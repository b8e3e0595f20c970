"""Figures for the companion studies (notebooks 07-09): fidelity, confidence exaggeration,
online distillation, the GMM oracle. Each function takes the tables of the matching
`kdlib.experiments` module and returns a matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

LOSS_COLORS = {"kd": "tab:blue", "dist": "tab:orange"}
MODE_COLORS = {"online": "tab:green", "final": "tab:blue", "early": "tab:purple"}


def _need(df, cols):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; it has {list(df.columns)}")
    if df.empty:
        raise ValueError("the table is empty")


def _color(loss):
    return LOSS_COLORS.get(str(loss), "tab:gray")


def fidelity_scatter(summary: pd.DataFrame, xs=("agreement", "kl_teacher_student"),
                     y: str = "accuracy"):
    """Student accuracy against each fidelity measure, one point per (loss, temperature)
    (seed means with sd bars), labelled with the temperature. `summary`: the output of
    fidelity_exaggeration.summary_table."""
    _need(summary, ["loss", "temperature", y, *xs])
    fig, axes = plt.subplots(1, len(xs), figsize=(5 * len(xs), 4), squeeze=False)
    for ax, x in zip(axes[0], xs):
        for loss, g in summary.groupby("loss"):
            ax.errorbar(g[x], g[y], xerr=g.get(f"{x}_sd"), yerr=g.get(f"{y}_sd"), fmt="o",
                        color=_color(loss), label=loss, capsize=2)
            for _, r in g.iterrows():
                ax.annotate(f"{r['temperature']:g}", (r[x], r[y]), textcoords="offset points",
                            xytext=(4, 3), fontsize=8, color=_color(loss))
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(f"student {y}")
        ax.legend(title="loss (labels: T)")
    fig.suptitle("Fidelity vs generalization")
    fig.tight_layout()
    return fig


def confidence_curves(curves: pd.DataFrame, title: str = "teacher at T = 1"):
    """Mean student confidence per teacher-confidence bin, one panel per loss and one line
    per temperature, with the diagonal (student as confident as the teacher). `curves`:
    fidelity_exaggeration.curves_frame."""
    _need(curves, ["loss", "temperature", "teacher_confidence", "student_confidence"])
    losses = sorted(curves["loss"].unique())
    fig, axes = plt.subplots(1, len(losses), figsize=(4.5 * len(losses), 4), squeeze=False,
                             sharey=True)
    temps = sorted(curves["temperature"].unique())
    cmap = plt.get_cmap("viridis")
    for ax, loss in zip(axes[0], losses):
        g = curves[curves["loss"] == loss]
        for i, t in enumerate(temps):
            c = g[g["temperature"] == t].dropna(subset=["teacher_confidence"])
            ax.plot(c["teacher_confidence"], c["student_confidence"], "o-", ms=3,
                    color=cmap(i / max(1, len(temps) - 1)), label=f"T={t:g}")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="student = teacher")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"teacher confidence ({title})")
        ax.set_title(loss)
    axes[0][0].set_ylabel("mean student confidence (T = 1)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def exaggeration_vs_temperature(summary: pd.DataFrame):
    """Share of test samples where the student is more confident than the teacher, against
    the distillation temperature, per loss; solid: teacher at T = 1, dashed: at tau."""
    _need(summary, ["loss", "temperature", "exaggeration_t1", "exaggeration_tau"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for loss, g in summary.groupby("loss"):
        g = g.sort_values("temperature")
        ax.errorbar(g["temperature"], g["exaggeration_t1"], yerr=g.get("exaggeration_t1_sd"),
                    fmt="o-", color=_color(loss), label=f"{loss} vs teacher at T=1", capsize=2)
        ax.plot(g["temperature"], g["exaggeration_tau"], "s--", color=_color(loss),
                label=f"{loss} vs teacher at tau")
    ax.axhline(0.5, color="gray", lw=0.8)
    ax.set_xlabel("distillation temperature tau")
    ax.set_ylabel("share of samples: student more confident")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def teacher_trajectory(trajectory: pd.DataFrame, early_epoch: int | None = None):
    """The teacher along its training: test accuracy (left) and ECE at each temperature
    (right) per checkpoint epoch. `trajectory`: online_distillation.teacher_trajectory."""
    _need(trajectory, ["epoch", "temperature", "accuracy", "ece_at_tau"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    acc = trajectory.drop_duplicates("epoch").sort_values("epoch")
    a1.plot(acc["epoch"], acc["accuracy"], "o-", color="k")
    a1.set_xlabel("teacher epoch")
    a1.set_ylabel("teacher test accuracy")
    for t, g in trajectory.groupby("temperature"):
        g = g.sort_values("epoch")
        a2.plot(g["epoch"], g["ece_at_tau"], "o-", label=f"tau={t:g}")
    a2.set_xlabel("teacher epoch")
    a2.set_ylabel("teacher ECE at tau")
    a2.legend(fontsize=8)
    for ax in (a1, a2):
        if early_epoch is not None:
            ax.axvline(early_epoch, color="tab:purple", ls=":", label="early stop")
    fig.tight_layout()
    return fig


def online_accuracy(summary: pd.DataFrame):
    """Student accuracy per teacher mode (bars with seed sd), grouped by loss and
    temperature. `summary`: online_distillation.summary_table."""
    _need(summary, ["loss", "temperature", "mode", "accuracy"])
    groups = summary[["loss", "temperature"]].drop_duplicates().sort_values(
        ["loss", "temperature"]).itertuples(index=False)
    groups = list(groups)
    modes = [m for m in MODE_COLORS if m in set(summary["mode"])]
    width = 0.8 / max(1, len(modes))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(groups), 4))
    for j, mode in enumerate(modes):
        xs, ys, es = [], [], []
        for i, (loss, t) in enumerate(groups):
            r = summary[(summary["loss"] == loss) & (summary["temperature"] == t)
                        & (summary["mode"] == mode)]
            if len(r):
                xs.append(i + (j - (len(modes) - 1) / 2) * width)
                ys.append(float(r["accuracy"].iloc[0]))
                es.append(float(r["accuracy_sd"].iloc[0]) if "accuracy_sd" in r else 0.0)
        ax.bar(xs, ys, width, yerr=es, color=MODE_COLORS[mode], label=mode, capsize=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{loss}\nT={t:g}" for loss, t in groups])
    lo = float(summary["accuracy"].min())
    ax.set_ylim(max(0.0, lo - 0.05), min(1.0, float(summary["accuracy"].max()) + 0.02))
    ax.set_ylabel("student test accuracy")
    ax.legend(title="teacher")
    fig.tight_layout()
    return fig


def online_stages(stages: pd.DataFrame):
    """Per stage of training: the student's test accuracy (left) and the ECE at tau of the
    teacher that taught the stage (right), one line per mode; panels per (loss, T) are
    averaged over seeds. `stages`: online_distillation.stages_frame."""
    _need(stages, ["mode", "loss", "temperature", "stop_epoch", "accuracy",
                   "teacher_ece_at_tau"])
    keys = list(stages[["loss", "temperature"]].drop_duplicates().sort_values(
        ["loss", "temperature"]).itertuples(index=False))
    fig, axes = plt.subplots(2, len(keys), figsize=(3.6 * len(keys), 6), squeeze=False,
                             sharex=True)
    for j, (loss, t) in enumerate(keys):
        g = stages[(stages["loss"] == loss) & (stages["temperature"] == t)]
        m = g.groupby(["mode", "stop_epoch"])[["accuracy", "teacher_ece_at_tau"]].mean()
        for mode in MODE_COLORS:
            if mode not in m.index.get_level_values(0):
                continue
            r = m.loc[mode]
            axes[0][j].plot(r.index, r["accuracy"], "o-", color=MODE_COLORS[mode], label=mode)
            axes[1][j].plot(r.index, r["teacher_ece_at_tau"], "o-", color=MODE_COLORS[mode])
        axes[0][j].set_title(f"{loss}, T={t:g}")
        axes[1][j].set_xlabel("student epoch (end of stage)")
    axes[0][0].set_ylabel("student test accuracy")
    axes[1][0].set_ylabel("stage teacher's ECE at tau")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def oracle_scatter(cells: pd.DataFrame, proxies=("teacher_ece_at_tau", "kl_to_posterior"),
                   title: str | None = None):
    """Student accuracy against each teacher proxy, one point per tempered teacher (seed
    means), rows = losses. `cells`: gmm_oracle.cell_table (one task)."""
    _need(cells, ["loss", "temperature", "accuracy", *proxies])
    losses = sorted(cells["loss"].unique())
    fig, axes = plt.subplots(len(losses), len(proxies), figsize=(4.5 * len(proxies),
                                                                 3.6 * len(losses)),
                             squeeze=False, sharey="row")
    temps = sorted(cells["temperature"].unique())
    cmap = plt.get_cmap("viridis")
    for i, loss in enumerate(losses):
        g = cells[cells["loss"] == loss]
        for j, x in enumerate(proxies):
            ax = axes[i][j]
            for k, t in enumerate(temps):
                c = g[g["temperature"] == t]
                ax.scatter(c[x], c["accuracy"], s=18, color=cmap(k / max(1, len(temps) - 1)),
                           label=f"T={t:g}")
            ax.set_xlabel(x.replace("_", " "))
            if x == "kl_to_posterior":
                ax.set_xscale("log")
            if j == 0:
                ax.set_ylabel(f"{loss}: student accuracy")
    axes[0][-1].legend(fontsize=7, title="teacher T")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
