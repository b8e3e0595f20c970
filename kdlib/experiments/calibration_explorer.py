"""Calibration explorer: how calibrated is a teacher, and how does temperature change that?

For a few teachers trained on the same data (teacher cache, `kdlib.teachers.get_teacher`),
the test logits give: a reliability diagram at tau = 1, ECE and NLL as functions of the
softmax temperature, the NLL-fitted temperature (`calibration.fit_temperature`) and the
metrics there. Everything is computed from cached test logits, so the interactive explorer
(`kdlib.widgets.CalibrationExplorer`) never re-runs a model.

Binning (`binning` arguments): "equal_width" is the paper's ((m-1)/M, m/M] rule
(`calibration.reliability_bins`); "equal_mass" sorts the samples by confidence (stable) and
puts the sample of rank r (0-based) in bin floor(r * M / N), as `calibration.adaptive_ece`
does, so its ECE equals adaptive_ece. ECE and MCE are fractions in [0, 1]; NLL in nats;
Brier score in [0, 2] (summed over classes); temperatures > 0.

Note on the fitted temperature: it is fitted on the same test logits it is evaluated on
(in-sample, the best temperature in hindsight). `cross_fitted_ece` gives the honest
counterpart: fit on one half of the test set, evaluate on the other, and vice versa.
"""

from __future__ import annotations

import numpy as np
import torch

from kdlib import calibration, presets
from kdlib._validate import as_tensor, check_choice, check_int, check_positive
from kdlib.calibration import (  # noqa: F401 (re-exported: widgets, plots, tests)
    BINNINGS,
    BinnedCalibration,
    adaptive_ece_vs_temperature,
    binned_calibration,
)

NAME = "calibration_explorer"
ECE_BINS = 15

# Teachers: {"name": shown in tables and the chooser, "arch": build_model name,
# "recipe": a Recipe preset name or {"preset": name, ...field changes} or {...all fields},
# optional "subset_train": train on that many of the training images (the test set stays)}.
presets.register(NAME, {
    "smoke": {
        "data": {"name": "digits", "seed": 0, "subset_train": 400, "subset_test": 200},
        "teachers": [
            {"name": "resnet8, 1 epoch", "arch": "resnet8",
             "recipe": {"preset": "smoke", "epochs": 1}},
            {"name": "resnet8, 2 epochs", "arch": "resnet8", "recipe": "smoke"},
        ],
        "seed": 0,
        "temperature_range": [0.25, 10.0],
        "n_temperatures": 25,
        "n_bins": 15,
        "headline_teacher": "resnet8, 2 epochs",
    },
    "default": {
        "data": {"name": "digits", "seed": 0},
        # under-confident (short), about calibrated (the default recipe), over-confident
        # (the default recipe on 250 of the 1,258 training images; same test set)
        "teachers": [
            {"name": "resnet8, 5 epochs", "arch": "resnet8",
             "recipe": {"preset": "default", "epochs": 5, "milestones": [3]}},
            {"name": "resnet20, 30 epochs", "arch": "resnet20", "recipe": "default"},
            {"name": "resnet20, 250 train images", "arch": "resnet20", "recipe": "default",
             "subset_train": 250},
        ],
        "seed": 0,
        "temperature_range": [0.25, 10.0],
        "n_temperatures": 61,
        "n_bins": 15,
        "headline_teacher": "resnet20, 30 epochs",
    },
    "paper": {
        "data": {"name": "cifar100", "seed": 0},
        "teachers": [
            {"name": "resnet56", "arch": "resnet56", "recipe": "paper"},
            {"name": "resnet110", "arch": "resnet110", "recipe": "paper"},
            {"name": "wrn_28_1", "arch": "wrn_28_1", "recipe": "paper"},
        ],
        "seed": 0,
        "temperature_range": [0.25, 10.0],
        "n_temperatures": 61,
        "n_bins": 15,
        "headline_teacher": "resnet56",
    },
})


# --------------------------------------------------------------------------- configuration


def make_recipe(spec, arch: str | None = None):
    """A Recipe from a preset spec: "default", {"preset": "default", "epochs": 2, ...}
    (a preset with some fields changed) or {"epochs": 5, "lr": 0.05, ...} (all fields)."""
    from kdlib.recipe import Recipe

    if isinstance(spec, Recipe):
        return spec
    if isinstance(spec, str):
        return Recipe.preset(spec, arch=arch)
    if not isinstance(spec, dict):
        raise TypeError(
            f"recipe spec must be a preset name or a dict, got {type(spec).__name__}"
        )
    spec = dict(spec)
    if "milestones" in spec:
        spec["milestones"] = tuple(spec["milestones"])
    name = spec.pop("preset", None)
    if name is None:
        return Recipe(**spec)
    return Recipe.preset(name, arch=arch, **spec)


