"""Feature spaces of students taught by a calibrated and a miscalibrated teacher
(paper section 3.4, Figure 5).

One teacher; its test ECE at each temperature of a grid; the temperature of lowest ECE
("calibrated") and of highest ECE ("miscalibrated"). Per seed, two students (one per
temperature, vanilla KD, alpha = 1) are distilled together (`distill_stacked`: same
initialization and batch order), and their penultimate test features are measured:

    knn_accuracy      leave-one-out k-NN accuracy in feature space (Euclidean, plurality vote)
    silhouette        mean silhouette coefficient of the classes (Euclidean), in [-1, 1]
    n_confused        test points whose k nearest neighbours are mostly (> k/2) of other
                      classes: the paper's "undistinguished samples"
    separation_ratio  mean distance between class centroids / mean distance of a point to
                      its class centroid (scale-free; "inter-class distances")

plus a t-SNE of the features for the seeds in cfg["embed_seeds"].

    cfg = presets.get(NAME, "default")
    curve = teacher_curve(cfg)                  # ECE of the teacher per temperature
    taus = pick_temperatures(curve)             # {"calibrated": t1, "miscalibrated": t2}
    df, embeddings, records = run(cfg, "default", taus)  # metrics per (seed, role); pictures

The feature metrics live in `kdlib.feature_metrics` (re-exported here); the students'
weights and test logits are kept in the student store (`kdlib.student_store`), so a new
analysis of the same students never retrains them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlib import presets
from kdlib._validate import check_int, check_positive
from kdlib.experiments.common import (
    cut_recipe_specs,
    limited_threads,
    load_teacher,
    missing_data,
    run_name,
    store_path,
    students_dir,
)
from kdlib.feature_metrics import (  # noqa: F401  (re-exported: the module's old API)
    confused_mask,
    confused_points,
    feature_metrics,
    knn_accuracy,
    nearest_neighbours,
    penultimate_features,
    separation_ratio,
    silhouette,
)
from kdlib.paper import PAPER_TEMPERATURES

NAME = "tsne_features"
ROLES = ("calibrated", "miscalibrated")
PAPER_TAUS = PAPER_TEMPERATURES  # Table 6's grid
METRICS = ("accuracy", "ece", "knn_accuracy", "silhouette", "n_confused", "confused_fraction",
           "separation_ratio")

presets.register(NAME, {
    "smoke": {
        "data": {"name": "digits", "seed": 0, "subset_train": 300, "subset_test": 200},
        "teacher": "resnet8",
        "student": "resnet8",
        "teacher_recipe": {"epochs": 2},
        "teacher_seed": 0,
        "student_recipe": {"epochs": 1},
        "loss": "kd",
        "temperatures": [1.0, 8.0],
        "seeds": [0],
        "embed_seeds": [0],
        "k": 5,
        "perplexity": 30.0,
        "torch_threads": 1,
    },
    "default": {
        "data": {"name": "digits", "seed": 0},      # 1257 train / 540 test 8x8 images
        "teacher": "resnet20",
        "student": "resnet8",
        "teacher_recipe": "default",                # 30 epochs, lr / 10 at 19, 22, 26
        "teacher_seed": 0,
        "student_recipe": "default",
        "loss": "kd",
        "temperatures": PAPER_TAUS,
        "seeds": [0, 1, 2],
        "embed_seeds": [0],
        "k": 5,
        "perplexity": 30.0,
        "torch_threads": 1,                         # 1 thread: measured fastest on 2 shared cores
    },
    "paper": {
        "data": {"name": "cifar10", "seed": 0},     # Figure 5 is on CIFAR-10
        "teacher": "wrn_28_3",
        "student": "resnet14",
        "teacher_recipe": "paper",
        "teacher_seed": 0,
        "student_recipe": {"preset": "paper", "checkpoint_every": 0},
        "loss": "kd",
        "temperatures": PAPER_TAUS,
        "seeds": [0, 1, 2],
        "embed_seeds": [0],
        "k": 5,
        "perplexity": 30.0,
        "torch_threads": None,                      # torch's own choice (a GPU run)
    },
}, tables={"figure5": ["temperatures", "seeds", "embed_seeds"]},
    dry_run=lambda cfg: {**cut_recipe_specs(cfg, ("teacher_recipe", "student_recipe")),
                         "torch_threads": 1})  # a CPU job: one thread each

TABLE = "Figure 5"


def skipped_tables(cfg: dict) -> list[tuple[str, str]]:
    """[(table, reason)] for the tables this config cannot run: Figure 5 when its data set
    is missing from the data folder (the reason names the file to fetch) or when a selection
    left no seeds; [] when everything runs."""
    _check_cfg(cfg)
    reason = missing_data(cfg["data"])
    if reason is None and not cfg["seeds"]:
        reason = "the selection left no seeds"
    return [(TABLE, reason)] if reason else []


# ------------------------------------------------------------------ teacher: pick the taus


def pick_temperatures(curve: pd.DataFrame) -> dict:
    """{"calibrated": tau of the lowest ECE, "miscalibrated": tau of the highest ECE} from a
    table with columns temperature and ece (ties: the smaller temperature)."""
    if not isinstance(curve, pd.DataFrame):
        raise TypeError(f"curve must be a DataFrame, got {type(curve).__name__}")
    missing = [c for c in ("temperature", "ece") if c not in curve.columns]
    if missing:
        raise ValueError(f"curve lacks columns {missing}; it has {list(curve.columns)}")
    if len(curve) < 2:
        raise ValueError(f"need at least 2 temperatures to choose from, got {len(curve)}")
    c = curve.sort_values("temperature", kind="stable").reset_index(drop=True)
    if not np.isfinite(c["ece"].to_numpy(float)).all():
        raise ValueError("ece values must be finite")
    good = float(c.loc[c["ece"].idxmin(), "temperature"])
    bad = float(c.loc[c["ece"].idxmax(), "temperature"])
    if good == bad:
        raise ValueError("the ECE is the same at every temperature; nothing to compare")
    return {"calibrated": good, "miscalibrated": bad}


def teacher_curve(cfg: dict) -> pd.DataFrame:
    """The teacher's test ECE (15 bins, fraction) at each of cfg["temperatures"]: columns
    temperature, ece; attrs["accuracy"] (the teacher's test accuracy) and
    attrs["features"] (feature_metrics of the teacher's own penultimate features)."""
    from kdlib.calibration import ece_vs_temperature
    from kdlib.train import ECE_BINS, predict_logits

    _check_cfg(cfg)
    with limited_threads(cfg["torch_threads"]):
        d, teacher, _ = load_teacher(cfg["data"], cfg["teacher"], cfg["teacher_recipe"],
                                     cfg["teacher_seed"])
        logits = predict_logits(teacher, d)
        taus = [float(t) for t in cfg["temperatures"]]
        eces = ece_vs_temperature(logits, d.test_y, taus, n_bins=ECE_BINS)
        curve = pd.DataFrame({"temperature": taus, "ece": eces.astype(float)})
        curve.attrs["accuracy"] = float((logits.argmax(1) == d.test_y).float().mean())
        feats, labels = penultimate_features(teacher, d)
        curve.attrs["features"] = feature_metrics(feats, labels, cfg["k"])
    return curve


def paper_extremes() -> pd.DataFrame:
    """The paper's Table 6 (CIFAR-100, student ResNet14) reduced to what Figure 5 contrasts:
    per teacher, the temperature of its lowest and of its highest ECE, with the printed
    teacher ECE and KD / DIST student accuracy there (percent, as printed)."""
    from kdlib.paper import paper_table

    t6 = paper_table("table6")
    rows = []
    for (teacher, student), g in t6.groupby(["teacher", "student"], sort=False):
        row = {"teacher": teacher, "student": student}
        for role, i in (("calibrated", g["teacher_ece"].idxmin()),
                        ("miscalibrated", g["teacher_ece"].idxmax())):
            row.update({f"{role}_tau": float(g.loc[i, "tau"]),
                        f"{role}_teacher_ece": float(g.loc[i, "teacher_ece"]),
                        f"{role}_kd_accuracy": float(g.loc[i, "kd_accuracy"]),
                        f"{role}_dist_accuracy": float(g.loc[i, "dist_accuracy"])})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the sweep


def _check_cfg(cfg: dict) -> None:
    need = ["data", "teacher", "student", "teacher_recipe", "teacher_seed", "student_recipe",
            "loss", "temperatures", "seeds", "embed_seeds", "k", "perplexity", "torch_threads"]
    if not isinstance(cfg, dict):
        raise TypeError(f"cfg must be a dict from presets.get({NAME!r}, scale)")
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ValueError(f"config lacks {missing}; get one with presets.get({NAME!r}, scale)")
    if len(cfg["temperatures"]) < 2:
        raise ValueError("temperatures must list at least 2 values to choose from")
    for t in cfg["temperatures"]:
        check_positive(t, "temperature")
    if not isinstance(cfg["embed_seeds"], list):
        raise TypeError(f"embed_seeds must be a list of seeds, got {cfg['embed_seeds']!r}")


def embed_seeds(cfg: dict) -> list[int]:
    """The seeds whose students get a t-SNE picture: cfg["embed_seeds"] that are among
    cfg["seeds"]; when a selection left none of them, the first selected seed."""
    chosen = [s for s in cfg["embed_seeds"] if s in cfg["seeds"]]
    return chosen or list(cfg["seeds"][:1])


def grid(cfg: dict, taus: dict, scale: str = "default") -> list[dict]:
    """One distill_and_measure cell per seed (both students of a seed in one cell); the
    students are kept in the student store of `scale` (dry runs in their own)."""
    _check_cfg(cfg)
    if not isinstance(taus, dict) or set(taus) != set(ROLES):
        raise ValueError(f"taus must be a dict with keys {ROLES}, got {taus!r}")
    fixed = {k: cfg[k] for k in ("data", "teacher", "student", "teacher_recipe", "teacher_seed",
                                 "student_recipe", "loss", "k", "perplexity", "torch_threads")}
    fixed["store"] = run_name(scale, cfg.get("dry_run", False))
    temps = {r: check_positive(taus[r], f"taus[{r!r}]") for r in ROLES}
    return [{**fixed, "temperatures": temps, "seed": check_int(s, "seed", minimum=0),
             "embed": s in embed_seeds(cfg)} for s in cfg["seeds"]]


def distill_and_measure(data: dict, teacher: str, student: str, teacher_recipe,
                        teacher_seed: int, student_recipe, loss: str, temperatures: dict,
                        seed: int, k: int, perplexity: float, embed: bool,
                        store: str = "default", torch_threads: int | None = None) -> dict:
    """Distil the teacher into one student per role ({"calibrated": tau, ...}), stacked:
    same initialization (`seed`) and batch order; students already in the student store
    runs/<store>/students (`kdlib.student_store`) are read instead of trained. Measures each
    student's test accuracy, ECE and feature_metrics; with `embed`, also a 2-D t-SNE of its
    penultimate features.

    Returns {"students": [{"role", "temperature", "teacher_ece_at_tau", "accuracy", "ece",
    "agreement", **feature_metrics}, ...], "embeddings": {role: [[x, y], ...]} or {},
    "confused": {role: indices of the confused test points} or {}, "labels": test labels
    (list) or []}.
    """
    from kdlib.student_store import distill_students, teacher_id
    from kdlib.train import make_model
    from kdlib.tsne import tsne

    seed = check_int(seed, "seed", minimum=0)
    if set(temperatures) != set(ROLES):
        raise ValueError(f"temperatures must be {{role: tau}} for roles {ROLES}, "
                         f"got {temperatures!r}")
    roles = list(ROLES)
    with limited_threads(torch_threads):
        d, t_model, _ = load_teacher(data, teacher, teacher_recipe, teacher_seed)
        specs = [{"loss": loss, "temperature": check_positive(temperatures[r], "temperature")}
                 for r in roles]
        found = distill_students(students_dir(store), d, t_model,
                                 teacher_id(data, teacher, teacher_recipe, teacher_seed),
                                 student, student_recipe, specs, seed)
        rows, embeddings, confused, labels = [], {}, {}, []
        for role, f in zip(roles, found):
            model = make_model(student, d, seed=seed)
            model.load_state_dict(f["model"])
            feats, y = penultimate_features(model, d)
            m = f["record"]["metrics"]
            rows.append({"role": role, "temperature": float(temperatures[role]),
                         "teacher_ece_at_tau": float(m["teacher_ece_at_tau"]),
                         "accuracy": float(m["accuracy"]), "ece": float(m["ece"]),
                         "agreement": float(m["agreement"]),
                         **feature_metrics(feats, y, k)})
            if embed:
                xy = tsne(feats, perplexity=min(float(perplexity), (len(y) - 1) / 3),
                          seed=seed)
                embeddings[role] = np.round(xy, 4).tolist()
                confused[role] = np.flatnonzero(confused_mask(feats, y, k)).tolist()
                labels = y.tolist()
    return {"students": rows, "embeddings": embeddings, "confused": confused, "labels": labels}


def run(cfg: dict, scale: str, taus: dict, progress: bool = True):
    """Run (or load from runs/<scale>/tsne_features.sqlite; dry runs from
    runs/<scale>-dry-run/) every seed's students.

    Returns (df, embeddings, records): df has one row per (seed, role) with the columns of
    distill_and_measure's students; embeddings is {seed: {"labels": array N, role: N x 2
    array, role + "_confused": boolean N-mask}} for the embedded seeds; records are the
    per-seed sweep records (plain JSON, for `kdlib.outputs.save_records`).
    """
    from kdlib import sweep

    cells = grid(cfg, taus, scale)
    results = sweep.run(distill_and_measure, cells,
                        store_path(NAME, scale, dry_run=cfg.get("dry_run", False)),
                        namespace=NAME, progress=progress)
    rows, embeddings, records = [], {}, []
    for rec in results:
        records.append({k: rec[k] for k in ("seed", "temperatures", "students")})
        for s in rec["students"]:
            rows.append({"seed": rec["seed"], **s})
        if rec["embeddings"]:
            labels = np.asarray(rec["labels"], dtype=np.int64)
            emb = {"labels": labels}
            for r, v in rec["embeddings"].items():
                emb[r] = np.asarray(v, dtype=float)
                emb[f"{r}_confused"] = np.isin(np.arange(len(labels)), rec["confused"][r])
            embeddings[rec["seed"]] = emb
    return pd.DataFrame(rows), embeddings, records


# ------------------------------------------------------------------ tables


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each metric, one row per role (calibrated
    first). Accuracy, ECE, k-NN accuracy and confused fraction in percent; silhouette and
    separation ratio as they are; n_confused as a count."""
    missing = [c for c in ("role", "seed", "temperature", "teacher_ece_at_tau", *METRICS)
               if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks columns {missing}; pass run(...)[0]")
    percent = {"accuracy", "ece", "knn_accuracy", "confused_fraction", "teacher_ece_at_tau"}
    rows = []
    for role in [r for r in ROLES if r in set(df["role"])]:
        g = df[df["role"] == role]
        row = {"role": role, "temperature": float(g["temperature"].iloc[0]),
               "n_seeds": int(g["seed"].nunique())}
        for col in ("teacher_ece_at_tau", *METRICS):
            v = g[col].to_numpy(float) * (100.0 if col in percent else 1.0)
            row[f"{col}_mean"] = float(v.mean())
            row[f"{col}_std"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("role")


def paired_differences(df: pd.DataFrame) -> pd.DataFrame:
    """Per seed: miscalibrated minus calibrated for each metric (fractions, as in df); the
    two students of a seed share their initialization and batches, so the difference is a
    paired comparison. Last row "mean" averages the seeds."""
    missing = [c for c in ("role", "seed", *METRICS) if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks columns {missing}; pass run(...)[0]")
    wide = df.pivot(index="seed", columns="role", values=list(METRICS))
    out = pd.DataFrame({m: wide[(m, "miscalibrated")] - wide[(m, "calibrated")]
                        for m in METRICS})
    out.loc["mean"] = out.mean()
    return out


_CLAIMS = (  # (metric, kind, scale, unit, claim, paper evidence)
    ("separation_ratio", "greater", 1.0, "",
     "miscalibrated teacher's student: classes further apart (separation ratio)",
     "Figure 5: inter-class distances slightly larger (no values printed)"),
    ("silhouette", "greater", 1.0, "",
     "miscalibrated teacher's student: higher silhouette",
     "Figure 5: inter-class distances slightly larger (no values printed)"),
    ("accuracy", "less", 100.0, " pp",
     "miscalibrated teacher's student: lower test accuracy",
     "Table 6: KD accuracy lower at the highest-ECE tau"),
    ("knn_accuracy", "less", 100.0, " pp",
     "miscalibrated teacher's student: lower 5-NN feature accuracy",
     "Figure 5: more undistinguished samples (no values printed)"),
)


def claims(df: pd.DataFrame) -> pd.DataFrame:
    """Figure 5's claims as a kdlib.claims table: per seed, miscalibrated minus calibrated
    student (`paired_differences`), mean with a 95% t-interval over seeds (n = seeds).
    Claimed: separation ratio and silhouette higher (> 0, their own units), test and 5-NN
    accuracy lower (< 0, percentage points). df: run(...)[0]."""
    from kdlib import claims as cl
    from kdlib.analysis import mean_t_interval

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a DataFrame (run(...)[0]), got {type(df).__name__}")
    d = paired_differences(df).drop(index="mean")
    rows = []
    for metric, kind, scale, unit, text, paper in _CLAIMS:
        values = scale * d[metric].to_numpy(dtype=float)
        mean, lo, hi = mean_t_interval(values)
        rows.append(cl.claim(text, paper, mean, lo, hi, int(np.isfinite(values).sum()), kind,
                             unit=unit, digits=3 if scale == 1.0 else 2))
    return cl.claims_table(rows)


def headline_figures(df: pd.DataFrame) -> dict:
    """The report's headline figures (kdlib.headline Figures): mean 5-NN feature accuracy
    of each role's students (percent) and, paired by seed, miscalibrated minus calibrated
    5-NN and test accuracy (points, 95% t-interval over seeds when there are >= 2).
    df: run(...)[0]."""
    from kdlib.analysis import mean_t_interval
    from kdlib.headline import percent, points

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a DataFrame (run(...)[0]), got {type(df).__name__}")
    d = paired_differences(df).drop(index="mean")
    out = {}
    for role in ROLES:
        out[f"5-NN accuracy, {role} teacher's students"] = percent(
            float(df.loc[df["role"] == role, "knn_accuracy"].mean()))
    for metric, label in (("knn_accuracy", "5-NN accuracy"), ("accuracy", "test accuracy")):
        mean, lo, hi = mean_t_interval(d[metric].to_numpy(float))
        fig = points(mean, lo, hi) if np.isfinite(lo) and np.isfinite(hi) else points(mean)
        out[f"{label}, miscalibrated - calibrated"] = fig
    return out


def panels(df: pd.DataFrame, embeddings: dict, seed: int) -> dict:
    """The t-SNE panels of one embedded seed for `kdlib.plots.features.tsne_panels`:
    {title: (xy N x 2, labels N, confused mask N)}, calibrated first; titles give tau, the
    teacher's ECE at tau, test and 5-NN accuracy (percent) and the confused count."""
    if seed not in embeddings:
        raise ValueError(f"seed {seed} was not embedded; embedded seeds: {sorted(embeddings)}")
    per_seed = df[df["seed"] == seed].set_index("role")
    emb = embeddings[seed]
    out = {}
    for role in ROLES:
        r = per_seed.loc[role]
        title = (f"{role}: tau = {r['temperature']:g}, teacher ECE "
                 f"{100 * r['teacher_ece_at_tau']:.1f}%\nacc {100 * r['accuracy']:.1f}%, "
                 f"5-NN {100 * r['knn_accuracy']:.1f}%, confused {int(r['n_confused'])}")
        out[title] = (emb[role], emb["labels"], emb[f"{role}_confused"])
    return out


def paper_beside_ours(summary: pd.DataFrame, teacher: str, student: str) -> pd.DataFrame:
    """`paper_extremes` (KD columns, percent) with one more row: our teacher -> student at
    its calibrated and miscalibrated tau (teacher ECE and KD accuracy, seed means, percent),
    names in the paper's spelling plus " (ours)". summary: summary_table(df)."""
    from kdlib.paper import paper_name

    if not isinstance(summary, pd.DataFrame) or not set(ROLES) <= set(summary.index):
        raise ValueError(f"summary must be summary_table(df) with rows {ROLES}")
    paper = paper_extremes()
    row = {"teacher": paper_name(teacher) + " (ours)", "student": paper_name(student)}
    for role in ROLES:
        row[f"{role}_tau"] = float(summary.loc[role, "temperature"])
        row[f"{role}_teacher_ece"] = float(summary.loc[role, "teacher_ece_at_tau_mean"])
        row[f"{role}_kd_accuracy"] = float(summary.loc[role, "accuracy_mean"])
    kd = paper.drop(columns=[c for c in paper if c.endswith("dist_accuracy")])
    return pd.concat([kd, pd.DataFrame([row])], ignore_index=True)


def plan_runs(cfg: dict, scale: str = "default") -> list:
    """Every training the preset needs (kdlib plan): the cached teacher and, per seed, the
    two students of the low- and high-ECE temperatures. Those temperatures are picked from
    the trained teacher's ECE curve, so before it exists the students are keyed by seed and
    role only (they cannot be matched with other notebooks' students) and not marked done."""
    from kdlib.plan import PlannedRun, run_key, teacher_run, train_images
    from kdlib.recipe import recipe_from_spec

    if skipped_tables(cfg):
        return []
    _check_cfg(cfg)
    runs = [teacher_run(cfg["data"], cfg["teacher"], cfg["teacher_recipe"], cfg["teacher_seed"])]
    epochs = recipe_from_spec(cfg["student_recipe"]).epochs
    for seed in cfg["seeds"]:
        runs.append(PlannedRun(
            "", "student", cfg["student"], cfg["data"]["name"], epochs,
            train_images(cfg["data"]), members=len(ROLES), teacher=cfg["teacher"],
            key=run_key(experiment=NAME, seed=int(seed), data=cfg["data"],
                        student=cfg["student"], recipe=cfg["student_recipe"],
                        loss=cfg["loss"], store=run_name(scale, cfg.get("dry_run", False))),
            label=f"{cfg['loss']} students at the {'/'.join(ROLES)} temperatures, "
                  f"seed {seed}"))
    return runs
