"""TAKD through the lens of calibration (paper section 4.1; Tables 2, 3 and 7).

A chain is teacher -> assistant -> student: the assistant is distilled from the teacher with
vanilla KD at temperature tau, then the student from the assistant at the same tau (alpha = 1,
no cross-entropy term, as in the paper). We record the assistant's test ECE at tau (ECE of
softmax(assistant_logits / tau)) and the student's test accuracy, and ask whether the
student's accuracy follows the assistant's calibration more closely than its size.

    cfg = presets.get(NAME, "default")
    df = run(cfg, "default")               # one row per (chain, tau, seed); fractions
    size_table(df, cfg["size_tau"])        # Table 2 analogue (percent, mean and std over seeds)
    calibration_vs_size(df, cfg["size_tau"])   # Spearman with bootstrap intervals

A chain with assistant None is plain KD from the teacher (the baseline TAKD should beat);
its "assistant" columns then describe the teacher. All metrics are fractions in [0, 1] unless
a table says percent.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from kdlib import presets
from kdlib._validate import check_int, check_positive
from kdlib.analysis import bootstrap_spearman, mean_t_interval, spearman
from kdlib.recipe import recipe_from_spec

NAME = "teacher_assistant"

# The digits teacher and its recipe are the same as in early_stopped_teacher, so that both
# notebooks share one cached teacher (checkpoint_every is part of the cache key).
_DIGITS = {"name": "digits", "seed": 0}
_DIGITS_TEACHER_RECIPE = {"preset": "default", "checkpoint_every": 2}

presets.register(NAME, {
    "smoke": {
        "data": {"name": "digits", "seed": 0, "subset_train": 300, "subset_test": 200},
        "tau_data": {"name": "digits", "seed": 0, "subset_train": 300, "subset_test": 200},
        "teacher_recipe": {"epochs": 2, "batch_size": 64},
        "distill_recipe": {"epochs": 1, "batch_size": 64},
        "teacher_seed": 0,
        "size_tau": 1.8,
        "size_chains": [
            {"teacher": "resnet8", "assistant": "resnet8", "student": "resnet8"},
            {"teacher": "resnet8", "assistant": "wrn_10_1", "student": "resnet8"},
            {"teacher": "resnet8", "assistant": "resnet14", "student": "resnet8"},
            {"teacher": "resnet8", "assistant": None, "student": "resnet8"},
        ],
        "tau_chains": [{"teacher": "resnet8", "assistant": "resnet8", "student": "resnet8"}],
        "tau_values": [1.8, 4.0],
        "seeds": [0],
        "n_boot": 200,
    },
    "default": {
        "data": _DIGITS,
        "tau_data": _DIGITS,
        "teacher_recipe": _DIGITS_TEACHER_RECIPE,
        "distill_recipe": {"epochs": 15, "milestones": [9, 11, 13]},
        "teacher_seed": 0,
        "size_tau": 1.8,
        # assistants of 272k, 175k, 175k and 78k parameters between a 691k teacher and a
        # 78k student; assistant None = plain KD from the teacher (the baseline)
        "size_chains": [
            {"teacher": "wrn_16_2", "assistant": "resnet20", "student": "resnet8"},
            {"teacher": "wrn_16_2", "assistant": "resnet14", "student": "resnet8"},
            {"teacher": "wrn_16_2", "assistant": "wrn_16_1", "student": "resnet8"},
            {"teacher": "wrn_16_2", "assistant": "wrn_10_1", "student": "resnet8"},
            {"teacher": "wrn_16_2", "assistant": None, "student": "resnet8"},
        ],
        "tau_chains": [{"teacher": "wrn_16_2", "assistant": "resnet14", "student": "resnet8"}],
        "tau_values": [1.8, 4.0],
        "seeds": [0, 1, 2],
        "n_boot": 2000,
    },
    "paper": {
        "data": {"name": "cifar100", "seed": 0},
        "tau_data": {"name": "tinyimagenet", "seed": 0},
        "teacher_recipe": "paper",
        "distill_recipe": {"preset": "paper", "checkpoint_every": 0},
        "teacher_seed": 0,
        "size_tau": 1.8,
        # Table 2 (WRN-28-3 and ResNet-110 teachers) and Table 7 (WRN-28-4 teacher)
        "size_chains": [
            {"teacher": "wrn_28_3", "assistant": "resnet110", "student": "resnet14"},
            {"teacher": "wrn_28_3", "assistant": "wrn_28_2", "student": "resnet14"},
            {"teacher": "wrn_28_3", "assistant": "wrn_28_1", "student": "resnet14"},
            {"teacher": "resnet110", "assistant": "resnet56", "student": "resnet14"},
            {"teacher": "resnet110", "assistant": "resnet32", "student": "resnet14"},
            {"teacher": "resnet110", "assistant": "resnet20", "student": "resnet14"},
            {"teacher": "wrn_28_3", "assistant": "wrn_28_2", "student": "wrn_22_1"},
            {"teacher": "wrn_28_3", "assistant": "wrn_28_1", "student": "wrn_22_1"},
            {"teacher": "wrn_28_4", "assistant": "wrn_28_2", "student": "wrn_22_1"},
            {"teacher": "wrn_28_4", "assistant": "wrn_28_1", "student": "wrn_22_1"},
            {"teacher": "wrn_28_4", "assistant": "wrn_28_2", "student": "resnet14"},
            {"teacher": "wrn_28_4", "assistant": "wrn_28_1", "student": "resnet14"},
        ],
        # Table 3 (Tiny-ImageNet); its second row has no assistant
        "tau_chains": [
            {"teacher": "wrn_16_3", "assistant": "resnet32", "student": "wrn_16_1"},
            {"teacher": "wrn_28_3", "assistant": None, "student": "wrn_28_1"},
        ],
        "tau_values": [1.8, 4.0],
        "seeds": [0, 1, 2, 5],
        "n_boot": 2000,
    },
})


# ------------------------------------------------------------------ configuration helpers


def _check_chain(chain) -> dict:
    if not isinstance(chain, dict) or set(chain) != {"teacher", "assistant", "student"}:
        raise ValueError(f"a chain must be a dict with keys teacher, assistant, student, "
                         f"got {chain!r}")
    for role in ("teacher", "student"):
        if not isinstance(chain[role], str):
            raise TypeError(f"chain {role} must be an architecture name, got {chain[role]!r}")
    if chain["assistant"] is not None and not isinstance(chain["assistant"], str):
        raise TypeError(f"chain assistant must be an architecture name or None, "
                        f"got {chain['assistant']!r}")
    return dict(chain)


def build_grid(cfg: dict) -> list[dict]:
    """The sweep cells of a config: every size chain at size_tau on `data`, and every tau
    chain at each of tau_values on `tau_data`, times seeds. Duplicates (a tau chain at
    size_tau on the same data) appear once."""
    need = ["data", "tau_data", "teacher_recipe", "distill_recipe", "teacher_seed", "size_tau",
            "size_chains", "tau_chains", "tau_values", "seeds"]
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ValueError(f"config lacks {missing}; get one with presets.get({NAME!r}, scale)")
    seeds = [check_int(s, "seed", minimum=0) for s in cfg["seeds"]]
    if not seeds:
        raise ValueError("seeds must not be empty")
    common = {"teacher_recipe": cfg["teacher_recipe"], "distill_recipe": cfg["distill_recipe"],
              "teacher_seed": check_int(cfg["teacher_seed"], "teacher_seed", minimum=0)}
    todo = [(cfg["data"], _check_chain(c), check_positive(cfg["size_tau"], "size_tau"))
            for c in cfg["size_chains"]]
    todo += [(cfg["tau_data"], _check_chain(c), check_positive(t, "tau"))
             for c in cfg["tau_chains"] for t in cfg["tau_values"]]
    grid, seen = [], set()
    for data, chain, tau in todo:
        for seed in seeds:
            cell = {"data": data, **chain, "tau": tau, "seed": seed, **common}
            key = json.dumps(cell, sort_keys=True)
            if key not in seen:
                seen.add(key)
                grid.append(cell)
    return grid


# ------------------------------------------------------------------ the work


def run_chain(data: dict, teacher: str, assistant: str | None, student: str, tau: float,
              seed: int, teacher_recipe, distill_recipe, teacher_seed: int = 0) -> dict:
    """One TAKD chain: teacher (cached) -> assistant (KD at tau) -> student (KD at tau).

    seed: the assistant's and the student's initialization and batch order. assistant None:
    the student learns from the teacher directly (plain KD). Returns plain floats (fractions):
    teacher_*, assistant_* (the teacher's own numbers when assistant is None) and student_*;
    *_ece is at T = 1, *_ece_at_tau at tau; *_params are parameter counts.
    """
    from kdlib.calibration import ece, tempered_softmax
    from kdlib.experiments.common import load_data, teacher_cache_dir
    from kdlib.models import count_parameters
    from kdlib.teachers import get_teacher
    from kdlib.train import ECE_BINS, classification_metrics, distill, make_model, predict_logits

    tau = check_positive(tau, "tau")
    seed = check_int(seed, "seed", minimum=0)
    d = load_data(data)
    recipe = recipe_from_spec(distill_recipe)
    t_model, _ = get_teacher(teacher, d, recipe_from_spec(teacher_recipe), seed=teacher_seed,
                             cache_dir=teacher_cache_dir(), progress=False)
    labels = d.test_y.cpu()

    def describe(role, model, logits):
        m = classification_metrics(logits, labels)
        return {f"{role}_params": int(count_parameters(model)),
                f"{role}_accuracy": m["accuracy"], f"{role}_ece": m["ece"], f"{role}_nll": m["nll"],
                f"{role}_ece_at_tau": float(ece(tempered_softmax(logits, tau), labels,
                                                n_bins=ECE_BINS))}

    t_logits = predict_logits(t_model, d)
    out = describe("teacher", t_model, t_logits)
    if assistant is None:
        a_model, a_logits = t_model, t_logits
    else:
        a_model = make_model(assistant, d, seed=seed)
        distill(a_model, t_model, d, "kd", tau, recipe, seed=seed, progress=False,
                eval_every=0, teacher_logits=t_logits)
        a_logits = predict_logits(a_model, d)
    out.update(describe("assistant", a_model, a_logits))
    s_model = make_model(student, d, seed=seed)
    rec = distill(s_model, a_model, d, "kd", tau, recipe, seed=seed, progress=False,
                  eval_every=0, teacher_logits=a_logits)
    m = rec["metrics"]
    out.update({"student_params": int(count_parameters(s_model)),
                "student_accuracy": m["accuracy"], "student_ece": m["ece"],
                "student_nll": m["nll"], "student_agreement": m["agreement"]})
    return {k: (v if isinstance(v, int) else float(v)) for k, v in out.items()}


def run(cfg: dict, scale: str, progress: bool = True) -> pd.DataFrame:
    """Run (or load) every cell of build_grid(cfg) through the sweep store of `scale`; one
    row per cell with the cell's keys, the results of run_chain and `assistant_name`
    ("none" for plain KD)."""
    from kdlib import sweep
    from kdlib.experiments.common import store_path

    results = sweep.run(run_chain, build_grid(cfg), store_path(NAME, scale), progress=progress)
    return tidy(results.to_frame())


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Sweep records -> analysis frame: drops sweep metadata, adds `dataset` (the data spec's
    name) and `assistant_name` ("none" where the chain has no assistant)."""
    _require(frame, ["data", "teacher", "assistant", "student", "tau", "seed"])
    df = frame[[c for c in frame.columns if not c.startswith("_")]].copy()
    df["dataset"] = [d["name"] if isinstance(d, dict) else str(d) for d in df["data"]]
    df["assistant_name"] = df["assistant"].where(df["assistant"].notna(), "none")
    return df


# ------------------------------------------------------------------ analysis


def _require(df, cols):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} missing; the frame has {list(df.columns)}")


