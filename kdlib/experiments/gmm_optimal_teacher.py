"""Paper section 3.2, Table 1: the exact posterior of a Gaussian mixture as an optimally
calibrated teacher, against one-hot labels, on the 10- and 100-class 2-D GMM tasks.

Design (one sweep cell = one task and one group of arms, all runs of the group trained at
once with `kdlib.stacked_mlp.train_mlps_stacked`):
  * arms "one-hot" (cross-entropy on the sampled labels) and "posterior" (soft cross-entropy
    on the exact posterior p(c|x) of each training point) form the group "table1";
  * arms "tau=<t>" (soft cross-entropy on softmax(log p / t), sharpened for t < 1, softened
    for t > 1; t = 0 is the limit: the one-hot of the Bayes decision argmax p) form the
    group "tempered", the extension beyond the paper;
  * run r of every arm starts from the same initialization and sees the same minibatch
    order (seed r), so arms are compared on paired runs;
  * accuracies are from the last epoch (no selection on the test set); the Bayes accuracy
    of the same test points is the ceiling.
A target's calibration is its ECE (15 bins) against the training labels: the posterior's is
~0 up to sampling noise. The one-hot labels' ECE against themselves is 0 by construction and
says nothing (a label is not a function of x), so the one-hot arm is left out of the
calibration analysis.
"""

from __future__ import annotations

import contextlib
import dataclasses
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from kdlib import presets
from kdlib._validate import check_int
from kdlib.experiments.common import load_data
from kdlib.gmm import tempered_posterior  # noqa: F401 (re-exported; it lives in kdlib.gmm)

NAME = "gmm_optimal_teacher"
ONE_HOT, POSTERIOR = "one-hot", "posterior"
GROUPS = ("table1", "tempered")
ECE_BINS = 15

_TASKS = ["gmm10", "gmm100"]
_TEMPERATURES = [0.0, 0.5, 2.0, 4.0]

presets.register(NAME, {
    "smoke": {
        "tasks": _TASKS, "n_train": 600, "n_test": 300, "data_seed": 0, "runs": 2,
        "hidden": [16, 16], "standardize_inputs": True,
        "recipe": {"epochs": 2, "batch_size": 128, "lr": 0.03, "momentum": 0.9,
                   "weight_decay": 5e-4, "milestones": []},
        "temperatures": _TEMPERATURES, "device": "cpu", "torch_threads": 1, "grid_resolution": 60,
        "n_boot": 200, "workers": 1,
    },
    "default": {
        "tasks": _TASKS, "n_train": 10_000, "n_test": 3_000, "data_seed": 0, "runs": 5,
        "hidden": [64, 64], "standardize_inputs": True,
        "recipe": {"epochs": 60, "batch_size": 128, "lr": 0.03, "momentum": 0.9,
                   "weight_decay": 5e-4, "milestones": []},
        "temperatures": _TEMPERATURES, "device": "cpu", "torch_threads": 1, "grid_resolution": 200,
        "n_boot": 2000, "workers": 2,  # two threads of one core each (kdlib.stacked_mlp)
    },
    "paper": {
        "tasks": _TASKS, "n_train": 10_000, "n_test": 3_000, "data_seed": 0, "runs": 5,
        "hidden": [64, 64], "standardize_inputs": True,
        "recipe": {"epochs": 200, "batch_size": 128, "lr": 0.03, "momentum": 0.9,
                   "weight_decay": 5e-4, "milestones": []},
        "temperatures": _TEMPERATURES, "device": "auto", "torch_threads": None,
        "grid_resolution": 300,
        "n_boot": 2000, "workers": "auto",
    },
}, tables={"1": ["tasks"], "tempered": ["temperatures"]}, dry_run=lambda cfg: _dry_run(cfg))


def _dry_run(cfg: dict) -> dict:
    """The dry-run hook: DRY_TRAIN / DRY_TEST samples (the preset keeps n_train/n_test at
    the top, where the generic cut does not look), one run per arm, a coarse decision grid,
    one torch thread (a CPU check)."""
    from kdlib.dry_run import DRY_TEST, DRY_TRAIN

    return dict(cfg, n_train=min(cfg["n_train"], DRY_TRAIN), n_test=min(cfg["n_test"], DRY_TEST),
                runs=1, grid_resolution=min(cfg["grid_resolution"], 40), torch_threads=1,
                workers=1)


