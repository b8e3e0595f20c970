"""TAKD through the lens of calibration (paper section 4.1; Tables 2, 3 and 7).

A chain is teacher -> assistant -> student: the assistant is distilled from the teacher with
vanilla KD at temperature tau, then the student from the assistant at the same tau (alpha = 1,
no cross-entropy term, as in the paper). We record the assistant's test ECE at tau (ECE of
softmax(assistant_logits / tau)) and the student's test accuracy, and ask whether the
student's accuracy follows the assistant's calibration more closely than its size.

    cfg = presets.get(NAME, "default", select="", dry_run=False)
    df = run(cfg, "default")               # one row per (chain, tau, seed); fractions
    size_table(df, cfg["size_tau"])        # Table 2 analogue (percent, mean and std over seeds)
    claims(df, cfg["size_tau"], cfg["tau_chains"], cfg["tau_values"])

Tables (``presets.register(tables=...)``, selectable with ``SELECT="table=2"``):
    "2"  size_chains on `data` (CIFAR-100 at paper scale) at size_tau
    "7"  seed_chains on `data`: Table 7's WRN-28-4 groups (the paper's seeds 0, 1, 2, 5)
    "3"  tau_chains on `tau_data` (Tiny-ImageNet at paper scale) at every tau of tau_values
A table whose data set is missing is skipped (`skipped_tables`), the others still run.

Assistants are trained once per (data, teacher, assistant, tau, seed, recipes) and kept in
an assistant cache (`get_assistant`: weights and test logits under data/assistants/), so
every chain that shares an assistant - a Table 2 chain and a Table 7 chain, a size chain and
the tau chain at size_tau - reuses it. Each student keeps its final weights and test logits
there too (data/assistants/students/), so later analyses never retrain.

Recipe. The paper states no CIFAR recipe for Tables 2, 3 and 7 and none of their numbers is
tied to an epoch, so the paper preset uses the CRD/RepDistiller recipe (240 epochs, lr 0.05,
/10 at 150, 180, 210, batch 64): its teachers are the same cache entries as the other
notebooks' paper teachers (ResNet-110 etc.), so they are trained once. The default preset
uses the default teacher of early_stopped_teacher (one cached digits teacher for both).

Table 3's blank assistant. The paper's Table 3 leaves the assistant of its WRN-28-3 ->
WRN-28-1 rows blank. Its caption ("TAKD performance by different calibration of fixed
assistant models") and text ("we keep the teacher-assistant-student pair fixed" and change
only tau) say those rows are TAKD chains with an assistant, not plain KD. We read the blank
as WRN-28-2: the assistant the paper pairs with the WRN-28-3 teacher in Table 2, and the only
member of the WRN-28 family between WRN-28-3 and WRN-28-1. The claim tested on Table 3 (a
higher tau raises the assistant's ECE and lowers the student's accuracy) compares a chain with
itself at two taus, so it does not depend on which assistant it was.

Groups with two assistants (Table 7, Table 2's WRN-22-1 rows) are analysed by paired
differences (larger minus smaller assistant, paired by seed: `assistant_pair_differences`),
and the chain-level Spearman correlates every (assistant, seed) point. A chain with assistant
None is plain KD from the teacher (the baseline TAKD should beat); its "assistant" columns
then describe the teacher. All metrics are fractions in [0, 1] unless a table says percent.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from kdlib import presets
from kdlib._validate import check_int, check_positive
from kdlib.analysis import bootstrap_spearman, paired_difference, spearman, spearman_rows
from kdlib.experiments.common import limited_threads
from kdlib.experiments.early_stopped_teacher import DEFAULT_FULL_RECIPE
from kdlib.recipe import recipe_from_spec

NAME = "teacher_assistant"

CRD_RECIPE = {"epochs": 240, "batch_size": 64, "lr": 0.05, "milestones": [150, 180, 210],
              "checkpoint_every": 10}
"""The CRD/RepDistiller CIFAR recipe (Tian et al., 2020): 240 epochs, lr 0.05 divided by 10
at epochs 150, 180 and 210, batch 64, weight decay 5e-4. Not stated by the paper."""

TABLE3_BLANK_ASSISTANT = "wrn_28_2"
"""Our reading of the blank assistant of the paper's Table 3 (WRN-28-3 -> ? -> WRN-28-1)."""

_DIGITS = {"name": "digits", "seed": 0}
_DIGITS_TEACHER_RECIPE = DEFAULT_FULL_RECIPE  # one cached teacher with early_stopped_teacher


def chain(teacher: str, assistant: str | None, student: str) -> dict:
    """A chain dict with its selection name "teacher->assistant->student" ("none" for plain
    KD): ``chain("wrn_28_3", "wrn_28_2", "resnet14")``."""
    a = "none" if assistant is None else assistant
    return {"name": f"{teacher}->{a}->{student}", "teacher": teacher, "assistant": assistant,
            "student": student}


