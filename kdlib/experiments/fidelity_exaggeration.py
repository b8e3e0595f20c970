"""Fidelity (Stanton et al. 2021) and confidence exaggeration (Nagarajan et al. 2023) in a
temperature sweep of KD and DIST students.

    rows = sweep.run(run_seed, grid(cfg), store_path(NAME, scale))
    df = results_frame(rows)             # one row per (seed, loss, temperature)
    fidelity_correlations(df)            # Spearman with bootstrap intervals over seeds
    curves = curves_frame(rows, "t1")    # binned student-vs-teacher confidence curve

One sweep cell = one student seed: every (loss, temperature) student distilled at once
from one cached teacher with `kdlib.stacked.distill_stacked` (all students of a seed share
the initialization and the batches). After training the cell computes the per-sample
confidences on the test set and keeps only summaries (JSON): fidelity (top-1 agreement,
mean KL(teacher || student) at T = 1), the share of test samples where the student is more
confident than the teacher, the mean confidence gap, and the binned curve of the student's
mean confidence per teacher-confidence bin.

Confidence = max softmax probability. The student is always read at T = 1 (how it is used).
Two teacher references: "t1" = the teacher at T = 1 (what a student that matched the
teacher's logits would reproduce) and "tau" = the teacher at the distillation temperature
(the targets the student was trained on).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from kdlib import analysis, fidelity, presets
from kdlib._validate import as_tensor, check_choice, check_int, check_positive
from kdlib.experiments.common import (  # noqa: F401
    cut_recipe_specs,
    headline_number,
    limited_threads,
    load_teacher,
    missing_data,
    run_name,
    store_path,
    students_dir,
)
from kdlib.paper import PAPER_TEMPERATURES

NAME = "fidelity_exaggeration"
REFERENCES = ("t1", "tau")
TABLE = "fidelity"
# headline_number is re-exported from kdlib.experiments.common (notebooks 08 and 09 import
# it from here)

presets.register(NAME, {
    "smoke": {
        "data": {"name": "digits", "subset_train": 300, "subset_test": 200},
        "teacher": "resnet8",
        "teacher_recipe": {"preset": "smoke", "checkpoint_every": 1},
        "teacher_seed": 0,
        "student": "resnet8",
        "student_recipe": {"preset": "smoke", "epochs": 1},
        "losses": ["kd", "dist"],
        "temperatures": [1.0, 4.0],
        "seeds": [0],
        "confidence_bins": 10,
        "n_boot": 200,
        "torch_threads": 1,
    },
    "default": {
        "data": {"name": "digits"},
        "teacher": "resnet20",
        "teacher_recipe": "default",        # the cached teacher of notebooks 02, 05 and 06
        "teacher_seed": 0,
        "student": "resnet8",
        "student_recipe": {"epochs": 20, "milestones": [13, 15, 17]},  # default, scaled
        "losses": ["kd", "dist"],
        "temperatures": [1.0, 2.0, 3.0, 4.0, 6.0, 8.0],
        "seeds": [0, 1, 2],
        "confidence_bins": 10,
        "n_boot": 2000,
        "torch_threads": 1,                 # 1 thread: measured fastest on 2 shared cores
    },
    "paper": {                              # Table 6's first pair: the students of notebook
        "data": {"name": "cifar100"},       # 02 (and 06), shared through the student store
        "teacher": "resnet56",
        "teacher_recipe": {"preset": "paper", "checkpoint_every": 0},
        "teacher_seed": 0,
        "student": "resnet14",
        "student_recipe": {"preset": "paper", "checkpoint_every": 0},
        "losses": ["kd", "dist"],
        "temperatures": PAPER_TEMPERATURES,
        "seeds": [0, 1, 2],
        "confidence_bins": 15,
        "n_boot": 2000,
        "torch_threads": None,
    },
}, tables={TABLE: ["losses", "temperatures", "seeds"]},
    dry_run=lambda cfg: {**cut_recipe_specs(cfg, ("teacher_recipe", "student_recipe")),
                         "torch_threads": 1})  # a CPU job: one thread each


def skipped_tables(cfg: dict) -> list[tuple[str, str]]:
    """[(table, reason)] for what this config cannot run: the fidelity sweep when its data
    set is missing (the reason names the file to fetch) or a selection left nothing to run;
    [] when everything runs."""
    need = ["data", "losses", "temperatures", "seeds"]
    if not isinstance(cfg, dict) or any(k not in cfg for k in need):
        raise ValueError(f"cfg must be presets.get({NAME!r}, scale) with keys {need}")
    reason = missing_data(cfg["data"])
    if reason is None and not (cfg["losses"] and cfg["temperatures"] and cfg["seeds"]):
        reason = "the selection left no students to run"
    return [(TABLE, reason)] if reason else []


# ------------------------------------------------------------------ per-sample summaries


def confidences(logits, temperature: float = 1.0) -> np.ndarray:
    """Max softmax probability of each row of N x C `logits` at `temperature` (N,)."""
    z = as_tensor(logits, "logits")
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty N x C matrix, got {tuple(z.shape)}")
    temperature = check_positive(temperature, "temperature")
    p = torch.softmax(z.double() / temperature, dim=1)
    return p.amax(1).cpu().numpy()


def confidence_curve(student_conf, teacher_conf, n_bins: int = 10) -> dict:
    """Mean student confidence per teacher-confidence bin.

    Bins are equal-width over [0, 1] with the ECE rule: bin m holds teacher confidences in
    ((m-1)/M, m/M]. Returns plain lists of length M: "edges" (M + 1 values), "teacher" and
    "student" (mean confidences in the bin; NaN where the bin is empty) and "count".
    """
    s = np.asarray(student_conf, dtype=np.float64)
    t = np.asarray(teacher_conf, dtype=np.float64)
    n_bins = check_int(n_bins, "n_bins", minimum=1)
    if s.ndim != 1 or s.shape != t.shape or s.size == 0:
        raise ValueError(f"student_conf and teacher_conf must be non-empty vectors of one "
                         f"length, got shapes {s.shape} and {t.shape}")
    if not (np.all((s >= 0) & (s <= 1)) and np.all((t >= 0) & (t <= 1))):
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.arange(n_bins + 1) / n_bins
    # side="left": a confidence equal to an inner edge m/M belongs to the bin ending there
    idx = np.searchsorted(edges[1:-1], t, side="left")
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_mean = np.bincount(idx, weights=t, minlength=n_bins) / count
        s_mean = np.bincount(idx, weights=s, minlength=n_bins) / count
    return {"edges": [float(e) for e in edges],
            "teacher": [float(v) for v in t_mean], "student": [float(v) for v in s_mean],
            "count": [int(c) for c in count]}


def exaggeration_summary(student_logits, teacher_logits, temperature: float,
                         n_bins: int = 10) -> dict:
    """Confidence exaggeration of a student (read at T = 1) against its teacher read at T = 1
    ("t1") and at the distillation `temperature` ("tau").

    Returns plain values: exaggeration_<ref> (fraction of test samples where the student's
    confidence is strictly higher), confidence_gap_<ref> (mean student minus teacher
    confidence), student_confidence, teacher_confidence_<ref>, curve_<ref>
    (`confidence_curve`).
    """
    temperature = check_positive(temperature, "temperature")
    s_logits = as_tensor(student_logits, "student_logits").float()
    t_logits = as_tensor(teacher_logits, "teacher_logits").float()
    s_conf = confidences(s_logits)
    out = {"student_confidence": float(s_conf.mean())}
    for ref, temp in (("t1", 1.0), ("tau", temperature)):
        t_conf = confidences(t_logits, temp)
        # softmax(z / T) is the softmax of the scaled logits: reuse kdlib.fidelity
        out[f"exaggeration_{ref}"] = fidelity.confidence_exaggeration(s_logits, t_logits / temp)
        out[f"confidence_gap_{ref}"] = float((s_conf - t_conf).mean())
        out[f"teacher_confidence_{ref}"] = float(t_conf.mean())
        out[f"curve_{ref}"] = confidence_curve(s_conf, t_conf, n_bins)
    return out


# ------------------------------------------------------------------ the sweep cell


def run_seed(data: dict, teacher: str, teacher_recipe, teacher_seed: int, student: str,
             student_recipe, losses: list, temperatures: list, seed: int,
             confidence_bins: int = 10, store: str = "default",
             torch_threads: int | None = None) -> dict:
    """One sweep cell: every (loss, temperature) student of `seed`, distilled at once (or
    read from the student store runs/<store>/students, `kdlib.student_store`, where another
    notebook trained the same student), and its fidelity and exaggeration on the test set.

    Returns {"rows": [one dict per (loss, temperature): the distillation metrics of
    `kdlib.train.distill` plus `exaggeration_summary`]} (plain JSON values).
    """
    from kdlib.student_store import distill_students, teacher_id
    from kdlib.train import predict_logits

    if not losses or not temperatures:
        raise ValueError("need at least one loss and one temperature")
    with limited_threads(torch_threads):
        ds, t_model, _ = load_teacher(data, teacher, teacher_recipe, teacher_seed)
        specs = [{"loss": loss, "temperature": float(t)} for loss in losses
                 for t in temperatures]
        found = distill_students(students_dir(store), ds, t_model,
                                 teacher_id(data, teacher, teacher_recipe, teacher_seed),
                                 student, student_recipe, specs, seed)
        t_logits = predict_logits(t_model, ds)
        rows = []
        for spec, f in zip(specs, found):
            rows.append({**spec, **f["record"]["metrics"],
                         **exaggeration_summary(f["test_logits"], t_logits,
                                                spec["temperature"], confidence_bins)})
    return {"rows": rows}


def grid(cfg: dict, scale: str = "default") -> list[dict]:
    """The sweep cells of a preset: one per student seed (students kept in the student
    store of `scale`; dry runs in their own)."""
    keys = ("data", "teacher", "teacher_recipe", "teacher_seed", "student", "student_recipe",
            "losses", "temperatures", "confidence_bins", "torch_threads")
    store = run_name(scale, cfg.get("dry_run", False))
    return [{**{k: cfg[k] for k in keys}, "seed": s, "store": store} for s in cfg["seeds"]]


def run(cfg: dict, scale: str, progress: bool = True):
    """Run (or resume) the sweep of a preset; returns the SweepResults (one record per
    seed). Stored in runs/<scale>/fidelity_exaggeration.sqlite (dry runs apart)."""
    from kdlib import sweep

    return sweep.run(run_seed, grid(cfg, scale),
                     store_path(NAME, scale, dry_run=cfg.get("dry_run", False)),
                     namespace=NAME, progress=progress)


# ------------------------------------------------------------------ tables


def _need(df, cols) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; it has {list(df.columns)}")


def results_frame(records) -> pd.DataFrame:
    """One row per (seed, loss, temperature) with the scalar results (curves dropped)."""
    rows = []
    for rec in records:
        for r in rec["rows"]:
            rows.append({"seed": rec["seed"], **{k: v for k, v in r.items()
                                                 if not k.startswith("curve_")}})
    if not rows:
        raise ValueError("no results: the sweep returned no rows")
    return pd.DataFrame(rows)


def curves_frame(records, reference: str = "t1") -> pd.DataFrame:
    """The binned confidence curves pooled over seeds: one row per (loss, temperature, bin)
    with the count-weighted mean teacher and student confidence and the sample count.
    reference: "t1" (teacher at T = 1) or "tau" (teacher at the distillation temperature)."""
    check_choice(reference, "reference", REFERENCES)
    rows = []
    for rec in records:
        for r in rec["rows"]:
            c = r[f"curve_{reference}"]
            for b, (lo, hi) in enumerate(zip(c["edges"][:-1], c["edges"][1:])):
                n = c["count"][b]
                rows.append({"loss": r["loss"], "temperature": r["temperature"], "bin": b,
                             "bin_lo": lo, "bin_hi": hi, "count": n,
                             "t_sum": c["teacher"][b] * n if n else 0.0,
                             "s_sum": c["student"][b] * n if n else 0.0})
    if not rows:
        raise ValueError("no curves in the records")
    df = pd.DataFrame(rows)
    g = df.groupby(["loss", "temperature", "bin", "bin_lo", "bin_hi"], as_index=False)[
        ["count", "t_sum", "s_sum"]].sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        g["teacher_confidence"] = np.where(g["count"] > 0, g["t_sum"] / g["count"], np.nan)
        g["student_confidence"] = np.where(g["count"] > 0, g["s_sum"] / g["count"], np.nan)
    return g.drop(columns=["t_sum", "s_sum"])


SUMMARY_COLUMNS = ("accuracy", "agreement", "kl_teacher_student", "teacher_ece_at_tau",
                   "exaggeration_t1", "exaggeration_tau", "confidence_gap_t1",
                   "confidence_gap_tau")


def summary_table(df: pd.DataFrame, columns=SUMMARY_COLUMNS) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (loss, temperature): columns <c> and
    <c>_sd for each of `columns`, plus n_seeds."""
    _need(df, ["loss", "temperature", "seed", *columns])
    g = df.groupby(["loss", "temperature"])
    out = g[list(columns)].mean()
    sd = g[list(columns)].std(ddof=1).add_suffix("_sd")
    out = out.join(sd)
    out["n_seeds"] = g["seed"].nunique()
    return out.reset_index()