# ----------------------------------------------------------------------------- targets


def arm_name(temperature: float) -> str:
    """'tau=<t>' for a tempered-posterior arm (t >= 0; 0 = one-hot of the Bayes argmax)."""
    t = float(temperature)
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"temperature must be finite and >= 0, got {temperature!r}")
    return f"tau={t:g}"


def group_arms(group: str, temperatures) -> list[str]:
    """Arm names of a sweep group: 'table1' -> one-hot, posterior; 'tempered' -> tau=<t>."""
    if group == "table1":
        return [ONE_HOT, POSTERIOR]
    if group == "tempered":
        return [arm_name(t) for t in temperatures]
    raise ValueError(f"group must be one of {list(GROUPS)}, got {group!r}")


def arm_temperature(arm: str) -> float:
    """The posterior temperature of an arm: 1 for 'posterior', t for 'tau=<t>', NaN for
    'one-hot' (its target is the label, not a function of the posterior)."""
    if arm == ONE_HOT:
        return float("nan")
    if arm == POSTERIOR:
        return 1.0
    if isinstance(arm, str) and arm.startswith("tau="):
        return float(arm[4:])
    raise ValueError(f"unknown arm {arm!r}; arms are {ONE_HOT!r}, {POSTERIOR!r}, 'tau=<t>'")


def arm_targets(data, arm: str):
    """The training target of an arm: None (labels) for one-hot, else N_train x C probs."""
    t = arm_temperature(arm)
    if np.isnan(t):
        return None
    if data.train_posterior is None:
        raise ValueError(f"data set {data.name!r} has no exact posterior (use gmm10/gmm100)")
    if t == 1.0:
        return data.train_posterior
    return tempered_posterior(data.train_posterior, t)


def target_calibration(target, labels) -> dict:
    """ECE (15 bins, fraction), accuracy and mean confidence of a probability target against
    the training labels; all NaN for the one-hot labels (target None)."""
    from kdlib.calibration import ece

    if target is None:
        return {"target_ece": float("nan"), "target_accuracy": float("nan"),
                "target_confidence": float("nan")}
    target = torch.as_tensor(target, dtype=torch.float32)
    labels = torch.as_tensor(labels)
    conf, pred = target.max(1)
    return {"target_ece": ece(target, labels, n_bins=ECE_BINS),
            "target_accuracy": float((pred == labels).double().mean()),
            "target_confidence": float(conf.double().mean())}


# ----------------------------------------------------------------------------- work


def prepared_data(task: str, n_train: int, n_test: int, data_seed: int,
                  standardize_inputs: bool):
    """The GMM data set of a cell; with standardize_inputs its mean/std are set from the
    train split so that training (and `decision_grids`) see standardized inputs."""
    data = load_data({"name": task, "seed": data_seed, "n_train": n_train, "n_test": n_test})
    if standardize_inputs:
        data = dataclasses.replace(data, mean=tuple(data.train_x.mean(0).tolist()),
                                   std=tuple(data.train_x.std(0).tolist()))
    return data


@lru_cache(maxsize=8)
def bayes_decisions(task: str, n_train: int, n_test: int, data_seed: int) -> tuple:
    """(train, test) int arrays: the Bayes rule's class (argmax of the exact log joint) for
    every sample of the cell's data set; cached, as both groups of a task share them.
    Their agreement with the labels is `GaussianMixtureTask.bayes_accuracy`."""
    from kdlib.gmm import gmm_preset

    data = load_data({"name": task, "seed": data_seed, "n_train": n_train, "n_test": n_test})
    gmm = gmm_preset(task)
    return (gmm.log_joint(data.train_x).argmax(1), gmm.log_joint(data.test_x).argmax(1))


