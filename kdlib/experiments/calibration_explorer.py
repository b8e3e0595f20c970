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

Published teachers (RepDistiller/mdistiller CIFAR-100 files, `kdlib.published`): pass
``published={arch: path}`` to `run`/`teachers_logits`; a teacher of that arch in the preset
is then read from the file instead of trained (`kdlib.teachers.get_teacher(...,
pretrained=path)`, which also feeds it the published normalization), an arch the preset
lacks is added as "<arch> (published)". `teacher_sources` says which is which.

Tables (`presets.register(tables=...)`): "6", the teacher-ECE columns of the paper's
Table 6 (CIFAR-100 at paper scale; `table6_aligned` puts ours beside the paper's).
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
        "n_boot": 200,
        "torch_threads": 1,
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
        "n_boot": 1000,
        "torch_threads": 1,  # one thread: measured fastest for these on 2 shared cores
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
        "n_boot": 1000,
        "torch_threads": None,  # torch's own choice (a GPU run)
    },
}, tables={"6": ["teachers"]}, dry_run=lambda cfg: _dry_run(cfg))


def _dry_run(cfg: dict) -> dict:
    """The dry-run hook: every teacher's recipe (a preset name the generic cut cannot see)
    spelled out and cut to a few steps (`kdlib.dry_run.cut_recipe`); one torch thread (the
    dry run is a CPU check, where tiny batches run fastest on one thread)."""
    from kdlib.dry_run import cut_recipe

    out = dict(cfg, torch_threads=1)
    if out.get("teachers") is not None:
        out["teachers"] = [{**t, "recipe": cut_recipe(make_recipe(t["recipe"], t["arch"])
                                                      .to_dict())}
                           for t in out["teachers"]]
    return out


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


def load_teacher(data: dict, arch: str, recipe, seed: int = 0, progress: bool = False,
                 pretrained=None):
    """(model, record) of a cached teacher (trained on first use), or, with `pretrained`
    (the path of a published CIFAR teacher file), the published teacher registered in the
    cache (recipe and seed unused; the model takes kdlib-normalized batches)."""
    from kdlib.experiments.common import load_data, teacher_cache_dir
    from kdlib.teachers import get_teacher

    dataset = load_data(data)
    if pretrained is not None:
        return get_teacher(arch, dataset, cache_dir=teacher_cache_dir(), pretrained=pretrained)
    return get_teacher(arch, dataset, make_recipe(recipe, arch), seed,
                       cache_dir=teacher_cache_dir(), progress=progress)


def teacher_test_logits(data: dict, arch: str, recipe, seed: int = 0, progress: bool = False,
                        pretrained=None):
    """(test logits N x C float32 CPU tensor, test labels N int64, training record) of a
    cached (or, with `pretrained`, published) teacher."""
    from kdlib.experiments.common import load_data
    from kdlib.train import predict_logits

    model, record = load_teacher(data, arch, recipe, seed, progress, pretrained)
    dataset = load_data(data)
    return predict_logits(model, dataset), dataset.test_y.clone(), record


def teacher_calibration(name: str, data: dict, arch: str, recipe, seed: int,
                        temperature_range: list, n_temperatures: int, n_bins: int,
                        pretrained: str | None = None,
                        pretrained_sha256: str | None = None) -> dict:
    """Sweep cell: train (or load; `pretrained`: read the published file) one teacher and
    summarise its test-set calibration (calibration_summary plus the training seconds of
    the cached record, 0 for a published one). pretrained_sha256 only keys the cell to the
    file's contents."""
    del name, pretrained_sha256  # part of the cell only to label and key the record
    logits, labels, record = teacher_test_logits(data, arch, recipe, seed,
                                                 pretrained=pretrained)
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


def _check_published(published) -> dict:
    from pathlib import Path

    if published is None:
        return {}
    if not isinstance(published, dict):
        raise TypeError(f"published must be a dict {{arch: path of a published teacher "
                        f"file}}, got {type(published).__name__}")
    out = {}
    for arch, path in published.items():
        if not isinstance(arch, str) or not arch:
            raise TypeError(f"published keys must be architecture names such as 'resnet56', "
                            f"got {arch!r}")
        if not isinstance(path, (str, Path)) or not Path(path).is_file():
            raise FileNotFoundError(f"published[{arch!r}]: no teacher file at {path!r}")
        out[arch] = str(path)
    return out