presets.register(NAME, {
    "smoke": {
        "data": {"name": "digits", "seed": 0, "subset_train": 300, "subset_test": 200},
        "tau_data": {"name": "digits", "seed": 0, "subset_train": 300, "subset_test": 200},
        "teacher_recipe": {"epochs": 2, "batch_size": 64},
        "distill_recipe": {"epochs": 1, "batch_size": 64},
        "teacher_seed": 0,
        "size_tau": 1.8,
        "size_chains": [chain("resnet8", "resnet8", "resnet8"),
                        chain("resnet8", "wrn_10_1", "resnet8"),
                        chain("resnet8", "resnet14", "resnet8"),
                        chain("resnet8", None, "resnet8")],
        "seed_chains": [chain("resnet8", "resnet8", "wrn_10_1"),
                        chain("resnet8", "resnet14", "wrn_10_1")],
        "tau_chains": [chain("resnet8", "resnet8", "resnet8")],
        "tau_values": [1.8, 4.0],
        "seeds": [0],
        "n_boot": 200,
        "torch_threads": 1,
    },
    "default": {
        "data": _DIGITS,
        "tau_data": _DIGITS,
        "teacher_recipe": _DIGITS_TEACHER_RECIPE,
        "distill_recipe": {"epochs": 15, "lr": 0.05, "milestones": [9, 11, 13]},
        "teacher_seed": 0,
        "size_tau": 1.8,
        # assistants of 272k, 175k, 175k and 78k parameters between a 691k teacher and a
        # 78k student; assistant None = plain KD from the teacher (the baseline)
        "size_chains": [chain("wrn_16_2", "resnet20", "resnet8"),
                        chain("wrn_16_2", "resnet14", "resnet8"),
                        chain("wrn_16_2", "wrn_16_1", "resnet8"),
                        chain("wrn_16_2", "wrn_10_1", "resnet8"),
                        chain("wrn_16_2", None, "resnet8")],
        "seed_chains": [],
        "tau_chains": [chain("wrn_16_2", "resnet14", "resnet8")],
        "tau_values": [1.8, 4.0],
        "seeds": [0, 1, 2],
        "n_boot": 2000,
        "torch_threads": 1,
    },
    "paper": {
        "data": {"name": "cifar100", "seed": 0},
        "tau_data": {"name": "tinyimagenet", "seed": 0},
        "teacher_recipe": CRD_RECIPE,
        "distill_recipe": {**CRD_RECIPE, "checkpoint_every": 0},
        "teacher_seed": 0,
        "size_tau": 1.8,
        # Table 2 (WRN-28-3 and ResNet-110 teachers)
        "size_chains": [chain("wrn_28_3", "resnet110", "resnet14"),
                        chain("wrn_28_3", "wrn_28_2", "resnet14"),
                        chain("wrn_28_3", "wrn_28_1", "resnet14"),
                        chain("resnet110", "resnet56", "resnet14"),
                        chain("resnet110", "resnet32", "resnet14"),
                        chain("resnet110", "resnet20", "resnet14"),
                        chain("wrn_28_3", "wrn_28_2", "wrn_22_1"),
                        chain("wrn_28_3", "wrn_28_1", "wrn_22_1")],
        # Table 7 (WRN-28-4 teacher, several seeds)
        "seed_chains": [chain("wrn_28_4", "wrn_28_2", "wrn_22_1"),
                        chain("wrn_28_4", "wrn_28_1", "wrn_22_1"),
                        chain("wrn_28_4", "wrn_28_2", "resnet14"),
                        chain("wrn_28_4", "wrn_28_1", "resnet14")],
        # Table 3 (Tiny-ImageNet); the blank assistant of its second chain read as WRN-28-2
        "tau_chains": [chain("wrn_16_3", "resnet32", "wrn_16_1"),
                       chain("wrn_28_3", TABLE3_BLANK_ASSISTANT, "wrn_28_1")],
        "tau_values": [1.8, 4.0],
        "seeds": [0, 1, 2, 5],
        "n_boot": 2000,
        "torch_threads": None,  # torch's own choice on the GPU machine
    },
}, tables={"2": ["size_chains"], "7": ["seed_chains"], "3": ["tau_chains"]},
    dry_run=lambda cfg: dict(cfg, torch_threads=1))  # the dry run is a CPU check

TABLE_DATA = {"2": "data", "7": "data", "3": "tau_data"}
"""Which data spec of the preset each table runs on."""
TABLE_CHAINS = {"2": "size_chains", "7": "seed_chains", "3": "tau_chains"}


