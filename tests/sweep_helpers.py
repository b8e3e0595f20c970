"""Importable helpers for tests/test_sweep.py: a cell function that process-based executors
can pickle, and a command line that runs a sweep in a separate process:

    python tests/sweep_helpers.py STORE LOG N_CELLS SLEEP_SECONDS

runs `record_cell` over `grid(N_CELLS)` and prints a JSON summary of the records it got.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time


def expected(T, seed, loss="kd") -> dict:
    """What record_cell returns for a cell (hand-checkable)."""
    return {"score": T * 100 + seed, "tag": f"{loss}-{T}-{seed}"}


def record_cell(T, seed, loss="kd", *, log_path=None, sleep=0.0, fail_T=None):
    """Append the cell to `log_path` (one JSON line per call, written first), sleep, raise
    ValueError when T == fail_T, else return expected(T, seed, loss)."""
    if log_path is not None:
        line = json.dumps({"T": T, "seed": seed, "loss": loss, "pid": os.getpid()}) + "\n"
        with open(log_path, "a") as log:
            log.write(line)
    if sleep:
        time.sleep(sleep)
    if fail_T is not None and T == fail_T:
        raise ValueError(f"T={T} is not allowed")
    return expected(T, seed, loss)


def grid(n_cells: int) -> list[dict]:
    """n_cells distinct cells: T = 1..n (floats), seed = i % 3."""
    return [{"T": float(i + 1), "seed": i % 3} for i in range(n_cells)]


def read_log(log_path) -> list[dict]:
    if not os.path.exists(log_path):
        return []
    with open(log_path) as log:
        return [json.loads(line) for line in log if line.strip()]


def main(argv: list[str]) -> None:
    from kdlib import sweep

    store, log_path, n_cells, sleep = argv[0], argv[1], int(argv[2]), float(argv[3])
    fn = functools.partial(record_cell, log_path=log_path, sleep=sleep)
    results = sweep.run(fn, grid(n_cells), store, progress=False)
    rows = sorted((r["T"], r["seed"], r["score"], r["tag"]) for r in results)
    print(json.dumps({"n": len(results), "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1:])
