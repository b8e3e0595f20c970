"""The Gaussian-mixture oracle: is a teacher's ECE a faithful proxy for what matters to the
student, when the true posterior is known?

    rows = sweep.run(run_teacher, grid(cfg), store_path(NAME, scale))
    df = results_frame(rows)      # one row per (task, teacher, seed, loss, temperature)
    proxy_correlations(df)        # Spearman of student accuracy with ECE / true error

On the GMM tasks (`kdlib.gmm`) the exact class posterior p(c | x) of every test point is
known, so a teacher's *true* calibration error can be measured directly:
    expected_kl_to_posterior  E_x KL(p(. | x) || softmax(z(x) / T))       (nats)
    expected_tv_to_posterior  E_x 1/2 sum_c |p(c | x) - softmax(z(x) / T)_c|  (in [0, 1])
next to the binned ECE, which only checks confidence against accuracy.

One sweep cell = one teacher configuration (MLP width x training length): its seeds are
trained at once on the closed-form MLP path (`kdlib.stacked_mlp.train_mlps_stacked`: the
same initialization, batches, loss and SGD as `kdlib.train.train`, about 7x faster than
the generic stacked path); each seed's teacher is then read at every temperature (teacher
quality) and distilled into a stack of students, one per (loss, temperature), with
`distill_stacked` (`stack_mode` of the preset: "vmap" batches the small MLP students'
matrix products, measured about 1.8x faster than "loop" on the CPU; only float rounding
differs). `torch_threads` of the preset: CPU threads while the cells run (1 at smoke and
default scale: small MLPs run fastest on one thread, and more threads than free cores
slow every op down); `workers`: threads that train the teachers' seeds in parallel.
"""

from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F

from kdlib import analysis, calibration, presets
from kdlib._validate import as_tensor, check_int, check_positive
from kdlib.recipe import recipe_from_spec

NAME = "gmm_oracle"
ROW_SUM_TOLERANCE = 1e-3
PROXIES = ("teacher_ece_at_tau", "kl_to_posterior", "tv_to_posterior")