def teacher_list(cfg: dict, published: dict | None = None) -> list[dict]:
    """The teachers of a run: cfg["teachers"] (None: none, the table is not run), each with
    "pretrained" = the file of published[arch] when there is one (read instead of
    trained); archs of `published` the preset lacks are appended as "<arch> (published)".
    Published teachers are CIFAR-100 ones: with published files, cfg["data"] must be
    cifar100 (ValueError otherwise)."""
    published = _check_published(published)
    teachers = [dict(t) for t in (cfg.get("teachers") or [])]
    if published and cfg["data"]["name"] != "cifar100":
        raise ValueError(f"published teachers are CIFAR-100 networks; this preset's data is "
                         f"{cfg['data']['name']!r} (run the paper scale, or pass "
                         "PUBLISHED_TEACHERS={})")
    if cfg.get("teachers") is None:
        return []
    for t in teachers:
        if t["arch"] in published:
            t["pretrained"] = published[t["arch"]]
    have = {t["arch"] for t in teachers}
    teachers += [{"name": f"{arch} (published)", "arch": arch, "recipe": None,
                  "pretrained": path} for arch, path in published.items() if arch not in have]
    return teachers


def teacher_sources(cfg: dict, published: dict | None = None):
    """Which teachers are published and which trained: DataFrame with teacher, arch,
    source ("published" / "trained"), file (published) and recipe (trained, as fields)."""
    import pandas as pd

    rows = []
    for t in teacher_list(cfg, published):
        pub = t.get("pretrained")
        rows.append({"teacher": t["name"], "arch": t["arch"],
                     "source": "published" if pub else "trained", "file": pub or "",
                     "recipe": "" if pub else str(make_recipe(t["recipe"], t["arch"])
                                                  .to_dict())})
    return pd.DataFrame(rows, columns=["teacher", "arch", "source", "file", "recipe"])


def grid(cfg: dict, published: dict | None = None) -> list[dict]:
    """One sweep cell per teacher of `teacher_list(cfg, published)`; published teachers'
    cells carry the file and its SHA-256 (so a changed file is a new cell); trained ones
    keep the keys they always had."""
    from kdlib.atomic import sha256_file

    keys = ("seed", "temperature_range", "n_temperatures", "n_bins")
    cells = []
    for t in teacher_list(cfg, published):
        cell = {"name": t["name"], "arch": t["arch"], "recipe": t["recipe"],
                "data": teacher_data(cfg, t), **{k: cfg[k] for k in keys}}
        if t.get("pretrained"):
            cell["pretrained"] = t["pretrained"]
            cell["pretrained_sha256"] = sha256_file(t["pretrained"])
        cells.append(cell)
    return cells


def skipped_tables(cfg: dict) -> list[tuple[str, str]]:
    """[(table, reason)] for the tables this run cannot compute: Table 6's teacher ECE
    when the data set is missing (naming the file to fetch) or no teachers are selected."""
    from kdlib.experiments.common import missing_data

    if cfg.get("teachers") is None:
        return [("6", "not selected")]
    reason = missing_data(cfg["data"])
    return [] if reason is None else [("6", reason)]


def run(cfg: dict, scale: str, progress: bool = True, published: dict | None = None):
    """Summaries of every teacher of `cfg` (resumable sweep) in the run's store
    (`store_path(NAME, scale, dry_run=cfg["dry_run"])`): DataFrame, one row per teacher in
    `teacher_list` order, with "source" (published / trained)."""
    from kdlib import sweep
    from kdlib.experiments.common import limited_threads, store_path

    cells = grid(cfg, published)
    with limited_threads(cfg.get("torch_threads")):  # CPU threads while teachers train
        results = sweep.run(teacher_calibration, cells,
                            store_path(NAME, scale, dry_run=cfg.get("dry_run", False)),
                            progress=progress)
    frame = results.to_frame()
    order = {c["name"]: i for i, c in enumerate(cells)}
    frame = frame.sort_values("name", key=lambda s: s.map(order)).reset_index(drop=True)
    frame["source"] = ["published" if isinstance(p, str) else "trained"
                       for p in frame.get("pretrained", [None] * len(frame))]
    return frame


def teachers_logits(cfg: dict, published: dict | None = None) -> dict:
    """{teacher name: (test logits, test labels)} for every teacher of
    `teacher_list(cfg, published)` (cached)."""
    from kdlib.experiments.common import limited_threads

    with limited_threads(cfg.get("torch_threads")):
        return {t["name"]: teacher_test_logits(teacher_data(cfg, t), t["arch"], t["recipe"],
                                               cfg["seed"], pretrained=t.get("pretrained"))[:2]
                for t in teacher_list(cfg, published)}


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