FIDELITY_PAIRS = (("agreement", "accuracy"), ("kl_teacher_student", "accuracy"),
                  ("teacher_ece_at_tau", "agreement"),
                  ("teacher_ece_at_tau", "kl_teacher_student"),
                  ("teacher_ece_at_tau", "accuracy"))


def fidelity_correlations(df: pd.DataFrame, pairs=FIDELITY_PAIRS, n_boot: int = 2000,
                          rng_seed: int = 0) -> pd.DataFrame:
    """Spearman rank correlation of each (x, y) pair across temperatures, per loss, with a
    bootstrap interval over seeds (`kdlib.analysis.bootstrap_spearman`), plus a row
    loss="both" over all (loss, temperature) students. Columns: loss, x, y, rho, lo, hi,
    n_cells, n_seeds."""
    _need(df, ["loss", "temperature", "seed"])
    both = df.assign(loss="both",
                     spec=df["loss"].astype(str) + "@" + df["temperature"].astype(str))

    def corr(g, x, y, cell):
        n_cells = g[cell].nunique()
        if n_cells < 3:  # a rank correlation needs 3 cells (smoke scale has 2)
            nan = float("nan")
            return {"rho": nan, "lo": nan, "hi": nan, "n_cells": n_cells,
                    "n_seeds": int(g["seed"].nunique())}
        return analysis.bootstrap_spearman(g, x, y, cell=cell, n_boot=n_boot,
                                           rng_seed=rng_seed)

    rows = []
    for x, y in pairs:
        for loss, g in df.groupby("loss", sort=True):
            rows.append({"loss": loss, "x": x, "y": y, **corr(g, x, y, "temperature")})
        rows.append({"loss": "both", "x": x, "y": y, **corr(both, x, y, "spec")})
    return pd.DataFrame(rows)


