"""ESKD through the lens of calibration (paper section 4.2; Tables 4, 5 and 8).

Two questions about a teacher stopped early:
  * checkpoints (Table 4): a teacher saved every few epochs; test accuracy and ECE at tau
    1.0 and 1.6 per checkpoint, and students distilled (vanilla KD, alpha = 1) from an early
    checkpoint vs the final teacher: epoch 140 vs 200, and 130 vs 200 for WRN-28-3 at
    tau 1.0, as the paper's Table 4 does (each pair lists its early epoch per tau);
  * few-trained (Tables 5, 8): a teacher trained for half the epochs with the schedule
    halved (paper: "100 epochs, initiating the learning rate decay after the 50th epoch")
    vs the epoch-200 teacher, at tau 1.6, 3 and 4: teacher accuracy, teacher ECE at tau,
    student accuracy.

    cfg = presets.get(NAME, "default", select="", dry_run=False)
    curve, students = run(cfg, "default")     # fractions
    checkpoint_table(students, cfg["eskd_taus"]); few_vs_full_table(students, cfg["few_taus"])

The 200-epoch recipe (PAPER_200_RECIPE). The paper states no training recipe, but its own
tables fix one: Table 5's "full-trained" rows equal Table 4's epoch-200 rows exactly
(WRN-16-3: ECE 7.89%, student 68.01%; WRN-28-3: 5.16%, 71.71%), so the full teacher trains
200 epochs and epoch 200 is its end; its epoch-140 (and 130) teachers are within ~0.4 points
of epoch 200 in ECE and student accuracy, so by epoch 130 the teacher has already been
through its first learning-rate decay (before any decay a CIFAR teacher is far weaker and
noisier); and the few-trained teacher (100 epochs, decay from epoch 50) reads as the same
schedule halved, so the full schedule's first decay is at epoch 100. We therefore use lr 0.05
(the CIFAR KD literature's, batch 64, weight decay 5e-4, momentum 0.9) divided by 10 at
epochs 100, 150 and 180: the first decay at half of training (twice the few-trained's 50),
the later two spaced as in the common CIFAR step schedules (the last ~10% of training at the
smallest lr). Halved, it gives the few-trained recipe: 100 epochs, /10 at 50, 75 and 90.
Checkpoints are saved every 10 epochs (the paper's "every 10 epochs"). Students train with the
same 200-epoch schedule. The 240-epoch schedule of the other notebooks (/10 at 150, 180, 210)
is the CRD/RepDistiller recipe; under it epochs 130 and 140 come before any decay and epoch
200 is mid-schedule, so it cannot reproduce Table 4's comparison.

The default preset mirrors that schedule at 1/10 of the epochs (20 epochs, /10 at 10, 15,
18; checkpoint 14 vs the final epoch 20; few-trained 10 epochs, /10 at 5, 7, 9).

The students of one teacher (checkpoint) and seed are trained together with
`distill_stacked`, one per temperature: same initialization (`seed`) and batch order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlib import presets
from kdlib._validate import check_int, check_positive
from kdlib.analysis import paired_difference
from kdlib.experiments.common import limited_threads
from kdlib.recipe import recipe_from_spec

NAME = "early_stopped_teacher"
TRAININGS = ("full", "few")

PAPER_200_RECIPE = {"epochs": 200, "batch_size": 64, "lr": 0.05, "milestones": [100, 150, 180],
                    "checkpoint_every": 10}  # = Recipe.preset("paper_200") (a test checks)
"""The 200-epoch schedule the paper's Tables 4 and 5 point to (reasoning in the module
docstring): lr 0.05, /10 at 100, 150, 180, batch 64, a checkpoint every 10 epochs."""
FEW_TRAINED_RECIPE = {"epochs": 100, "batch_size": 64, "lr": 0.05, "milestones": [50, 75, 90],
                      "checkpoint_every": 0}
"""The paper's few-trained teacher: 100 epochs, lr decay from epoch 50 (PAPER_200 halved)."""
DEFAULT_FULL_RECIPE = {"epochs": 20, "batch_size": 64, "lr": 0.05, "milestones": [10, 15, 18],
                       "checkpoint_every": 2}
"""PAPER_200_RECIPE at 1/10 of the epochs (the default-scale digits teacher; teacher_assistant
uses the same one, so both notebooks share one cached teacher)."""
DEFAULT_FEW_RECIPE = {"epochs": 10, "batch_size": 64, "lr": 0.05, "milestones": [5, 7, 9],
                      "checkpoint_every": 0}


def _pair(teacher: str, student: str, early: dict) -> dict:
    """A pair with its selection name and its early checkpoint epoch per tau
    ({tau: epoch}, stored as a list of {"tau", "epoch"} so that it stays plain JSON)."""
    return {"name": f"{teacher}->{student}", "teacher": teacher, "student": student,
            "early": [{"tau": float(t), "epoch": int(e)} for t, e in early.items()]}


