"""The `kdlib plan` and `kdlib run` commands (the argument parsing lives in __main__).

    kdlib plan --scale paper [NOTEBOOK ...] [--select TEXT] [--throughput IMAGES_PER_S]
    kdlib run NOTEBOOK --scale paper [--select TEXT] --executor dask://HOST:PORT
              [--resources GPU=1]

`plan` lists, without training or loading a network, every run the selected notebooks
need (each experiment's ``plan_runs(cfg)``), marks what is cached, counts runs shared by
several notebooks once, and prints GPU-hours (kdlib.plan). `run` executes the notebooks
like `kdlib report` with every sweep cell sent to a Dask scheduler (kdlib.sweep's
KDLIB_EXECUTOR), so the cells spread over the workers; the report is rendered from the
filled sweep stores as usual.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from pathlib import Path

EXPERIMENTS = {
    "00_calibration_explorer": "calibration_explorer",
    "01_gmm_optimal_teacher": "gmm_optimal_teacher",
    "02_temperature_sweep": "temperature_sweep",
    "03_teacher_assistant": "teacher_assistant",
    "04_early_stopped_teacher": "early_stopped_teacher",
    "05_tsne": "tsne_features",
    "06_feature_kd": "feature_kd",
    "07_fidelity_and_exaggeration": "fidelity_exaggeration",
    "08_online_distillation": "online_distillation",
    "09_gmm_oracle": "gmm_oracle",
}
"""Notebook stem -> its experiment module under kdlib.experiments."""


def notebook_stem(name: str) -> str:
    """A notebook stem from a stem, a number ("02", "2") or a path (".../02_x.py")."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a notebook is a stem, a number or a path, got {name!r}")
    text = Path(name).stem if name.endswith(".py") else name.strip()
    if text in EXPERIMENTS:
        return text
    if text.isdigit():
        for stem in EXPERIMENTS:
            if int(stem[:2]) == int(text):
                return stem
    raise ValueError(f"unknown notebook {name!r}; notebooks: {', '.join(EXPERIMENTS)}")


def experiment_module(stem: str):
    """The kdlib.experiments module of notebook `stem` (importing it registers presets)."""
    return importlib.import_module(f"kdlib.experiments.{EXPERIMENTS[notebook_stem(stem)]}")


def planned_runs(notebooks, scale: str, select: str = "", dry_run: bool = False) -> list:
    """Every PlannedRun of `notebooks` (stems/numbers; empty: all) at `scale`."""
    from kdlib import presets

    stems = [notebook_stem(n) for n in notebooks] or list(EXPERIMENTS)
    runs = []
    for stem in stems:
        module = experiment_module(stem)
        planner = getattr(module, "plan_runs", None)
        if planner is None:
            raise ValueError(f"notebook {stem} has no planner (kdlib.experiments."
                             f"{EXPERIMENTS[stem]}.plan_runs)")
        cfg = presets.get(module.NAME, scale, select=select or None, dry_run=dry_run)
        kwargs = {"scale": scale} if "scale" in inspect.signature(planner).parameters else {}
        runs += [dataclasses.replace(r, notebook=stem) for r in planner(cfg, **kwargs)]
    return runs


def plan_command(notebooks, scale: str, select: str = "", dry_run: bool = False,
                 throughput: float | None = None, csv: str | None = None) -> str:
    """The text `kdlib plan` prints (and the CSV of every run when `csv` is a path)."""
    from kdlib.atomic import atomic_write
    from kdlib.plan import DEFAULT_THROUGHPUT, format_plan, plan_frame

    rate = DEFAULT_THROUGHPUT if throughput is None else throughput
    frame = plan_frame(planned_runs(notebooks, scale, select, dry_run), rate)
    if csv:
        atomic_write(csv, frame.to_csv(index=False))
    source = ("measured (--throughput)" if throughput is not None
              else "kdlib.plan.DEFAULT_THROUGHPUT, an estimate, not a measurement")
    return format_plan(frame, rate) + f"\nthroughput: {source}"


def executor_environment(executor: str, resources: str | None = None) -> dict[str, str]:
    """The environment variables that send a run's sweep cells to `executor`."""
    from kdlib.sweep import EXECUTOR_ENV, RESOURCES_ENV, parse_resources

    if not isinstance(executor, str) or not executor.startswith("dask://") \
            or len(executor) <= len("dask://"):
        raise ValueError(f"--executor must be dask://HOST:PORT, got {executor!r}")
    parse_resources(resources)
    env = {EXECUTOR_ENV: executor}
    if resources:
        env[RESOURCES_ENV] = resources
    return env


def with_environment(env: dict[str, str], fn, *args, **kwargs):
    """fn(*args, **kwargs) with `env` added to os.environ (restored afterwards)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return fn(*args, **kwargs)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
