"""Online distillation (Harutyunyan et al. 2023): the student is taught, stage by stage, by
the teacher checkpoint of the matching stage of the teacher's own training, against the
final teacher and an early-stopped teacher.

    plan = teacher_schedule("online", [5, 10, ..., 30])   # [(stop_epoch, teacher_epoch)]
    records = distill_in_stages(students, teachers, data, specs, recipe, seed=0)

The engine extension is `distill_in_stages`: it continues the same (stacked) students
through the stages with `kdlib.stacked.distill_stacked`, one call per stage, each with the
stage's slice of one learning-rate schedule (`stage_recipe`). The three teacher modes go
through the same staged loop (same stages, same batch seeds), so they differ only in the
teacher. The SGD momentum continues across stage boundaries (`carry=` of distill_stacked),
so the staged run is one SGD run whose teacher changes.

Stage s covers student epochs [stop_{s-1}, stop_s) and is taught by
  online: the teacher checkpoint saved at epoch stop_s (the end of that window),
  final:  the final teacher,
  early:  the checkpoint at `early_epoch`.

Recipe. Teacher and student train with the 200-epoch schedule the paper's Tables 4 and 5
point to (early_stopped_teacher.PAPER_200_RECIPE: lr 0.05, /10 at 100, 150, 180, a teacher
checkpoint every 10 epochs, so 20 stages), and the early teacher is the epoch-140 checkpoint,
as in the paper's Table 4: nearly converged (after the first decay), not the pre-decay
teacher the 240-epoch CRD/RepDistiller recipe would give at epoch 140. The default preset
mirrors it at 1/10 of the epochs (20 epochs, /10 at 10, 15, 18, a checkpoint every 2 epochs,
early teacher at epoch 14).

Momentum at stage boundaries. Each stage is one distill_stacked call; the calls share one
`carry` dict, through which each stage hands its SGD momentum buffers to the next, so the
students see one uninterrupted SGD run (the engine's tests show two calls with carry equal
one call of both epochs to 1e-12) whose teacher changes at the boundaries.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlib import calibration, presets
from kdlib._validate import check_choice, check_int
from kdlib.experiments.common import limited_threads
from kdlib.experiments.early_stopped_teacher import DEFAULT_FULL_RECIPE, PAPER_200_RECIPE
from kdlib.recipe import Recipe, recipe_from_spec

NAME = "online_distillation"
MODES = ("online", "final", "early")

presets.register(NAME, {
    "smoke": {
        "data": {"name": "digits", "subset_train": 300, "subset_test": 200},
        "teacher": "resnet8",
        "teacher_recipe": {"preset": "smoke", "checkpoint_every": 1},
        "teacher_seed": 0,
        "student": "resnet8",
        "student_recipe": {"preset": "smoke"},
        "early_epoch": 1,
        "modes": list(MODES),
        "losses": ["kd", "dist"],
        "temperatures": [4.0],
        "seeds": [0],
        "trajectory_temperatures": [1.0, 4.0],
        "torch_threads": 1,
    },
    "default": {
        "data": {"name": "digits"},
        "teacher": "resnet20",
        "teacher_recipe": DEFAULT_FULL_RECIPE,
        "teacher_seed": 0,
        "student": "resnet8",
        "student_recipe": {**DEFAULT_FULL_RECIPE, "checkpoint_every": 0},
        "early_epoch": 14,
        "modes": list(MODES),
        "losses": ["kd", "dist"],
        "temperatures": [1.0, 4.0],
        "seeds": [0, 1, 2],
        "trajectory_temperatures": [1.0, 2.0, 4.0, 8.0],
        "torch_threads": 1,
    },
    "paper": {
        "data": {"name": "cifar100"},
        "teacher": "resnet56",
        "teacher_recipe": PAPER_200_RECIPE,
        "teacher_seed": 0,
        "student": "resnet14",
        "student_recipe": {**PAPER_200_RECIPE, "checkpoint_every": 0},
        "early_epoch": 140,
        "modes": list(MODES),
        "losses": ["kd", "dist"],
        "temperatures": [1.0, 4.0],
        "seeds": [0, 1, 2],
        "trajectory_temperatures": [1.0, 1.5, 2.0, 4.0, 8.0],
        "torch_threads": None,  # torch's own choice on the GPU machine
    },
}, dry_run=lambda cfg: dry_run_hook(cfg))


def dry_run_hook(cfg: dict) -> dict:
    """Map the epoch-tied values onto the dry-run cut: teacher and student train 2 epochs,
    the teacher with a checkpoint every epoch (2 stages), the early teacher (epoch 140 of
    200) is the epoch-1 checkpoint. The dry run is a CPU check: one torch thread."""
    out = dict(cfg, torch_threads=1)
    for key, every in (("teacher_recipe", 1), ("student_recipe", 0)):
        if isinstance(cfg.get(key), dict):
            out[key] = {**cfg[key], "epochs": 2, "milestones": [], "checkpoint_every": every}
    out["early_epoch"] = 1
    return out


def skipped_tables(cfg: dict) -> list[tuple[str, str]]:
    """[("online distillation", reason)] when the preset's data set is missing (the reason
    names the file to fetch), else []."""
    from kdlib.experiments.common import missing_data

    why = missing_data(cfg["data"])
    return [("online distillation", why)] if why else []


# ------------------------------------------------------------------ stages


def stage_recipe(recipe: Recipe, start: int, stop: int) -> Recipe:
    """The slice [start, stop) of `recipe`'s schedule as a Recipe of stop - start epochs:
    lr = recipe.lr_at(start), the milestones that fall inside the slice (shifted), the
    same batch size, momentum, weight decay and gamma; no checkpoints."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    start = check_int(start, "start", minimum=0)
    stop = check_int(stop, "stop", minimum=start + 1, maximum=recipe.epochs)
    milestones = tuple(m - start for m in recipe.milestones if start < m < stop)
    return recipe.replace(epochs=stop - start, lr=recipe.lr_at(start), milestones=milestones,
                          checkpoint_every=0)