@contextlib.contextmanager
def limited_threads(n: int | None):
    """Run the block with torch's CPU intra-op threads set to n (None: leave as is), then
    restore. Small stacked MLPs run fastest on 1 thread; with other jobs on the cores, more
    threads than free cores slow every small op down by orders of magnitude."""
    if n is None:
        yield
        return
    n = check_int(n, "torch_threads", minimum=1)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_group(task: str, group: str, n_train: int, n_test: int, data_seed: int, runs: int,
              hidden: list, standardize_inputs: bool, recipe: dict, temperatures: list,
              device: str = "cpu", torch_threads: int | None = 1, workers=1) -> dict:
    """Train every run of every arm of `group` on `task` at once; one sweep cell.

    Returns plain JSON: "per_run" (one dict per arm and run: arm, run, temperature, accuracy,
    ece, nll, bayes_agreement (fraction of test points where the student's argmax equals the
    Bayes decision), train_loss (last epoch), target_ece/target_accuracy/target_confidence),
    "bayes_accuracy" (test), "bayes_train_accuracy", "weights_run0" ({arm: {parameter name:
    nested list}}, for decision-region plots), "input_mean"/"input_std" (None when inputs are
    not standardized), "train_seconds", "members". torch_threads: CPU threads while training
    (see `limited_threads`; None leaves torch's setting); workers: threads training groups
    of the runs in parallel, one core each (`train_mlps_stacked`; only float rounding
    depends on it).
    """
    with limited_threads(torch_threads):
        return _run_group(task, group, n_train, n_test, data_seed, runs, hidden,
                          standardize_inputs, recipe, temperatures, device, workers)


def _run_group(task, group, n_train, n_test, data_seed, runs, hidden, standardize_inputs,
               recipe, temperatures, device, workers) -> dict:
    from kdlib.recipe import recipe_from_spec
    from kdlib.stacked_mlp import train_mlps_stacked
    from kdlib.train import make_model

    runs = check_int(runs, "runs", minimum=1)
    arms = group_arms(group, temperatures)
    data = prepared_data(task, n_train, n_test, data_seed, standardize_inputs)
    rec = recipe_from_spec(recipe)
    members = [(arm, r) for arm in arms for r in range(runs)]
    targets_by_arm = {arm: arm_targets(data, arm) for arm in arms}
    models = [make_model("mlp", data, seed=r, hidden=tuple(hidden)) for _, r in members]
    records = train_mlps_stacked(models, data, rec, [r for _, r in members],
                                 targets=[targets_by_arm[a] for a, _ in members],
                                 device=device, progress=False, workers=workers)
    bayes_train, bayes_test = (torch.from_numpy(d) for d in
                               bayes_decisions(task, n_train, n_test, data_seed))
    calib = {arm: target_calibration(targets_by_arm[arm], data.train_y) for arm in arms}
    rows = []
    for (arm, r), model, record in zip(members, models, records):
        pred = _predict(model, data, data.test_x)
        rows.append({"arm": arm, "run": r, "temperature": arm_temperature(arm),
                     **{k: float(v) for k, v in record["metrics"].items()},
                     "bayes_agreement": float((pred == bayes_test).double().mean()),
                     "train_loss": float(record["history"][-1]["train_loss"]),
                     **calib[arm]})
    weights = {arm: {n: p.tolist() for n, p in models[members.index((arm, 0))]
                     .state_dict().items()} for arm in arms}
    return {"per_run": rows, "arms": arms,
            "bayes_accuracy": float((bayes_test == data.test_y).double().mean()),
            "bayes_train_accuracy": float((bayes_train == data.train_y).double().mean()),
            "weights_run0": weights,
            "input_mean": None if data.mean is None else list(data.mean),
            "input_std": None if data.std is None else list(data.std),
            "train_seconds": float(sum(r["seconds"] for r in records)),
            "members": len(members)}


def _predict(model, data, x) -> torch.Tensor:
    """argmax of `model` on raw inputs x (N x 2), normalized as the data set says."""
    from kdlib.batches import normalize

    with torch.no_grad():
        xin = torch.as_tensor(x, dtype=torch.float32)
        return model(normalize(xin, data.mean, data.std)).argmax(1)