CHAIN = ["dataset", "teacher", "assistant_name", "student", "tau"]


def chain_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per chain (dataset, teacher, assistant, student, tau), in
    percent: assistant params (millions), assistant ECE at tau, assistant and student
    accuracy; n = number of seeds. Std is the sample std (ddof 1; NaN for one seed)."""
    _require(df, CHAIN + ["seed", "assistant_params", "assistant_ece_at_tau",
                          "assistant_accuracy", "student_accuracy"])
    g = df.groupby(CHAIN, sort=False, dropna=False)
    out = pd.DataFrame({
        "assistant_params_m": g["assistant_params"].first() / 1e6,
        "assistant_ece_at_tau": 100 * g["assistant_ece_at_tau"].mean(),
        "assistant_ece_std": 100 * g["assistant_ece_at_tau"].std(),
        "assistant_accuracy": 100 * g["assistant_accuracy"].mean(),
        "student_accuracy": 100 * g["student_accuracy"].mean(),
        "student_accuracy_std": 100 * g["student_accuracy"].std(),
        "n": g["seed"].nunique(),
    })
    return out.reset_index()


def size_table(df: pd.DataFrame, size_tau: float) -> pd.DataFrame:
    """chain_table of the chains at `size_tau` (Table 2 analogue), plain KD last in each
    (teacher, student) group, assistants by decreasing size."""
    _require(df, ["tau"])
    t = chain_table(df[np.isclose(df["tau"], size_tau)])
    t["_plain"] = t["assistant_name"] == "none"
    t = t.sort_values(["dataset", "teacher", "student", "_plain", "assistant_params_m"],
                      ascending=[True, True, True, True, False], kind="stable")
    return t.drop(columns="_plain").reset_index(drop=True)


def seed_table(df: pd.DataFrame, size_tau: float) -> pd.DataFrame:
    """Table 7 analogue: one row per assistant chain and seed at `size_tau` (plain KD left
    out): teacher, assistant, student, assistant ECE at tau and student accuracy (percent),
    seed; ordered by seed, then assistant size (largest first)."""
    _require(df, ["tau", "teacher", "assistant_name", "student", "assistant_params",
                  "assistant_ece_at_tau", "student_accuracy", "seed"])
    sub = df[np.isclose(df["tau"], size_tau) & (df["assistant_name"] != "none")]
    sub = sub.sort_values(["teacher", "student", "seed", "assistant_params"],
                          ascending=[True, True, True, False], kind="stable")
    return pd.DataFrame({"teacher": sub["teacher"], "assistant": sub["assistant_name"],
                         "student": sub["student"],
                         "assistant_ece": 100 * sub["assistant_ece_at_tau"],
                         "student_accuracy": 100 * sub["student_accuracy"],
                         "seed": sub["seed"]}).reset_index(drop=True)


def tau_table_rows(df: pd.DataFrame, tau_chains: list[dict]) -> pd.DataFrame:
    """The rows of `df` that belong to one of `tau_chains` (any tau, any seed)."""
    _require(df, ["teacher", "assistant_name", "student"])
    keep = np.zeros(len(df), dtype=bool)
    for c in tau_chains:
        a = "none" if c["assistant"] is None else c["assistant"]
        keep |= ((df["teacher"] == c["teacher"]) & (df["assistant_name"] == a)
                 & (df["student"] == c["student"])).to_numpy()
    return df[keep]


def tau_table(df: pd.DataFrame, tau_chains: list[dict]) -> pd.DataFrame:
    """chain_table restricted to the tau chains (Table 3 analogue), one row per tau."""
    return chain_table(tau_table_rows(df, tau_chains)).sort_values(
        ["teacher", "assistant_name", "tau"], kind="stable").reset_index(drop=True)


def bootstrap_rows_spearman(x, y, n_boot: int = 2000, level: float = 0.95,
                            rng_seed: int = 0) -> dict:
    """Spearman of paired samples with a percentile bootstrap over the pairs.

    Returns {"rho", "lo", "hi", "n"}; replicates whose resample is constant in x or y (no
    rank correlation) are dropped; lo/hi are NaN if all are.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n_boot = check_int(n_boot, "n_boot", minimum=1)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rho = spearman(x, y)
    rng = np.random.default_rng(rng_seed)
    reps = []
    for _ in range(n_boot):
        idx = rng.integers(0, x.size, x.size)
        if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0:
            reps.append(spearman(x[idx], y[idx]))
    if reps:
        lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    else:
        lo = hi = np.nan
    return {"rho": rho, "lo": float(lo), "hi": float(hi), "n": int(x.size)}