def teacher_schedule(mode: str, checkpoint_epochs, early_epoch: int | None = None
                     ) -> list[tuple[int, int]]:
    """[(stop_epoch, teacher_epoch)] per stage: the stages end at the sorted checkpoint
    epochs; the teacher is the checkpoint at stop_epoch ("online"), at the last checkpoint
    ("final") or at `early_epoch` ("early", which must be one of the checkpoints)."""
    check_choice(mode, "mode", MODES)
    epochs = sorted({check_int(e, "checkpoint epoch", minimum=1) for e in checkpoint_epochs})
    if not epochs:
        raise ValueError("need at least one checkpoint epoch")
    if mode == "online":
        return [(e, e) for e in epochs]
    if mode == "final":
        return [(e, epochs[-1]) for e in epochs]
    if early_epoch not in epochs:
        raise ValueError(f"early_epoch must be one of the checkpoint epochs {epochs}, "
                         f"got {early_epoch!r}")
    return [(e, int(early_epoch)) for e in epochs]


def stage_seed(seed: int, stage: int) -> int:
    """The batch-order seed of stage `stage` of a run with `seed` (distinct per stage)."""
    seed = check_int(seed, "seed", minimum=0)
    stage = check_int(stage, "stage", minimum=0)
    return int(np.random.SeedSequence([seed, stage]).generate_state(1)[0])


def distill_in_stages(students, teachers, data, specs, recipe: Recipe, *, seed: int = 0,
                      device="auto", progress: bool = False) -> list[list[dict]]:
    """Distil K stacked students through stages, each with its own teacher.

    teachers: [(stop_epoch, teacher module)] with strictly increasing stop epochs, the last
    equal to recipe.epochs; stage s runs epochs [stop_{s-1}, stop_s) of `recipe`'s
    schedule (`stage_recipe`) with batch seed `stage_seed(seed, s)`. The students are
    trained in place and continue from stage to stage, SGD momentum included. specs: as in
    `distill_stacked`.
    Returns the distill_stacked records of every stage (stage x student); the last stage's
    records hold the final metrics (fidelity measured against the last stage's teacher).
    """
    from kdlib.stacked import distill_stacked

    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    teachers = list(teachers)
    if not teachers:
        raise ValueError("need at least one (stop_epoch, teacher) stage")
    stops = [check_int(s, "stop_epoch", minimum=1) for s, _ in teachers]
    if stops != sorted(set(stops)) or stops[-1] != recipe.epochs:
        raise ValueError(f"stop epochs must increase strictly and end at recipe.epochs "
                         f"({recipe.epochs}), got {stops}")
    out, start, carry = [], 0, {}  # carry: SGD momentum handed from stage to stage
    for s, (stop, teacher) in enumerate(teachers):
        out.append(distill_stacked(students, teacher, data, specs,
                                   stage_recipe(recipe, start, stop),
                                   seed=stage_seed(seed, s), device=device, progress=progress,
                                   carry=carry))
        start = stop
    return out