def grid_cells(cfg: dict) -> list[dict]:
    """The sweep grid of a preset: one cell per (task, group) with the training settings;
    temperatures None (a selection of table 1 only) drops the "tempered" group. The
    "workers" setting joins a cell only when it is not 1, so stores written before it
    existed keep their keys."""
    keys = ("n_train", "n_test", "data_seed", "runs", "hidden", "standardize_inputs",
            "recipe", "temperatures", "device", "torch_threads")
    missing = [k for k in (*keys, "tasks") if k not in cfg]
    if missing:
        raise ValueError(f"preset is missing {missing}; get it from presets.get({NAME!r}, scale)")
    groups = [g for g in GROUPS if g != "tempered" or cfg["temperatures"] is not None]
    extra = {} if cfg.get("workers", 1) == 1 else {"workers": cfg["workers"]}
    return [{"task": task, "group": group, **{k: cfg[k] for k in keys}, **extra}
            for task in cfg["tasks"] or [] for group in groups]


def skipped_tables(cfg: dict) -> list[tuple[str, str]]:
    """[(table, reason)]: the GMM tasks are generated, never missing; a selection without
    tasks skips Table 1, one without temperatures the tempered extension."""
    out = []
    if not cfg.get("tasks"):
        out.append(("1", "no task selected"))
    if cfg.get("temperatures") is None:
        out.append(("tempered posteriors (beyond the paper)", "not selected"))
    return out


def run_sweep(cfg: dict, scale: str, progress: bool = True):
    """Run (or load) every cell of the preset through kdlib.sweep, in the run's store
    (`store_path(NAME, scale, dry_run=cfg["dry_run"])`); returns SweepResults."""
    from kdlib.experiments.common import store_path
    from kdlib.sweep import run

    return run(run_group, grid_cells(cfg),
               store_path(NAME, scale, dry_run=cfg.get("dry_run", False)), namespace=NAME,
               progress=progress)


# ----------------------------------------------------------------------------- analysis


def runs_frame(results) -> pd.DataFrame:
    """One row per (task, arm, run) from sweep records: classes, accuracy_pct, ece_pct,
    target_ece_pct, ... (percent columns are fractions x 100), bayes_accuracy_pct."""
    rows = []
    for rec in results:
        for row in rec["per_run"]:
            rows.append({"task": rec["task"], "group": rec["group"],
                         "classes": int(rec["task"].removeprefix("gmm")), **row,
                         "bayes_accuracy": rec["bayes_accuracy"]})
    if not rows:
        raise ValueError("no finished runs in the results")
    df = pd.DataFrame(rows)
    for col in ("accuracy", "ece", "target_ece", "bayes_accuracy", "bayes_agreement",
                "target_accuracy", "target_confidence"):
        df[f"{col}_pct"] = 100.0 * df[col]
    return df


def population_variance(values) -> float:
    """Population variance (ddof 0) of a 1-D sequence: the paper's Table 1 'variance' row
    when the values are accuracies in percent (unit %^2)."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"values must be a non-empty 1-D sequence of finite numbers, got {v!r}")
    return float(np.mean((v - v.mean()) ** 2))


def table1_frame(runs: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Table 1 beside the paper's: rows 'run 1'..'run n', 'mean', 'variance (%^2)'; columns
    (classes, target, source) with source 'ours' or 'paper'; accuracies in percent.

    runs: `runs_frame` rows (arms one-hot/posterior are used). paper: kdlib.paper's
    "table1" (columns classes, target, run, test_accuracy). The paper prints the variance
    x100 with a '%' sign (179% = 1.79 %^2).
    """
    for col in ("classes", "arm", "run", "accuracy_pct"):
        if col not in runs.columns:
            raise ValueError(f"runs needs column {col!r} (from runs_frame)")
    cols = {}
    for classes in sorted(runs["classes"].unique()):
        for target in (ONE_HOT, POSTERIOR):
            ours = runs[(runs["classes"] == classes) & (runs["arm"] == target)]
            ours = ours.sort_values("run")["accuracy_pct"].to_numpy()
            theirs = paper[(paper["classes"] == classes) & (paper["target"] == target)]
            theirs = theirs.sort_values("run")["test_accuracy"].to_numpy(float)
            for source, vals in (("ours", ours), ("paper", theirs)):
                if vals.size:
                    cols[(int(classes), target, source)] = [*vals, vals.mean(),
                                                            population_variance(vals)]
    if not cols:
        raise ValueError("no one-hot/posterior runs to tabulate")
    n = max(len(v) for v in cols.values()) - 2
    index = [f"run {i + 1}" for i in range(n)] + ["mean", "variance (%^2)"]
    padded = {k: v[:-2] + [np.nan] * (n - len(v) + 2) + v[-2:] for k, v in cols.items()}
    frame = pd.DataFrame(padded, index=index)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["classes", "target",
                                                                    "source"])
    return frame


