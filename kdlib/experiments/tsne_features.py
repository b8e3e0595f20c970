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
    df, embeddings = run(cfg, "default", taus)  # metrics per (seed, role); pictures
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from kdlib import presets
from kdlib._validate import as_tensor, check_int, check_positive
from kdlib.paper import PAPER_TEMPERATURES
from kdlib.recipe import recipe_from_spec

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
    },
})


# ------------------------------------------------------------------ the teacher


def load_teacher(data: dict, teacher: str, teacher_recipe, teacher_seed: int):
    """(Dataset, teacher model in eval mode, its record) from the on-disk teacher cache
    (trained on first use)."""
    from kdlib.experiments.common import load_data, teacher_cache_dir
    from kdlib.teachers import get_teacher

    d = load_data(data)
    model, record = get_teacher(teacher, d, recipe_from_spec(teacher_recipe),
                                seed=check_int(teacher_seed, "teacher_seed", minimum=0),
                                cache_dir=teacher_cache_dir(), progress=False)
    return d, model, record


# ------------------------------------------------------------------ features and metrics


@torch.no_grad()
def penultimate_features(model, data, batch_size: int = 1024, device="auto"):
    """Penultimate features of `model` (eval mode) on the normalized, unaugmented test split.

    data: a kdlib Dataset or DeviceData. Returns (features N x D float32, labels N int64),
    both CPU tensors, in test-set order. The model's train/eval mode is restored.
    """
    from kdlib.devices import resolve_device
    from kdlib.train import as_device_data

    batch_size = check_int(batch_size, "batch_size", minimum=1)
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.to(dev).eval()
    feats, labels = [], []
    try:
        for b in dd.test_batches(batch_size):
            out = model(b.x, return_features=True)
            feats.append(out[1].float().cpu())
            labels.append(b.y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def _check_features(features, min_points: int = 2) -> np.ndarray:
    x = as_tensor(features, "features")
    if x.dim() != 2:
        raise ValueError(f"features must be N x D, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.dtype.is_complex:
        raise TypeError(f"features must be real numbers, got {x.dtype}")
    x = x.detach().cpu().double().numpy()
    if len(x) < min_points:
        raise ValueError(f"need at least {min_points} points, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite (found NaN or inf)")
    return x


def _check_features_labels(features, labels, min_points: int = 2):
    x = _check_features(features, min_points)
    y = as_tensor(labels, "labels")
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or y.dtype.is_complex:
        raise TypeError(f"labels must be a 1-D integer array, got {y.dtype} with shape "
                        f"{tuple(y.shape)}")
    y = y.detach().cpu().long().numpy()
    if len(y) != len(x):
        raise ValueError(f"labels has {len(y)} entries but features has {len(x)} rows")
    if (y < 0).any():
        raise ValueError("labels must be >= 0")
    return x, y


def _check_k(k, n: int) -> int:
    return check_int(k, "k", minimum=1, maximum=n - 1)


def nearest_neighbours(features, k: int = 5, chunk: int = 1024) -> np.ndarray:
    """Indices (N x k int64) of each point's k nearest OTHER points (Euclidean), nearest
    first; equal distances are ordered by index. A point's exact duplicates count as
    neighbours (at distance 0); the point itself never does. Ties at the k-th distance
    are broken arbitrarily."""
    x = _check_features(features)
    n = len(x)
    k = _check_k(k, n)
    sq = (x * x).sum(1)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * x[start:stop] @ x.T
        np.maximum(d2, 0.0, out=d2)
        rows = np.arange(stop - start)
        d2[rows, rows + start] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        dist = np.take_along_axis(d2, part, axis=1)
        order = np.lexsort((part, dist), axis=1)  # by distance, then by index
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out


def _vote(neighbour_labels: np.ndarray) -> np.ndarray:
    """Plurality label of each row; a tie goes to the tied class met first (nearest)."""
    pred = np.empty(len(neighbour_labels), dtype=np.int64)
    for i, row in enumerate(neighbour_labels):
        counts = np.bincount(row)
        top = counts.max()
        pred[i] = next(c for c in row if counts[c] == top)
    return pred


def confused_mask(features, labels, k: int = 5) -> np.ndarray:
    """Boolean N-vector: True where fewer than k/2 of the point's k nearest other points
    (Euclidean) share its label (the points `confused_points` counts)."""
    x, y = _check_features_labels(features, labels)
    nb = nearest_neighbours(x, _check_k(k, len(x)))
    return 2 * (y[nb] == y[:, None]).sum(1) < k


def knn_accuracy(features, labels, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy in feature space (fraction in [0, 1]): each point is
    classified by the plurality label of its k nearest other points (Euclidean); a tie goes
    to the tied class whose member is nearest."""
    x, y = _check_features_labels(features, labels)
    nb = nearest_neighbours(x, _check_k(k, len(x)))
    return float((_vote(y[nb]) == y).mean())


def confused_points(features, labels, k: int = 5) -> int:
    """Number of points whose k nearest other points are mostly (more than k/2) from other
    classes, i.e. fewer than k/2 of them share the point's label."""
    return int(confused_mask(features, labels, k).sum())


def silhouette(features, labels) -> float:
    """Mean silhouette coefficient (Euclidean) of the classes, in [-1, 1]; needs 2 to N - 1
    distinct labels."""
    from sklearn.metrics import silhouette_score

    x, y = _check_features_labels(features, labels, min_points=3)
    n_labels = len(np.unique(y))
    if not 2 <= n_labels <= len(x) - 1:
        raise ValueError(f"silhouette needs between 2 and N - 1 = {len(x) - 1} distinct "
                         f"labels, got {n_labels}")
    return float(silhouette_score(x, y, metric="euclidean"))


def separation_ratio(features, labels) -> float:
    """Mean Euclidean distance between the class centroids (over all pairs of classes)
    divided by the mean distance of a point to its own class centroid. Scale-free; larger
    means classes further apart relative to their spread. Needs >= 2 classes."""
    x, y = _check_features_labels(features, labels)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"separation_ratio needs >= 2 classes, got {len(classes)}")
    centroids = np.stack([x[y == c].mean(0) for c in classes])
    index = np.searchsorted(classes, y)
    spread = np.linalg.norm(x - centroids[index], axis=1).mean()
    i, j = np.triu_indices(len(classes), 1)
    between = np.linalg.norm(centroids[i] - centroids[j], axis=1).mean()
    if spread == 0:
        return float("inf")
    return float(between / spread)


def feature_metrics(features, labels, k: int = 5) -> dict:
    """All feature-space metrics at once (the neighbours are searched once):
    {"knn_accuracy", "silhouette", "n_confused", "confused_fraction", "separation_ratio",
    "n"} as Python numbers."""
    x, y = _check_features_labels(features, labels, min_points=3)
    k = _check_k(k, len(x))
    nb = nearest_neighbours(x, k)
    same = (y[nb] == y[:, None]).sum(1)
    n_confused = int((2 * same < k).sum())
    return {"knn_accuracy": float((_vote(y[nb]) == y).mean()),
            "silhouette": silhouette(x, y),
            "n_confused": n_confused,
            "confused_fraction": n_confused / len(x),
            "separation_ratio": separation_ratio(x, y),
            "n": len(x)}


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
            "loss", "temperatures", "seeds", "embed_seeds", "k", "perplexity"]
    if not isinstance(cfg, dict):
        raise TypeError(f"cfg must be a dict from presets.get({NAME!r}, scale)")
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ValueError(f"config lacks {missing}; get one with presets.get({NAME!r}, scale)")
    if len(cfg["temperatures"]) < 2:
        raise ValueError("temperatures must list at least 2 values to choose from")
    for t in cfg["temperatures"]:
        check_positive(t, "temperature")
    if not cfg["seeds"]:
        raise ValueError("seeds must not be empty")
    unknown = [s for s in cfg["embed_seeds"] if s not in cfg["seeds"]]
    if unknown:
        raise ValueError(f"embed_seeds {unknown} are not in seeds {cfg['seeds']}")


def grid(cfg: dict, taus: dict) -> list[dict]:
    """One distill_and_measure cell per seed (both students of a seed in one cell)."""
    _check_cfg(cfg)
    if not isinstance(taus, dict) or set(taus) != set(ROLES):
        raise ValueError(f"taus must be a dict with keys {ROLES}, got {taus!r}")
    fixed = {k: cfg[k] for k in ("data", "teacher", "student", "teacher_recipe", "teacher_seed",
                                 "student_recipe", "loss", "k", "perplexity")}
    temps = {r: check_positive(taus[r], f"taus[{r!r}]") for r in ROLES}
    return [{**fixed, "temperatures": temps, "seed": check_int(s, "seed", minimum=0),
             "embed": s in cfg["embed_seeds"]} for s in cfg["seeds"]]


def distill_and_measure(data: dict, teacher: str, student: str, teacher_recipe,
                        teacher_seed: int, student_recipe, loss: str, temperatures: dict,
                        seed: int, k: int, perplexity: float, embed: bool) -> dict:
    """Distil the teacher into one student per role ({"calibrated": tau, ...}), stacked:
    same initialization (`seed`) and batch order. Measures each student's test accuracy,
    ECE and feature_metrics; with `embed`, also a 2-D t-SNE of its penultimate features.

    Returns {"students": [{"role", "temperature", "teacher_ece_at_tau", "accuracy", "ece",
    "agreement", **feature_metrics}, ...], "embeddings": {role: [[x, y], ...]} or {},
    "confused": {role: indices of the confused test points} or {}, "labels": test labels
    (list) or []}.
    """
    from kdlib.stacked import distill_stacked
    from kdlib.train import make_model
    from kdlib.tsne import tsne

    seed = check_int(seed, "seed", minimum=0)
    roles = [r for r in ROLES if r in temperatures]
    if set(temperatures) != set(ROLES):
        raise ValueError(f"temperatures must be {{role: tau}} for roles {ROLES}, "
                         f"got {temperatures!r}")
    d, t_model, _ = load_teacher(data, teacher, teacher_recipe, teacher_seed)
    students = [make_model(student, d, seed=seed) for _ in roles]
    specs = [{"loss": loss, "temperature": check_positive(temperatures[r], "temperature")}
             for r in roles]
    records = distill_stacked(students, t_model, d, specs, recipe_from_spec(student_recipe),
                              seed=seed, progress=False)
    rows, embeddings, confused, labels = [], {}, {}, []
    for role, model, rec in zip(roles, students, records):
        feats, y = penultimate_features(model, d)
        m = rec["metrics"]
        rows.append({"role": role, "temperature": float(temperatures[role]),
                     "teacher_ece_at_tau": float(m["teacher_ece_at_tau"]),
                     "accuracy": float(m["accuracy"]), "ece": float(m["ece"]),
                     "agreement": float(m["agreement"]),
                     **feature_metrics(feats, y, k)})
        if embed:
            xy = tsne(feats, perplexity=min(float(perplexity), (len(y) - 1) / 3), seed=seed)
            embeddings[role] = np.round(xy, 4).tolist()
            confused[role] = np.flatnonzero(confused_mask(feats, y, k)).tolist()
            labels = y.tolist()
    return {"students": rows, "embeddings": embeddings, "confused": confused, "labels": labels}


def run(cfg: dict, scale: str, taus: dict, progress: bool = True):
    """Run (or load from runs/<scale>/tsne_features.sqlite) every seed's students.

    Returns (df, embeddings): df has one row per (seed, role) with the columns of
    distill_and_measure's students; embeddings is {seed: {"labels": array N, role: N x 2
    array, role + "_confused": boolean N-mask}} for the embedded seeds.
    """
    from kdlib import sweep
    from kdlib.experiments.common import store_path

    cells = grid(cfg, taus)
    results = sweep.run(distill_and_measure, cells, store_path(NAME, scale), namespace=NAME,
                        progress=progress)
    rows, embeddings = [], {}
    for rec in results:
        for s in rec["students"]:
            rows.append({"seed": rec["seed"], **s})
        if rec["embeddings"]:
            labels = np.asarray(rec["labels"], dtype=np.int64)
            emb = {"labels": labels}
            for r, v in rec["embeddings"].items():
                emb[r] = np.asarray(v, dtype=float)
                emb[f"{r}_confused"] = np.isin(np.arange(len(labels)), rec["confused"][r])
            embeddings[rec["seed"]] = emb
    return pd.DataFrame(rows), embeddings


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