# ------------------------------------------------------------------ teacher and trajectory


def load_teacher_checkpoints(data, teacher: str, teacher_recipe, teacher_seed: int) -> dict:
    """{epoch: teacher module (eval)} for every saved checkpoint of the cached teacher
    (trained on first use); the last epoch holds the final weights."""
    from kdlib.experiments.common import teacher_cache_dir
    from kdlib.teachers import get_teacher, load_weights, teacher_checkpoints
    from kdlib.train import make_model

    recipe = recipe_from_spec(teacher_recipe)
    if recipe.checkpoint_every <= 0:
        raise ValueError("the teacher recipe needs checkpoint_every > 0 for online "
                         "distillation")
    final, record = get_teacher(teacher, data, recipe, teacher_seed,
                                cache_dir=teacher_cache_dir(), progress=False)
    out = {}
    for epoch, path in teacher_checkpoints(record).items():
        out[epoch] = load_weights(make_model(teacher, data, seed=teacher_seed), path).eval()
    if recipe.epochs not in out:
        out[recipe.epochs] = final
    return out


def teacher_trajectory(data: dict, teacher: str, teacher_recipe, teacher_seed: int,
                       temperatures) -> pd.DataFrame:
    """Test accuracy and ECE at each temperature of every teacher checkpoint: one row per
    (epoch, temperature) with columns epoch, temperature, accuracy, ece_at_tau, nll_at_tau."""
    from kdlib.experiments.common import load_data
    from kdlib.train import predict_logits

    ds = load_data(data)
    temps = [float(t) for t in temperatures]
    rows = []
    for epoch, model in sorted(load_teacher_checkpoints(ds, teacher, teacher_recipe,
                                                        teacher_seed).items()):
        logits = predict_logits(model, ds)
        acc = float((logits.argmax(1) == ds.test_y).float().mean())
        eces = calibration.ece_vs_temperature(logits, ds.test_y, temps)
        nlls = calibration.nll_vs_temperature(logits, ds.test_y, temps)
        for t, e, n in zip(temps, eces, nlls):
            rows.append({"epoch": epoch, "temperature": t, "accuracy": acc,
                         "ece_at_tau": float(e), "nll_at_tau": float(n)})
    return pd.DataFrame(rows)


def trajectory(cfg: dict) -> pd.DataFrame:
    """teacher_trajectory of a preset (with its torch_threads), or an empty frame with the
    same columns when the data set is missing (`skipped_tables`)."""
    cols = ["epoch", "temperature", "accuracy", "ece_at_tau", "nll_at_tau"]
    if skipped_tables(cfg):
        return pd.DataFrame(columns=cols)
    with limited_threads(cfg.get("torch_threads")):
        return teacher_trajectory(cfg["data"], cfg["teacher"], cfg["teacher_recipe"],
                                  cfg["teacher_seed"], cfg["trajectory_temperatures"])


# ------------------------------------------------------------------ the sweep cell


def run_seed(data: dict, teacher: str, teacher_recipe, teacher_seed: int, student: str,
             student_recipe, early_epoch: int, modes: list, losses: list,
             temperatures: list, seed: int) -> dict:
    """One sweep cell: for each teacher mode, distil every (loss, temperature) student of
    `seed` stage by stage. Returns {"rows": one dict per (mode, loss, temperature) with the
    final metrics, and per stage the student's test accuracy and the stage teacher's
    accuracy and ECE at tau}."""
    from kdlib.experiments.common import load_data
    from kdlib.train import make_model

    ds = load_data(data)
    ckpts = load_teacher_checkpoints(ds, teacher, teacher_recipe, teacher_seed)
    recipe = recipe_from_spec(student_recipe)
    if max(ckpts) != recipe.epochs:
        raise ValueError(f"the student trains {recipe.epochs} epochs but the teacher's last "
                         f"checkpoint is at epoch {max(ckpts)}: online distillation matches "
                         f"stages epoch for epoch, so they must be equal")
    specs = [{"loss": loss, "temperature": float(t)} for loss in losses for t in temperatures]
    rows = []
    for mode in modes:
        plan = teacher_schedule(mode, ckpts, early_epoch)
        students = [make_model(student, ds, seed=seed) for _ in specs]
        stages = distill_in_stages(students, [(stop, ckpts[e]) for stop, e in plan], ds,
                                   specs, recipe, seed=seed)
        for i, spec in enumerate(specs):
            final = stages[-1][i]["metrics"]
            rows.append({"mode": mode, **spec, **final,
                         "stage_stop": [stop for stop, _ in plan],
                         "stage_teacher_epoch": [e for _, e in plan],
                         "stage_accuracy": [st[i]["metrics"]["accuracy"] for st in stages],
                         "stage_teacher_accuracy": [st[i]["metrics"]["teacher_accuracy"]
                                                    for st in stages],
                         "stage_teacher_ece_at_tau": [st[i]["metrics"]["teacher_ece_at_tau"]
                                                      for st in stages]})
    return {"rows": rows}