# ------------------------------------------------------------------ configuration helpers


def _check_chain(item) -> dict:
    if not isinstance(item, dict) or not {"teacher", "assistant", "student"} <= set(item) \
            or not set(item) <= {"name", "teacher", "assistant", "student"}:
        raise ValueError(f"a chain must be a dict with keys teacher, assistant, student (and "
                         f"optionally name), got {item!r}")
    for role in ("teacher", "student"):
        if not isinstance(item[role], str):
            raise TypeError(f"chain {role} must be an architecture name, got {item[role]!r}")
    if item["assistant"] is not None and not isinstance(item["assistant"], str):
        raise TypeError(f"chain assistant must be an architecture name or None, "
                        f"got {item['assistant']!r}")
    return {k: item[k] for k in ("teacher", "assistant", "student")}


def _chains(cfg: dict, key: str) -> list[dict]:
    """The chains of cfg[key]; None (a table not selected) or a missing key -> []."""
    return list(cfg.get(key) or [])


def skipped_tables(cfg: dict) -> list[tuple[str, str]]:
    """[(table, reason)] for every table of `cfg` that will not run: its data set is missing
    from the data folder (the reason names the file to fetch) or the selection left it out
    (its chains are None or empty). Tables in the order 2, 7, 3."""
    from kdlib.experiments.common import missing_data

    out = []
    for table, key in TABLE_CHAINS.items():
        if not _chains(cfg, key):
            if cfg.get(key) is None:
                out.append((table, "not selected"))
            continue
        why = missing_data(cfg[TABLE_DATA[table]])
        if why:
            out.append((table, why))
    return out


def build_grid(cfg: dict) -> list[dict]:
    """The sweep cells of a config: every size and seed chain at size_tau on `data`, and
    every tau chain at each of tau_values on `tau_data`, times seeds, for the tables whose
    data set is present (`skipped_tables`). Duplicates (a tau chain at size_tau on the same
    data, a Table 7 chain that is also a Table 2 chain) appear once."""
    need = ["data", "tau_data", "teacher_recipe", "distill_recipe", "teacher_seed", "size_tau",
            "size_chains", "seed_chains", "tau_chains", "tau_values", "seeds"]
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ValueError(f"config lacks {missing}; get one with presets.get({NAME!r}, scale)")
    seeds = [check_int(s, "seed", minimum=0) for s in cfg["seeds"]]
    if not seeds:
        raise ValueError("seeds must not be empty")
    skip = {t for t, _ in skipped_tables(cfg)}
    common = {"teacher_recipe": cfg["teacher_recipe"], "distill_recipe": cfg["distill_recipe"],
              "teacher_seed": check_int(cfg["teacher_seed"], "teacher_seed", minimum=0)}
    size_tau = check_positive(cfg["size_tau"], "size_tau")
    todo = []
    for table in ("2", "7"):
        if table not in skip:
            todo += [(cfg["data"], _check_chain(c), size_tau)
                     for c in _chains(cfg, TABLE_CHAINS[table])]
    if "3" not in skip:
        todo += [(cfg["tau_data"], _check_chain(c), check_positive(t, "tau"))
                 for c in _chains(cfg, "tau_chains") for t in cfg["tau_values"]]
    grid, seen = [], set()
    for data, ch, tau in todo:
        for seed in seeds:
            cell = {"data": data, **ch, "tau": tau, "seed": seed, **common}
            key = json.dumps(cell, sort_keys=True)
            if key not in seen:
                seen.add(key)
                grid.append(cell)
    return grid


def assistant_keys(grid: list[dict]) -> list[dict]:
    """The distinct assistants a grid needs (one per data, teacher, assistant, tau, seed and
    recipes): what `get_assistant` trains once and every chain reuses."""
    out, seen = [], set()
    for cell in grid:
        if cell["assistant"] is None:
            continue
        key = {k: cell[k] for k in ("data", "teacher", "assistant", "tau", "seed",
                                    "teacher_recipe", "distill_recipe", "teacher_seed")}
        s = json.dumps(key, sort_keys=True)
        if s not in seen:
            seen.add(s)
            out.append(key)
    return out


# ------------------------------------------------------------------ the work


def assistant_cache_dir():
    """data/assistants/ of the project folder (kdlib.experiments.common.data_root)."""
    from kdlib.experiments.common import data_root

    return data_root() / "assistants"


def _key_path(kind: str, key: dict, create: bool = True):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = assistant_cache_dir() / kind
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest}.pt"