PREDICTORS = {"assistant ECE at tau": "assistant_ece_at_tau",
              "assistant parameters": "assistant_params"}


def calibration_vs_size(df: pd.DataFrame, size_tau: float, n_boot: int = 2000,
                        rng_seed: int = 0) -> pd.DataFrame:
    """Spearman of student accuracy with the assistant's ECE at tau and with its parameter
    count, per (dataset, teacher, student) group of chains at `size_tau` (plain KD left out).

    Two views per predictor:
      level "assistants": the seed-averaged values per assistant (one point per assistant),
        interval from kdlib.analysis.bootstrap_spearman (seeds resampled within assistants);
      level "chains": every (assistant, seed) chain is one point, interval from resampling
        the chains (bootstrap_rows_spearman); seeds move ECE but not size, so this view can
        tell the two apart even when size and ECE are ranked alike across assistants.
    Groups with fewer than 3 assistants are skipped. Columns: dataset, teacher, student,
    predictor, level, rho, lo, hi, n (points).
    """
    _require(df, CHAIN + ["seed", "student_accuracy"] + list(PREDICTORS.values()))
    sub = df[np.isclose(df["tau"], size_tau) & (df["assistant_name"] != "none")]
    rows = []
    for (ds, t, s), g in sub.groupby(["dataset", "teacher", "student"], sort=True):
        if g["assistant_name"].nunique() < 3:
            continue
        for label, col in PREDICTORS.items():
            b = bootstrap_spearman(g, col, "student_accuracy", cell="assistant_name",
                                   seed_col="seed", n_boot=n_boot, rng_seed=rng_seed)
            rows.append({"dataset": ds, "teacher": t, "student": s, "predictor": label,
                         "level": "assistants", "rho": b["rho"], "lo": b["lo"], "hi": b["hi"],
                         "n": b["n_cells"]})
            if len(g) >= 3:
                c = bootstrap_rows_spearman(g[col], g["student_accuracy"], n_boot=n_boot,
                                            rng_seed=rng_seed)
                rows.append({"dataset": ds, "teacher": t, "student": s, "predictor": label,
                             "level": "chains", **c})
    return pd.DataFrame(rows, columns=["dataset", "teacher", "student", "predictor", "level",
                                       "rho", "lo", "hi", "n"])