def table1_aligned(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1 aligned (`kdlib.paper.aligned_table`): per (classes, target) the paper's mean
    test accuracy over its five runs (percent), ours (mean +- sd over runs, n runs), the
    difference in points and the epoch reported (the last, as the paper). runs:
    `runs_frame` rows; the one-hot and posterior arms are used. The paper's own GMM is not
    published, so the difference compares two mixtures of similar Bayes accuracy."""
    from kdlib.paper import aligned_table, paper_table

    for col in ("classes", "arm", "run", "accuracy"):
        if col not in getattr(runs, "columns", []):
            raise ValueError(f"runs needs column {col!r} (from runs_frame)")
    ours = runs[runs["arm"].isin([ONE_HOT, POSTERIOR])].rename(columns={"arm": "target"})
    if ours.empty:
        raise ValueError("no one-hot/posterior runs to align with Table 1")
    paper = (paper_table("table1").groupby(["classes", "target"], as_index=False)
             ["test_accuracy"].mean())
    out = aligned_table(ours[["classes", "target", "run", "accuracy"]], paper,
                        ["classes", "target"], {"accuracy": "test_accuracy"},
                        seed_column="run")
    return out.rename(columns={"n seeds": "n runs"})


def headline_figures(runs: pd.DataFrame) -> dict:
    """The notebook's headline figures per task (kdlib.headline): the posterior minus the
    one-hot student's accuracy, paired by run, in points with its Student-t 95% interval,
    and both arms' population variance over runs (%^2, a number)."""
    from kdlib.analysis import mean_t_interval
    from kdlib.headline import number, points

    out = {}
    for classes, df in runs.groupby("classes"):
        a = df[df["arm"] == POSTERIOR].set_index("run")["accuracy"]
        b = df[df["arm"] == ONE_HOT].set_index("run")["accuracy"]
        d = (a - b).dropna().to_numpy(float)
        if d.size >= 2:
            mean, lo, hi = mean_t_interval(d)
            out[f"gmm{classes} posterior - one-hot"] = points(mean, lo, hi)
        elif d.size == 1:
            out[f"gmm{classes} posterior - one-hot"] = points(float(d[0]))
        for arm in (ONE_HOT, POSTERIOR):
            v = df[df["arm"] == arm]["accuracy_pct"]
            if len(v):
                out[f"gmm{classes} {arm} variance (%^2)"] = number(population_variance(v))
    return out


def arm_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task and arm: temperature, target ECE / confidence (%), student accuracy mean,
    population variance (%^2), std, min, max (%), ECE (%), agreement with the Bayes rule (%),
    Bayes accuracy (%) and the gap to it (percentage points)."""
    g = runs.groupby(["classes", "arm"], sort=False)
    out = g.agg(temperature=("temperature", "first"),
                target_ece_pct=("target_ece_pct", "first"),
                target_confidence_pct=("target_confidence_pct", "first"),
                accuracy_mean=("accuracy_pct", "mean"),
                accuracy_var=("accuracy_pct", population_variance),
                accuracy_std=("accuracy_pct", lambda v: float(np.std(v, ddof=0))),
                accuracy_min=("accuracy_pct", "min"), accuracy_max=("accuracy_pct", "max"),
                student_ece_pct=("ece_pct", "mean"),
                bayes_agreement_pct=("bayes_agreement_pct", "mean"),
                bayes_accuracy_pct=("bayes_accuracy_pct", "first"),
                runs=("run", "count"))
    out["gap_to_bayes"] = out["bayes_accuracy_pct"] - out["accuracy_mean"]
    return out.reset_index()


def paired_difference(runs: pd.DataFrame, arm: str = POSTERIOR, baseline: str = ONE_HOT
                      ) -> pd.DataFrame:
    """Per task: mean and std (ddof 1) over runs of accuracy(arm) - accuracy(baseline) in
    percentage points, paired by run (same initialization and batch order), and how many
    runs the arm wins."""
    out = []
    for classes, df in runs.groupby("classes"):
        a = df[df["arm"] == arm].set_index("run")["accuracy_pct"]
        b = df[df["arm"] == baseline].set_index("run")["accuracy_pct"]
        d = (a - b).dropna()
        if d.empty:
            continue
        out.append({"classes": int(classes), "arm": arm, "baseline": baseline,
                    "mean_diff": float(d.mean()),
                    "std_diff": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
                    "wins": int((d > 0).sum()), "runs": int(len(d))})
    return pd.DataFrame(out)


def calibration_correlations(runs: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Per task, over the posterior arms (posterior and tau=<t>; one-hot excluded):
    Spearman of target ECE vs student accuracy across the arms' run means, with a bootstrap
    interval over runs (kdlib.analysis.bootstrap_spearman), and the same for the target
    temperature vs student accuracy, to tell calibration apart from sharpness."""
    from kdlib.analysis import bootstrap_spearman

    out = []
    for classes, df in runs.groupby("classes"):
        df = df[df["arm"] != ONE_HOT]
        if df["arm"].nunique() < 3:
            continue
        row = {"classes": int(classes), "arms": int(df["arm"].nunique())}
        for x, label in (("target_ece", "ece"), ("temperature", "tau")):
            b = bootstrap_spearman(df, x, "accuracy", cell="arm", seed_col="run",
                                   n_boot=n_boot)
            row.update({f"rho_{label}_acc": b["rho"], f"lo_{label}": b["lo"],
                        f"hi_{label}": b["hi"]})
        out.append(row)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- plots' data


def plot_extent(gmm, margin_sigmas: float = 3.0) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) covering every class mean +- margin_sigmas standard
    deviations along each axis (2-D tasks only)."""
    if gmm.dim != 2:
        raise ValueError(f"decision regions need a 2-D task, got dim {gmm.dim}")
    sd = np.sqrt(np.diagonal(gmm.covariances, axis1=1, axis2=2))
    lo = (gmm.means - margin_sigmas * sd).min(0)
    hi = (gmm.means + margin_sigmas * sd).max(0)
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def decision_grids(record: dict, resolution: int = 200, arms=(ONE_HOT, POSTERIOR)) -> dict:
    """Class decisions over a resolution x resolution grid of the input plane.

    record: a "table1" sweep record (run_group's result with its cell keys). Returns
    {"extent": (xmin, xmax, ymin, ymax), "grids": {"<arm> (run 1)": H x W int array, ...,
    "Bayes rule": H x W}, "agreement": {panel: fraction of grid points agreeing with the
    Bayes rule}} with row 0 at ymin (imshow origin='lower').
    """
    from kdlib.batches import normalize
    from kdlib.gmm import gmm_preset
    from kdlib.models import build_model

    resolution = check_int(resolution, "resolution", minimum=2)
    gmm = gmm_preset(record["task"])
    extent = plot_extent(gmm)
    xs = np.linspace(extent[0], extent[1], resolution)
    ys = np.linspace(extent[2], extent[3], resolution)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    bayes = gmm.log_joint(pts).argmax(1).reshape(resolution, resolution)
    grids = {}
    xin = normalize(torch.from_numpy(pts), record.get("input_mean"), record.get("input_std"))
    for arm in arms:
        if arm not in record["weights_run0"]:
            raise ValueError(f"arm {arm!r} not in this record; it has "
                             f"{sorted(record['weights_run0'])}")
        state = {n: torch.tensor(v) for n, v in record["weights_run0"][arm].items()}
        model = build_model("mlp", gmm.num_classes, in_features=2,
                            hidden=tuple(record["hidden"]))
        model.load_state_dict(state)
        with torch.no_grad():
            grids[f"{arm} (run 1)"] = model(xin).argmax(1).numpy().reshape(resolution,
                                                                           resolution)
    grids["Bayes rule"] = bayes
    agreement = {k: float((v == bayes).mean()) for k, v in grids.items()}
    return {"extent": extent, "grids": grids, "agreement": agreement}


def claims(runs: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Table 1's claim as a kdlib.claims table, per task: the student trained on the exact
    posterior beats the one-hot student (accuracy difference in points, paired by run,
    Student-t 95% interval, n = runs; claimed > 0); and, over the posterior arms, the
    student's accuracy falls as the target's ECE rises (Spearman in percent, interval over
    runs, n = runs; claimed < 0). runs: runs_frame (classes, arm, run, accuracy_pct,
    accuracy, target_ece)."""
    from kdlib import claims as cl
    from kdlib.analysis import mean_t_interval

    need = ["classes", "arm", "run", "accuracy_pct", "accuracy", "target_ece"]
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"runs must be a DataFrame (runs_frame), got {type(runs).__name__}")
    missing = [c for c in need if c not in runs.columns]
    if missing:
        raise ValueError(f"columns {missing} missing; runs_frame has {need}")
    rows = []
    for classes, df in runs.groupby("classes"):
        a = df[df["arm"] == POSTERIOR].set_index("run")["accuracy_pct"]
        b = df[df["arm"] == ONE_HOT].set_index("run")["accuracy_pct"]
        d = (a - b).dropna().to_numpy(float)
        if d.size:
            mean, lo, hi = mean_t_interval(d)
            rows.append(cl.claim(f"posterior teacher beats one-hot labels ({classes} classes)",
                                 "Table 1: higher mean accuracy with the posterior",
                                 mean, lo, hi, d.size, "greater", unit=" pp"))
        post = df[df["arm"] != ONE_HOT]
        rows.append(cl.spearman_claim(
            post, "target_ece", "accuracy", f"student falls as target ECE rises ({classes} "
            "classes)", "Section 3.2: a better-calibrated teacher teaches better", "less",
            cell="arm", seed_col="run", n_boot=n_boot, scale=100, unit="%", digits=0))
    return cl.claims_table(rows)