def grid(cfg: dict) -> list[dict]:
    """The sweep cells of a preset: one per student seed."""
    keys = ("data", "teacher", "teacher_recipe", "teacher_seed", "student", "student_recipe",
            "early_epoch", "modes", "losses", "temperatures")
    return [{**{k: cfg[k] for k in keys}, "seed": s} for s in cfg["seeds"]]


def run(cfg: dict, scale: str, progress: bool = True):
    """Run (or resume) the sweep of a preset; returns the SweepResults."""
    from kdlib import sweep
    from kdlib.experiments.common import store_path

    store = store_path(NAME, scale, dry_run=bool(cfg.get("dry_run", False)))
    with limited_threads(cfg.get("torch_threads")):
        return sweep.run(run_seed, grid(cfg), store, namespace=NAME, progress=progress)


# ------------------------------------------------------------------ tables


def results_frame(records) -> pd.DataFrame:
    """One row per (seed, mode, loss, temperature); the per-stage lists stay as lists and
    `mean_teacher_ece_at_tau` averages the stage teachers' ECE at tau."""
    rows = [{"seed": rec["seed"], **r} for rec in records for r in rec["rows"]]
    if not rows:
        raise ValueError("no results: the sweep returned no rows")
    df = pd.DataFrame(rows)
    df["mean_teacher_ece_at_tau"] = [float(np.mean(v)) for v in df["stage_teacher_ece_at_tau"]]
    return df


