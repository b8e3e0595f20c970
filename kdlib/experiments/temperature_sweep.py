"""Notebook 02: the temperature sweep, KD vs DIST (paper Tables 6 and 9, Figures 2, 3, 4, 6).

For every teacher/student pair and temperature tau: the teacher's test ECE at tau, and
students distilled with KD (alpha = 1, no CE) and DIST (CE dropped), over several seeds.
One sweep cell = one (pair, seed): all of its students (temperatures x losses) train at
once, stacked, on the same batches from the same initialization, so differences between
temperatures and losses are paired (only tau and the loss differ).

Default-scale pairs, and why:
  * gmm100, MLP (256, 256) -> MLP (32,): a known task with a 20,000-sample test set, so a
    0.5-point accuracy difference is well above the test-set noise (SE ~0.17 points); the
    student has ~14x fewer parameters (a capacity gap, as ResNet-56 -> ResNet-14). The
    teacher trains 200 epochs on 2,000 samples without weight decay.
  * digits, resnet20 -> resnet8: real images, the conv families of the paper, a 3.3x gap
    in parameters; only 540 test images (one image = 0.19 points), so it is the noisier pair.
  * "calibration_teachers": teachers of different calibration (training length) for the
    same student at a fixed tau (Figure 4).
"""

from __future__ import annotations

import pandas as pd

from kdlib import calibration, presets, sweep
from kdlib.analysis import paper_spearman, spearman_table
from kdlib.experiments.common import load_data, store_path, teacher_cache_dir
from kdlib.paper import PAPER_TEMPERATURES, paper_table
from kdlib.recipe import recipe_from_spec

NAME = "temperature_sweep"
PAPER_MILESTONES = [150, 180, 210]
LOSSES = ["kd", "dist"]


def _recipe(epochs, batch_size=64, lr=0.05, milestones=None, weight_decay=5e-4):
    from kdlib.recipe import scaled_milestones

    return {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "milestones": list(scaled_milestones(epochs) if milestones is None else milestones)}


presets.register(NAME, {
    "smoke": {
        "pairs": [
            {"name": "digits resnet8->resnet8",
             "data": {"name": "digits", "subset_train": 300, "subset_test": 200},
             "teacher": "resnet8", "teacher_kwargs": {},
             "teacher_recipe": _recipe(2, milestones=[]),
             "student": "resnet8", "student_kwargs": {},
             "student_recipe": _recipe(1, milestones=[]),
             "temperatures": [1.0, 4.0]},
        ],
        "calibration_teachers": None,
        "seeds": [0],
        "n_boot": 200,
    },
    "default": {
        "pairs": [
            {"name": "gmm100 mlp256x2->mlp32",
             "data": {"name": "gmm100", "n_train": 2000, "n_test": 20000},
             "teacher": "mlp", "teacher_kwargs": {"hidden": [256, 256]},
             "teacher_recipe": _recipe(200, batch_size=128, weight_decay=0.0),
             "student": "mlp", "student_kwargs": {"hidden": [32]},
             "student_recipe": _recipe(60, batch_size=128),
             "temperatures": PAPER_TEMPERATURES, "seeds": [0, 1, 2]},
            {"name": "digits resnet20->resnet8",
             "data": {"name": "digits"},
             "teacher": "resnet20", "teacher_kwargs": {}, "teacher_recipe": _recipe(30),
             "student": "resnet8", "student_kwargs": {}, "student_recipe": _recipe(15),
             "temperatures": PAPER_TEMPERATURES, "seeds": [0, 1, 2]},
        ],
        # Figure 4: one student, teachers trained for different lengths, tau fixed
        "calibration_teachers": {
            "base": "gmm100 mlp256x2->mlp32", "temperature": 4.0,
            "teacher_epochs": [10, 25, 50, 100], "seeds": [0, 1]},
        "seeds": [0, 1, 2],
        "n_boot": 2000,
    },
    "paper": {
        "pairs": [
            {"name": f"{t}->resnet14", "data": {"name": "cifar100"},
             "teacher": t, "teacher_kwargs": {},
             "teacher_recipe": _recipe(240, milestones=PAPER_MILESTONES),
             "student": "resnet14", "student_kwargs": {},
             "student_recipe": _recipe(240, milestones=PAPER_MILESTONES),
             "temperatures": PAPER_TEMPERATURES}
            for t in ("resnet56", "resnet110", "wrn_28_1")
        ] + [
            {"name": "wrn_28_2->wrn_22_1", "data": {"name": "cifar100"},
             "teacher": "wrn_28_2", "teacher_kwargs": {},
             "teacher_recipe": _recipe(240, milestones=PAPER_MILESTONES),
             "student": "wrn_22_1", "student_kwargs": {},
             "student_recipe": _recipe(240, milestones=PAPER_MILESTONES),
             "temperatures": PAPER_TEMPERATURES},
            {"name": "wrn_28_4->mobilenetv2", "data": {"name": "cifar100"},
             "teacher": "wrn_28_4", "teacher_kwargs": {},
             "teacher_recipe": _recipe(240, milestones=PAPER_MILESTONES),
             "student": "mobilenetv2", "student_kwargs": {},
             "student_recipe": _recipe(240, lr=0.01, milestones=PAPER_MILESTONES),
             "temperatures": PAPER_TEMPERATURES},
        ],
        "calibration_teachers": {
            "base": "resnet56->resnet14", "temperature": 4.0,
            "teacher_epochs": [60, 120, 180, 240]},
        "seeds": [0, 1, 2],
        "n_boot": 2000,
    },
})


