"""Feature-based KD (FitNet hints) vs teacher calibration (paper appendix A.1, Figure 7).

FitNet here = KD on the outputs at temperature tau + hint_weight * MSE between a middle
stage of the student (through a learned 1x1-conv regressor) and the same stage of the
teacher (kdlib.distillers.FitNet, alpha = 1: no cross-entropy term). Only the output term
sees tau, so sweeping tau changes the calibration of what the student is told to match
while the hint stays the same. Beside it, vanilla KD and DIST at the same temperatures and
seeds (stacked, cheap): the paper's claim is that FitNet, like KD, loses accuracy as the
teacher's ECE at tau grows, while DIST does not care.

    cfg = presets.get(NAME, "default")
    df = run(cfg, "default")          # one row per (loss, temperature, seed); fractions
    accuracy_table(df); correlation_table(df)

Every student of a seed starts from the same initialization and sees the same batches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlib import presets
from kdlib._validate import check_choice, check_int, check_positive
from kdlib.analysis import bootstrap_spearman
from kdlib.experiments.tsne_features import load_teacher
from kdlib.paper import PAPER_TEMPERATURES
from kdlib.recipe import recipe_from_spec

NAME = "feature_kd"
LOGIT_LOSSES = ("kd", "dist")
LOSS_ORDER = ("fitnet", "kd", "dist")
PAPER_TAUS = PAPER_TEMPERATURES  # Table 6's grid

presets.register(NAME, {
    "smoke": {
        "data": {"name": "digits", "seed": 0, "subset_train": 300, "subset_test": 200},
        "teacher": "resnet8",
        "student": "resnet8",
        "teacher_recipe": {"epochs": 2},
        "teacher_seed": 0,
        "student_recipe": {"epochs": 1},
        "temperatures": [1.0, 8.0],
        "seeds": [0],
        "hint_stage": 1,
        "hint_weight": 100.0,
        "compare_losses": ["kd", "dist"],
        "n_boot": 200,
    },
    "default": {
        "data": {"name": "digits", "seed": 0},
        "teacher": "resnet20",
        "student": "resnet8",
        "teacher_recipe": "default",        # the same cached teacher as tsne_features
        "teacher_seed": 0,
        "student_recipe": {"epochs": 15, "milestones": [9, 11, 13]},
        "temperatures": [1.0, 2.0, 4.0, 8.0],
        "seeds": [0, 1, 2],
        "hint_stage": 1,                    # the middle of the three stages
        "hint_weight": 100.0,               # FitNet's weight in mdistiller's CIFAR config
        "compare_losses": ["kd", "dist"],
        "n_boot": 2000,
    },
    "paper": {
        "data": {"name": "cifar100", "seed": 0},
        "teacher": "resnet56",              # Table 6's first pair (Figure 7's pairs are
        "student": "resnet14",              # not listed in the text)
        "teacher_recipe": "paper",
        "teacher_seed": 0,
        "student_recipe": {"preset": "paper", "checkpoint_every": 0},
        "temperatures": PAPER_TAUS,
        "seeds": [0, 1, 2],
        "hint_stage": 1,
        "hint_weight": 100.0,
        "compare_losses": ["kd", "dist"],
        "n_boot": 2000,
    },
})


# ------------------------------------------------------------------ grid


def _check_cfg(cfg: dict) -> None:
    need = ["data", "teacher", "student", "teacher_recipe", "teacher_seed", "student_recipe",
            "temperatures", "seeds", "hint_stage", "hint_weight", "compare_losses", "n_boot"]
    if not isinstance(cfg, dict):
        raise TypeError(f"cfg must be a dict from presets.get({NAME!r}, scale)")
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ValueError(f"config lacks {missing}; get one with presets.get({NAME!r}, scale)")
    if not cfg["temperatures"] or not cfg["seeds"]:
        raise ValueError("temperatures and seeds must not be empty")
    for t in cfg["temperatures"]:
        check_positive(t, "temperature")
    for loss in cfg["compare_losses"]:
        check_choice(loss, "compare_losses entry", LOGIT_LOSSES)
    check_int(cfg["hint_stage"], "hint_stage", minimum=0)
    check_positive(cfg["hint_weight"], "hint_weight")


def _fixed(cfg: dict) -> dict:
    return {k: cfg[k] for k in ("data", "teacher", "student", "teacher_recipe", "teacher_seed",
                                "student_recipe")}


def fitnet_grid(cfg: dict) -> list[dict]:
    """One fitnet_student cell per (temperature, seed)."""
    _check_cfg(cfg)
    return [{**_fixed(cfg), "temperature": float(t), "seed": check_int(s, "seed", minimum=0),
             "stage": int(cfg["hint_stage"]), "hint_weight": float(cfg["hint_weight"])}
            for s in cfg["seeds"] for t in cfg["temperatures"]]


def logit_grid(cfg: dict) -> list[dict]:
    """One logit_students cell per seed (every compared loss and temperature, stacked);
    empty when cfg["compare_losses"] is empty."""
    _check_cfg(cfg)
    if not cfg["compare_losses"]:
        return []
    return [{**_fixed(cfg), "losses": list(cfg["compare_losses"]),
             "temperatures": [float(t) for t in cfg["temperatures"]],
             "seed": check_int(s, "seed", minimum=0)} for s in cfg["seeds"]]


# ------------------------------------------------------------------ the work


def _row(loss: str, temperature: float, metrics: dict) -> dict:
    keys = ("accuracy", "ece", "nll", "agreement", "kl_teacher_student", "teacher_accuracy",
            "teacher_ece_at_tau")
    return {"loss": loss, "temperature": float(temperature),
            **{k: float(metrics[k]) for k in keys}}


def fitnet_student(data: dict, teacher: str, student: str, teacher_recipe, teacher_seed: int,
                   student_recipe, temperature: float, seed: int, stage: int,
                   hint_weight: float) -> dict:
    """Distil the (cached) teacher into one student with FitNet hints on stage `stage` and
    KD at `temperature` (alpha = 1). Returns the record's test metrics (fractions): loss,
    accuracy, ece, nll, agreement, kl_teacher_student, teacher_accuracy,
    teacher_ece_at_tau."""
    from kdlib.train import distill, make_model

    temperature = check_positive(temperature, "temperature")
    seed = check_int(seed, "seed", minimum=0)
    d, t_model, _ = load_teacher(data, teacher, teacher_recipe, teacher_seed)
    rec = distill(make_model(student, d, seed=seed), t_model, d, "fitnet", temperature,
                  recipe_from_spec(student_recipe), seed=seed, progress=False, eval_every=0,
                  loss_kwargs={"stage": check_int(stage, "stage", minimum=0),
                               "hint_weight": check_positive(hint_weight, "hint_weight")})
    row = _row("fitnet", temperature, rec["metrics"])
    del row["temperature"]  # a cell key: the record has it already
    return row


def logit_students(data: dict, teacher: str, student: str, teacher_recipe, teacher_seed: int,
                   student_recipe, losses: list, temperatures: list, seed: int) -> dict:
    """One student per (loss, temperature), all trained at once with distill_stacked from
    the same initialization `seed` and batch order. Returns {"students": [row, ...]}, rows
    with the keys of fitnet_student's result plus temperature."""
    from kdlib.stacked import distill_stacked
    from kdlib.train import make_model

    seed = check_int(seed, "seed", minimum=0)
    losses = [check_choice(loss, "loss", LOGIT_LOSSES) for loss in losses]
    temps = [check_positive(t, "temperature") for t in temperatures]
    if not losses or not temps:
        raise ValueError("losses and temperatures must not be empty")
    d, t_model, _ = load_teacher(data, teacher, teacher_recipe, teacher_seed)
    specs = [{"loss": loss, "temperature": t} for loss in losses for t in temps]
    students = [make_model(student, d, seed=seed) for _ in specs]
    records = distill_stacked(students, t_model, d, specs, recipe_from_spec(student_recipe),
                              seed=seed, progress=False)
    return {"students": [_row(s["loss"], s["temperature"], r["metrics"])
                         for s, r in zip(specs, records)]}