def _load_cached(path, key: dict):
    """The cached {"model", "logits", "key"} at `path` if it holds `key`, else None (a
    damaged file is moved aside with a warning, then retrained)."""
    import warnings

    from kdlib.checkpoint import CorruptCheckpointError, load_checkpoint, move_aside

    if not path.exists():
        return None
    try:
        ckpt = load_checkpoint(path, require_hash=True)
        if ckpt.get("key") != key:
            raise CorruptCheckpointError(f"{path} was written for another configuration")
        return ckpt
    except CorruptCheckpointError as err:
        moved = move_aside(path)
        warnings.warn(f"cached model {path} is unusable ({err}); moved aside to "
                      f"{moved.name}, retraining", stacklevel=3)
        return None


_TEACHERS: dict = {}
"""(data, teacher model, test logits) per (project folder, data, teacher, recipe, seed) in
this process: the chains of a sweep load each cached teacher and its test logits once."""


def _teacher_and_data(data: dict, teacher: str, teacher_recipe, teacher_seed: int):
    from kdlib.experiments.common import load_data, teacher_cache_dir
    from kdlib.teachers import get_teacher
    from kdlib.train import predict_logits

    key = json.dumps([str(teacher_cache_dir()), data, teacher, teacher_recipe, teacher_seed],
                     sort_keys=True)
    if key not in _TEACHERS:
        d = load_data(data)
        t_model, _ = get_teacher(teacher, d, recipe_from_spec(teacher_recipe),
                                 seed=teacher_seed, cache_dir=teacher_cache_dir(),
                                 progress=False)
        if len(_TEACHERS) >= 8:
            _TEACHERS.pop(next(iter(_TEACHERS)))
        _TEACHERS[key] = (d, t_model, predict_logits(t_model, d))
    return _TEACHERS[key]


def get_assistant(data: dict, teacher: str, assistant: str, tau: float, seed: int,
                  teacher_recipe, distill_recipe, teacher_seed: int = 0):
    """(assistant module (eval), its test logits N_test x C) distilled from the cached
    teacher with KD at `tau` (alpha = 1) from init and batch order `seed`; trained on first
    use and cached under data/assistants/assistants/ keyed on all the arguments (weights
    and logits, kdlib.checkpoint: atomic, SHA-256, weights_only)."""
    from kdlib.checkpoint import save_atomic
    from kdlib.train import distill, make_model, predict_logits

    tau = check_positive(tau, "tau")
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(assistant, str):
        raise TypeError(f"assistant must be an architecture name, got {assistant!r}")
    key = {"data": data, "teacher": teacher, "assistant": assistant, "tau": float(tau),
           "seed": seed, "teacher_recipe": teacher_recipe, "distill_recipe": distill_recipe,
           "teacher_seed": int(teacher_seed)}
    d, t_model, t_logits = _teacher_and_data(data, teacher, teacher_recipe, teacher_seed)
    path = _key_path("assistants", key)
    model = make_model(assistant, d, seed=seed)
    ckpt = _load_cached(path, key)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        return model.eval(), ckpt["logits"]
    distill(model, t_model, d, "kd", tau, recipe_from_spec(distill_recipe), seed=seed,
            progress=False, eval_every=0, teacher_logits=t_logits)
    logits = predict_logits(model, d)
    save_atomic({"model": model.state_dict(), "logits": logits, "key": key}, path)
    return model.eval(), logits


def run_chain(data: dict, teacher: str, assistant: str | None, student: str, tau: float,
              seed: int, teacher_recipe, distill_recipe, teacher_seed: int = 0) -> dict:
    """One TAKD chain: teacher (cached) -> assistant (KD at tau, cached: `get_assistant`)
    -> student (KD at tau; its weights and test logits kept under data/assistants/students/).

    seed: the assistant's and the student's initialization and batch order. assistant None:
    the student learns from the teacher directly (plain KD). Returns plain floats (fractions):
    teacher_*, assistant_* (the teacher's own numbers when assistant is None) and student_*;
    *_ece is at T = 1, *_ece_at_tau at tau; *_params are parameter counts.
    """
    from kdlib.calibration import ece, tempered_softmax
    from kdlib.checkpoint import save_atomic
    from kdlib.models import count_parameters
    from kdlib.train import ECE_BINS, classification_metrics, distill, make_model

    tau = check_positive(tau, "tau")
    seed = check_int(seed, "seed", minimum=0)
    d, t_model, t_logits = _teacher_and_data(data, teacher, teacher_recipe, teacher_seed)
    labels = d.test_y.cpu()

    def describe(role, model, logits):
        m = classification_metrics(logits, labels)
        return {f"{role}_params": int(count_parameters(model)),
                f"{role}_accuracy": m["accuracy"], f"{role}_ece": m["ece"], f"{role}_nll": m["nll"],
                f"{role}_ece_at_tau": float(ece(tempered_softmax(logits, tau), labels,
                                                n_bins=ECE_BINS))}

    out = describe("teacher", t_model, t_logits)
    if assistant is None:
        a_model, a_logits = t_model, t_logits
    else:
        a_model, a_logits = get_assistant(data, teacher, assistant, tau, seed, teacher_recipe,
                                          distill_recipe, teacher_seed)
    out.update(describe("assistant", a_model, a_logits))
    s_model = make_model(student, d, seed=seed)
    rec = distill(s_model, a_model, d, "kd", tau, recipe_from_spec(distill_recipe), seed=seed,
                  progress=False, eval_every=0, teacher_logits=a_logits)
    key = {"data": data, "teacher": teacher, "assistant": assistant, "student": student,
           "tau": float(tau), "seed": seed, "teacher_recipe": teacher_recipe,
           "distill_recipe": distill_recipe, "teacher_seed": int(teacher_seed)}
    from kdlib.train import predict_logits

    save_atomic({"model": s_model.state_dict(), "logits": predict_logits(s_model, d),
                 "key": key}, _key_path("students", key))
    m = rec["metrics"]
    out.update({"student_params": int(count_parameters(s_model)),
                "student_accuracy": m["accuracy"], "student_ece": m["ece"],
                "student_nll": m["nll"], "student_agreement": m["agreement"]})
    return {k: (v if isinstance(v, int) else float(v)) for k, v in out.items()}