# ---------------------------------------------------------------- the sweep cell


def check_pair(pair: dict) -> dict:
    """Validate a pair spec before any training: temperatures, names, class counts."""
    from kdlib.models import build_model

    required = ("name", "data", "teacher", "teacher_recipe", "student", "student_recipe",
                "temperatures")
    missing = [k for k in required if k not in pair]
    if missing:
        raise ValueError(f"pair spec is missing {missing}; it needs {list(required)}")
    temps = pair["temperatures"]
    if not isinstance(temps, (list, tuple)) or not temps:
        raise ValueError(f"pair {pair['name']!r}: temperatures must be a non-empty list")
    for t in temps:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise ValueError(f"pair {pair['name']!r}: temperatures must be > 0, got {t!r}")
    # unknown architectures and class-count mismatches fail here, before any training
    classes = load_data(pair["data"]).num_classes
    for role in ("teacher", "student"):
        kwargs = dict(pair.get(f"{role}_kwargs") or {})
        n = kwargs.pop("num_classes", classes)
        if n != classes:
            raise ValueError(f"pair {pair['name']!r}: the {role} has {n} classes but the data "
                             f"set {pair['data'].get('name')!r} has {classes}")
        if pair[role] == "mlp":
            kwargs.setdefault("in_features", 2)
        build_model(pair[role], classes, **kwargs)
    return pair


def _build(arch, data, seed, kwargs):
    from kdlib.train import make_model

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (kwargs or {}).items()
              if k != "num_classes"}  # checked against the data in check_pair
    return make_model(arch, data, seed=seed, **kwargs)


def get_pair_teacher(data_spec, teacher, teacher_kwargs, teacher_recipe, teacher_seed=0,
                     progress=False):
    """The cached teacher of a pair (trained on first use). Returns (model, record)."""
    from kdlib.teachers import get_teacher

    data = load_data(data_spec)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (teacher_kwargs or {}).items()
              if k != "num_classes"}
    return get_teacher(teacher, data, recipe_from_spec(teacher_recipe), seed=teacher_seed,
                       cache_dir=teacher_cache_dir(), progress=progress, model_kwargs=kwargs)


def run_students(data, teacher, teacher_kwargs, teacher_recipe, student, student_kwargs,
                 student_recipe, temperatures, seed, losses=("kd", "dist"), teacher_seed=0,
                 name=None):
    """One sweep cell: all students of one (pair, seed), stacked. Returns plain results.

    Every student of the cell starts from the same initialization (`seed`) and sees the same
    batches (`seed`); only its loss and temperature differ.
    """
    import torch

    from kdlib.stacked import distill_stacked
    from kdlib.train import classification_metrics, predict_logits

    ds = load_data(data)
    t_model, t_rec = get_pair_teacher(data, teacher, teacher_kwargs, teacher_recipe,
                                      teacher_seed)
    specs = [{"loss": loss, "temperature": float(t)} for loss in losses for t in temperatures]
    students = [_build(student, ds, seed, student_kwargs) for _ in specs]
    records = distill_stacked(students, t_model, ds, specs, recipe_from_spec(student_recipe),
                              seed=seed, progress=False)
    t_logits = predict_logits(t_model, ds)
    labels = ds.test_y
    t_conf = t_logits.softmax(1).amax(1)
    rows = []
    for spec, rec, s_model in zip(specs, records, students):
        s_logits = predict_logits(s_model, ds)
        s_conf = s_logits.softmax(1).amax(1)
        tau_conf = calibration.tempered_softmax(t_logits, spec["temperature"]).amax(1)
        rows.append({**spec, **rec["metrics"],
                     "more_confident_than_teacher": float((s_conf > t_conf).float().mean()),
                     "more_confident_than_teacher_at_tau": float(
                         (s_conf > tau_conf).float().mean()),
                     "mean_confidence": float(s_conf.mean())})
    return {"teacher_metrics": classification_metrics(t_logits, labels),
            "teacher_train_seconds": float(t_rec.get("seconds", 0.0)),
            "teacher_params": int(sum(p.numel() for p in t_model.parameters())),
            "student_params": int(sum(p.numel() for p in students[0].parameters())),
            "n_test": int(len(labels)),
            "students": rows,
            "student_seconds": float(sum(r["seconds"] for r in records)),
            "torch_threads": int(torch.get_num_threads())}


