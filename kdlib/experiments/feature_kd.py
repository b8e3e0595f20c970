"""Feature-based KD (FitNet hints) vs teacher calibration (paper appendix A.1, Figure 7).

Arms, all from the same cached teacher, at the same temperatures and seeds:

    "fitnet"     FitNet as the paper runs it beside KD: KD on the outputs at temperature tau
                 + hint_weight * MSE between a middle stage of the student (through a learned
                 1x1-conv regressor) and the same stage of the teacher (kdlib.distillers.
                 FitNet, alpha = 1: no cross-entropy term). Only the output term sees tau.
    "fitnet_ce"  the hint-only arm: cross-entropy + hint_weight * the same hint, no KD term,
                 as the original FitNet (Romero et al. 2015) and the RepDistiller/mdistiller
                 anchors run it. It does not depend on tau: one student per seed.
    "kd", "dist" vanilla KD and DIST at each tau (stacked, cheap).

The paper's claim is that FitNet, like KD, loses accuracy as the teacher's ECE at tau grows,
while DIST does not care. The hint-only arm separates the feature-based effect from the KD
term: `hint_effect` gives, per tau and paired by seed, FitNet minus KD (what the hint adds
on top of the KD term) and FitNet minus the hint-only student (what the KD term at tau adds
on top of the hint).

    cfg = presets.get(NAME, "default")
    df = run(cfg, "default")          # one row per (loss, temperature, seed); fractions
    accuracy_table(df); correlation_table(df); hint_effect(df)

Every student of a seed starts from the same initialization and sees the same batches, and
every student is kept (weights and test logits) in the student store
(`kdlib.student_store`), shared with the other notebooks that define the same student.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlib import presets
from kdlib._validate import check_choice, check_int, check_positive
from kdlib.analysis import bootstrap_spearman
from kdlib.experiments.common import (
    cut_recipe_specs,
    limited_threads,
    load_teacher,
    missing_data,
    run_name,
    store_path,
    students_dir,
)
from kdlib.paper import PAPER_TEMPERATURES

NAME = "feature_kd"
LOGIT_LOSSES = ("kd", "dist")
HINT_ONLY = "fitnet_ce"
LOSS_ORDER = ("fitnet", HINT_ONLY, "kd", "dist")
LOSS_LABELS = {"fitnet": "FitNet: KD(tau) + hint", HINT_ONLY: "hint only: CE + hint",
               "kd": "KD(tau)", "dist": "DIST(tau)"}
PAPER_TAUS = PAPER_TEMPERATURES  # Table 6's grid
TABLE = "Figure 7"
HINT_TABLE = "Figure 7 hint-only arm"

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
        "hint_only": True,
        "compare_losses": ["kd", "dist"],
        "n_boot": 200,
        "torch_threads": 1,
    },
    "default": {
        "data": {"name": "digits", "seed": 0},
        "teacher": "resnet20",
        "student": "resnet8",
        "teacher_recipe": "default",        # the cached teacher of notebooks 02, 05 and 07
        "teacher_seed": 0,
        # the students of notebook 02's digits pair (shared through the student store)
        "student_recipe": {"epochs": 15, "milestones": [9, 11, 13]},
        "temperatures": [1.0, 2.0, 4.0, 8.0],
        "seeds": [0, 1, 2],
        "hint_stage": 1,                    # the middle of the three stages
        "hint_weight": 100.0,               # FitNet's weight in mdistiller's CIFAR config
        "hint_only": True,
        "compare_losses": ["kd", "dist"],
        "n_boot": 2000,
        "torch_threads": 1,                 # 1 thread: measured fastest on 2 shared cores
    },
    "paper": {
        "data": {"name": "cifar100", "seed": 0},
        "teacher": "resnet56",              # Table 6's first pair (Figure 7's pairs are
        "student": "resnet14",              # not listed in the text): notebook 02's students
        "teacher_recipe": {"preset": "paper", "checkpoint_every": 0},
        "teacher_seed": 0,
        "student_recipe": {"preset": "paper", "checkpoint_every": 0},
        "temperatures": PAPER_TAUS,
        "seeds": [0, 1, 2],
        "hint_stage": 1,
        "hint_weight": 100.0,
        "hint_only": True,
        "compare_losses": ["kd", "dist"],
        "n_boot": 2000,
        "torch_threads": None,
    },
}, tables={"figure7": ["temperatures", "seeds"]},
    dry_run=lambda cfg: {**cut_recipe_specs(cfg, ("teacher_recipe", "student_recipe")),
                         "torch_threads": 1})  # a CPU job: one thread each


def hint_only_supported() -> bool:
    """Whether the training engine knows the hint-only loss HINT_ONLY (cross-entropy +
    FitNet hint, no KD term; `kdlib.distillers.LOSSES`)."""
    from kdlib import distillers

    return HINT_ONLY in distillers.LOSSES


def skipped_tables(cfg: dict) -> list[tuple[str, str]]:
    """[(table, reason)] for what this config cannot run: Figure 7 when its data set is
    missing (the reason names the file to fetch) or a selection left no seeds or
    temperatures; the hint-only arm when the engine lacks its loss. [] when all runs."""
    _check_cfg(cfg)
    reason = missing_data(cfg["data"])
    if reason is None and not (cfg["seeds"] and cfg["temperatures"]):
        reason = "the selection left no seeds or temperatures"
    if reason:
        return [(TABLE, reason)]
    if cfg["hint_only"] and not hint_only_supported():
        return [(HINT_TABLE, f"the training engine has no {HINT_ONLY!r} loss "
                             "(cross-entropy + FitNet hint) yet")]
    return []


# ------------------------------------------------------------------ grid


def _check_cfg(cfg: dict) -> None:
    need = ["data", "teacher", "student", "teacher_recipe", "teacher_seed", "student_recipe",
            "temperatures", "seeds", "hint_stage", "hint_weight", "hint_only",
            "compare_losses", "n_boot", "torch_threads"]
    if not isinstance(cfg, dict):
        raise TypeError(f"cfg must be a dict from presets.get({NAME!r}, scale)")
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ValueError(f"config lacks {missing}; get one with presets.get({NAME!r}, scale)")
    if cfg["temperatures"] is None or cfg["seeds"] is None:
        raise ValueError("temperatures and seeds must be lists (a selection keeps them)")
    for t in cfg["temperatures"]:
        check_positive(t, "temperature")
    for loss in cfg["compare_losses"]:
        check_choice(loss, "compare_losses entry", LOGIT_LOSSES)
    check_int(cfg["hint_stage"], "hint_stage", minimum=0)
    check_positive(cfg["hint_weight"], "hint_weight")
    if not isinstance(cfg["hint_only"], bool):
        raise TypeError(f"hint_only must be True or False, got {cfg['hint_only']!r}")


def _fixed(cfg: dict, scale: str) -> dict:
    out = {k: cfg[k] for k in ("data", "teacher", "student", "teacher_recipe", "teacher_seed",
                               "student_recipe", "torch_threads")}
    out["store"] = run_name(scale, cfg.get("dry_run", False))
    return out


def fitnet_grid(cfg: dict, scale: str = "default") -> list[dict]:
    """One fitnet_student cell per (temperature, seed) of the KD(tau) + hint arm, then, when
    cfg["hint_only"] and the engine supports it, one per seed of the hint-only arm
    (loss HINT_ONLY; its temperature is unused and recorded as NaN)."""
    _check_cfg(cfg)
    hint = {"stage": int(cfg["hint_stage"]), "hint_weight": float(cfg["hint_weight"])}
    cells = [{**_fixed(cfg, scale), "loss": "fitnet", "temperature": float(t),
              "seed": check_int(s, "seed", minimum=0), **hint}
             for s in cfg["seeds"] for t in cfg["temperatures"]]
    if cfg["hint_only"] and hint_only_supported():
        cells += [{**_fixed(cfg, scale), "loss": HINT_ONLY, "temperature": 1.0,
                   "seed": check_int(s, "seed", minimum=0), **hint} for s in cfg["seeds"]]
    return cells


def logit_grid(cfg: dict, scale: str = "default") -> list[dict]:
    """One logit_students cell per seed (every compared loss and temperature, stacked);
    empty when cfg["compare_losses"] is empty."""
    _check_cfg(cfg)
    if not cfg["compare_losses"]:
        return []
    return [{**_fixed(cfg, scale), "losses": list(cfg["compare_losses"]),
             "temperatures": [float(t) for t in cfg["temperatures"]],
             "seed": check_int(s, "seed", minimum=0)} for s in cfg["seeds"]]


# ------------------------------------------------------------------ the work

ROW_KEYS = ("accuracy", "ece", "nll", "agreement", "kl_teacher_student", "teacher_accuracy",
            "teacher_ece_at_tau")


def _row(loss: str, temperature: float, metrics: dict) -> dict:
    return {"loss": loss, "temperature": float(temperature),
            **{k: float(metrics[k]) for k in ROW_KEYS}}


def fitnet_student(data: dict, teacher: str, student: str, teacher_recipe, teacher_seed: int,
                   student_recipe, temperature: float, seed: int, stage: int,
                   hint_weight: float, loss: str = "fitnet", store: str = "default",
                   torch_threads: int | None = None) -> dict:
    """Distil the (cached) teacher into one student with FitNet hints on stage `stage`:
    loss "fitnet" = KD at `temperature` + hint (alpha = 1), loss HINT_ONLY = cross-entropy +
    hint (no KD; `temperature` unused). The student is read from the student store
    runs/<store>/students when it is there. Returns the record's test metrics (fractions):
    accuracy, ece, nll, agreement, kl_teacher_student, teacher_accuracy,
    teacher_ece_at_tau (of the teacher at `temperature`)."""
    from kdlib.student_store import distill_one, teacher_id

    check_choice(loss, "loss", ("fitnet", HINT_ONLY))
    temperature = check_positive(temperature, "temperature")
    seed = check_int(seed, "seed", minimum=0)
    kwargs = {"stage": check_int(stage, "stage", minimum=0),
              "hint_weight": check_positive(hint_weight, "hint_weight")}
    with limited_threads(torch_threads):
        d, t_model, _ = load_teacher(data, teacher, teacher_recipe, teacher_seed)
        found = distill_one(students_dir(store), d, t_model,
                            teacher_id(data, teacher, teacher_recipe, teacher_seed), student,
                            student_recipe, loss, temperature, seed, loss_kwargs=kwargs)
    row = _row(loss, temperature, found["record"]["metrics"])
    del row["temperature"]  # a cell key: the record has it already
    del row["loss"]
    return row


def logit_students(data: dict, teacher: str, student: str, teacher_recipe, teacher_seed: int,
                   student_recipe, losses: list, temperatures: list, seed: int,
                   store: str = "default", torch_threads: int | None = None) -> dict:
    """One student per (loss, temperature), all trained at once with distill_stacked from
    the same initialization `seed` and batch order (students already in the student store
    are read instead). Returns {"students": [row, ...]}, rows with the keys of
    fitnet_student's result plus loss and temperature."""
    from kdlib.student_store import distill_students, teacher_id

    seed = check_int(seed, "seed", minimum=0)
    losses = [check_choice(loss, "loss", LOGIT_LOSSES) for loss in losses]
    temps = [check_positive(t, "temperature") for t in temperatures]
    if not losses or not temps:
        raise ValueError("losses and temperatures must not be empty")
    specs = [{"loss": loss, "temperature": t} for loss in losses for t in temps]
    with limited_threads(torch_threads):
        d, t_model, _ = load_teacher(data, teacher, teacher_recipe, teacher_seed)
        found = distill_students(students_dir(store), d, t_model,
                                 teacher_id(data, teacher, teacher_recipe, teacher_seed),
                                 student, student_recipe, specs, seed)
    return {"students": [_row(s["loss"], s["temperature"], f["record"]["metrics"])
                         for s, f in zip(specs, found)]}