presets.register(NAME, {
    "smoke": {
        "data": {"name": "digits", "seed": 0, "subset_train": 300, "subset_test": 200},
        "pairs": [_pair("resnet8", "resnet8", {1.0: 2, 1.6: 2})],
        "teacher_seed": 0,
        "full_recipe": {"epochs": 4, "milestones": [3], "checkpoint_every": 2},
        "few_recipe": {"epochs": 2, "milestones": [1]},
        "distill_recipe": {"epochs": 1},
        "curve_taus": [1.0, 1.6],
        "eskd_taus": [1.0, 1.6],
        "few_taus": [1.6, 4.0],
        "seeds": [0],
        "torch_threads": 1,
    },
    "default": {
        "data": {"name": "digits", "seed": 0},
        "pairs": [_pair("wrn_16_2", "wrn_10_1", {1.0: 14, 1.6: 14})],
        "teacher_seed": 0,
        "full_recipe": DEFAULT_FULL_RECIPE,
        "few_recipe": DEFAULT_FEW_RECIPE,
        "distill_recipe": {"epochs": 15, "lr": 0.05, "milestones": [9, 11, 13]},
        "curve_taus": [1.0, 1.6],
        "eskd_taus": [1.0, 1.6],
        "few_taus": [1.6, 3.0, 4.0],
        "seeds": [0, 1, 2],
        "torch_threads": 1,
    },
    "paper": {
        "data": {"name": "cifar100", "seed": 0},
        # Table 4's checkpoints: 140 vs 200, but 130 vs 200 for WRN-28-3 at tau 1.0
        "pairs": [_pair("wrn_16_3", "wrn_16_1", {1.0: 140, 1.6: 140}),
                  _pair("wrn_28_3", "wrn_28_1", {1.0: 130, 1.6: 140})],
        "teacher_seed": 0,
        "full_recipe": PAPER_200_RECIPE,
        "few_recipe": FEW_TRAINED_RECIPE,
        "distill_recipe": {**PAPER_200_RECIPE, "checkpoint_every": 0},
        "curve_taus": [1.0, 1.6],
        "eskd_taus": [1.0, 1.6],
        "few_taus": [1.6, 3.0, 4.0],
        "seeds": [0, 1, 2],
        "torch_threads": None,  # torch's own choice on the GPU machine
    },
}, tables={"4": ["eskd_taus", "curve_taus"], "5": ["few_taus"], "8": ["few_taus"]},
    dry_run=lambda cfg: dry_run_hook(cfg))

TABLES = ("4", "5", "8")


def dry_run_hook(cfg: dict) -> dict:
    """Map the epoch-tied values onto the dry-run cut: the full teacher trains 2 epochs with
    a checkpoint every epoch, so the early checkpoint (140 or 130 of 200) becomes epoch 1 and
    the final (200) epoch 2; the few-trained teacher (100) keeps the cut's 1 epoch. The dry
    run is a CPU check: one torch thread."""
    out = dict(cfg, torch_threads=1)
    if isinstance(cfg.get("full_recipe"), dict):
        out["full_recipe"] = {**cfg["full_recipe"], "epochs": 2, "checkpoint_every": 1,
                              "milestones": []}
    out["pairs"] = [{**p, "early": [{"tau": e["tau"], "epoch": 1} for e in p["early"]]}
                    for p in cfg["pairs"]]
    return out


def skipped_tables(cfg: dict) -> list[tuple[str, str]]:
    """[(table, reason)] for the tables that will not run: every table when the data set is
    missing (the reason names the file to fetch), and a table the selection left out."""
    from kdlib.experiments.common import missing_data

    why = missing_data(cfg["data"])
    out = []
    for table, key in (("4", "eskd_taus"), ("5", "few_taus"), ("8", "few_taus")):
        if cfg.get(key) is None:
            out.append((table, "not selected"))
        elif why:
            out.append((table, why))
    return out


# ------------------------------------------------------------------ grid


def _taus(cfg, key) -> list[float]:
    return [check_positive(t, "tau") for t in (cfg.get(key) or [])]


def _check_cfg(cfg: dict) -> None:
    need = ["data", "pairs", "teacher_seed", "full_recipe", "few_recipe", "distill_recipe",
            "curve_taus", "eskd_taus", "few_taus", "seeds"]
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ValueError(f"config lacks {missing}; get one with presets.get({NAME!r}, scale)")
    full = recipe_from_spec(cfg["full_recipe"])
    eskd = _taus(cfg, "eskd_taus")
    for p in cfg["pairs"]:
        if not isinstance(p, dict) or not {"teacher", "student", "early"} <= set(p) \
                or not set(p) <= {"name", "teacher", "student", "early"}:
            raise ValueError(f"each pair must be {{'name', 'teacher', 'student', 'early': "
                             f"[{{'tau', 'epoch'}}, ...]}}, got {p!r}")
        got = sorted(float(e["tau"]) for e in p["early"])
        if eskd and got != sorted(eskd):
            raise ValueError(f"pair {p.get('name', p)}: its early checkpoints cover taus "
                             f"{got}, eskd_taus are {sorted(eskd)}")
        for e in p["early"]:
            c = check_int(e["epoch"], "early checkpoint epoch", minimum=1)
            if not full.checkpoint_every or c % full.checkpoint_every or c >= full.epochs:
                raise ValueError(f"early checkpoint {c} is not saved before the end by the "
                                 f"full recipe (every {full.checkpoint_every} of "
                                 f"{full.epochs} epochs)")
    if not cfg["seeds"]:
        raise ValueError("seeds must not be empty")