def grid(cfg: dict) -> list[dict]:
    """Sweep cells for a preset: one per (pair, seed), plus the Figure 4 teachers."""
    cells = []
    for pair in cfg["pairs"]:
        check_pair(pair)
        for seed in pair.get("seeds", cfg["seeds"]):
            cells.append(_cell(pair, seed))
    ct = cfg.get("calibration_teachers")
    if ct:
        base = next((p for p in cfg["pairs"] if p["name"] == ct["base"]), None)
        if base is None:
            raise ValueError(f"calibration_teachers.base {ct['base']!r} is not one of the pairs")
        for epochs in ct["teacher_epochs"]:
            pair = {**base, "name": f"{base['name']} teacher@{epochs}ep",
                    "teacher_recipe": {**base["teacher_recipe"], "epochs": epochs,
                                       "milestones": _recipe(epochs)["milestones"]},
                    "temperatures": [ct["temperature"]]}
            for seed in ct.get("seeds", cfg["seeds"]):
                cells.append(_cell(pair, seed))
    return cells


def _cell(pair, seed):
    return {"name": pair["name"], "data": pair["data"], "teacher": pair["teacher"],
            "teacher_kwargs": pair.get("teacher_kwargs") or {},
            "teacher_recipe": pair["teacher_recipe"], "student": pair["student"],
            "student_kwargs": pair.get("student_kwargs") or {},
            "student_recipe": pair["student_recipe"],
            "temperatures": [float(t) for t in pair["temperatures"]], "seed": int(seed)}