def run(cfg: dict, scale: str, progress: bool = True) -> pd.DataFrame:
    """Run (or load from runs/<scale>/feature_kd.sqlite; dry runs apart) the FitNet
    students one by one and the KD/DIST students stacked per seed. One row per (loss,
    temperature, seed); the hint-only arm's temperature is NaN (it has none)."""
    from kdlib import sweep

    store = store_path(NAME, scale, dry_run=cfg.get("dry_run", False))
    rows = []
    for rec in sweep.run(fitnet_student, fitnet_grid(cfg, scale), store,
                         namespace=f"{NAME}/fitnet", progress=progress):
        hint_only = rec["loss"] == HINT_ONLY
        rows.append({"seed": rec["seed"], "loss": rec["loss"],
                     "temperature": np.nan if hint_only else rec["temperature"],
                     **{k: rec[k] for k in ROW_KEYS}})
        if hint_only:
            rows[-1]["teacher_ece_at_tau"] = np.nan
    cells = logit_grid(cfg, scale)
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


def _losses(df: pd.DataFrame, with_tau: bool = True) -> list[str]:
    """The losses present, in LOSS_ORDER; with_tau: only those that have a temperature (not
    the hint-only arm)."""
    present = list(dict.fromkeys(df["loss"]))
    out = [x for x in LOSS_ORDER if x in present] + [x for x in present if x not in LOSS_ORDER]
    return [x for x in out if x != HINT_ONLY] if with_tau else out