def run(cfg: dict, scale: str, progress: bool = True) -> pd.DataFrame:
    """Run (or load) every cell of build_grid(cfg) through the sweep store of `scale` (its
    dry-run store when cfg["dry_run"]); one row per cell with the cell's keys, the results
    of run_chain, `dataset` and `assistant_name` ("none" for plain KD). Tables whose data
    set is missing are left out (`skipped_tables`)."""
    from kdlib import sweep
    from kdlib.experiments.common import store_path

    grid = build_grid(cfg)
    cols = ["data", "teacher", "assistant", "student", "tau", "seed"]
    if not grid:
        return tidy(pd.DataFrame(columns=cols))
    store = store_path(NAME, scale, dry_run=bool(cfg.get("dry_run", False)))
    with limited_threads(cfg.get("torch_threads")):
        results = sweep.run(run_chain, grid, store, progress=progress)
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


chain_rows = tau_table_rows
"""The rows of a frame that belong to one of a list of chains (any tau, any seed)."""


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
    idx = np.empty((n_boot, x.size), dtype=np.int64)
    for b in range(n_boot):  # one draw per replicate, in the order of a plain loop
        idx[b] = rng.integers(0, x.size, x.size)
    reps = spearman_rows(x[idx], y[idx])
    reps = reps[np.isfinite(reps)]
    if reps.size:
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


def tau_effect(df: pd.DataFrame, tau_chains: list[dict], low: float, high: float,
               level: float = 0.95) -> pd.DataFrame:
    """Student accuracy at tau `high` minus at tau `low` for each tau chain, paired by seed,
    in percentage points (paired_difference): diff, std, lo, hi, n."""
    t = tau_table_rows(df, tau_chains).assign(pct=lambda x: 100 * x["student_accuracy"])
    t = t[np.isclose(t["tau"], low) | np.isclose(t["tau"], high)]
    t = t.assign(which=np.where(np.isclose(t["tau"], high), "high", "low"))
    return paired_difference(t, "pct", "which", "high", "low",
                             groups=["teacher", "assistant_name", "student"], level=level)


def assistant_pair_differences(df: pd.DataFrame, size_tau: float,
                               level: float = 0.95) -> pd.DataFrame:
    """The largest minus the smallest assistant of each (dataset, teacher, student) group at
    `size_tau`, paired by seed (the same seed sets both chains' initialization and batches),
    in percentage points: for the assistant's ECE at tau (`metric` "assistant ECE at tau";
    the paper claims < 0: larger assistant, better calibrated) and for the student's accuracy
    ("student accuracy"). Works for groups of two assistants (Table 7, Table 2's WRN-22-1
    rows). Columns: dataset, teacher, student, larger, smaller, metric, diff, std, lo, hi, n
    (seeds; t-interval from kdlib.analysis.paired_difference). Plain KD is left out."""
    _require(df, CHAIN + ["seed", "assistant_params", "assistant_ece_at_tau",
                          "student_accuracy"])
    sub = df[np.isclose(df["tau"], size_tau) & (df["assistant_name"] != "none")]
    rows = []
    cols = ["dataset", "teacher", "student", "larger", "smaller", "metric", "diff", "std",
            "lo", "hi", "n"]
    for (ds, t, s), g in sub.groupby(["dataset", "teacher", "student"], sort=True):
        sizes = g.groupby("assistant_name")["assistant_params"].first().sort_values()
        if len(sizes) < 2:
            continue
        big, small = sizes.index[-1], sizes.index[0]
        for metric, col in (("assistant ECE at tau", "assistant_ece_at_tau"),
                            ("student accuracy", "student_accuracy")):
            h = g.assign(pct=100 * g[col])
            d = paired_difference(h, "pct", "assistant_name", big, small, level=level)
            if d.empty:
                continue
            r = d.iloc[0]
            rows.append({"dataset": ds, "teacher": t, "student": s, "larger": big,
                         "smaller": small, "metric": metric, "diff": r["diff"],
                         "std": r["std"], "lo": r["lo"], "hi": r["hi"], "n": int(r["n"])})
    return pd.DataFrame(rows, columns=cols)


