"""The calibrated-teacher control of the temperature sweep (the experiment the paper never ran).

The paper (Fan et al., ICML 2024) explains KD's loss of accuracy at high tau causally: the
teacher is miscalibrated at tau. Its evidence changes tau, which moves the teacher's
calibration and the softness of its ranking together. The control keeps tau and the
ranking and changes only the calibration: the teacher's temperature T* is fitted on a part
of the TRAINING split that the teacher never trained on (never on the test set), and
students are distilled from softmax(z / (T* tau)) beside students distilled from the raw
teacher's softmax(z / tau), same initialization, same batches.

    teacher_data, heldout = holdout_split(data, 0.1)   # teacher trains on teacher_data
    t_star = fit_heldout_temperature(teacher, heldout)
    scaled = ScaledTeacher(teacher, t_star)             # a teacher module for distill_stacked
    gains = paired_gain(control_frame)                  # calibrated - raw accuracy per tau/seed
    gain_vs_ece(control_frame)                          # Spearman(raw ECE at tau, gain)

If calibration is what matters, the calibrated teacher's KD student gains most where the
raw teacher's ECE is high: the Spearman between the raw teacher's ECE at tau and the gain
is > 0 (the claim tested by `control_claim`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from kdlib._validate import check_int, check_real

CONTROL_COLUMNS = ("pair", "seed", "temperature", "arm", "accuracy", "raw_teacher_ece_at_tau")
ARMS = ("raw", "calibrated")


class ScaledTeacher(torch.nn.Module):
    """A teacher whose logits are divided by a fixed temperature T* > 0 (temperature
    scaling, Guo et al. 2017): forward(x) = teacher(x) / T*, B x C logits. Distilling from
    it at tau uses softmax(z / (T* tau)); its ranking of the classes is the teacher's."""

    def __init__(self, teacher: torch.nn.Module, temperature: float):
        super().__init__()
        if not isinstance(teacher, torch.nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        t = check_real(temperature, "temperature", 0.0)
        if not 0 < t < math.inf:
            raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
        self.teacher = teacher
        self.temperature = float(t)

    def forward(self, x):
        return self.teacher(x) / self.temperature


def holdout_split(data, fraction: float, seed: int = 0):
    """(teacher_data, heldout): `data` with a stratified `fraction` of its TRAINING split
    removed, and a Dataset whose test split is exactly those held-out training samples (its
    train split is the teacher's, so normalization and shapes stay those of `data`).

    fraction in (0, 1): at least 2 samples are held out and at least 2 kept. Normalization
    statistics stay those of the full train split (`Dataset.subset` keeps them too).
    """
    from kdlib.data import Dataset, stratified_indices

    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a kdlib.data.Dataset, got {type(data).__name__}")
    f = check_real(fraction, "fraction", 0.0, 1.0)
    if not 0 < f < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    seed = check_int(seed, "seed", minimum=0)
    n = len(data.train_y)
    if n < 4:
        raise ValueError(f"need at least 4 training samples to hold some out, got {n}")
    n_hold = min(max(2, round(f * n)), n - 2)
    idx = torch.from_numpy(stratified_indices(data.train_y.numpy(), n_hold, seed,
                                              name="n_heldout"))
    keep = torch.ones(n, dtype=torch.bool)
    keep[idx] = False
    post = data.train_posterior
    teacher_data = replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep],
                           train_posterior=None if post is None else post[keep])
    heldout = replace(teacher_data, test_x=data.train_x[idx], test_y=data.train_y[idx],
                      test_posterior=None if post is None else post[idx])
    return teacher_data, heldout


def fit_heldout_temperature(teacher: torch.nn.Module, heldout) -> tuple[float, torch.Tensor]:
    """(T*, logits): the temperature minimizing the teacher's NLL on the held-out training
    samples (`holdout_split`'s second value; kdlib.calibration.fit_temperature), and the
    teacher's N x C logits on them."""
    from kdlib.calibration import fit_temperature
    from kdlib.train import predict_logits

    logits = predict_logits(teacher, heldout)
    return float(fit_temperature(logits, heldout.test_y)), logits


# --------------------------------------------------------------------------- analysis


def _check_frame(df) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a DataFrame of control students, got {type(df).__name__}")
    missing = [c for c in CONTROL_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} missing; a control frame has {list(CONTROL_COLUMNS)}")
    bad = sorted(set(df["arm"]) - set(ARMS))
    if bad:
        raise ValueError(f"arm must be one of {ARMS}, got {bad}")