def verdict(corr: pd.DataFrame, level: str = "chains") -> pd.DataFrame:
    """Per group at `level`: which the student's accuracy follows more closely.

    "calibration": rho with ECE is negative (better calibrated assistant, better student, the
    paper's direction) and larger in magnitude than rho with size; "size": |rho with size| is
    larger; "neither": rho with ECE is the larger but positive (the opposite of the paper's
    claim), or both are 0; "tie" within 1e-9; "n/a" if either is NaN.
    """
    _require(corr, ["teacher", "student", "predictor", "level", "rho"])
    rows = []
    for (t, s), g in corr[corr["level"] == level].groupby(["teacher", "student"], sort=False):
        r = dict(zip(g["predictor"], g["rho"]))
        e, z = r.get("assistant ECE at tau", np.nan), r.get("assistant parameters", np.nan)
        if np.isnan(e) or np.isnan(z):
            closer = "n/a"
        elif abs(abs(e) - abs(z)) <= 1e-9:
            closer = "tie" if abs(e) > 0 else "neither"
        elif abs(z) > abs(e):
            closer = "size"
        else:
            closer = "calibration" if e < 0 else "neither"
        rows.append({"teacher": t, "student": s, "rho_ece": e, "rho_size": z,
                     "follows": closer})
    return pd.DataFrame(rows, columns=["teacher", "student", "rho_ece", "rho_size", "follows"])


