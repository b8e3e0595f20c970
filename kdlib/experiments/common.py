"""Where experiments keep their files, and the plumbing every experiment shares.

Layout under the project folder (the clone; found from the working directory, or set
KDLIB_PROJECT_DIR):
    data/                  archives, decoded caches
    data/teachers/         the teacher cache (keyed by a hash of everything that matters)
    runs/<scale>/<experiment>.sqlite   the sweep store of each experiment
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from kdlib.presets import SCALES


def project_dir() -> Path:
    """KDLIB_PROJECT_DIR if set; else the nearest folder at or above the working directory
    holding both `notebooks/` and `pyproject.toml`; else the working directory."""
    env = os.environ.get("KDLIB_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return here


def data_root() -> Path:
    return project_dir() / "data"


def teacher_cache_dir() -> Path:
    return data_root() / "teachers"


def run_name(scale: str, dry_run: bool = False) -> str:
    """The folder name of a run under runs/ and reports/: the scale, or
    "<scale>-dry-run" for a dry run (so a dry run never mixes with real results)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if not isinstance(dry_run, bool):
        raise TypeError(f"dry_run must be True or False, got {dry_run!r}")
    return f"{scale}-dry-run" if dry_run else scale


def store_path(experiment: str, scale: str, dry_run: bool = False) -> Path:
    """The sweep store of `experiment` at `scale`: runs/<scale>/<experiment>.sqlite
    (runs/<scale>-dry-run/... for a dry run)."""
    path = project_dir() / "runs" / run_name(scale, dry_run) / f"{experiment}.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def missing_data(spec: dict) -> str | None:
    """None when the data set of a data spec ({"name": ...}) is in the data folder;
    otherwise the sentence naming the file to fetch (`kdlib.data.missing_dataset`).
    Experiments skip the tables whose data is missing instead of failing."""
    from kdlib.data import missing_dataset

    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"data spec must be a dict with a 'name', got {spec!r}")
    return missing_dataset(spec["name"], data_root())


@lru_cache(maxsize=16)
def _load(name: str, seed: int, items: tuple):
    from kdlib.data import load_dataset

    kwargs = dict(items)
    subset = {k: kwargs.pop(k) for k in ("subset_train", "subset_test") if k in kwargs}
    data = load_dataset(name, root=data_root(), seed=seed, **kwargs)
    if subset:
        data = data.subset(n_train=subset.get("subset_train"), n_test=subset.get("subset_test"),
                           seed=seed)
    return data