def accuracy_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per temperature: the teacher's ECE at tau and each loss's student accuracy, mean and
    standard deviation over seeds, in percent (as the paper prints); the hint-only arm (no
    temperature) repeats its one value in every row."""
    _check_df(df, ["loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau"])
    out = (df.groupby("temperature")["teacher_ece_at_tau"].mean() * 100).to_frame(
        "teacher_ece_at_tau")
    for loss in _losses(df):
        g = df[df["loss"] == loss].groupby("temperature")["accuracy"]
        out[f"{loss}_mean"] = g.mean() * 100
        out[f"{loss}_std"] = g.std(ddof=1) * 100
    hint = df.loc[df["loss"] == HINT_ONLY, "accuracy"]
    if len(hint):  # no temperature: the same value in every row
        out[f"{HINT_ONLY}_mean"] = 100 * float(hint.mean())
        out[f"{HINT_ONLY}_std"] = 100 * float(hint.std(ddof=1)) if len(hint) > 1 else np.nan
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


def hint_effect(df: pd.DataFrame) -> pd.DataFrame:
    """What the hint adds and what the KD term adds, paired by seed (all students of a seed
    share initialization and batches), in percentage points:

        "fitnet - kd"         FitNet (KD(tau) + hint) minus KD(tau) alone, per tau
        "fitnet - fitnet_ce"  FitNet minus the hint-only student (CE + hint), per tau

    and for each comparison a row temperature = "mean" (per seed the mean over tau, then over
    seeds). Columns: comparison, temperature, teacher_ece_at_tau (percent; NaN for "mean"),
    mean, lo, hi (95% t-interval over seeds; NaN with one seed), n_seeds. Comparisons whose
    arms did not both run are left out."""
    from kdlib.analysis import mean_t_interval

    _check_df(df, ["loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau"])
    fit = df[df["loss"] == "fitnet"].pivot_table(index="seed", columns="temperature",
                                                 values="accuracy")
    ece = df[df["loss"] == "fitnet"].groupby("temperature")["teacher_ece_at_tau"].mean()
    others = {"kd": df[df["loss"] == "kd"].pivot_table(index="seed", columns="temperature",
                                                       values="accuracy")}
    hint = df[df["loss"] == HINT_ONLY].groupby("seed")["accuracy"].mean()
    if len(hint):
        others[HINT_ONLY] = pd.DataFrame({t: hint for t in fit.columns})
    rows = []
    for name, other in others.items():
        taus = [t for t in fit.columns if t in other.columns]
        seeds = [s for s in fit.index if s in other.index]
        if not taus or not seeds:
            continue
        diff = 100 * (fit.loc[seeds, taus] - other.loc[seeds, taus])
        for t in taus:
            mean, lo, hi = mean_t_interval(diff[t].to_numpy(float))
            rows.append({"comparison": f"fitnet - {name}", "temperature": float(t),
                         "teacher_ece_at_tau": 100 * float(ece[t]), "mean": mean, "lo": lo,
                         "hi": hi, "n_seeds": int(diff[t].notna().sum())})
        mean, lo, hi = mean_t_interval(diff.mean(axis=1).to_numpy(float))
        rows.append({"comparison": f"fitnet - {name}", "temperature": "mean",
                     "teacher_ece_at_tau": np.nan, "mean": mean, "lo": lo, "hi": hi,
                     "n_seeds": len(seeds)})
    return pd.DataFrame(rows, columns=["comparison", "temperature", "teacher_ece_at_tau",
                                       "mean", "lo", "hi", "n_seeds"])


def claims(df: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Figure 7's claim as a kdlib.claims table: per loss with a temperature (every loss but
    "dist" and the hint-only arm), student accuracy falls as the teacher's ECE at tau rises
    (Spearman in percent over temperatures, interval over seeds, n = seeds; claimed < 0);
    DIST insensitive (|rho| <= common.DIST_TOLERANCE) when DIST ran. With the hint-only arm
    (`hint_effect`, paired by seed, t-interval, n = seeds, points): the hint adds accuracy
    to KD (FitNet - KD, mean over tau, > 0), and the KD term at the tau of the teacher's
    highest ECE costs accuracy against the hint alone (FitNet - hint-only there, < 0: the
    paper's reading, that the miscalibrated KD term is what hurts)."""
    from kdlib import claims as cl
    from kdlib.experiments.common import DIST_TOLERANCE

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
    effect = hint_effect(df)
    kd = effect[(effect["comparison"] == "fitnet - kd") & (effect["temperature"] == "mean")]
    if len(kd):
        r = kd.iloc[0]
        rows.append(cl.claim("the hint adds accuracy to KD (FitNet - KD, mean over tau)",
                             "Figure 7 (FitNet beside KD; no values printed)", r["mean"],
                             r["lo"], r["hi"], int(r["n_seeds"]), "greater", unit=" pp"))
    ho = effect[(effect["comparison"] == f"fitnet - {HINT_ONLY}")
                & (effect["temperature"] != "mean")]
    if len(ho):
        r = ho.loc[ho["teacher_ece_at_tau"].idxmax()]
        rows.append(cl.claim(
            f"KD term at the highest-ECE tau ({r['temperature']:g}) costs accuracy vs hint "
            "only", "section 3.3: a miscalibrated teacher's KD term hurts (no FitNet values)",
            r["mean"], r["lo"], r["hi"], int(r["n_seeds"]), "less", unit=" pp"))
    return cl.claims_table(rows)