# --------------------------------------------------------------------------- paper and claims

# The paper's Table 6 teacher ECE (percent) at the temperatures the claims compare
PAPER_T6_EVIDENCE = {
    "over": "Table 6: ECE 12.04% at tau 1 vs 1.79% at 1.5 (ResNet56; 14.08/4.70 ResNet110, "
            "8.70/5.09 WRN-28-1)",
    "under": "Table 6: ECE 61.65% at tau 8 vs 12.04% at 1 (ResNet56; 61.12/14.08 ResNet110, "
             "59.83/8.70 WRN-28-1)",
}


def _signed_bin_gaps(logits, labels, temperature: float, n_bins: int):
    """(bin index N int64, correct - confidence N float64) of softmax(logits / T) with the
    equal-width ((m-1)/M, m/M] rule of kdlib.calibration (edges rounded to the probs' dtype,
    as `calibration.ece` does)."""
    probs = calibration.tempered_softmax(logits, temperature)
    conf, pred = probs.max(dim=1)
    inner = (torch.arange(n_bins + 1, dtype=torch.float64) / n_bins).to(conf.dtype)[1:-1]
    bins = torch.bucketize(conf.contiguous(), inner.contiguous(), right=False)
    gap = (pred == labels.to(pred.device)).double() - conf.double()
    return bins.cpu().numpy(), gap.cpu().numpy()