def paper_calibration_vs_size() -> pd.DataFrame:
    """The same Spearman correlations computed from the paper's printed numbers: Table 2
    per (teacher, student) group with >= 3 assistants (one run each), and Table 7 (seeds) per
    (teacher, student) with every (assistant, seed) row a point (level "chains"; the paper
    does not print Table 7's sizes, so they are taken from Table 2: WRN-28-2 1.5M,
    WRN-28-1 0.38M). Columns as calibration_vs_size, without intervals."""
    from kdlib.paper import paper_table

    rows = []
    t2 = paper_table("table2")
    for (t, s), g in t2.groupby(["teacher", "student"], sort=False):
        if len(g) < 3:
            continue
        for label, col in (("assistant ECE at tau", "assistant_ece"),
                           ("assistant parameters", "assistant_params_m")):
            rows.append({"source": "Table 2", "teacher": t, "student": s, "predictor": label,
                         "level": "assistants", "rho": spearman(g[col], g["student_accuracy"]),
                         "n": len(g)})
    sizes = dict(zip(t2["assistant"], t2["assistant_params_m"]))
    t7 = paper_table("table7")
    t7 = t7.assign(student=t7["student"].str.replace("RESNET", "ResNet"),
                   assistant_params_m=t7["assistant"].map(sizes))
    for (t, s), g in t7.groupby(["teacher", "student"], sort=False):
        for label, col in (("assistant ECE at tau", "assistant_ece"),
                           ("assistant parameters", "assistant_params_m")):
            rows.append({"source": "Table 7", "teacher": t, "student": s, "predictor": label,
                         "level": "chains", "rho": spearman(g[col], g["student_accuracy"]),
                         "n": len(g)})
    return pd.DataFrame(rows)