def run(cfg: dict, scale: str, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the sweep of a preset; one row per student."""
    cells = grid(cfg)
    # train each distinct teacher once up front, with a progress bar, outside the cells
    seen = set()
    for c in cells:
        key = repr((c["data"], c["teacher"], c["teacher_kwargs"], c["teacher_recipe"]))
        if key not in seen:
            seen.add(key)
            get_pair_teacher(c["data"], c["teacher"], c["teacher_kwargs"], c["teacher_recipe"],
                             progress=progress)
    results = sweep.run(run_students, cells, store_path(NAME, scale), namespace=NAME,
                        progress=progress)
    return students_frame(results)


def students_frame(results) -> pd.DataFrame:
    """Explode sweep records (one per pair and seed) into one row per student."""
    rows = []
    for r in results:
        for s in r["students"]:
            rows.append({"pair": r["name"], "seed": r["seed"], "teacher": r["teacher"],
                         "student": r["student"],
                         "teacher_test_accuracy": r["teacher_metrics"]["accuracy"],
                         "teacher_params": r["teacher_params"],
                         "student_params": r["student_params"], "n_test": r["n_test"], **s})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- analysis


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and seed-to-seed std of accuracy per (pair, loss, temperature), in percent, with
    the teacher's ECE at tau (percent), wide by loss as in the paper's Table 6."""
    g = df.groupby(["pair", "temperature", "loss"])
    out = g.agg(acc=("accuracy", "mean"), acc_std=("accuracy", "std"),
                teacher_ece=("teacher_ece_at_tau", "mean")).reset_index()
    out[["acc", "acc_std", "teacher_ece"]] *= 100
    wide = out.pivot_table(index=["pair", "temperature", "teacher_ece"], columns="loss",
                           values=["acc", "acc_std"])
    wide.columns = [f"{loss}_{stat}" for stat, loss in wide.columns]
    return wide.reset_index()


def correlations(df: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Spearman (teacher ECE at tau vs student accuracy) per pair and loss, with a bootstrap
    interval over seeds; in percent as the paper prints it."""
    rows = []
    for pair, g in df.groupby("pair", sort=False):
        if g["temperature"].nunique() < 3:
            continue
        t = spearman_table(g, "teacher_ece_at_tau", "accuracy", by="loss", n_boot=n_boot)
        t.insert(0, "pair", pair)
        rows.append(t)
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["pair", "loss", "rho", "lo", "hi", "n_cells", "n_seeds"])
    out[["rho", "lo", "hi"]] = out[["rho", "lo", "hi"]] * 100
    return out


def seed_spread_vs_effect(df: pd.DataFrame) -> pd.DataFrame:
    """Per pair and loss: the accuracy range across temperatures of the seed-mean (the
    effect) against the mean seed-to-seed std (the noise), in percent."""
    rows = []
    for (pair, loss), g in df.groupby(["pair", "loss"], sort=False):
        by_t = g.groupby("temperature")["accuracy"]
        means, stds = by_t.mean() * 100, by_t.std() * 100
        rows.append({"pair": pair, "loss": loss, "effect_range": float(means.max() - means.min()),
                     "seed_std": float(stds.mean()) if stds.notna().any() else float("nan"),
                     "best_tau": float(means.idxmax()), "worst_tau": float(means.idxmin())})
    return pd.DataFrame(rows)


def headlines(df: pd.DataFrame, corr: pd.DataFrame) -> dict:
    """The report's headline figures: Spearman per pair and loss (percent, one decimal), or
    the mean student accuracy per loss when too few temperatures ran for a correlation."""
    heads = {f"spearman {r['loss']} {r['pair'].split()[0]} (%)": round(float(r["rho"]), 1)
             for _, r in corr.iterrows()}
    if not heads:
        heads = {f"mean {loss} accuracy (%)": round(100 * float(g["accuracy"].mean()), 2)
                 for loss, g in df.groupby("loss")}
    return heads


def paper_comparison() -> pd.DataFrame:
    """The paper's Table 6/9 Spearman values (percent) and ours recomputed from Table 6."""
    printed = paper_table("table6_9_spearman")
    ours = paper_spearman(paper_table("table6")).rename(
        columns={"spearman_kd_ece": "recomputed_kd", "spearman_dist_ece": "recomputed_dist"})
    return printed.merge(ours, on=["teacher", "student"], how="left")


# ---------------------------------------------------------------- the paper's claims

DIST_TOLERANCE = 50.0
"""Insensitivity band for DIST's Spearman, percent: the paper calls DIST insensitive with
values from -50% (WRN-28-1 -> ResNet14) to +8% (Tables 6, 9), so |rho| <= 50%."""


def claims(df: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """The paper's two claims per pair, as a kdlib.claims table (Spearman in percent of
    the teacher's ECE at tau vs student accuracy, interval over seeds, n = seeds):
    KD falls as the teacher's ECE rises (rho < 0), DIST is insensitive (|rho| <= 50%).
    df: students_frame (pair, loss, temperature, seed, accuracy, teacher_ece_at_tau)."""
    from kdlib import claims as cl

    need = ["pair", "loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau"]
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a DataFrame (students_frame), got {type(df).__name__}")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} missing; students_frame has {need}")
    paper = paper_table("table6_9_spearman")
    kd_ev = (f"Tables 6, 9: KD rho {paper.spearman_kd_ece.min():.0f}% to "
             f"{paper.spearman_kd_ece.max():.0f}% in {len(paper)} pairs")
    dist_ev = (f"Tables 6, 9: DIST rho {paper.spearman_dist_ece.min():.0f}% to "
               f"{paper.spearman_dist_ece.max():.0f}%")
    rows = []
    for pair, g in df.groupby("pair", sort=False):
        name = str(pair).split(" (")[0]
        for loss, kind, tol, text, ev in (
                ("kd", "less", None, "KD falls as teacher ECE rises", kd_ev),
                ("dist", "insensitive", DIST_TOLERANCE, "DIST insensitive to teacher ECE",
                 dist_ev)):
            sub = g[g["loss"] == loss]
            if len(sub):
                rows.append(cl.spearman_claim(sub, "teacher_ece_at_tau", "accuracy",
                                              f"{text} ({name})", ev, kind, tolerance=tol,
                                              n_boot=n_boot, scale=100, unit="%", digits=0))
    return cl.claims_table(rows)