def load_data(spec: dict):
    """A Dataset from a plain spec: {"name": "digits", "seed": 0, ...load_dataset kwargs,
    "subset_train": n, "subset_test": n}. Cached per process (sweeps load it once)."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"data spec must be a dict with a 'name', got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    seed = spec.pop("seed", 0)
    return _load(name, seed, tuple(sorted(spec.items())))


# ------------------------------------------------------------------ shared by the experiments


def load_teacher(data: dict, teacher: str, teacher_recipe, teacher_seed: int = 0,
                 teacher_kwargs: dict | None = None):
    """(Dataset, teacher model in eval mode, its record) for a data spec and a teacher
    (architecture, recipe spec, seed, model options), from the on-disk teacher cache
    (trained on first use)."""
    from kdlib._validate import check_int
    from kdlib.recipe import recipe_from_spec
    from kdlib.teachers import get_teacher

    d = load_data(data)
    kwargs = {k: tuple(v) if isinstance(v, list) else v
              for k, v in (teacher_kwargs or {}).items() if k != "num_classes"}
    model, record = get_teacher(teacher, d, recipe_from_spec(teacher_recipe),
                                seed=check_int(teacher_seed, "teacher_seed", minimum=0),
                                cache_dir=teacher_cache_dir(), progress=False,
                                model_kwargs=kwargs or None)
    return d, model.eval(), record


def stored_sweep_cells(experiment: str, cfg: dict, cells: list, grid_fn,
                       namespace: str | None = None, scale: str | None = None) -> list[bool]:
    """For each sweep cell of `cells` (dicts of plain values): True when the sweep store of
    `experiment` at `scale` (runs/<scale>[-dry-run]/<experiment>.sqlite under the project
    folder, `cfg["dry_run"]` choosing which) already holds its result under `namespace`.

    scale None: the scale whose whole preset grid (`grid_fn(presets.get(experiment, s,
    dry_run=...))`) contains every cell, i.e. the preset `cfg` was selected from; none or
    several such scales, or no store file: all False. Only reads an existing store (it is
    never created; the lookup is `kdlib.plan.stored_cells`)."""
    from kdlib import presets, sweep
    from kdlib.plan import stored_cells

    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise TypeError("cells must be a list of sweep cells (dicts)")
    if not callable(grid_fn):
        raise TypeError(f"grid_fn must be the experiment's grid function, got {grid_fn!r}")
    if scale is not None and scale not in presets.SCALES:
        raise ValueError(f"scale must be one of {presets.SCALES} or None, got {scale!r}")
    if not cells:
        return []
    dry = bool(cfg.get("dry_run", False))
    keys = [sweep.cell_key(c, namespace) for c in cells]
    if scale is None:
        matches = [s for s in presets.SCALES
                   if set(keys) <= {sweep.cell_key(c, namespace) for c in
                                    grid_fn(presets.get(experiment, s, dry_run=dry))}]
        if len(matches) != 1:
            return [False] * len(cells)
        scale = matches[0]
    return stored_cells(project_dir() / "runs" / run_name(scale, dry) / f"{experiment}.sqlite",
                        cells, namespace)


def students_dir(store: str) -> Path:
    """The student store of a run (`kdlib.student_store`): runs/<store>/students, where
    store is a `run_name` ("default", "paper-dry-run", ...)."""
    if not isinstance(store, str) or store.removesuffix("-dry-run") not in SCALES:
        raise ValueError(f"store must be a run_name such as 'default' or 'paper-dry-run', "
                         f"got {store!r}")
    return project_dir() / "runs" / store / "students"


def headline_number(value, digits: int = 3):
    """`value` rounded to `digits` for `kdlib.headline.headline`, or "n/a" when it is not a
    finite number (e.g. a correlation over fewer than 3 cells)."""
    import math

    from kdlib._validate import check_int

    digits = check_int(digits, "digits", minimum=0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return round(value, digits) if math.isfinite(value) else "n/a"


def cut_recipe_specs(cfg: dict, keys) -> dict:
    """A dry-run hook helper: cfg with each recipe spec under `keys` (a preset name, a
    {"preset": ...} dict or a dict of fields; None left alone) spelled out as fields and
    cut by `kdlib.dry_run.cut_recipe` (the generic cut only sees spelled-out recipes)."""
    from kdlib.dry_run import cut_recipe
    from kdlib.recipe import recipe_from_spec

    out = dict(cfg)
    for key in keys:
        if out.get(key) is not None:
            out[key] = cut_recipe(recipe_from_spec(out[key]).to_dict())
    return out


class limited_threads:
    """Context manager: torch uses `n` intra-op threads inside (None: leave it alone)."""

    def __init__(self, n: int | None):
        from kdlib._validate import check_int

        self.n = None if n is None else check_int(n, "torch_threads", minimum=1)
        self.old = None

    def __enter__(self):
        if self.n is not None:
            import torch

            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            import torch

            torch.set_num_threads(self.old)
        return False


def table6_aligned(df, teacher: str, student: str):
    """Ours beside the paper's Table 6 for one pair (`kdlib.paper.aligned_table`): one row
    per (loss, tau, metric): KD and DIST student accuracy and the teacher's ECE at tau, the
    paper's percent beside our mean +- sd over seeds, n seeds and the difference in points
    (last epoch). df: one row per student with columns loss ("kd"/"dist"), temperature,
    seed, accuracy and teacher_ece_at_tau (fractions); other losses are left out. Pair names
    are matched with `kdlib.paper.paper_name`; a pair the paper does not print gets NaN
    paper values."""
    import pandas as pd

    from kdlib.paper import aligned_table, paper_name, paper_table

    need = ["loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau"]
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a DataFrame, got {type(df).__name__}")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks columns {missing}; it has {list(df.columns)}")
    t6 = paper_table("table6").rename(columns={"tau": "temperature"})
    ours = df.assign(teacher=paper_name(teacher), student=paper_name(student))
    keys = ["teacher", "student", "loss", "temperature"]
    parts = []
    for loss, col in (("kd", "kd_accuracy"), ("dist", "dist_accuracy")):
        g = ours[ours["loss"] == loss]
        if len(g):
            parts.append(aligned_table(g, t6.assign(loss=loss), keys,
                                       {"accuracy": col, "teacher_ece_at_tau": "teacher_ece"}))
    if not parts:
        return pd.DataFrame(columns=[*keys, "metric", "paper (%)", "ours mean (%)",
                                     "ours sd (%)", "n seeds", "ours - paper (points)", "epoch"])
    return pd.concat(parts, ignore_index=True)


DIST_TOLERANCE = 50.0
"""Insensitivity band for DIST's Spearman of teacher ECE vs student accuracy, percent: the
paper calls DIST insensitive with values from -50% (WRN-28-1 -> ResNet14) to +8% (Tables 6,
9), so |rho| <= 50%."""