def temperature_grid(t_min: float = 0.25, t_max: float = 10.0, num: int = 61) -> np.ndarray:
    """`num` log-spaced temperatures from t_min to t_max, plus 1.0 when it lies inside:
    sorted float64 array of length num or num + 1."""
    t_min = check_positive(t_min, "t_min")
    t_max = check_positive(t_max, "t_max")
    num = check_int(num, "num", minimum=2)
    if not t_min < t_max:
        raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")
    grid = np.geomspace(t_min, t_max, num)
    if t_min < 1.0 < t_max:
        grid = np.union1d(grid, [1.0])
    return grid


# --------------------------------------------------------------------------- binned statistics
# Reliability bins of either binning live in kdlib.calibration (BinnedCalibration,
# binned_calibration, equal_mass_bins); re-exported here for existing callers.


# --------------------------------------------------------------------------- metrics


def _logits_labels(logits, labels):
    z = as_tensor(logits, "logits").detach()
    if not z.dtype.is_floating_point:
        z = z.float()
    return z, as_tensor(labels, "labels")


def metrics_at_temperature(logits, labels, temperature: float = 1.0, n_bins: int = ECE_BINS,
                           binning: str = "equal_width") -> dict:
    """Metrics of softmax(logits / temperature): accuracy, ece, mce (with the given binning),
    nll (nats), brier, as Python floats, plus "bins" (a BinnedCalibration)."""
    temperature = check_positive(temperature, "temperature")
    z, y = _logits_labels(logits, labels)
    probs = calibration.tempered_softmax(z, temperature)
    bins = binned_calibration(probs, y, n_bins, binning)
    y = y.to(probs.device)
    return {
        "accuracy": float((probs.argmax(dim=1) == y).double().mean()),
        "ece": bins.ece,
        "mce": bins.mce,
        "nll": calibration.nll(probs, y),
        "brier": calibration.brier_score(probs, y),
        "bins": bins,
    }


def ece_curve(logits, labels, temperatures, n_bins: int = ECE_BINS,
              binning: str = "equal_width") -> np.ndarray:
    """ECE for each temperature with either binning: float64 array of shape (K,)."""
    if check_choice(binning, "binning", BINNINGS) == "equal_width":
        return calibration.ece_vs_temperature(logits, labels, temperatures, n_bins)
    return calibration.adaptive_ece_vs_temperature(logits, labels, temperatures, n_bins)