def exaggeration_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per loss: the share of samples where the student is more confident than the teacher
    (at T = 1 and at tau) and the mean confidence gap, averaged over temperatures and seeds,
    with the range over temperatures."""
    cols = ["exaggeration_t1", "exaggeration_tau", "confidence_gap_t1", "confidence_gap_tau"]
    _need(df, ["loss", "temperature", *cols])
    per_t = df.groupby(["loss", "temperature"])[cols].mean()
    g = per_t.groupby("loss")
    out = g.mean()
    out["exaggeration_t1_min"] = g["exaggeration_t1"].min()
    out["exaggeration_t1_max"] = g["exaggeration_t1"].max()
    return out.reset_index()


def claims(corr: pd.DataFrame) -> pd.DataFrame:
    """The notebook's claims as a kdlib.claims table, from `fidelity_correlations` rows
    (Spearman in percent across temperatures, bootstrap interval over seeds, n = seeds).
    Per loss (not the pooled "both" row): fidelity goes with accuracy (agreement vs accuracy
    > 0, KL(teacher || student) vs accuracy < 0); the paper's Tables 6, 9: KD accuracy falls
    as the teacher's ECE at tau rises (< 0), DIST insensitive
    (|rho| <= common.DIST_TOLERANCE). A missing row or NaN rho (fewer than 3
    temperatures) gives no row / 'inconclusive'."""
    from kdlib import claims as cl
    from kdlib.experiments.common import DIST_TOLERANCE

    if not isinstance(corr, pd.DataFrame):
        raise TypeError(f"corr must be a DataFrame (fidelity_correlations), got "
                        f"{type(corr).__name__}")
    _need(corr, ["loss", "x", "y", "rho", "lo", "hi", "n_seeds"])
    stanton = "Stanton et al. 2021: fidelity need not go with accuracy (no values here)"
    rows = []
    for loss in sorted(set(corr["loss"]) - {"both"}):
        g = corr[corr["loss"] == loss].set_index(["x", "y"])
        specs = [(("agreement", "accuracy"), "greater", None,
                  f"{loss}: higher agreement with the teacher, higher accuracy", stanton),
                 (("kl_teacher_student", "accuracy"), "less", None,
                  f"{loss}: lower KL to the teacher, higher accuracy", stanton)]
        if loss == "dist":
            specs.append((("teacher_ece_at_tau", "accuracy"), "insensitive", DIST_TOLERANCE,
                          "DIST insensitive to teacher ECE", "Tables 6, 9: DIST rho -50% to 8%"))
        else:
            specs.append((("teacher_ece_at_tau", "accuracy"), "less", None,
                          f"{loss} falls as teacher ECE rises",
                          "Tables 6, 9: KD rho -99% to -32%"))
        for key, kind, tol, text, paper in specs:
            if key not in g.index:
                continue
            r = g.loc[key]
            rows.append(cl.claim(text, paper, 100 * float(r["rho"]), 100 * float(r["lo"]),
                                 100 * float(r["hi"]), int(r["n_seeds"]), kind,
                                 tolerance=tol, unit="%", digits=0))
    return cl.claims_table(rows)


def headline_figures(corr: pd.DataFrame, exag: pd.DataFrame) -> dict:
    """The report's headline figures (kdlib.headline Figures), per loss: the Spearman of
    top-1 agreement vs accuracy across temperatures (number, bootstrap interval over seeds;
    omitted when NaN: fewer than 3 temperatures) and the share of test samples where the
    student is more confident than the teacher at T = 1 (percent).
    corr: fidelity_correlations(df); exag: exaggeration_table(df)."""
    from kdlib.headline import number, percent

    _need(corr, ["loss", "x", "y", "rho", "lo", "hi"])
    _need(exag, ["loss", "exaggeration_t1"])
    out = {}
    rows = corr[(corr["x"] == "agreement") & (corr["y"] == "accuracy") & (corr["loss"] != "both")]
    for _, r in rows.iterrows():
        if np.isfinite(r["rho"]):
            lo, hi = (r["lo"], r["hi"]) if np.isfinite(r["lo"]) and np.isfinite(r["hi"]) \
                else (None, None)
            out[f"Spearman agreement vs accuracy, {r['loss']}"] = number(r["rho"], lo, hi)
    for _, r in exag.iterrows():
        out[f"more confident than the teacher at T = 1, {r['loss']}"] = percent(
            float(r["exaggeration_t1"]))
    return out


def plan_runs(cfg: dict, scale: str = "default") -> list:
    """Every training the preset needs (kdlib plan): the cached teacher and each (loss,
    temperature, seed) student, keyed like the student store (students shared with notebooks
    02 and 06 count once) and done when the store holds them. Nothing is trained."""
    from kdlib.plan import student_runs, teacher_run

    if skipped_tables(cfg):
        return []
    runs = [teacher_run(cfg["data"], cfg["teacher"], cfg["teacher_recipe"], cfg["teacher_seed"])]
    for c in grid(cfg, scale):
        specs = [{"loss": loss, "temperature": float(t)} for loss in c["losses"]
                 for t in c["temperatures"]]
        runs += student_runs(c["data"], c["teacher"], c["teacher_recipe"], c["teacher_seed"],
                             c["student"], c["student_recipe"], specs, c["seed"], c["store"])
    return runs