def curve_grid(cfg: dict) -> list[dict]:
    """One checkpoint_curve cell per teacher of cfg["pairs"] (full recipe); none when Table
    4 is not selected (curve_taus None)."""
    _check_cfg(cfg)
    if not cfg.get("curve_taus"):
        return []
    teachers = list(dict.fromkeys(p["teacher"] for p in cfg["pairs"]))
    return [{"data": cfg["data"], "teacher": t, "teacher_recipe": cfg["full_recipe"],
             "teacher_seed": cfg["teacher_seed"], "temperatures": list(cfg["curve_taus"])}
            for t in teachers]


def student_grid(cfg: dict) -> list[dict]:
    """The distill_from_teacher cells: per pair and seed, the full teacher at each early
    checkpoint epoch with the taus that use it (Table 4), the final full teacher (eskd_taus
    and few_taus together) and the final few-trained teacher (few_taus). checkpoint None =
    the final teacher. Taus of a table not selected (None) are left out."""
    _check_cfg(cfg)
    eskd = _taus(cfg, "eskd_taus")
    few = _taus(cfg, "few_taus")
    grid = []
    for pair in cfg["pairs"]:
        jobs = []
        if eskd:
            by_epoch: dict[int, list[float]] = {}
            for e in pair["early"]:
                by_epoch.setdefault(int(e["epoch"]), []).append(float(e["tau"]))
            jobs += [("full", cfg["full_recipe"], c, sorted(t)) for c, t in
                     sorted(by_epoch.items())]
        if eskd or few:
            jobs.append(("full", cfg["full_recipe"], None, sorted(set(eskd) | set(few))))
        if few:
            jobs.append(("few", cfg["few_recipe"], None, few))
        base = {"teacher": pair["teacher"], "student": pair["student"]}
        for training, recipe, ckpt, taus in jobs:
            for seed in cfg["seeds"]:
                grid.append({"data": cfg["data"], **base, "training": training,
                             "teacher_recipe": recipe, "teacher_seed": cfg["teacher_seed"],
                             "checkpoint": ckpt, "temperatures": taus,
                             "seed": check_int(seed, "seed", minimum=0),
                             "distill_recipe": cfg["distill_recipe"]})
    return grid


# ------------------------------------------------------------------ the work


def _teacher(data: dict, teacher: str, teacher_recipe, teacher_seed: int):
    from kdlib.experiments.common import load_data, teacher_cache_dir
    from kdlib.teachers import get_teacher

    d = load_data(data)
    recipe = recipe_from_spec(teacher_recipe)
    model, record = get_teacher(teacher, d, recipe, seed=teacher_seed,
                                cache_dir=teacher_cache_dir(), progress=False)
    return d, recipe, model, record


def checkpoint_curve(data: dict, teacher: str, teacher_recipe, teacher_seed: int,
                     temperatures: list) -> dict:
    """Test accuracy, NLL and ECE at each temperature of every saved checkpoint of the
    (cached) teacher, the final model included. Returns {"rows": [{"epoch", "temperature",
    "accuracy", "nll", "ece"}, ...]} (fractions; accuracy and NLL do not depend on tau)."""
    from kdlib.calibration import ece, tempered_softmax
    from kdlib.teachers import load_weights, teacher_checkpoints
    from kdlib.train import ECE_BINS, classification_metrics, make_model, predict_logits

    taus = [check_positive(t, "temperature") for t in temperatures]
    d, recipe, final, record = _teacher(data, teacher, teacher_recipe, teacher_seed)
    models = {e: p for e, p in teacher_checkpoints(record).items()}
    rows = []
    for epoch in sorted(set(models) | {recipe.epochs}):
        if epoch in models:
            model = load_weights(make_model(teacher, d, seed=teacher_seed), models[epoch])
        else:
            model = final
        logits = predict_logits(model, d)
        m = classification_metrics(logits, d.test_y)
        for t in taus:
            rows.append({"epoch": int(epoch), "temperature": t, "accuracy": m["accuracy"],
                         "nll": m["nll"],
                         "ece": float(ece(tempered_softmax(logits, t), d.test_y,
                                          n_bins=ECE_BINS))})
    return {"rows": rows}


