"""Importable helpers for tests/test_sweep.py: cell functions that process-based executors
can pickle (one of them kills its own worker), and a command line that runs a sweep in a
separate process:

    python tests/sweep_helpers.py STORE LOG N_CELLS SLEEP_SECONDS [WORKERS]

runs `record_cell` over `grid(N_CELLS)` (on a ProcessPoolExecutor of WORKERS processes when
given) and prints a JSON summary of the records it got;
`python tests/sweep_helpers.py --watchdog LOG` runs watchdog_parent.
"""

from __future__ import annotations

import functools
import json
import os
import signal
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


def die_cell(T, seed, loss="kd", *, log_path, die_T, sleep=0.0, wait_lines=0, exit_code=None):
    """record_cell, except that the cell T == die_T kills its own process: first it waits
    (up to 10 s) until `log_path` has `wait_lines` lines (so that neighbours are running),
    then SIGKILLs itself, or calls os._exit(exit_code) when exit_code is given. Other cells
    return record_cell's result, plus {"init": INIT_TAG} in workers that set a tag."""
    if T != die_T:
        result = record_cell(T, seed, loss, log_path=log_path, sleep=sleep)
        return result if INIT_TAG is None else result | {"init": INIT_TAG}
    record_cell(T, seed, loss, log_path=log_path)
    deadline = time.monotonic() + 10.0
    while len(read_log(log_path)) < wait_lines and time.monotonic() < deadline:
        time.sleep(0.01)
    if exit_code is not None:
        os._exit(exit_code)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # pragma: no cover - the signal is delivered first


INIT_TAG = None
"""Set in pool workers by set_init_tag (a pool initializer); returned by die_cell."""


def set_init_tag(tag: str) -> None:
    global INIT_TAG
    INIT_TAG = tag


def failing_initializer() -> None:
    raise RuntimeError("this initializer always fails")


def watchdog_child(parent_pid: int, log_path: str) -> None:
    """Child process target: arm sweep's parent-death guard without PR_SET_PDEATHSIG (the
    portable watchdog alone), log this pid, then sleep."""
    from kdlib import sweep

    sweep._set_pdeathsig = lambda: False
    sweep._guard_worker(parent_pid)
    with open(log_path, "a") as log:
        log.write(json.dumps({"T": 0.0, "seed": 0, "pid": os.getpid()}) + "\n")
    time.sleep(30)


def watchdog_parent(log_path: str) -> None:
    """Start a fork child running watchdog_child, then sleep until killed."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(
        target=watchdog_child, args=(os.getpid(), log_path), daemon=False)
    child.start()
    time.sleep(30)


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
    if len(argv) > 4:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=int(argv[4])) as pool:
            results = sweep.run(fn, grid(n_cells), store, progress=False, executor=pool)
    else:
        results = sweep.run(fn, grid(n_cells), store, progress=False)
    rows = sorted((r["T"], r["seed"], r["score"], r["tag"]) for r in results)
    print(json.dumps({"n": len(results), "rows": rows}))


if __name__ == "__main__":
    if sys.argv[1] == "--watchdog":
        watchdog_parent(sys.argv[2])
    else:
        main(sys.argv[1:])