def paired_gain(df: pd.DataFrame) -> pd.DataFrame:
    """The calibrated-minus-raw accuracy of each (pair, temperature, seed): one row each
    with columns pair, temperature, seed, raw_teacher_ece_at_tau (fraction), gain (a
    difference of fractions). Only (pair, temperature, seed) present in both arms count:
    the two students share initialization and batches, so the difference is paired."""
    _check_frame(df)
    keys = ["pair", "temperature", "seed"]
    dup = df.duplicated(keys + ["arm"])
    if dup.any():
        raise ValueError(f"{int(dup.sum())} duplicated (pair, temperature, seed, arm) rows")
    raw = df[df["arm"] == "raw"][keys + ["accuracy", "raw_teacher_ece_at_tau"]]
    cal = df[df["arm"] == "calibrated"][keys + ["accuracy"]]
    m = raw.merge(cal, on=keys, suffixes=("_raw", "_cal"))
    m["gain"] = m["accuracy_cal"] - m["accuracy_raw"]
    return m[keys + ["raw_teacher_ece_at_tau", "gain"]].reset_index(drop=True)


def gain_vs_ece(df: pd.DataFrame, n_boot: int = 2000, level: float = 0.95,
                rng_seed: int = 0) -> pd.DataFrame:
    """Per pair: does the calibrated teacher's student gain most where the raw teacher's
    ECE at tau is high?

    rho: Spearman, across temperatures, between the raw teacher's ECE at tau and the
    seed-mean gain (`paired_gain`), with a bootstrap interval [lo, hi] at `level` that
    resamples seeds within each temperature (kdlib.analysis.bootstrap_spearman);
    mean_gain, gain_lo, gain_hi: the gain averaged over temperatures, per seed, with a
    t-interval over seeds (kdlib.analysis.mean_t_interval); n_cells (temperatures),
    n_seeds. Fractions (rho in [-1, 1]); NaN rho with fewer than 3 temperatures."""
    from kdlib.analysis import bootstrap_spearman, mean_t_interval

    gains = paired_gain(df)
    rows = []
    for pair, g in gains.groupby("pair", sort=False):
        n_cells = int(g["temperature"].nunique())
        if n_cells >= 3:
            r = bootstrap_spearman(g, "raw_teacher_ece_at_tau", "gain", n_boot=n_boot,
                                   level=level, rng_seed=rng_seed)
            rho, lo, hi = r["rho"], r["lo"], r["hi"]
        else:
            rho = lo = hi = math.nan
        per_seed = g.groupby("seed")["gain"].mean().to_numpy()
        mean, glo, ghi = mean_t_interval(per_seed, level)
        rows.append({"pair": pair, "rho": rho, "lo": lo, "hi": hi, "mean_gain": mean,
                     "gain_lo": glo, "gain_hi": ghi, "n_cells": n_cells,
                     "n_seeds": int(g["seed"].nunique())})
    return pd.DataFrame(rows, columns=["pair", "rho", "lo", "hi", "mean_gain", "gain_lo",
                                       "gain_hi", "n_cells", "n_seeds"])


def control_claims(df: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Claims-table rows (kdlib.claims) of the control, one per pair: "calibrating the
    teacher helps KD most where the raw teacher's ECE is high", i.e. the Spearman of
    `gain_vs_ece` (percent) is > 0. Rule (kdlib.claims.verdict, kind "greater"): holds when
    the whole 95% interval lies above 0, does not hold when it lies wholly below, else (or
    with fewer than 3 seeds, or fewer than 3 temperatures) inconclusive; n = seeds."""
    from kdlib import claims as cl

    table = gain_vs_ece(df, n_boot=n_boot)
    rows = []
    for _, r in table.iterrows():
        name = str(r["pair"]).split(" (")[0]
        rows.append(cl.claim(
            f"Calibrated teacher helps KD most where raw ECE is high ({name})",
            "not tested in the paper (its causal reading of Tables 6, 9)",
            100 * r["rho"] if np.isfinite(r["rho"]) else math.nan,
            100 * r["lo"], 100 * r["hi"], int(r["n_seeds"]), "greater", unit="%", digits=0))
    return cl.claims_table(rows)


__all__ = ["ARMS", "CONTROL_COLUMNS", "ScaledTeacher", "control_claims",
           "fit_heldout_temperature", "gain_vs_ece", "holdout_split", "paired_gain"]
