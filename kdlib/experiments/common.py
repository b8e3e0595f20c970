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


def store_path(experiment: str, scale: str) -> Path:
    """The sweep store of `experiment` at `scale`: runs/<scale>/<experiment>.sqlite."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    path = project_dir() / "runs" / scale / f"{experiment}.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


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