def run(cfg: dict, scale: str, progress: bool = True) -> pd.DataFrame:
    """Run (or load from runs/<scale>/feature_kd.sqlite) the FitNet students one by one and
    the KD/DIST students stacked per seed. One row per (loss, temperature, seed)."""
    from kdlib import sweep
    from kdlib.experiments.common import store_path

    store = store_path(NAME, scale)
    rows = []
    for rec in sweep.run(fitnet_student, fitnet_grid(cfg), store, namespace=f"{NAME}/fitnet",
                         progress=progress):
        rows.append({"seed": rec["seed"], **{k: rec[k] for k in
                                             ("loss", "temperature", "accuracy", "ece", "nll",
                                              "agreement", "kl_teacher_student",
                                              "teacher_accuracy", "teacher_ece_at_tau")}})
    cells = logit_grid(cfg)
    if cells:
        for rec in sweep.run(logit_students, cells, store, namespace=f"{NAME}/logit",
                             progress=progress):
            rows.extend({"seed": rec["seed"], **s} for s in rec["students"])
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ tables


def _check_df(df: pd.DataFrame, cols) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a DataFrame from run(), got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks columns {missing}; it has {list(df.columns)}")


def _losses(df: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(df["loss"]))
    return [x for x in LOSS_ORDER if x in present] + [x for x in present if x not in LOSS_ORDER]


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per temperature: the teacher's ECE at tau and each loss's student accuracy, mean and
    standard deviation over seeds, in percent (as the paper prints)."""
    _check_df(df, ["loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau"])
    out = (df.groupby("temperature")["teacher_ece_at_tau"].mean() * 100).to_frame(
        "teacher_ece_at_tau")
    for loss in _losses(df):
        g = df[df["loss"] == loss].groupby("temperature")["accuracy"]
        out[f"{loss}_mean"] = g.mean() * 100
        out[f"{loss}_std"] = g.std(ddof=1) * 100
    return out


def correlation_table(df: pd.DataFrame, n_boot: int = 2000, rng_seed: int = 0) -> pd.DataFrame:
    """Per loss: Spearman rank correlation (percent, as the paper prints) between the
    teacher's ECE at tau and the seed-averaged student accuracy across temperatures, with a
    95% bootstrap interval over seeds (kdlib.analysis.bootstrap_spearman), and the
    accuracy spread across temperatures (max - min of the means, percent points). NaN
    correlations with fewer than 3 temperatures."""
    _check_df(df, ["loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau"])
    rows = []
    for loss in _losses(df):
        g = df[df["loss"] == loss]
        means = g.groupby("temperature")["accuracy"].mean()
        if len(means) < 3:  # no rank correlation from fewer than 3 temperatures
            b = {"rho": np.nan, "lo": np.nan, "hi": np.nan, "n_cells": len(means),
                 "n_seeds": int(g["seed"].nunique())}
        else:
            b = bootstrap_spearman(g, "teacher_ece_at_tau", "accuracy", cell="temperature",
                                   seed_col="seed", n_boot=n_boot, rng_seed=rng_seed)
        rows.append({"loss": loss, "spearman": 100 * b["rho"], "lo": 100 * b["lo"],
                     "hi": 100 * b["hi"], "n_temperatures": b["n_cells"],
                     "n_seeds": b["n_seeds"],
                     "accuracy_range": 100 * float(means.max() - means.min())})
    return pd.DataFrame(rows).set_index("loss")


def paper_correlations() -> pd.DataFrame:
    """The paper's Spearman (percent) of teacher ECE vs KD and DIST accuracy: Table 6's
    printed values (CIFAR-100, student ResNet14) and Table 9's. Figure 7 (FitNet) prints no
    numbers, only the claim that the correlation also holds."""
    from kdlib.paper import paper_table

    return paper_table("table6_9_spearman")


def per_seed_spearman(df: pd.DataFrame) -> pd.DataFrame:
    """Spearman (percent) of teacher ECE at tau vs accuracy within each seed, per loss:
    rows = seeds, columns = losses (NaN with fewer than 3 temperatures)."""
    from kdlib.analysis import spearman

    _check_df(df, ["loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau"])
    out = {}
    for loss in _losses(df):
        g = df[df["loss"] == loss]
        col = {}
        for seed, h in g.groupby("seed"):
            h = h.sort_values("temperature")
            col[seed] = (100 * spearman(h["teacher_ece_at_tau"], h["accuracy"])
                         if len(h) >= 3 else np.nan)
        out[loss] = pd.Series(col)
    return pd.DataFrame(out).rename_axis("seed")


def claims(df: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Figure 7's claim as a kdlib.claims table: per feature-based loss (every loss but
    "dist"), student accuracy falls as the teacher's ECE at tau rises (Spearman in percent
    over temperatures, interval over seeds, n = seeds; claimed < 0); and DIST insensitive
    (|rho| <= temperature_sweep.DIST_TOLERANCE) when DIST ran."""
    from kdlib import claims as cl
    from kdlib.experiments.temperature_sweep import DIST_TOLERANCE

    _check_df(df, ["loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau"])
    rows = []
    for loss in _losses(df):
        g = df[df["loss"] == loss]
        if loss == "dist":
            rows.append(cl.spearman_claim(
                g, "teacher_ece_at_tau", "accuracy", "DIST insensitive to teacher ECE",
                "Tables 6, 9: DIST rho -50% to 8%", "insensitive", tolerance=DIST_TOLERANCE,
                n_boot=n_boot, scale=100, unit="%", digits=0))
        else:
            rows.append(cl.spearman_claim(
                g, "teacher_ece_at_tau", "accuracy", f"{loss} falls as teacher ECE rises",
                "Figure 7: the KD correlation also holds with FitNet (no values printed)"
                if loss != "kd" else "Tables 6, 9: KD rho -99% to -32%", "less",
                n_boot=n_boot, scale=100, unit="%", digits=0))
    return cl.claims_table(rows)
