"""How many notebooks ``kdlib report`` runs at once (``--jobs``), and the CPU threads of each.

    resolve_jobs("auto", "default", 10)   # min(CPU cores, 10) on a CPU machine
    resolve_jobs("auto", "paper", 10)     # 1: a paper-scale notebook uses the whole machine
    kernel_thread_env(2)                  # {"OMP_NUM_THREADS": "1", ...} on 2 cores

Rule of "auto": at the smoke and default scales every notebook trains on one torch thread
(their presets say so), so one notebook per CPU core, and never more than the number of
notebooks; at the paper scale a notebook keeps the machine (all cores, the GPU) to itself,
so one at a time (except in a dry run, whose cut trainings run on one thread). CPU cores
are those this process may use: its CPU affinity, capped by a
cgroup (v2) CPU quota when there is one.
"""

from __future__ import annotations

import math
import os
from numbers import Integral

from kdlib.presets import SCALES

AUTO = "auto"
# Scales whose notebooks run one at a time under --jobs auto.
WHOLE_MACHINE_SCALES = ("paper",)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_cores(cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPU cores this process may use (>= 1): its affinity mask, capped by the cgroup v2
    quota in `cgroup_cpu_max` ("<quota> <period>" in microseconds, or "max <period>")."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open(cgroup_cpu_max, encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and float(period) > 0:
            cores = min(cores, max(1, math.ceil(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def resolve_jobs(jobs, scale: str, n_notebooks: int, cores: int | None = None,
                 dry_run: bool = False) -> int:
    """Notebooks to run at once: `jobs` an integer >= 1 or "auto" (see the module
    docstring), never more than `n_notebooks` (>= 1). `cores` defaults to `cpu_cores()`.
    dry_run: a dry run's cut trainings run on one torch thread at every scale, so "auto"
    gives one notebook per core there too. ValueError for anything else."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    if isinstance(n_notebooks, bool) or not isinstance(n_notebooks, Integral) or n_notebooks < 1:
        raise ValueError(f"n_notebooks must be an integer >= 1, got {n_notebooks!r}")
    if isinstance(jobs, str) and jobs == AUTO:
        if scale in WHOLE_MACHINE_SCALES and not dry_run:
            return 1
        return max(1, min(cpu_cores() if cores is None else int(cores), int(n_notebooks)))
    if isinstance(jobs, bool) or not isinstance(jobs, Integral) or jobs < 1:
        raise ValueError(f"jobs must be 'auto' or an integer >= 1 (notebooks at once), "
                         f"got {jobs!r}")
    return min(int(jobs), int(n_notebooks))


def kernel_thread_env(jobs: int, cores: int | None = None, environ=None) -> dict:
    """Environment for each kernel when `jobs` notebooks share the machine: OpenMP/MKL
    threads = max(1, cores // jobs), for each of THREAD_VARIABLES not already set in
    `environ` (default os.environ: the user's choice wins). {} for one job."""
    if isinstance(jobs, bool) or not isinstance(jobs, Integral) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if jobs == 1:
        return {}
    environ = os.environ if environ is None else environ
    n = max(1, (cpu_cores() if cores is None else int(cores)) // int(jobs))
    return {name: str(n) for name in THREAD_VARIABLES if not environ.get(name)}


__all__ = ["AUTO", "THREAD_VARIABLES", "WHOLE_MACHINE_SCALES", "cpu_cores", "kernel_thread_env",
           "resolve_jobs"]