def stages_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The per-stage lists of `results_frame` in long form: one row per (seed, mode, loss,
    temperature, stage) with stop_epoch, teacher_epoch, accuracy, teacher_accuracy and
    teacher_ece_at_tau."""
    rows = []
    for r in df.itertuples(index=False):
        for stop, te, acc, tacc, tece in zip(r.stage_stop, r.stage_teacher_epoch,
                                             r.stage_accuracy, r.stage_teacher_accuracy,
                                             r.stage_teacher_ece_at_tau):
            rows.append({"seed": r.seed, "mode": r.mode, "loss": r.loss,
                         "temperature": r.temperature, "stop_epoch": stop,
                         "teacher_epoch": te, "accuracy": acc, "teacher_accuracy": tacc,
                         "teacher_ece_at_tau": tece})
    return pd.DataFrame(rows)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (loss, temperature, mode): student accuracy mean, sd and n over seeds, the
    final agreement with the stage teacher, and the mean ECE at tau of the teachers the
    student saw; plus `gain_vs_final` = mean accuracy minus that of the final-teacher
    students of the same loss and temperature (paired by seed), with its sd over seeds."""
    need = ["seed", "mode", "loss", "temperature", "accuracy", "mean_teacher_ece_at_tau"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; it has {list(df.columns)}")
    final = df[df["mode"] == "final"].set_index(["loss", "temperature", "seed"])["accuracy"]
    d = df.set_index(["loss", "temperature", "seed"])
    gain = d["accuracy"] - final.reindex(d.index).to_numpy()
    d = d.assign(gain_vs_final=gain.to_numpy()).reset_index()
    g = d.groupby(["loss", "temperature", "mode"])
    out = g.agg(accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"),
                n_seeds=("seed", "nunique"),
                teacher_ece_at_tau=("mean_teacher_ece_at_tau", "mean"),
                gain_vs_final=("gain_vs_final", "mean"),
                gain_sd=("gain_vs_final", "std"))
    return out.reset_index()


def claims(df: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Online and early-stopped distillation against the final teacher as a kdlib.claims
    table: per (loss, temperature) and mode ("online", then "early" when it ran), student
    accuracy minus that of the final-teacher student of the same seed, in percentage points:
    mean with a t-interval over seeds (n = seeds with both students). Claimed > 0
    (Harutyunyan et al. 2023 for online; the paper's Table 4 for early stopping).
    df: results_frame."""
    from kdlib import claims as cl
    from kdlib.analysis import mean_t_interval

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a DataFrame (results_frame), got {type(df).__name__}")
    need = ["seed", "mode", "loss", "temperature", "accuracy"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; it has {list(df.columns)}")
    if not 0 < float(level) < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    evidence = {"online": "Harutyunyan et al. 2023: online beats the final teacher (CIFAR)",
                "early": "Table 4: early checkpoint's student >= the final's"}
    key = ["loss", "temperature", "seed"]
    final = df[df["mode"] == "final"].set_index(key)["accuracy"]
    rows = []
    for (loss, t), g in df.groupby(["loss", "temperature"], sort=True):
        for mode in ("online", "early"):
            m = g[g["mode"] == mode].set_index(key)["accuracy"]
            if m.empty:
                continue
            d = 100 * (m - final.reindex(m.index)).dropna().to_numpy(dtype=float)
            mean, lo, hi = mean_t_interval(d, level)
            rows.append(cl.claim(f"{mode} teacher's student > final's, {loss} T={t:g}",
                                 evidence[mode], mean, lo, hi, d.size, "greater", unit=" pp"))
    return cl.claims_table(rows)


def headline_figures(df: pd.DataFrame, trajectory: pd.DataFrame | None = None,
                     level: float = 0.95) -> dict:
    """Headline figures (kdlib.headline Figures): per (loss, temperature) and mode ("online",
    "early") the student's accuracy minus the final-teacher student's, paired by seed
    (points, t-interval over seeds where there are 2 or more), and the final teacher's test
    ECE at T = 1 (percent) from `trajectory` (teacher_trajectory) when given. NaNs are left
    out. df: results_frame."""
    from kdlib.analysis import paired_difference
    from kdlib.headline import percent, points

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a DataFrame (results_frame), got {type(df).__name__}")
    out = {}
    for mode in ("online", "early"):
        if mode not in set(df["mode"]):
            continue
        d = paired_difference(df.assign(pct=100 * df["accuracy"]), "pct", "mode", mode,
                              "final", groups=["loss", "temperature"], level=level)
        for _, r in d.iterrows():
            if not np.isfinite(r["diff"]):
                continue
            ok = np.isfinite([r["lo"], r["hi"]]).all()
            out[f"{mode} - final teacher's student, {r.loss} T={r.temperature:g}"] = points(
                r["diff"] / 100, r["lo"] / 100 if ok else None, r["hi"] / 100 if ok else None)
    if trajectory is not None and len(trajectory):
        last = trajectory[(trajectory["epoch"] == trajectory["epoch"].max())
                          & np.isclose(trajectory["temperature"], 1.0)]
        if len(last):
            out["final teacher ECE at T=1"] = percent(float(last["ece_at_tau"].iloc[0]))
    return out


def plan_runs(cfg: dict) -> list:
    """Every training the preset needs (kdlib plan): the teacher (with its checkpoints) and,
    per seed and teacher mode, one stacked student run of len(losses) x len(temperatures)
    members. Nothing is loaded or trained; `done` is left False."""
    from kdlib.plan import PlannedRun, run_key, teacher_run, train_images

    if skipped_tables(cfg):
        return []
    runs = [teacher_run(cfg["data"], cfg["teacher"], cfg["teacher_recipe"],
                                cfg["teacher_seed"])]
    epochs = recipe_from_spec(cfg["student_recipe"]).epochs
    members = len(cfg["losses"]) * len(cfg["temperatures"])
    for cell in grid(cfg):
        for mode in cfg["modes"]:
            runs.append(PlannedRun("", "student", cfg["student"], cfg["data"]["name"], epochs,
                                   train_images(cfg["data"]), members=members,
                                   teacher=cfg["teacher"],
                                   key=run_key(experiment=NAME, mode=mode, **cell),
                                   label=f"{mode} {cfg['teacher']} -> {cfg['student']}, "
                                         f"seed {cell['seed']}"))
    return runs