def cross_fitted_ece(logits, labels, n_bins: int = ECE_BINS, seed: int = 0) -> dict:
    """Honest ECE after temperature scaling: split the samples in two random halves (seeded);
    fit T on one half, measure the ECE of the other half at that T, and vice versa.

    Returns {"ece": sample-weighted mean of the two held-out ECEs, "temperatures": [T fitted
    on half A, T fitted on half B]}. Needs at least 2 samples.
    """
    z, y = _logits_labels(logits, labels)
    seed = check_int(seed, "seed", minimum=0)
    n = z.shape[0] if z.ndim else 0
    if n < 2:
        raise ValueError(f"cross_fitted_ece needs at least 2 samples, got {n}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).to(z.device)
    halves = (perm[: n // 2], perm[n // 2:])
    total, temps = 0.0, []
    for fit_idx, eval_idx in (halves, halves[::-1]):
        t = calibration.fit_temperature(z[fit_idx], y[fit_idx.to(y.device)])
        probs = calibration.tempered_softmax(z[eval_idx], t)
        total += len(eval_idx) * calibration.ece(probs, y[eval_idx.to(y.device)], n_bins)
        temps.append(t)
    return {"ece": total / n, "temperatures": temps}


def calibration_summary(logits, labels, temperatures, n_bins: int = ECE_BINS) -> dict:
    """Plain-value summary of one teacher's test logits (equal-width bins).

    Keys: accuracy; ece/mce/nll/brier at tau = 1 (suffix _t1) and at the fitted temperature
    (suffix _fit); fitted_t (NLL-optimal T on these logits); ece_min_t and ece_min (argmin and
    min of the ECE curve on the grid); ece_crossfit (see cross_fitted_ece); and the curves
    temperatures, ece_curve, nll_curve as lists.
    """
    z, y = _logits_labels(logits, labels)
    temps = [float(t) for t in temperatures]
    at1 = metrics_at_temperature(z, y, 1.0, n_bins)
    fitted_t = calibration.fit_temperature(z, y)
    atfit = metrics_at_temperature(z, y, fitted_t, n_bins)
    eces = calibration.ece_vs_temperature(z, y, temps, n_bins)
    nlls = calibration.nll_vs_temperature(z, y, temps)
    best = int(np.argmin(eces))
    out = {"accuracy": at1["accuracy"], "n_test": int(z.shape[0])}
    for key in ("ece", "mce", "nll", "brier"):
        out[f"{key}_t1"] = at1[key]
    out["fitted_t"] = float(fitted_t)
    for key in ("ece", "mce", "nll", "brier"):
        out[f"{key}_fit"] = atfit[key]
    out["ece_min_t"] = temps[best]
    out["ece_min"] = float(eces[best])
    out["ece_crossfit"] = float(cross_fitted_ece(z, y, n_bins)["ece"])
    out["temperatures"] = temps
    out["ece_curve"] = [float(v) for v in eces]
    out["nll_curve"] = [float(v) for v in nlls]
    return out


# --------------------------------------------------------------------------- teachers and sweep


def load_teacher(data: dict, arch: str, recipe, seed: int = 0, progress: bool = False):
    """(model, record) of a cached teacher (trained on first use)."""
    from kdlib.experiments.common import load_data, teacher_cache_dir
    from kdlib.teachers import get_teacher

    dataset = load_data(data)
    return get_teacher(arch, dataset, make_recipe(recipe, arch), seed,
                       cache_dir=teacher_cache_dir(), progress=progress)


def teacher_test_logits(data: dict, arch: str, recipe, seed: int = 0, progress: bool = False):
    """(test logits N x C float32 CPU tensor, test labels N int64, training record) of a
    cached teacher."""
    from kdlib.experiments.common import load_data
    from kdlib.train import predict_logits

    model, record = load_teacher(data, arch, recipe, seed, progress)
    dataset = load_data(data)
    return predict_logits(model, dataset), dataset.test_y.clone(), record


def teacher_calibration(name: str, data: dict, arch: str, recipe, seed: int,
                        temperature_range: list, n_temperatures: int, n_bins: int) -> dict:
    """Sweep cell: train (or load) one teacher and summarise its test-set calibration
    (calibration_summary plus the training seconds of the cached record)."""
    del name  # part of the cell only to label the record
    logits, labels, record = teacher_test_logits(data, arch, recipe, seed)
    temps = temperature_grid(*temperature_range, n_temperatures)
    out = calibration_summary(logits, labels, temps, n_bins)
    out["train_seconds"] = float(record.get("seconds", 0.0))
    return out


def teacher_data(cfg: dict, teacher: dict) -> dict:
    """The data spec a teacher trains on: cfg["data"] with the teacher's "subset_train"
    (if any) applied; the test split is the same for every teacher."""
    data = dict(cfg["data"])
    if teacher.get("subset_train") is not None:
        data["subset_train"] = check_int(teacher["subset_train"], "subset_train", minimum=10)
    return data


def grid(cfg: dict) -> list[dict]:
    """One sweep cell per teacher of a preset."""
    keys = ("seed", "temperature_range", "n_temperatures", "n_bins")
    return [{"name": t["name"], "arch": t["arch"], "recipe": t["recipe"],
             "data": teacher_data(cfg, t), **{k: cfg[k] for k in keys}}
            for t in cfg["teachers"]]


def run(cfg: dict, scale: str, progress: bool = True):
    """Summaries of every teacher of `cfg` (resumable sweep): DataFrame, one row per teacher
    in preset order."""
    from kdlib import sweep
    from kdlib.experiments.common import store_path

    results = sweep.run(teacher_calibration, grid(cfg), store_path(NAME, scale),
                        progress=progress)
    frame = results.to_frame()
    order = {t["name"]: i for i, t in enumerate(cfg["teachers"])}
    return frame.sort_values("name", key=lambda s: s.map(order)).reset_index(drop=True)


def teachers_logits(cfg: dict) -> dict:
    """{teacher name: (test logits, test labels)} for every teacher of `cfg` (cached)."""
    return {t["name"]: teacher_test_logits(teacher_data(cfg, t), t["arch"], t["recipe"],
                                           cfg["seed"])[:2]
            for t in cfg["teachers"]}


# --------------------------------------------------------------------------- tables

_TABLE_COLUMNS = {
    "name": "teacher", "accuracy": "acc %", "ece_t1": "ECE@1 %", "mce_t1": "MCE@1 %",
    "nll_t1": "NLL@1", "brier_t1": "Brier@1", "fitted_t": "fitted T", "ece_fit": "ECE@T %",
    "mce_fit": "MCE@T %", "nll_fit": "NLL@T", "brier_fit": "Brier@T",
    "ece_min_t": "argmin ECE T", "ece_min": "min ECE %", "ece_crossfit": "ECE@T 2-fold %",
}
_PERCENT = ("accuracy", "ece_t1", "mce_t1", "ece_fit", "mce_fit", "ece_min", "ece_crossfit")


def summary_table(frame, digits: int = 3):
    """The summary columns of `run`'s frame, fractions as percent, rounded, renamed."""
    cols = [c for c in _TABLE_COLUMNS if c in frame.columns]
    table = frame[cols].copy()
    for c in _PERCENT:
        if c in table:
            table[c] = 100.0 * table[c]
    num = table.select_dtypes("number").columns
    table[num] = table[num].round(digits)
    return table.rename(columns=_TABLE_COLUMNS).set_index("teacher")


def curves(frame) -> dict:
    """{teacher: {"temperatures", "ece", "nll", "fitted_t", "fitted_nll"}} from `run`'s
    frame, the input of plots.calibration.temperature_curves."""
    return {row["name"]: {"temperatures": row["temperatures"], "ece": row["ece_curve"],
                          "nll": row["nll_curve"], "fitted_t": row["fitted_t"],
                          "fitted_nll": row["nll_fit"]}
            for _, row in frame.iterrows()}


def metrics_table(logits_by_name: dict, temperatures: dict, n_bins: int = ECE_BINS,
                  binning: str = "equal_width", digits: int = 3):
    """Accuracy, ECE, MCE (percent), NLL, Brier of each teacher at its own temperature.

    logits_by_name: {teacher: (logits, labels)}; temperatures: {teacher: T} (a teacher not
    in it is evaluated at T = 1). DataFrame indexed by teacher.
    """
    import pandas as pd

    rows = []
    for name, (z, y) in logits_by_name.items():
        t = float(temperatures.get(name, 1.0))
        m = metrics_at_temperature(z, y, t, n_bins, binning)
        rows.append({"teacher": name, "T": t, "acc %": 100 * m["accuracy"],
                     "ECE %": 100 * m["ece"], "MCE %": 100 * m["mce"], "NLL": m["nll"],
                     "Brier": m["brier"]})
    return pd.DataFrame(rows).set_index("teacher").round(digits)


def paper_ece_comparison(logits_by_name: dict, n_bins: int = ECE_BINS, digits: int = 2):
    """ECE (percent) at the paper's Table 6 temperatures: the paper's CIFAR-100 teachers
    (columns "paper <teacher>") beside ours. DataFrame indexed by tau."""
    from kdlib.paper import paper_table

    table = paper_table("table6")
    paper = table.pivot_table(index="tau", columns="teacher", values="teacher_ece",
                              aggfunc="first")[list(dict.fromkeys(table["teacher"]))]
    paper.columns = [f"paper {c}" for c in paper.columns]
    taus = [float(t) for t in paper.index]
    for name, (z, y) in logits_by_name.items():
        paper[name] = 100 * calibration.ece_vs_temperature(z, y, taus, n_bins)
    return paper.round(digits)


def headline_figures(frame, teacher: str) -> dict:
    """The notebook's four headline numbers for one teacher: accuracy, ECE at tau = 1, fitted
    T, ECE at fitted T (fractions; T a float)."""
    rows = frame[frame["name"] == teacher]
    if rows.empty:
        raise ValueError(f"no teacher {teacher!r} in the results; have {list(frame['name'])}")
    row = rows.iloc[0]
    return {"teacher accuracy": float(row["accuracy"]),
            "ECE at tau=1": float(row["ece_t1"]), "fitted T": float(row["fitted_t"]),
            "ECE at fitted T": float(row["ece_fit"])}


# --------------------------------------------------------------------------- cached teachers


def _data_specs(node, found: list) -> list:
    """Every dict under a "data" key (with a "name") anywhere in a preset, in order."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, dict) and "name" in value:
                found.append(value)
            _data_specs(value, found)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _data_specs(value, found)
    return found


def scale_data_specs(scale: str) -> list[dict]:
    """The data sets of a scale: every "data" spec of every experiment's preset at `scale`
    (all kdlib.experiments modules are imported so that their presets are registered),
    plus this explorer's per-teacher training subsets; duplicates removed, order kept."""
    import importlib
    import pkgutil

    import kdlib.experiments as pkg

    if scale not in presets.SCALES:
        raise ValueError(f"scale must be one of {presets.SCALES}, got {scale!r}")
    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")
    specs = []
    for name in presets.experiments():
        cfg = presets.get(name, scale)
        specs += _data_specs(cfg, [])
        if name == NAME:
            specs += [teacher_data(cfg, t) for t in cfg["teachers"]]
    unique = {repr(sorted(s.items())): s for s in specs}
    return list(unique.values())


def cached_teachers(scale: str, cache_dir=None) -> list[dict]:
    """Every cached teacher (`<cache>/*/final.pt`) trained on a data set of `scale`; nothing
    is trained. One dict per teacher, sorted by name: "name" (this explorer's preset name
    when it is one of them, else "<arch> on <data>, <epochs> ep, seed <s> [<folder hash>]"),
    "arch", "accuracy" (test accuracy of its training record, fraction), "folder" (Path),
    "data" (the spec), "model_kwargs", "seed". This explorer's own teachers come first, in
    preset order. Data sets whose files are missing (CIFAR archives) are left out, and so
    are cache entries of an older cache format (get_teacher no longer uses them)."""
    import json
    from pathlib import Path

    from kdlib.checkpoint import CorruptCheckpointError, load_checkpoint
    from kdlib.experiments.common import load_data, teacher_cache_dir
    from kdlib.teachers import CACHE_FORMAT, dataset_fingerprint, teacher_key

    cache = Path(cache_dir) if cache_dir is not None else teacher_cache_dir()
    by_print = {}
    for spec in scale_data_specs(scale):
        try:
            by_print.setdefault(dataset_fingerprint(load_data(spec)), spec)
        except (FileNotFoundError, OSError):
            continue
    cfg = presets.get(NAME, scale)
    named = {}
    for t in cfg["teachers"]:
        try:
            data = load_data(teacher_data(cfg, t))
        except (FileNotFoundError, OSError):
            continue
        key = teacher_key(t["arch"], data, make_recipe(t["recipe"], t["arch"]), cfg["seed"])
        named[json.dumps(key, sort_keys=True)] = t["name"]
    out = []
    for final in sorted(cache.glob("*/final.pt")) if cache.is_dir() else []:
        try:
            ckpt = load_checkpoint(final)
            key, record = ckpt["key"], ckpt["record"]
        except (CorruptCheckpointError, KeyError, RuntimeError, OSError, TypeError):
            continue
        spec = by_print.get(key.get("data_fingerprint"))
        if spec is None or key.get("format") != CACHE_FORMAT:
            continue  # another scale's data, or a stale entry get_teacher no longer uses
        recipe = key["recipe"]
        ident = json.dumps(key, sort_keys=True)
        name = named.get(ident) or (f"{key['arch']} on {spec['name']}, {recipe['epochs']} ep, "
                                    f"seed {key['seed']} [{final.parent.name[-6:]}]")
        out.append({"name": name, "arch": key["arch"],
                    "accuracy": float(record["metrics"]["accuracy"]), "folder": final.parent,
                    "data": spec, "model_kwargs": key.get("model_kwargs") or {},
                    "seed": int(key["seed"])})
    order = {t["name"]: i for i, t in enumerate(cfg["teachers"])}
    return sorted(out, key=lambda e: (order.get(e["name"], len(order)), e["name"]))


def cached_teacher_logits(entry: dict):
    """(test logits N x C float32 CPU tensor, test labels N int64) of a `cached_teachers`
    entry, from its saved weights (no training)."""
    from kdlib.checkpoint import load_checkpoint
    from kdlib.experiments.common import load_data
    from kdlib.train import make_model, predict_logits

    if not isinstance(entry, dict) or not {"arch", "folder", "data", "seed"} <= set(entry):
        raise ValueError("entry must be a dict from cached_teachers (arch, folder, data, seed)")
    dataset = load_data(entry["data"])
    kwargs = {k: tuple(v) if isinstance(v, list) else v
              for k, v in entry.get("model_kwargs", {}).items()}
    model = make_model(entry["arch"], dataset, seed=entry["seed"], **kwargs)
    model.load_state_dict(load_checkpoint(entry["folder"] / "final.pt")["model"])
    return predict_logits(model.eval(), dataset), dataset.test_y.clone()