def distill_from_teacher(data: dict, teacher: str, student: str, training: str,
                         teacher_recipe, teacher_seed: int, checkpoint: int | None,
                         temperatures: list, seed: int, distill_recipe) -> dict:
    """Distil the teacher (its final weights, or those saved at epoch `checkpoint`) into one
    student per temperature, stacked: all start from init `seed` and share batch order `seed`.

    training: a label stored with the result ("full" or "few"). Returns {"teacher_epoch",
    "teacher_accuracy", "teacher_ece", "students": [{"temperature", "teacher_ece_at_tau",
    "accuracy", "ece", "nll", "agreement"}, ...]} (fractions).
    """
    from kdlib.stacked import distill_stacked
    from kdlib.teachers import load_weights, teacher_checkpoints
    from kdlib.train import make_model

    if training not in TRAININGS:
        raise ValueError(f"training must be one of {TRAININGS}, got {training!r}")
    taus = [check_positive(t, "temperature") for t in temperatures]
    if not taus:
        raise ValueError("temperatures must not be empty")
    seed = check_int(seed, "seed", minimum=0)
    d, recipe, model, record = _teacher(data, teacher, teacher_recipe, teacher_seed)
    epoch = recipe.epochs
    if checkpoint is not None:
        saved = teacher_checkpoints(record)
        epoch = check_int(checkpoint, "checkpoint", minimum=1)
        if epoch not in saved:
            raise ValueError(f"no checkpoint at epoch {epoch}; saved: {sorted(saved)}")
        model = load_weights(make_model(teacher, d, seed=teacher_seed), saved[epoch]).eval()
    students = [make_model(student, d, seed=seed) for _ in taus]
    specs = [{"loss": "kd", "temperature": t} for t in taus]
    recs = distill_stacked(students, model, d, specs, recipe_from_spec(distill_recipe),
                           seed=seed, progress=False)
    first = recs[0]["metrics"]
    return {"teacher_epoch": int(epoch), "teacher_accuracy": float(first["teacher_accuracy"]),
            "teacher_ece": float(first["teacher_ece"]),
            "students": [{"temperature": t, **{k: float(r["metrics"][k]) for k in
                                                ("teacher_ece_at_tau", "accuracy", "ece", "nll",
                                                 "agreement")}}
                         for t, r in zip(taus, recs)]}


def run(cfg: dict, scale: str, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or load) both sweeps in the store of `scale` (its dry-run store when
    cfg["dry_run"]): (curve, students) frames, see curve_frame and students_frame; both
    empty when the data set is missing (`skipped_tables` says why)."""
    from kdlib import sweep
    from kdlib.experiments.common import store_path

    if missing_data_reason(cfg):
        return curve_frame([]), students_frame([])
    store = store_path(NAME, scale, dry_run=bool(cfg.get("dry_run", False)))
    cg, sg = curve_grid(cfg), student_grid(cfg)
    with limited_threads(cfg.get("torch_threads")):
        curve = sweep.run(checkpoint_curve, cg, store, namespace="curve",
                          progress=progress) if cg else []
        studs = sweep.run(distill_from_teacher, sg, store, namespace="students",
                          progress=progress) if sg else []
    return curve_frame(curve), students_frame(studs)


def missing_data_reason(cfg: dict) -> str | None:
    """None when cfg's data set is in the data folder, else the sentence naming the file."""
    from kdlib.experiments.common import missing_data

    return missing_data(cfg["data"])


# ------------------------------------------------------------------ frames and tables


def _require(df, cols):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} missing; the frame has {list(df.columns)}")


def curve_frame(records) -> pd.DataFrame:
    """checkpoint_curve records -> long frame: teacher, epoch, temperature, accuracy, nll,
    ece (fractions)."""
    rows = [{"teacher": r["teacher"], **row} for r in records for row in r["rows"]]
    return pd.DataFrame(rows, columns=["teacher", "epoch", "temperature", "accuracy", "nll",
                                       "ece"])


def students_frame(records) -> pd.DataFrame:
    """distill_from_teacher records -> one row per student: teacher, student, training,
    teacher_epoch, final (bool), temperature, seed, teacher_accuracy, teacher_ece (at T = 1),
    teacher_ece_at_tau, student_accuracy, student_ece, student_nll, agreement (fractions)."""
    rows = []
    for r in records:
        for s in r["students"]:
            rows.append({"teacher": r["teacher"], "student": r["student"],
                         "training": r["training"], "teacher_epoch": r["teacher_epoch"],
                         "final": r["checkpoint"] is None, "temperature": s["temperature"],
                         "seed": r["seed"], "teacher_accuracy": r["teacher_accuracy"],
                         "teacher_ece": r["teacher_ece"],
                         "teacher_ece_at_tau": s["teacher_ece_at_tau"],
                         "student_accuracy": s["accuracy"], "student_ece": s["ece"],
                         "student_nll": s["nll"], "agreement": s["agreement"]})
    return pd.DataFrame(rows, columns=["teacher", "student", "training", "teacher_epoch",
                                       "final", "temperature", "seed", "teacher_accuracy",
                                       "teacher_ece", "teacher_ece_at_tau", "student_accuracy",
                                       "student_ece",
                                       "student_nll", "agreement"])