presets.register(NAME, {
    "smoke": {
        "tasks": [{"name": "gmm10", "n_train": 500, "n_test": 500}],
        "teacher_hidden": [[16], [64, 64]],
        "teacher_epochs": [2, 6],
        "teacher_recipe": {"batch_size": 128, "lr": 0.03},
        "student_hidden": [32],
        "student_recipe": {"epochs": 2, "batch_size": 128, "lr": 0.03},
        "losses": ["kd", "dist"],
        "temperatures": [1.0, 4.0],
        "seeds": [0],
        "n_boot": 200,
        "torch_threads": 1, "workers": 1, "stack_mode": "vmap",
    },
    "default": {
        "tasks": [{"name": "gmm10", "n_train": 2000, "n_test": 3000}],
        "teacher_hidden": [[16], [64, 64], [256, 256]],
        "teacher_epochs": [10, 50, 200],
        "teacher_recipe": {"batch_size": 128, "lr": 0.03},
        "student_hidden": [64],
        "student_recipe": {"epochs": 30, "batch_size": 128, "lr": 0.03},
        "losses": ["kd", "dist"],
        "temperatures": [0.5, 1.0, 2.0, 4.0, 8.0],
        "seeds": [0, 1, 2],
        "n_boot": 2000,
        "torch_threads": 1, "workers": 2, "stack_mode": "vmap",
    },
    "paper": {
        # the paper's GMM setting (section 3.2): 10,000 train / 3,000 test, 200 epochs, lr 0.03
        "tasks": [{"name": "gmm10", "n_train": 10000, "n_test": 3000},
                  {"name": "gmm100", "n_train": 10000, "n_test": 3000}],
        "teacher_hidden": [[16], [64, 64], [256, 256]],
        "teacher_epochs": [10, 50, 200],
        "teacher_recipe": {"batch_size": 64, "lr": 0.03},
        "student_hidden": [64, 64],
        "student_recipe": {"epochs": 200, "batch_size": 64, "lr": 0.03},
        "losses": ["kd", "dist"],
        "temperatures": [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
        "seeds": [0, 1, 2, 3, 4],
        "n_boot": 2000,
        "torch_threads": None, "workers": "auto", "stack_mode": "auto",
    },
}, dry_run=lambda cfg: _dry_run(cfg))


def _dry_run(cfg: dict) -> dict:
    """The dry-run hook: teacher lengths 1, 2, ... epochs (as many teachers as the preset
    has), teacher batches of DRY_BATCH (its recipe holds no "epochs" for the generic cut),
    one torch thread (a CPU check)."""
    from kdlib.dry_run import DRY_BATCH

    out = dict(cfg, torch_threads=1, workers=1)
    out["teacher_epochs"] = list(range(1, len(cfg["teacher_epochs"]) + 1))
    out["teacher_recipe"] = {**cfg["teacher_recipe"], "batch_size": DRY_BATCH}
    return out


# ------------------------------------------------------------------ true calibration error


def _posterior_and_log_q(posterior, logits, temperature):
    p = as_tensor(posterior, "posterior")
    z = as_tensor(logits, "logits")
    if p.ndim != 2 or p.shape != z.shape or p.shape[0] == 0:
        raise ValueError(f"posterior and logits must both be non-empty N x C matrices of one "
                         f"shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    if not (p.is_floating_point() and z.is_floating_point()):
        raise TypeError("posterior and logits must be floating point")
    temperature = check_positive(temperature, "temperature")
    p = p.detach().double().cpu()
    z = z.detach().double().cpu()
    if not (torch.isfinite(p).all() and torch.isfinite(z).all()):
        raise ValueError("posterior and logits must be finite")
    if (p < 0).any() or ((p.sum(1) - 1).abs() > ROW_SUM_TOLERANCE).any():
        raise ValueError(f"posterior rows must be probabilities (>= 0, summing to 1 within "
                         f"{ROW_SUM_TOLERANCE})")
    return p, F.log_softmax(z / temperature, dim=1)


def expected_kl_to_posterior(posterior, logits, temperature: float = 1.0) -> float:
    """Mean over samples of KL(p || q) in nats, p = the exact posterior (N x C
    probabilities), q = softmax(logits / temperature) (N x C logits, T > 0); 0 log 0 = 0.
    Zero exactly when q = p on every sample."""
    p, log_q = _posterior_and_log_q(posterior, logits, temperature)
    terms = torch.where(p > 0, p * (torch.log(p.clamp_min(1e-300)) - log_q),
                        torch.zeros((), dtype=p.dtype))
    return float(terms.sum(1).mean())


def expected_tv_to_posterior(posterior, logits, temperature: float = 1.0) -> float:
    """Mean over samples of the total variation 1/2 sum_c |p_c - q_c| (a fraction in
    [0, 1]) between the exact posterior p and q = softmax(logits / temperature)."""
    p, log_q = _posterior_and_log_q(posterior, logits, temperature)
    return float(0.5 * (p - log_q.exp()).abs().sum(1).mean())


def teacher_quality(logits, labels, posterior, temperatures, n_bins: int = 15) -> list[dict]:
    """A teacher read at each temperature: one dict per T with temperature, accuracy,
    ece_at_tau (binned, fraction), nll_at_tau (nats), kl_to_posterior (nats) and
    tv_to_posterior (fraction), all on the given (test) samples."""
    z = as_tensor(logits, "logits").float()
    y = as_tensor(labels, "labels")
    temps = [check_positive(t, "temperature") for t in temperatures]
    if not temps:
        raise ValueError("need at least one temperature")
    eces = calibration.ece_vs_temperature(z, y, temps, n_bins=n_bins)
    nlls = calibration.nll_vs_temperature(z, y, temps)
    acc = float((z.argmax(1) == y).float().mean())
    return [{"temperature": t, "accuracy": acc, "ece_at_tau": float(e), "nll_at_tau": float(n),
             "kl_to_posterior": expected_kl_to_posterior(posterior, z, t),
             "tv_to_posterior": expected_tv_to_posterior(posterior, z, t)}
            for t, e, n in zip(temps, eces, nlls)]


def oracle_reference(data: dict, n_bins: int = 15) -> dict:
    """The exact posterior as a teacher on the test set: bayes_accuracy and its ECE (the
    floor set by the finite test set; fractions)."""
    from kdlib.experiments.common import load_data

    ds = load_data(data)
    if ds.test_posterior is None:
        raise ValueError(f"data set {ds.name!r} has no exact posterior (use gmm10 / gmm100)")
    p = ds.test_posterior.double()
    return {"task": ds.name, "bayes_accuracy": float((p.argmax(1) == ds.test_y).double().mean()),
            "posterior_ece": calibration.ece(p, ds.test_y, n_bins=n_bins)}


# ------------------------------------------------------------------ the sweep cell


def teacher_label(hidden, epochs: int) -> str:
    """'mlp64x64-50ep' for hidden (64, 64) trained 50 epochs."""
    return f"mlp{'x'.join(str(int(h)) for h in hidden)}-{int(epochs)}ep"


def run_teacher(data: dict, hidden: list, epochs: int, teacher_recipe: dict, seeds: list,
                student_hidden: list, student_recipe, losses: list,
                temperatures: list, workers=1, stack_mode: str = "auto") -> dict:
    """One sweep cell: train the MLP teachers of width `hidden` for `epochs` (one per seed,
    stacked on the closed-form MLP path with `workers` threads), measure each at every
    temperature against labels and the exact posterior, and distil it into one student per
    (loss, temperature) (`distill_stacked` with mode `stack_mode`).

    Returns {"teachers": [one dict per (seed, temperature): `teacher_quality`],
             "students": [one dict per (seed, loss, temperature): student metrics]}.
    """
    from kdlib.experiments.common import load_data
    from kdlib.stacked import distill_stacked
    from kdlib.stacked_mlp import train_mlps_stacked
    from kdlib.train import make_model, predict_logits

    ds = load_data(data)
    if ds.test_posterior is None:
        raise ValueError(f"data set {ds.name!r} has no exact posterior (use gmm10 / gmm100)")
    epochs = check_int(epochs, "epochs", minimum=1)
    seeds = [check_int(s, "seed", minimum=0) for s in seeds]
    if not seeds or not losses or not temperatures:
        raise ValueError("need at least one seed, one loss and one temperature")
    hidden = tuple(int(h) for h in hidden)
    teachers = [make_model("mlp", ds, seed=s, hidden=hidden) for s in seeds]
    train_mlps_stacked(teachers, ds, recipe_from_spec({**teacher_recipe, "epochs": epochs}),
                       seeds, progress=False, workers=workers)
    s_recipe = recipe_from_spec(student_recipe)
    specs = [{"loss": loss, "temperature": float(t)} for loss in losses for t in temperatures]
    t_rows, s_rows = [], []
    for seed, teacher in zip(seeds, teachers):
        teacher.eval()
        logits = predict_logits(teacher, ds)
        quality = teacher_quality(logits, ds.test_y, ds.test_posterior, temperatures)
        t_rows += [{"seed": seed, **q} for q in quality]
        students = [make_model("mlp", ds, seed=seed, hidden=tuple(student_hidden))
                    for _ in specs]
        records = distill_stacked(students, teacher, ds, specs, s_recipe, seed=seed,
                                  progress=False, mode=stack_mode)
        for spec, rec in zip(specs, records):
            m = rec["metrics"]
            s_rows.append({"seed": seed, **spec, "accuracy": m["accuracy"], "ece": m["ece"],
                           "nll": m["nll"], "agreement": m["agreement"],
                           "kl_teacher_student": m["kl_teacher_student"]})
    return {"teacher": teacher_label(hidden, epochs), "teachers": t_rows, "students": s_rows}


def grid(cfg: dict) -> list[dict]:
    """The sweep cells of a preset: one per (task, teacher width, training length)."""
    keys = ("teacher_recipe", "seeds", "student_hidden", "student_recipe", "losses",
            "temperatures", "workers", "stack_mode")
    return [{"data": task, "hidden": hidden, "epochs": epochs, **{k: cfg[k] for k in keys}}
            for task in cfg["tasks"] for hidden in cfg["teacher_hidden"]
            for epochs in cfg["teacher_epochs"]]


def skipped_tables(cfg: dict) -> list[tuple[str, str]]:
    """[(table, reason)] of what this run cannot compute: the GMM tasks are generated, so
    only a selection that leaves no task skips the study."""
    if not cfg.get("tasks"):
        return [("GMM oracle", "no task selected")]
    return []


def run(cfg: dict, scale: str, progress: bool = True):
    """Run (or resume) the sweep of a preset with cfg["torch_threads"] CPU threads, in the
    run's store (`store_path(NAME, scale, dry_run=cfg["dry_run"])`); returns the
    SweepResults."""
    from kdlib import sweep
    from kdlib.experiments.common import limited_threads, store_path

    with limited_threads(cfg.get("torch_threads")):
        return sweep.run(run_teacher, grid(cfg),
                         store_path(NAME, scale, dry_run=cfg.get("dry_run", False)),
                         namespace=NAME, progress=progress)


def headline_figures(corr: pd.DataFrame, task: str, losses) -> dict:
    """Spearman of student accuracy with the teacher's ECE at tau and with its true KL to
    the posterior, per loss, on `task`, as kdlib.headline numbers with their bootstrap
    intervals (`proxy_correlations` rows; "n/a" where a row is missing or NaN)."""
    import math

    from kdlib.headline import number

    c = corr[corr["task"] == task].set_index(["loss", "x", "y"])
    out = {}
    for loss in losses:
        for x, label in (("teacher_ece_at_tau", "ECE"), ("kl_to_posterior", "KL")):
            key = (loss, x, "accuracy")
            r = c.loc[key] if key in c.index else None
            ok = r is not None and all(math.isfinite(float(r[k])) for k in ("rho", "lo", "hi"))
            out[f"{task} spearman acc-{label} {loss}"] = (
                number(float(r["rho"]), float(r["lo"]), float(r["hi"])) if ok else "n/a")
    return out


# ------------------------------------------------------------------ tables


def teachers_frame(records) -> pd.DataFrame:
    """One row per (task, teacher, seed, temperature) with the teacher's quality."""
    rows = [{"task": rec["data"]["name"], "teacher": rec["teacher"], "hidden": str(rec["hidden"]),
             "epochs": rec["epochs"], **t} for rec in records for t in rec["teachers"]]
    if not rows:
        raise ValueError("no results: the sweep returned no teachers")
    return pd.DataFrame(rows)


def results_frame(records) -> pd.DataFrame:
    """One row per (task, teacher, seed, loss, temperature): the student's metrics and the
    teacher's quality at that temperature (teacher_accuracy, teacher_ece_at_tau,
    kl_to_posterior, tv_to_posterior); `cell` names the tempered teacher."""
    teachers = teachers_frame(records).rename(columns={
        "accuracy": "teacher_accuracy", "ece_at_tau": "teacher_ece_at_tau",
        "nll_at_tau": "teacher_nll_at_tau"})
    rows = [{"task": rec["data"]["name"], "teacher": rec["teacher"], **s}
            for rec in records for s in rec["students"]]
    df = pd.DataFrame(rows).merge(
        teachers.drop(columns=["hidden"]),
        on=["task", "teacher", "seed", "temperature"], how="left", validate="many_to_one")
    df["cell"] = df["teacher"] + "@" + df["temperature"].map(lambda t: f"{t:g}")
    df["gain_over_teacher"] = df["accuracy"] - df["teacher_accuracy"]
    return df


def _spearman_rows(df, xs, y, cell, n_boot, rng_seed, **labels):
    out = []
    for x in xs:
        out.append({**labels, "x": x, "y": y, **analysis.bootstrap_spearman(
            df, x, y, cell=cell, n_boot=n_boot, rng_seed=rng_seed)})
    return out


def proxy_correlations(df: pd.DataFrame, proxies=(*PROXIES, "teacher_accuracy"),
                       ys=("accuracy",), n_boot: int = 2000, rng_seed: int = 0) -> pd.DataFrame:
    """Per task and loss: Spearman of each student outcome in `ys` ("accuracy",
    "gain_over_teacher") with each teacher proxy across the tempered teachers (cells =
    teacher x temperature, seed-averaged), with bootstrap intervals over seeds; plus rows
    loss="teachers" correlating the teachers' ECE with their true errors (KL, TV).
    Columns: task, loss, x, y, rho, lo, hi, n_cells, n_seeds."""
    ys = list(ys)
    need = ["task", "loss", "cell", "seed", *ys, *proxies]
    missing = [c for c in need if c not in getattr(df, "columns", [])]
    if missing:
        raise ValueError(f"columns {missing} not in the table")
    rows = []
    for task, g_task in df.groupby("task", sort=True):
        for loss, g in g_task.groupby("loss", sort=True):
            for y in ys:
                rows += _spearman_rows(g, proxies, y, "cell", n_boot, rng_seed,
                                       task=task, loss=loss)
        teachers = g_task.drop_duplicates(["cell", "seed"])
        for true_err in ("kl_to_posterior", "tv_to_posterior"):
            if "teacher_ece_at_tau" in teachers.columns and true_err in teachers.columns:
                rows += _spearman_rows(teachers, ["teacher_ece_at_tau"], true_err, "cell",
                                       n_boot, rng_seed, task=task, loss="teachers")
    return pd.DataFrame(rows)


def cell_table(df: pd.DataFrame) -> pd.DataFrame:
    """Seed means per (task, loss, teacher, temperature): student accuracy and the teacher's
    accuracy, ECE, KL and TV to the posterior; sorted by task, loss and KL."""
    cols = ["accuracy", "teacher_accuracy", "teacher_ece_at_tau", "kl_to_posterior",
            "tv_to_posterior"]
    missing = [c for c in ["task", "loss", "teacher", "temperature", *cols]
               if c not in getattr(df, "columns", [])]
    if missing:
        raise ValueError(f"columns {missing} not in the table")
    out = df.groupby(["task", "loss", "teacher", "temperature"])[cols].mean().reset_index()
    return out.sort_values(["task", "loss", "kl_to_posterior"]).reset_index(drop=True)


def best_teachers(df: pd.DataFrame) -> pd.DataFrame:
    """Per task and loss, which tempered teacher each criterion would pick (lowest ECE,
    lowest KL to the posterior) against the one whose students are most accurate, with
    the students' mean accuracy under each pick."""
    t = cell_table(df)
    rows = []
    for (task, loss), g in t.groupby(["task", "loss"], sort=True):
        picks = {"best_student": g["accuracy"].idxmax(),
                 "lowest_ece": g["teacher_ece_at_tau"].idxmin(),
                 "lowest_kl": g["kl_to_posterior"].idxmin(),
                 "lowest_tv": g["tv_to_posterior"].idxmin()}
        for crit, i in picks.items():
            rows.append({"task": task, "loss": loss, "criterion": crit,
                         "teacher": g.at[i, "teacher"], "temperature": g.at[i, "temperature"],
                         "student_accuracy": g.at[i, "accuracy"],
                         "teacher_ece_at_tau": g.at[i, "teacher_ece_at_tau"],
                         "kl_to_posterior": g.at[i, "kl_to_posterior"]})
    return pd.DataFrame(rows)



def claims(corr: pd.DataFrame) -> pd.DataFrame:
    """The oracle's claims as a kdlib.claims table, from `proxy_correlations` rows
    (Spearman in percent across the tempered teachers, bootstrap interval over seeds,
    n = seeds). Per task: the teachers' ECE ranks them as their true calibration error does
    (ECE vs KL and vs TV to the posterior > 0); per loss (y = "accuracy"): the student falls
    as the teacher's ECE at tau rises (< 0; for "dist" the paper's insensitivity,
    |rho| <= temperature_sweep.DIST_TOLERANCE) and as its true KL to the posterior rises
    (< 0; not for "dist"). Missing rows give no claim; NaN rho gives 'inconclusive'."""
    from kdlib import claims as cl
    from kdlib.experiments.temperature_sweep import DIST_TOLERANCE

    if not isinstance(corr, pd.DataFrame):
        raise TypeError(f"corr must be a DataFrame (proxy_correlations), got "
                        f"{type(corr).__name__}")
    need = ["task", "loss", "x", "y", "rho", "lo", "hi", "n_seeds"]
    missing = [c for c in need if c not in corr.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; it has {list(corr.columns)}")
    oracle = "oracle check of the paper's use of ECE (no paper values)"
    rows = []
    for task, g_task in corr.groupby("task", sort=True):
        specs = [("teachers", "teacher_ece_at_tau", "kl_to_posterior", "greater", None,
                  f"{task}: ECE ranks teachers as the true KL does", oracle),
                 ("teachers", "teacher_ece_at_tau", "tv_to_posterior", "greater", None,
                  f"{task}: ECE ranks teachers as the true TV does", oracle)]
        for loss in sorted(set(g_task["loss"]) - {"teachers"}):
            if loss == "dist":
                specs.append((loss, "teacher_ece_at_tau", "accuracy", "insensitive",
                              DIST_TOLERANCE, f"{task}: DIST insensitive to teacher ECE",
                              "Tables 6, 9: DIST rho -50% to 8%"))
                continue
            specs += [(loss, "teacher_ece_at_tau", "accuracy", "less", None,
                       f"{task}: {loss} falls as teacher ECE rises",
                       "Tables 6, 9: KD rho -99% to -32%"),
                      (loss, "kl_to_posterior", "accuracy", "less", None,
                       f"{task}: {loss} falls as the teacher's true KL rises", oracle)]
        g = g_task.set_index(["loss", "x", "y"])
        for loss, x, y, kind, tol, text, paper in specs:
            if (loss, x, y) not in g.index:
                continue
            r = g.loc[(loss, x, y)]
            rows.append(cl.claim(text, paper, 100 * float(r["rho"]), 100 * float(r["lo"]),
                                 100 * float(r["hi"]), int(r["n_seeds"]), kind,
                                 tolerance=tol, unit="%", digits=0))
    return cl.claims_table(rows)


# ------------------------------------------------------------------ plan (kdlib plan)

GMM_INPUT_FEATURES = 2  # the GMM tasks are 2-D (kdlib.gmm.gmm_preset)


def plan_runs(cfg: dict, scale: str | None = None) -> list:
    """Every training the preset needs (kdlib plan), per sweep cell (task, teacher width,
    training length): one stacked teacher run (members = seeds; MLPs of `hidden` for
    `epochs`) and, per seed, one stacked student run distilled from that teacher (members =
    losses x temperatures). Keyed on what determines the weights (not workers or
    stack_mode, which change float rounding only); `done` when the sweep store holds the
    cell (`kdlib.experiments.common.stored_sweep_cells`). Nothing is loaded, trained or written."""
    from kdlib.experiments.common import stored_sweep_cells
    from kdlib.plan import PlannedRun, run_key, train_images

    if skipped_tables(cfg):
        return []
    cells = grid(cfg)
    done = stored_sweep_cells(NAME, cfg, cells, grid, NAME, scale)
    s_epochs = recipe_from_spec(cfg["student_recipe"]).epochs
    runs = []
    for c, d in zip(cells, done):
        task, images = c["data"]["name"], train_images(c["data"])
        teacher = {"data": c["data"], "hidden": c["hidden"], "epochs": c["epochs"],
                   "teacher_recipe": c["teacher_recipe"]}
        name = teacher_label(c["hidden"], c["epochs"])
        runs.append(PlannedRun(
            "", "teacher", "mlp", task, check_int(c["epochs"], "epochs", minimum=1), images,
            key=run_key(experiment=NAME, role="teacher", seeds=c["seeds"], **teacher),
            members=len(c["seeds"]), done=d, label=f"{task} teacher {name} x "
                                                    f"{len(c['seeds'])} seeds",
            model_kwargs={"in_features": GMM_INPUT_FEATURES, "hidden": list(c["hidden"])}))
        student = {k: c[k] for k in ("student_hidden", "student_recipe", "losses",
                                     "temperatures")}
        for seed in c["seeds"]:
            runs.append(PlannedRun(
                "", "student", "mlp", task, s_epochs, images,
                key=run_key(experiment=NAME, role="student", seed=seed, teacher=teacher,
                            **student),
                members=len(c["losses"]) * len(c["temperatures"]), teacher="mlp", done=d,
                label=f"{task} {name} (seed {seed}) -> mlp students",
                model_kwargs={"in_features": GMM_INPUT_FEATURES,
                              "hidden": list(c["student_hidden"])}))
    return runs