def takd_gain(df: pd.DataFrame, size_tau: float) -> pd.DataFrame:
    """Student accuracy of each assistant chain minus plain KD (same teacher, student, tau,
    seed), in percentage points: mean, std and n over seeds; positive = TAKD helps."""
    _require(df, CHAIN + ["seed", "student_accuracy"])
    sub = df[np.isclose(df["tau"], size_tau)]
    key = ["dataset", "teacher", "student", "tau", "seed"]
    base = sub[sub["assistant_name"] == "none"].set_index(key)["student_accuracy"]
    ta = sub[sub["assistant_name"] != "none"]
    if base.empty or ta.empty:
        return pd.DataFrame(columns=["teacher", "assistant_name", "student", "gain_mean",
                                     "gain_std", "n"])
    joined = ta.join(base.rename("plain_kd"), on=key, how="inner")
    joined["gain"] = 100 * (joined["student_accuracy"] - joined["plain_kd"])
    g = joined.groupby(["teacher", "assistant_name", "student"], sort=False)["gain"]
    return pd.DataFrame({"gain_mean": g.mean(), "gain_std": g.std(),
                         "n": g.count()}).reset_index()


def paired_difference(df: pd.DataFrame, value: str, by: str, a, b, groups=(),
                      pair_on: str = "seed", level: float = 0.95) -> pd.DataFrame:
    """Mean over `pair_on` of df[value] at by == a minus at by == b, per group of `groups`.

    Rows are matched on the groups and `pair_on` (e.g. the same student seed); unmatched rows
    are dropped. Returns columns *groups, diff, std, lo, hi, n: the mean difference, sample
    std of the differences, a Student-t interval at `level` (NaN with one pair), and the
    number of pairs. Units as in df (multiply fractions by 100 for points).
    """
    groups = list(groups)
    _require(df, [value, by, pair_on, *groups])
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    key = groups + [pair_on]
    left = df[df[by] == a].set_index(key)[value]
    right = df[df[by] == b].set_index(key)[value]
    if left.index.has_duplicates or right.index.has_duplicates:
        raise ValueError(f"several rows per {key} at {by} == {a!r} or {b!r}; "
                         "add the distinguishing columns to groups")
    diff = (left - right).dropna().rename("d").reset_index()
    rows = []
    parts = diff.groupby(groups, sort=True) if groups else [((), diff)]
    for name, g in parts:
        d = g["d"].to_numpy(float)
        n = d.size
        sd = float(d.std(ddof=1)) if n > 1 else float("nan")
        mean, lo, hi = mean_t_interval(d, level)
        name = name if isinstance(name, tuple) else (name,)
        rows.append({**dict(zip(groups, name)), "diff": mean, "std": sd,
                     "lo": lo, "hi": hi, "n": n})
    return pd.DataFrame(rows, columns=[*groups, "diff", "std", "lo", "hi", "n"])


def tau_effect(df: pd.DataFrame, tau_chains: list[dict], low: float, high: float,
               level: float = 0.95) -> pd.DataFrame:
    """Student accuracy at tau `high` minus at tau `low` for each tau chain, paired by seed,
    in percentage points (paired_difference): diff, std, lo, hi, n."""
    t = tau_table_rows(df, tau_chains).assign(pct=lambda x: 100 * x["student_accuracy"])
    t = t[np.isclose(t["tau"], low) | np.isclose(t["tau"], high)]
    t = t.assign(which=np.where(np.isclose(t["tau"], high), "high", "low"))
    return paired_difference(t, "pct", "which", "high", "low",
                             groups=["teacher", "assistant_name", "student"], level=level)