def curve_wide(curve: pd.DataFrame) -> pd.DataFrame:
    """One row per (teacher, epoch): accuracy and ECE at each temperature, in percent."""
    _require(curve, ["teacher", "epoch", "temperature", "accuracy", "ece"])
    acc = curve.groupby(["teacher", "epoch"])["accuracy"].first().mul(100)
    ece = curve.pivot_table(index=["teacher", "epoch"], columns="temperature", values="ece")
    ece = ece.mul(100).rename(columns=lambda t: f"ece_tau_{t:g}")
    ece.columns.name = None
    return pd.concat([acc, ece], axis=1).reset_index()


def _mean_std(df, by):
    g = df.groupby(by, sort=True)
    out = pd.DataFrame({
        "teacher_accuracy": 100 * g["teacher_accuracy"].mean(),
        "teacher_ece_t1": 100 * g["teacher_ece"].mean(),
        "teacher_ece_at_tau": 100 * g["teacher_ece_at_tau"].mean(),
        "student_accuracy": 100 * g["student_accuracy"].mean(),
        "student_accuracy_std": 100 * g["student_accuracy"].std(),
        "n": g["seed"].nunique(),
    })
    return out.reset_index()


def checkpoint_table(students: pd.DataFrame, eskd_taus) -> pd.DataFrame:
    """Table 4 analogue: students of the full teacher at each checkpoint epoch (the final
    one included) and tau in eskd_taus; teacher accuracy, ECE at T = 1 (teacher_ece_t1) and
    at tau, student accuracy mean and std over seeds (percent), n seeds."""
    _require(students, ["training", "teacher_epoch", "temperature", "seed"])
    taus = [float(t) for t in eskd_taus]
    sub = students[(students["training"] == "full")
                   & students["temperature"].apply(lambda t: any(np.isclose(t, taus)))]
    return _mean_std(sub, ["teacher", "student", "temperature", "teacher_epoch"])


def few_vs_full_table(students: pd.DataFrame, few_taus) -> pd.DataFrame:
    """Tables 5/8 analogue: final few-trained vs final full teacher per tau in few_taus."""
    _require(students, ["training", "final", "temperature", "seed"])
    taus = [float(t) for t in few_taus]
    sub = students[students["final"]
                   & students["temperature"].apply(lambda t: any(np.isclose(t, taus)))]
    t = _mean_std(sub, ["teacher", "student", "temperature", "training"])
    return t.sort_values(["teacher", "student", "temperature", "training"],
                         key=lambda c: c.map({"few": 0, "full": 1}) if c.name == "training"
                         else c, kind="stable").reset_index(drop=True)


def few_minus_full(students: pd.DataFrame, few_taus, level: float = 0.95) -> pd.DataFrame:
    """Student accuracy from the few-trained minus the full-trained final teacher, paired
    by seed (same student init and batches), in points, per (teacher, student, tau):
    columns teacher, student, temperature, diff, std, lo, hi, n (see paired_difference)."""
    _require(students, ["final", "temperature", "training", "student_accuracy", "seed"])
    taus = [float(t) for t in few_taus]
    sub = students[students["final"]
                   & students["temperature"].apply(lambda t: any(np.isclose(t, taus)))]
    sub = sub.assign(pct=100 * sub["student_accuracy"])
    return paired_difference(sub, "pct", "training", "few", "full",
                             groups=["teacher", "student", "temperature"], level=level)