def _paper_arch(name) -> str:
    from kdlib.paper import paper_name

    return "none" if name in (None, "none") else paper_name(str(name))


def _paper_names(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["teacher"] = [_paper_arch(v) for v in out["teacher"]]
    out["student"] = [_paper_arch(v) for v in out["student"]]
    out["assistant"] = [_paper_arch(v) for v in out["assistant_name"]]
    return out


ALIGNED_METRICS = {"assistant_ece_at_tau": "assistant_ece", "student_accuracy":
                   "student_accuracy"}


def aligned_table2(df: pd.DataFrame, size_tau: float, dataset: str) -> pd.DataFrame:
    """Table 2 aligned (kdlib.paper.aligned_table): our assistant ECE at tau and student
    accuracy (mean, sd, n seeds) beside the paper's, per (teacher, assistant, student) at
    `size_tau` on `dataset` only, names in the paper's spelling; plain KD left out."""
    from kdlib.paper import aligned_table, paper_table

    _require(df, CHAIN + ["seed", "assistant_ece_at_tau", "student_accuracy"])
    sub = df[np.isclose(df["tau"], size_tau) & (df["dataset"] == dataset)
             & (df["assistant_name"] != "none")]
    if sub.empty:
        return pd.DataFrame()
    return aligned_table(_paper_names(sub), paper_table("table2"),
                         ["teacher", "assistant", "student"], ALIGNED_METRICS)


def aligned_table7(df: pd.DataFrame, size_tau: float, dataset: str,
                   seed_chains: list[dict]) -> pd.DataFrame:
    """Table 7 aligned per seed: the rows of `seed_chains` at `size_tau` on `dataset`,
    keys teacher, assistant, student, seed (one run per row, so sd is NaN and n 1)."""
    from kdlib.paper import aligned_table, paper_table

    _require(df, CHAIN + ["seed", "assistant_ece_at_tau", "student_accuracy"])
    sub = tau_table_rows(df[np.isclose(df["tau"], size_tau) & (df["dataset"] == dataset)],
                         seed_chains)
    if sub.empty:
        return pd.DataFrame()
    paper = paper_table("table7")
    paper = paper.assign(student=paper["student"].str.replace("RESNET", "ResNet"))
    ours = _paper_names(sub).assign(seed_key=lambda x: x["seed"])
    paper = paper.assign(seed_key=paper["seed"])
    return aligned_table(ours, paper, ["teacher", "assistant", "student", "seed_key"],
                         ALIGNED_METRICS).rename(columns={"seed_key": "seed"})


def aligned_table3(df: pd.DataFrame, tau_chains: list[dict], dataset: str) -> pd.DataFrame:
    """Table 3 aligned: the tau chains on `dataset`, keys teacher, assistant, student, tau;
    the paper's blank assistant read as TABLE3_BLANK_ASSISTANT (see the module docstring)."""
    from kdlib.paper import aligned_table, paper_name, paper_table

    _require(df, CHAIN + ["seed", "assistant_ece_at_tau", "student_accuracy"])
    sub = tau_table_rows(df[df["dataset"] == dataset], tau_chains)
    if sub.empty:
        return pd.DataFrame()
    paper = paper_table("table3")
    paper["assistant"] = paper["assistant"].fillna(paper_name(TABLE3_BLANK_ASSISTANT))
    return aligned_table(_paper_names(sub), paper, ["teacher", "assistant", "student", "tau"],
                         ALIGNED_METRICS)


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
    * larger assistant, better calibrated (section 4.1: "as the assistant model increases in
      size, its calibration improves"), tested directly: with 3 or more assistants the
      Spearman of the assistant's ECE at size_tau with its parameter count over assistants
      (seed means, interval over seeds, n = seeds; percent); with 2 assistants the larger
      minus the smaller assistant's ECE paired by seed (points, t-interval, n = seeds).
      Claimed < 0 either way.
    * higher tau, worse student (Table 3): student accuracy at max(tau_values) minus at
      min(tau_values) per tau chain, paired by seed (points, t-interval, n = seeds); < 0.
    Each claim names its data set; no claim pools two data sets.
    """
    from kdlib import claims as cl

    _require(df, CHAIN + ["seed", "student_accuracy", "assistant_ece_at_tau",
                          "assistant_params"])
    rows = []
    sub = df[np.isclose(df["tau"], size_tau) & (df["assistant_name"] != "none")]
    pairs = assistant_pair_differences(df, size_tau)
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
        if g["assistant_name"].nunique() >= 3:
            rows.append(cl.spearman_claim(
                g, "assistant_params", "assistant_ece_at_tau",
                f"larger assistant, lower ECE ({name})",
                "Section 4.1: larger TA better calibrated", "less", cell="assistant_name",
                n_boot=n_boot, scale=100, unit="%", digits=0))
            continue
        p = pairs[(pairs["dataset"] == ds) & (pairs["teacher"] == t) & (pairs["student"] == s)
                  & (pairs["metric"] == "assistant ECE at tau")]
        if len(p):
            r = p.iloc[0]
            rows.append(cl.claim(f"larger assistant, lower ECE: {r.larger} - {r.smaller} "
                                 f"({name})", "Section 4.1: larger TA better calibrated",
                                 r["diff"], r["lo"], r["hi"], int(r["n"]), "less",
                                 unit=" pp"))
    rows += _tau_claim_rows(df, tau_chains, tau_values)
    return cl.claims_table(rows)


def _tau_claim_rows(df: pd.DataFrame, tau_chains, tau_values) -> list[dict]:
    from kdlib import claims as cl

    taus = [float(v) for v in tau_values or []]
    rows = []
    if tau_chains and len(taus) >= 2 and len(df):
        for _, r in tau_effect(df, tau_chains, min(taus), max(taus)).iterrows():
            ds = ", ".join(sorted(tau_table_rows(df, tau_chains)["dataset"].unique()))
            rows.append(cl.claim(
                f"tau {max(taus):g} vs {min(taus):g}: student worse "
                f"({r.teacher} -> {r.assistant_name} -> {r.student}, {ds})",
                "Table 3: lower accuracy at the higher tau", r["diff"], r["lo"], r["hi"],
                int(r["n"]), "less", unit=" pp"))
    return rows


def split_tables(df: pd.DataFrame, cfg: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(size rows, tau rows): the chains of Tables 2 and 7 (size_chains, seed_chains) at
    size_tau on cfg["data"], and those of Table 3 (tau_chains, every tau) on
    cfg["tau_data"]. Each holds one data set, so no table or plot mixes two."""
    _require(df, CHAIN + ["seed"])
    size_chains = _chains(cfg, "size_chains") + _chains(cfg, "seed_chains")
    on_main = df[(df["dataset"] == cfg["data"]["name"]) & np.isclose(df["tau"], cfg["size_tau"])]
    size = tau_table_rows(on_main, size_chains) if size_chains else on_main.iloc[:0]
    on_tau = df[df["dataset"] == cfg["tau_data"]["name"]]
    tau = tau_table_rows(on_tau, _chains(cfg, "tau_chains")) if _chains(cfg, "tau_chains") \
        else on_tau.iloc[:0]
    return size, tau


def report_claims(df: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """The notebook's claims table: `claims` on the size rows (Tables 2, 7) and the tau
    claim on the tau rows (Table 3) of `split_tables`, each on its own data set."""
    from kdlib import claims as cl

    size, tau = split_tables(df, cfg)
    n_boot = cfg.get("n_boot", 2000)
    parts = []
    if len(size):
        parts.append(claims(size, cfg["size_tau"], [], cfg["tau_values"], n_boot=n_boot))
    parts.append(cl.claims_table(_tau_claim_rows(tau, _chains(cfg, "tau_chains"),
                                                 cfg["tau_values"])))
    return cl.concat(*parts)


def report_headline(df: pd.DataFrame, cfg: dict) -> dict:
    """The notebook's headline figures: "chains run" and `headline_figures` of the size rows
    and of the tau rows (`split_tables`); never a NaN (a figure that cannot be formed, such
    as the plain-KD gain of the paper preset, is left out)."""
    size, tau = split_tables(df, cfg)
    n_boot = cfg.get("n_boot", 2000)
    out = {"chains run": int(len(df))}
    if len(size):
        out.update(headline_figures(size, cfg["size_tau"], [], [], n_boot=n_boot))
    if len(tau):
        out.update(_tau_figures(tau, _chains(cfg, "tau_chains"), cfg["tau_values"]))
    return out


def headline_figures(df: pd.DataFrame, size_tau: float, tau_chains: list[dict], tau_values,
                     n_boot: int = 2000) -> dict:
    """The notebook's headline figures (kdlib.headline Figures), only those that exist in
    this run: per (dataset, teacher, student) group at size_tau the chain-level Spearman of
    student accuracy with assistant ECE (`number`, bootstrap interval); the best TAKD gain
    over plain KD in points (only where a plain-KD chain ran: the paper preset has none);
    per tau chain the student's accuracy change between the lowest and highest tau (points,
    t-interval). NaN figures are left out, never passed on."""
    from kdlib.headline import number, points

    _require(df, CHAIN + ["seed", "student_accuracy", "assistant_ece_at_tau"])
    out: dict = {}
    sub = df[np.isclose(df["tau"], size_tau) & (df["assistant_name"] != "none")]
    for (ds, t, s), g in sub.groupby(["dataset", "teacher", "student"], sort=True):
        x, y = g["assistant_ece_at_tau"].to_numpy(float), g["student_accuracy"].to_numpy(float)
        if len(g) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        b = bootstrap_rows_spearman(x, y, n_boot=n_boot)
        lo, hi = (b["lo"], b["hi"]) if np.isfinite([b["lo"], b["hi"]]).all() else (None, None)
        out[f"spearman(student acc, assistant ECE), {t} -> {s}, {ds}"] = number(b["rho"], lo, hi)
    gain = takd_gain(df, size_tau)
    gain = gain[np.isfinite(gain["gain_mean"].astype(float))] if len(gain) else gain
    if len(gain):
        best = gain.loc[gain["gain_mean"].astype(float).idxmax()]
        out[f"best TAKD gain over plain KD ({best.assistant_name})"] = points(
            float(best["gain_mean"]) / 100)
    out.update(_tau_figures(df, tau_chains, tau_values))
    return out


def _tau_figures(df: pd.DataFrame, tau_chains, tau_values) -> dict:
    from kdlib.headline import points

    taus = [float(v) for v in tau_values or []]
    out = {}
    if tau_chains and len(taus) >= 2 and len(df):
        for _, r in tau_effect(df, tau_chains, min(taus), max(taus)).iterrows():
            if not np.isfinite(r["diff"]):
                continue
            ok = np.isfinite([r["lo"], r["hi"]]).all()
            out[f"student acc change tau {min(taus):g} -> {max(taus):g}, {r.teacher} -> "
                f"{r.assistant_name} -> {r.student}"] = points(
                    r["diff"] / 100, r["lo"] / 100 if ok else None, r["hi"] / 100 if ok else None)
    return out


def plan_runs(cfg: dict) -> list:
    """Every training the preset needs (kdlib plan): one teacher per (data, teacher), one
    assistant per `assistant_keys` (trained once, shared by its chains; `done` when the
    assistant cache holds it) and one student per chain (`done` when its weights are kept).
    Tables whose data set is missing are left out. Nothing is loaded or trained."""
    from kdlib.plan import PlannedRun, run_key, teacher_run, train_images

    grid = build_grid(cfg)
    runs = []
    for data, t in dict.fromkeys((json.dumps(c["data"], sort_keys=True), c["teacher"])
                                 for c in grid):
        runs.append(teacher_run(json.loads(data), t, cfg["teacher_recipe"],
                                        cfg["teacher_seed"]))
    epochs = recipe_from_spec(cfg["distill_recipe"]).epochs
    for k in assistant_keys(grid):
        key = {**k, "tau": float(k["tau"]), "teacher_seed": int(k["teacher_seed"])}
        runs.append(PlannedRun("", "assistant", k["assistant"], k["data"]["name"], epochs,
                               train_images(k["data"]), teacher=k["teacher"],
                               key=run_key(experiment=NAME, **key),
                               done=_key_path("assistants", key, create=False).exists(),
                               label=f"{k['teacher']} -> {k['assistant']} at tau {k['tau']:g}, "
                                     f"seed {k['seed']}"))
    for c in grid:
        key = {k: c[k] for k in ("data", "teacher", "assistant", "student", "tau", "seed",
                                 "teacher_recipe", "distill_recipe", "teacher_seed")}
        key.update(tau=float(c["tau"]), teacher_seed=int(c["teacher_seed"]))
        runs.append(PlannedRun("", "student", c["student"], c["data"]["name"], epochs,
                               train_images(c["data"]), teacher=c["assistant"] or c["teacher"],
                               key=run_key(experiment=NAME, role="student", **key),
                               done=_key_path("students", key, create=False).exists(),
                               label=f"{c['teacher']} -> {c['assistant'] or 'none'} -> "
                                     f"{c['student']} at tau {c['tau']:g}, seed {c['seed']}"))
    return runs