def beside_paper(ours: pd.DataFrame) -> pd.DataFrame:
    """Our Table 2 analogue stacked above the paper's Table 2 rows with common columns
    (source, teacher, assistant, assistant_params_m, student, tau, assistant_ece_at_tau,
    student_accuracy; percent)."""
    from kdlib.paper import paper_table

    _require(ours, ["teacher", "assistant_name", "assistant_params_m", "student", "tau",
                    "assistant_ece_at_tau", "student_accuracy"])
    a = ours.rename(columns={"assistant_name": "assistant"}).assign(source="ours")
    p = paper_table("table2").rename(columns={"assistant_ece": "assistant_ece_at_tau"})
    p = p.assign(source="paper (CIFAR-100)")
    cols = ["source", "teacher", "assistant", "assistant_params_m", "student", "tau",
            "assistant_ece_at_tau", "student_accuracy"]
    return pd.concat([a[cols], p[cols]], ignore_index=True)


CHAIN_MIN_N = 5
"""Fewest (assistant, seed) chains for a verdict on the chain-level Spearman."""


def claims(df: pd.DataFrame, size_tau: float, tau_chains: list[dict], tau_values,
           n_boot: int = 2000) -> pd.DataFrame:
    """The paper's TAKD claims as a kdlib.claims table, per (dataset, teacher, student).

    * better-calibrated assistant, better student (Tables 2, 7): Spearman of student
      accuracy with the assistant's ECE at size_tau over every (assistant, seed) chain,
      percentile bootstrap over chains, n = chains; claimed < 0; inconclusive below
      CHAIN_MIN_N chains (a bootstrap over 3 or 4 points is mostly ties). Groups with two
      assistants are analysed too (their chains still vary in ECE).
    * larger assistant, better calibrated (section 4.1): Spearman of the assistant's ECE at
      size_tau with its parameter count over assistants (seed means, interval over seeds,
      n = seeds); claimed < 0; NaN and inconclusive with fewer than 3 assistants.
    * higher tau, worse student (Table 3): student accuracy at max(tau_values) minus at
      min(tau_values) per tau chain, paired by seed (points, t-interval, n = seeds); < 0.
    Spearman in percent.
    """
    from kdlib import claims as cl

    _require(df, CHAIN + ["seed", "student_accuracy", "assistant_ece_at_tau",
                          "assistant_params"])
    rows = []
    sub = df[np.isclose(df["tau"], size_tau) & (df["assistant_name"] != "none")]
    for (ds, t, s), g in sub.groupby(["dataset", "teacher", "student"], sort=True):
        name = f"{t} -> {s}, {ds}"
        x, y = g["assistant_ece_at_tau"].to_numpy(float), g["student_accuracy"].to_numpy(float)
        if len(g) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            b = bootstrap_rows_spearman(x, y, n_boot=n_boot)
            est, lo, hi, n = 100 * b["rho"], 100 * b["lo"], 100 * b["hi"], b["n"]
        else:
            est = lo = hi = float("nan")
            n = len(g)
        rows.append(cl.claim(f"better-calibrated assistant, better student ({name})",
                             "Tables 2, 7: rho(acc, assistant ECE) < 0", est, lo, hi, n,
                             "less", unit="%", digits=0, min_n=CHAIN_MIN_N))
        rows.append(cl.spearman_claim(
            g, "assistant_params", "assistant_ece_at_tau",
            f"larger assistant, lower ECE ({name})", "Section 4.1: larger TA better calibrated",
            "less", cell="assistant_name", n_boot=n_boot, scale=100, unit="%", digits=0))
    taus = [float(v) for v in tau_values]
    if tau_chains and len(taus) >= 2:
        for _, r in tau_effect(df, tau_chains, min(taus), max(taus)).iterrows():
            rows.append(cl.claim(
                f"tau {max(taus):g} vs {min(taus):g}: student worse "
                f"({r.teacher} -> {r.assistant_name} -> {r.student})",
                "Table 3: lower accuracy at the higher tau", r["diff"], r["lo"], r["hi"],
                int(r["n"]), "less", unit=" pp"))
    return cl.claims_table(rows)