def checkpoint_minus_final(students: pd.DataFrame, eskd_taus,
                           level: float = 0.95) -> pd.DataFrame:
    """Student accuracy from each chosen checkpoint minus from the final full teacher,
    paired by seed, in points: columns teacher, student, temperature, teacher_epoch, diff,
    std, lo, hi, n."""
    _require(students, ["final", "training", "teacher_epoch", "temperature",
                        "student_accuracy", "seed"])
    taus = [float(t) for t in eskd_taus]
    full = students[(students["training"] == "full")
                    & students["temperature"].apply(lambda t: any(np.isclose(t, taus)))]
    full = full.assign(pct=100 * full["student_accuracy"])
    final = full[full["final"]].drop(columns="teacher_epoch")
    out = []
    for epoch, g in full[~full["final"]].groupby("teacher_epoch", sort=True):
        both = pd.concat([g.drop(columns="teacher_epoch"), final])
        d = paired_difference(both, "pct", "final", False, True,
                              groups=["teacher", "student", "temperature"], level=level)
        out.append(d.assign(teacher_epoch=int(epoch)))
    cols = ["teacher", "student", "temperature", "teacher_epoch", "diff", "std", "lo", "hi", "n"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


# ------------------------------------------------------------------ the paper's claims


def eskd_claims(table4: pd.DataFrame) -> pd.DataFrame:
    """Early vs late checkpoint per (teacher, student, tau) of a Table 4-like frame (columns
    teacher, student, tau, checkpoint_epoch, teacher_ece, student_accuracy): early = the
    smallest epoch, late = the largest. Columns: teacher, student, tau, early, late,
    ece_early, ece_late, acc_early, acc_late, ece_not_worse (early ECE <= late), acc_not_worse
    (early student accuracy >= late)."""
    _require(table4, ["teacher", "student", "tau", "checkpoint_epoch", "teacher_ece",
                      "student_accuracy"])
    rows = []
    for (t, s, tau), g in table4.groupby(["teacher", "student", "tau"], sort=True):
        if g["checkpoint_epoch"].nunique() < 2:
            continue
        e = g.loc[g["checkpoint_epoch"].idxmin()]
        lt = g.loc[g["checkpoint_epoch"].idxmax()]
        rows.append({"teacher": t, "student": s, "tau": tau, "early": int(e.checkpoint_epoch),
                     "late": int(lt.checkpoint_epoch), "ece_early": e.teacher_ece,
                     "ece_late": lt.teacher_ece, "acc_early": e.student_accuracy,
                     "acc_late": lt.student_accuracy,
                     "ece_not_worse": bool(e.teacher_ece <= lt.teacher_ece),
                     "acc_not_worse": bool(e.student_accuracy >= lt.student_accuracy)})
    return pd.DataFrame(rows)


def few_full_claims(table5: pd.DataFrame) -> pd.DataFrame:
    """Few- vs full-trained per (teacher, tau) of a Table 5/8-like frame (columns teacher,
    training in {"few", "full"}, tau, teacher_accuracy, teacher_ece, student_accuracy).
    Columns: teacher, tau, the six numbers, few_less_accurate, few_better_calibrated (lower
    ECE at tau), few_better_students."""
    _require(table5, ["teacher", "training", "tau", "teacher_accuracy", "teacher_ece",
                      "student_accuracy"])
    rows = []
    for (t, tau), g in table5.groupby(["teacher", "tau"], sort=True):
        by = g.set_index("training")
        if not {"few", "full"} <= set(by.index):
            continue
        f, u = by.loc["few"], by.loc["full"]
        rows.append({"teacher": t, "tau": tau,
                     "acc_few": f.teacher_accuracy, "acc_full": u.teacher_accuracy,
                     "ece_few": f.teacher_ece, "ece_full": u.teacher_ece,
                     "student_few": f.student_accuracy, "student_full": u.student_accuracy,
                     "few_less_accurate": bool(f.teacher_accuracy < u.teacher_accuracy),
                     "few_better_calibrated": bool(f.teacher_ece < u.teacher_ece),
                     "few_better_students": bool(f.student_accuracy > u.student_accuracy)})
    return pd.DataFrame(rows)


def as_paper_table4(checkpoints: pd.DataFrame) -> pd.DataFrame:
    """Our checkpoint_table in the paper's Table 4 columns (percent)."""
    _require(checkpoints, ["teacher", "student", "temperature", "teacher_epoch",
                           "teacher_ece_at_tau", "student_accuracy"])
    return checkpoints.rename(columns={"temperature": "tau", "teacher_epoch": "checkpoint_epoch",
                                       "teacher_ece_at_tau": "teacher_ece"})[
        ["teacher", "student", "tau", "checkpoint_epoch", "teacher_ece", "student_accuracy"]]


def as_paper_table5(few_full: pd.DataFrame) -> pd.DataFrame:
    """Our few_vs_full_table in the paper's Table 5/8 columns (percent)."""
    _require(few_full, ["teacher", "training", "temperature", "teacher_accuracy",
                        "teacher_ece_at_tau", "student_accuracy"])
    return few_full.rename(columns={"temperature": "tau", "teacher_ece_at_tau": "teacher_ece"})[
        ["teacher", "training", "teacher_accuracy", "tau", "teacher_ece", "student_accuracy"]]


def claims_summary(ours4: pd.DataFrame, ours5: pd.DataFrame) -> pd.DataFrame:
    """Each claim with how many rows support it in the paper's tables and in ours
    ("k/n"). ours4/ours5: as_paper_table4 / as_paper_table5 frames."""
    from kdlib.paper import paper_table

    def count(frame, col):
        return f"{int(frame[col].sum())}/{len(frame)}" if len(frame) else "0/0"

    p4, o4 = eskd_claims(paper_table("table4")), eskd_claims(ours4)
    p5, o5 = few_full_claims(paper_table("table5_8")), few_full_claims(ours5)
    rows = [
        ("early checkpoint's teacher ECE at tau <= late checkpoint's (Table 4)",
         p4, o4, "ece_not_worse"),
        ("early checkpoint's student >= late checkpoint's student (Table 4)",
         p4, o4, "acc_not_worse"),
        ("few-trained teacher less accurate than full (Tables 5, 8)",
         p5, o5, "few_less_accurate"),
        ("few-trained teacher has lower ECE at tau (Tables 5, 8)", p5, o5,
         "few_better_calibrated"),
        ("few-trained teacher's student more accurate (Tables 5, 8)", p5, o5,
         "few_better_students"),
    ]
    return pd.DataFrame([{"claim": c, "paper": count(p, col), "ours": count(o, col)}
                         for c, p, o, col in rows])


def _paper_count(frame: pd.DataFrame, col: str) -> str:
    return f"{int(frame[col].sum())}/{len(frame)} rows"


def claims(students: pd.DataFrame, eskd_taus, few_taus) -> pd.DataFrame:
    """The paper's ESKD and few-trained claims as a kdlib.claims table (points / percent).

    Per tau, paired over student seeds (t-interval, n = seeds): the earliest chosen
    checkpoint's student minus the final teacher's (claimed > 0, Table 4) and the
    few-trained teacher's student minus the full one's (claimed > 0, Tables 5, 8). The
    teacher-side claims (early / few-trained teacher has the lower ECE at tau) compare one
    teacher per training, so their interval is the range over the taus of the ECE
    difference and n is the number of taus: they hold when the difference has the
    claimed sign at every tau (and there are at least 3).
    students: students_frame.
    """
    from kdlib import claims as cl
    from kdlib.paper import paper_table

    _require(students, ["teacher", "student", "training", "final", "teacher_epoch",
                        "temperature", "seed", "student_accuracy", "teacher_ece_at_tau"])
    p4, p5 = eskd_claims(paper_table("table4")), few_full_claims(paper_table("table5_8"))
    rows = []
    t4 = checkpoint_table(students, eskd_taus)
    o4 = eskd_claims(as_paper_table4(t4))
    if len(o4):
        d = o4["ece_early"] - o4["ece_late"]
        rows.append(cl.claim("early checkpoint's teacher ECE at tau < final's",
                             f"Table 4: early ECE <= late in {_paper_count(p4, 'ece_not_worse')}",
                             d.mean(), d.min(), d.max(), len(d), "less", unit=" pp"))
    cmf = checkpoint_minus_final(students, eskd_taus)
    if len(cmf):
        # the earliest checkpoint of each (teacher, student, tau): Table 4's early row
        first = cmf[cmf["teacher_epoch"] == cmf.groupby(
            ["teacher", "student", "temperature"])["teacher_epoch"].transform("min")]
        for _, r in first.iterrows():
            rows.append(cl.claim(
                f"early (epoch {int(r.teacher_epoch)}) teacher's student > final's, "
                f"{r.teacher} -> {r.student}, tau {r.temperature:g}",
                f"Table 4: early student >= late in {_paper_count(p4, 'acc_not_worse')}",
                r["diff"], r["lo"], r["hi"], int(r["n"]), "greater", unit=" pp"))
    o5 = few_full_claims(as_paper_table5(few_vs_full_table(students, few_taus)))
    if len(o5):
        d = o5["ece_few"] - o5["ece_full"]
        rows.append(cl.claim(
            "few-trained teacher's ECE at tau < full's",
            f"Tables 5, 8: lower in {_paper_count(p5, 'few_better_calibrated')}",
            d.mean(), d.min(), d.max(), len(d), "less", unit=" pp"))
    for _, r in few_minus_full(students, few_taus).iterrows():
        rows.append(cl.claim(
            f"few-trained teacher's student > full's, {r.teacher} -> {r.student}, "
            f"tau {r.temperature:g}",
            f"Tables 5, 8: better in {_paper_count(p5, 'few_better_students')}",
            r["diff"], r["lo"], r["hi"], int(r["n"]), "greater", unit=" pp"))
    return cl.claims_table(rows)


# ------------------------------------------------------------------ aligned with the paper


def _paper_names(df: pd.DataFrame) -> pd.DataFrame:
    from kdlib.paper import paper_name

    return df.assign(teacher=[paper_name(t) for t in df["teacher"]],
                     student=[paper_name(t) for t in df["student"]])


def aligned_table4(students: pd.DataFrame, eskd_taus) -> pd.DataFrame:
    """Table 4 aligned (kdlib.paper.aligned_table): per (teacher, student, tau, checkpoint
    epoch) our teacher ECE at tau and student accuracy (mean, sd, n seeds) beside the
    paper's; names in the paper's spelling. Empty when Table 4 did not run."""
    from kdlib.paper import aligned_table, paper_table

    _require(students, ["training", "teacher_epoch", "temperature", "seed",
                        "teacher_ece_at_tau", "student_accuracy"])
    taus = [float(t) for t in (eskd_taus or [])]
    sub = students[(students["training"] == "full")
                   & students["temperature"].apply(lambda t: any(np.isclose(t, taus)))]
    if sub.empty:
        return pd.DataFrame()
    sub = _paper_names(sub).rename(columns={"temperature": "tau",
                                            "teacher_epoch": "checkpoint_epoch"})
    return aligned_table(sub, paper_table("table4"),
                         ["teacher", "student", "tau", "checkpoint_epoch"],
                         {"teacher_ece_at_tau": "teacher_ece",
                          "student_accuracy": "student_accuracy"})


def aligned_table5_8(students: pd.DataFrame, few_taus) -> pd.DataFrame:
    """Tables 5 and 8 aligned: per (teacher, training, tau) our teacher accuracy, teacher
    ECE at tau and student accuracy beside the paper's (final few- and full-trained
    teachers). Empty when those tables did not run."""
    from kdlib.paper import aligned_table, paper_table

    _require(students, ["final", "training", "temperature", "seed", "teacher_accuracy",
                        "teacher_ece_at_tau", "student_accuracy"])
    taus = [float(t) for t in (few_taus or [])]
    sub = students[students["final"]
                   & students["temperature"].apply(lambda t: any(np.isclose(t, taus)))]
    if sub.empty:
        return pd.DataFrame()
    sub = _paper_names(sub).rename(columns={"temperature": "tau"})
    return aligned_table(sub, paper_table("table5_8"), ["teacher", "training", "tau"],
                         {"teacher_accuracy": "teacher_accuracy",
                          "teacher_ece_at_tau": "teacher_ece",
                          "student_accuracy": "student_accuracy"})


def headline_figures(students: pd.DataFrame, eskd_taus, few_taus) -> dict:
    """Headline figures (kdlib.headline Figures) that exist in this run, per pair: the
    early-checkpoint minus final student accuracy at each Table 4 tau, and the few- minus
    full-trained student accuracy and teacher ECE at tau 1.6 (or the lowest few tau),
    points with t-intervals over seeds where there are 2 or more. NaNs are left out."""
    from kdlib.headline import percent, points

    def fig(r):
        ok = np.isfinite([r["lo"], r["hi"]]).all()
        return points(r["diff"] / 100, r["lo"] / 100 if ok else None,
                      r["hi"] / 100 if ok else None)

    out = {}
    if eskd_taus:
        cmf = checkpoint_minus_final(students, eskd_taus)
        for _, r in cmf.iterrows():
            if np.isfinite(r["diff"]):
                out[f"student acc, epoch {int(r.teacher_epoch)} - final teacher, {r.teacher} "
                    f"tau {r.temperature:g}"] = fig(r)
    if few_taus:
        tau = 1.6 if any(np.isclose(1.6, few_taus)) else min(float(t) for t in few_taus)
        fmf = few_minus_full(students, [tau])
        t5 = few_vs_full_table(students, [tau])
        for _, r in fmf.iterrows():
            if np.isfinite(r["diff"]):
                out[f"student acc, few - full-trained teacher, {r.teacher} tau {tau:g}"] = fig(r)
        for _, r in t5.iterrows():
            out[f"teacher ECE at tau {tau:g}, {r.training}-trained {r.teacher}"] = percent(
                r["teacher_ece_at_tau"] / 100)
    return out


# ------------------------------------------------------------------ plan (kdlib plan)


def plan_runs(cfg: dict) -> list:
    """Every training the preset needs (kdlib plan): the full and few-trained teachers of
    each pair and one stacked student run per student_grid cell (members = its taus).
    Nothing is loaded or trained; `done` is left False (the sweep store is not read)."""
    from kdlib.plan import PlannedRun, run_key, teacher_run, train_images

    if missing_data_reason(cfg) or not (cfg.get("eskd_taus") or cfg.get("few_taus")):
        return []
    runs, grid = [], student_grid(cfg)
    for training, key in (("full", "full_recipe"), ("few", "few_recipe")):
        if any(c["training"] == training for c in grid):
            for t in dict.fromkeys(p["teacher"] for p in cfg["pairs"]):
                runs.append(teacher_run(cfg["data"], t, cfg[key], cfg["teacher_seed"],
                                                f"{training}-trained teacher {t}"))
    epochs = recipe_from_spec(cfg["distill_recipe"]).epochs
    for c in grid:
        where = "final" if c["checkpoint"] is None else f"epoch {c['checkpoint']}"
        runs.append(PlannedRun("", "student", c["student"], c["data"]["name"], epochs,
                               train_images(c["data"]), members=len(c["temperatures"]),
                               teacher=c["teacher"], key=run_key(experiment=NAME, **c),
                               label=f"{c['training']} {c['teacher']} ({where}) -> "
                                     f"{c['student']}, seed {c['seed']}"))
    return runs