# ----------------------------------------------------------------------------- plan (kdlib plan)

GMM_INPUT_FEATURES = 2  # the GMM tasks are 2-D (kdlib.gmm.gmm_preset)


def plan_runs(cfg: dict, scale: str | None = None) -> list:
    """Every training the preset needs (kdlib plan): one stacked student run per sweep cell
    (task, group), members = arms x runs, MLPs of `hidden` on n_train points for the
    recipe's epochs; no teacher network (the targets are the closed-form posterior). Keyed
    on what determines the weights (not device, threads or workers; the temperatures only
    for the tempered group); `done` when the sweep store holds the cell
    (`kdlib.experiments.common.stored_sweep_cells`). Nothing is loaded, trained or written."""
    from kdlib.experiments.common import stored_sweep_cells
    from kdlib.plan import PlannedRun, run_key
    from kdlib.recipe import recipe_from_spec

    cells = grid_cells(cfg)
    done = stored_sweep_cells(NAME, cfg, cells, grid_cells, NAME, scale)
    epochs = recipe_from_spec(cfg["recipe"]).epochs
    runs = []
    for c, d in zip(cells, done):
        arms = group_arms(c["group"], c["temperatures"])
        key = {k: v for k, v in c.items() if k not in ("device", "torch_threads", "workers")}
        if c["group"] != "tempered":
            key.pop("temperatures")
        runs.append(PlannedRun(
            "", "student", "mlp", c["task"], epochs, check_int(c["n_train"], "n_train",
                                                                minimum=1),
            key=run_key(experiment=NAME, **key), members=len(arms) * c["runs"], done=d,
            label=f"{c['task']} {c['group']}: {len(arms)} arms x {c['runs']} runs",
            model_kwargs={"in_features": GMM_INPUT_FEATURES, "hidden": list(c["hidden"])}))
    return runs