def headline_figures(df: pd.DataFrame, corr: pd.DataFrame) -> dict:
    """The report's headline figures (kdlib.headline Figures): per loss with a temperature,
    the Spearman of teacher ECE at tau vs student accuracy (number, as a fraction, with its
    bootstrap interval; omitted when NaN); the hint-only arm's mean accuracy (percent) and
    FitNet - KD averaged over tau (points, t-interval over seeds) when they ran.
    corr: correlation_table(df) (percent)."""
    from kdlib.headline import number, percent, points

    _check_df(df, ["loss", "accuracy"])
    if not isinstance(corr, pd.DataFrame) or "spearman" not in corr.columns:
        raise ValueError("corr must be correlation_table(df)")
    out = {}
    for loss, r in corr.iterrows():
        if np.isfinite(r["spearman"]):
            ok = np.isfinite(r["lo"]) and np.isfinite(r["hi"])
            out[f"Spearman teacher ECE vs accuracy, {loss}"] = number(
                r["spearman"] / 100, r["lo"] / 100 if ok else None, r["hi"] / 100 if ok else None)
    hint = df.loc[df["loss"] == HINT_ONLY, "accuracy"]
    if len(hint):
        out["accuracy, hint only (CE + hint)"] = percent(float(hint.mean()))
    eff = hint_effect(df)
    m = eff[(eff["comparison"] == "fitnet - kd") & (eff["temperature"] == "mean")]
    if len(m):
        r = m.iloc[0]
        ok = np.isfinite(r["lo"]) and np.isfinite(r["hi"])
        out["FitNet - KD, mean over tau"] = points(r["mean"] / 100, r["lo"] / 100 if ok else None,
                                                   r["hi"] / 100 if ok else None)
    return out


