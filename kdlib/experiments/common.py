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