def ece_difference(logits, labels, t_from: float, t_to: float, n_bins: int = ECE_BINS,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """ECE(t_to) - ECE(t_from) of one teacher's N x C test logits (equal-width bins; a
    difference of fractions) with a percentile bootstrap interval over test samples (the
    same resampled samples at both temperatures; `n_boot` resamples, seeded).

    Returns {"estimate", "low", "high" (fractions), "n" (test samples), "ece_from",
    "ece_to"}; estimate equals calibration.ece at t_to minus at t_from exactly.
    """
    t_from = check_positive(t_from, "t_from")
    t_to = check_positive(t_to, "t_to")
    n_bins = check_int(n_bins, "n_bins", minimum=1)
    n_boot = check_int(n_boot, "n_boot", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if not 0 < float(level) < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    z, y = _logits_labels(logits, labels)
    n = int(z.shape[0]) if z.ndim == 2 else 0
    if n == 0:
        raise ValueError(f"logits must be a non-empty N x C matrix, got shape {tuple(z.shape)}")
    calibration.ece(calibration.tempered_softmax(z, t_from), y, n_bins)  # validates inputs
    # per temperature: N x M matrix of each sample's signed gap in its bin
    mats = []
    for t in (t_from, t_to):
        bins, gap = _signed_bin_gaps(z, y, t, n_bins)
        m = np.zeros((n, n_bins))
        m[np.arange(n), bins] = gap
        mats.append(m)
    eces = [float(np.abs(m.sum(0)).sum() / n) for m in mats]
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    chunk = max(1, (1 << 22) // n)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)  # b x N
        e_from = np.abs(w @ mats[0]).sum(1) / n
        e_to = np.abs(w @ mats[1]).sum(1) / n
        diffs[start:start + b] = e_to - e_from
    alpha = (1 - float(level)) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha])
    return {"estimate": eces[1] - eces[0], "low": float(low), "high": float(high), "n": n,
            "ece_from": eces[0], "ece_to": eces[1]}


def claims(logits_by_name: dict, n_bins: int = ECE_BINS, n_boot: int = 1000,
           seed: int = 0):
    """The paper's Table 6 teacher-column claims as a kdlib.claims table, per teacher:
    over-confident at tau = 1, i.e. ECE(1.5) - ECE(1) < 0; under-confident at large tau,
    i.e. ECE(8) - ECE(1) > 0. Each row: the difference in points with a 95% bootstrap
    interval over test samples (`ece_difference`), n = test samples. Verdict rule
    (`kdlib.claims.verdict`): holds when the whole interval lies on the claimed side of 0,
    does not hold when it lies wholly on the other, else inconclusive (also with n < 3).
    logits_by_name: {teacher: (test logits, test labels)}."""
    from kdlib import claims as cl

    if not isinstance(logits_by_name, dict):
        raise TypeError(f"logits_by_name must be a dict {{teacher: (logits, labels)}}, got "
                        f"{type(logits_by_name).__name__}")
    rows = []
    for name, (z, y) in logits_by_name.items():
        for key, t_to, kind, text in (
                ("over", 1.5, "less", f"{name}: ECE lower at tau 1.5 than at 1 "
                                      "(over-confident at 1)"),
                ("under", 8.0, "greater", f"{name}: ECE higher at tau 8 than at 1 "
                                          "(under-confident at large tau)")):
            d = ece_difference(z, y, 1.0, t_to, n_bins, n_boot, seed)
            rows.append(cl.claim(text, PAPER_T6_EVIDENCE[key], 100 * d["estimate"],
                                 100 * d["low"], 100 * d["high"], d["n"], kind,
                                 unit=" pp"))
    return cl.claims_table(rows)


def table6_aligned(logits_by_name: dict, teachers: list[dict], data_name: str,
                   seed: int = 0, n_bins: int = ECE_BINS):
    """Our teachers' ECE at the paper's Table 6 temperatures beside the paper's
    (`kdlib.paper.aligned_table`): one row per (teacher, tau) with the paper's percent, our
    mean +- sd over seeds (one seed here: sd NaN), n seeds, the difference in points and
    the epoch reported (last). Teachers are matched by architecture (`paper_name`); the
    paper's values are CIFAR-100 ones, so with another data set (`data_name`) the paper
    columns stay NaN rather than mixing data sets. teachers: `teacher_list` dicts."""
    import pandas as pd

    from kdlib.paper import PAPER_TEMPERATURES, aligned_table, paper_name, paper_table

    arch = {t["name"]: t["arch"] for t in teachers}
    missing = [n for n in logits_by_name if n not in arch]
    if missing:
        raise ValueError(f"teachers {missing} are not in the teacher list {list(arch)}")
    rows = []
    for name, (z, y) in logits_by_name.items():
        eces = calibration.ece_vs_temperature(z, y, PAPER_TEMPERATURES, n_bins)
        rows += [{"teacher": paper_name(arch[name]), "ours": name, "tau": float(t),
                  "seed": int(seed), "teacher_ece": float(e)}
                 for t, e in zip(PAPER_TEMPERATURES, eces)]
    ours = pd.DataFrame(rows)
    paper = paper_table("table6")[["teacher", "tau", "teacher_ece"]].drop_duplicates(
        ["teacher", "tau"])
    if data_name != "cifar100":
        paper = paper.assign(teacher_ece=np.nan)
    out = aligned_table(ours.drop(columns="ours"), paper, ["teacher", "tau"],
                        {"teacher_ece": "teacher_ece"})
    names = ours.drop_duplicates("teacher").set_index("teacher")["ours"]
    out.insert(1, "ours", out["teacher"].map(names))
    out.insert(0, "data", data_name)
    return out


def headline_figures(frame, teacher: str) -> dict:
    """The notebook's headline figures for one teacher as kdlib.headline figures:
    accuracy, ECE at tau = 1 and at the fitted T (percent), the fitted T (number)."""
    from kdlib.headline import number, percent

    rows = frame[frame["name"] == teacher]
    if rows.empty:
        raise ValueError(f"no teacher {teacher!r} in the results; have {list(frame['name'])}")
    row = rows.iloc[0]
    return {"teacher accuracy": percent(float(row["accuracy"])),
            "ECE at tau=1": percent(float(row["ece_t1"])),
            "fitted T": number(float(row["fitted_t"])),
            "ECE at fitted T": percent(float(row["ece_fit"]))}


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
    for t in cfg["teachers"] or []:
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
    order = {t["name"]: i for i, t in enumerate(cfg["teachers"] or [])}
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


# --------------------------------------------------------------------------- plan (kdlib plan)


def plan_runs(cfg: dict, scale: str | None = None) -> list:
    """Every training the preset needs (kdlib plan): one cached teacher per teacher of the
    preset, keyed like the teacher cache (`kdlib.plan.teacher_run`, so a teacher another
    notebook also asks for counts once); `done` when the sweep store holds its cell (the
    cell trained the teacher into the cache). Published teachers (a notebook parameter,
    not in the preset) are not seen here. Table 6 is left out when its data set is missing
    or it is not selected. Nothing is loaded, trained or written."""
    import dataclasses

    from kdlib.experiments.common import stored_sweep_cells
    from kdlib.plan import teacher_run

    if skipped_tables(cfg):
        return []
    cells = grid(cfg)
    done = stored_sweep_cells(NAME, cfg, cells, grid, None, scale)
    runs = [teacher_run(c["data"], c["arch"], make_recipe(c["recipe"], c["arch"]), c["seed"],
                        f"teacher {c['name']} ({c['arch']})") for c in cells]
    return [dataclasses.replace(r, done=r.done or d) for r, d in zip(runs, done, strict=True)]