def plan_runs(cfg: dict, scale: str = "default") -> list:
    """Every training the preset needs (kdlib plan): the cached teacher, each FitNet student
    (KD(tau) + hint, and the hint-only arm) and each stacked KD/DIST student, keyed like the
    student store (so the students notebook 02 also trains count once) and done when the
    store holds them. Nothing is loaded or trained."""
    from kdlib.plan import student_runs, teacher_run

    if skipped_tables(cfg) or cfg.get("data") is None:
        return []
    runs = [teacher_run(cfg["data"], cfg["teacher"], cfg["teacher_recipe"], cfg["teacher_seed"])]
    for c in fitnet_grid(cfg, scale):
        runs += student_runs(c["data"], c["teacher"], c["teacher_recipe"], c["teacher_seed"],
                             c["student"], c["student_recipe"],
                             [{"loss": c["loss"], "temperature": c["temperature"]}], c["seed"],
                             c["store"], loss_kwargs={"stage": c["stage"],
                                                      "hint_weight": c["hint_weight"]})
    for c in logit_grid(cfg, scale):
        specs = [{"loss": loss, "temperature": t} for loss in c["losses"]
                 for t in c["temperatures"]]
        runs += student_runs(c["data"], c["teacher"], c["teacher_recipe"], c["teacher_seed"],
                             c["student"], c["student_recipe"], specs, c["seed"], c["store"])
    return runs
