"""kdlib.sweep: every cell once, resume after failures and SIGKILL, concurrent runs, executors."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import sweep_helpers as helpers

from kdlib import sweep

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
CELL_COLUMNS = ["T", "seed"]
RESULT_COLUMNS = ["score", "tag"]
META_COLUMNS = ["_key", "_seconds", "_finished_at"]


def logged(tmp_path, **kwargs):
    log = tmp_path / "calls.log"
    return functools.partial(helpers.record_cell, log_path=str(log), **kwargs), log


def calls(log) -> list[tuple]:
    return [(c["T"], c["seed"]) for c in helpers.read_log(log)]


def db_rows(store) -> list[tuple]:
    with closing(sqlite3.connect(store)) as conn:
        return conn.execute("SELECT key, cell, result FROM sweep_results").fetchall()


def check_store(store, grid) -> None:
    """Readable, no duplicate or partial rows, exactly one correct row per cell of grid."""
    with closing(sqlite3.connect(store)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n, n_keys = conn.execute(
            "SELECT count(*), count(DISTINCT key) FROM sweep_results"
        ).fetchone()
        assert n == n_keys
        assert conn.execute("SELECT count(*) FROM sweep_errors").fetchone()[0] == 0
    rows = db_rows(store)
    assert len(rows) == len(grid)
    by_key = {key: (json.loads(cell), json.loads(result)) for key, cell, result in rows}
    for cell in grid:
        stored_cell, result = by_key[sweep.cell_key(cell)]
        assert stored_cell == cell
        assert result == helpers.expected(**cell)


# --------------------------------------------------------------------------- keys and grids


def test_cell_key_is_sha256_of_sorted_compact_json():
    want = hashlib.sha256(b'{"T":4.0,"seed":1}').hexdigest()[:32]
    assert sweep.cell_key({"T": 4.0, "seed": 1}) == want
    assert sweep.cell_key({"seed": 1, "T": 4.0}) == want  # key order does not matter
    assert sweep.cell_key({"T": 4, "seed": 1}) != want  # 4 and 4.0 are different cells
    ns_want = hashlib.sha256(b'nb03\x00{"T":4.0,"seed":1}').hexdigest()[:32]
    assert sweep.cell_key({"T": 4.0, "seed": 1}, namespace="nb03") == ns_want


def test_product_grid_last_axis_fastest():
    assert sweep.product_grid(T=[1, 4], loss=["kd", "dist"]) == [
        {"T": 1, "loss": "kd"},
        {"T": 1, "loss": "dist"},
        {"T": 4, "loss": "kd"},
        {"T": 4, "loss": "dist"},
    ]
    with pytest.raises(ValueError, match="axis 'seed' is empty"):
        sweep.product_grid(T=[1], seed=[])
    with pytest.raises(TypeError, match="axis 'loss' must be a list"):
        sweep.product_grid(loss="kd")


# --------------------------------------------------------------------------- in-process runs


def test_run_calls_every_cell_once_and_returns_exact_records(tmp_path):
    fn, log = logged(tmp_path)
    grid = helpers.grid(5)
    store = tmp_path / "s.sqlite"
    results = sweep.run(fn, grid, store, progress=False)

    assert sorted(calls(log)) == sorted((c["T"], c["seed"]) for c in grid)
    assert len(results) == 5 and results.failures == []
    for cell, rec in zip(grid, results, strict=True):
        assert list(rec) == CELL_COLUMNS + RESULT_COLUMNS + META_COLUMNS
        assert {k: rec[k] for k in CELL_COLUMNS} == cell
        assert {k: rec[k] for k in RESULT_COLUMNS} == helpers.expected(**cell)
        assert rec["_key"] == sweep.cell_key(cell)
        assert isinstance(rec["_seconds"], float) and rec["_seconds"] >= 0

    frame = results.to_frame()
    assert list(frame.columns) == CELL_COLUMNS + RESULT_COLUMNS + META_COLUMNS
    assert frame["T"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert frame["seed"].tolist() == [0, 1, 2, 0, 1]
    assert frame["score"].tolist() == [100.0, 201.0, 302.0, 400.0, 501.0]
    assert frame["tag"].tolist() == ["kd-1.0-0", "kd-2.0-1", "kd-3.0-2", "kd-4.0-0", "kd-5.0-1"]
    assert str(frame["_finished_at"].dt.tz) == "UTC"

    check_store(store, grid)
    assert sweep.status(store) == {"done": 5, "failed": 0, "in_flight": 0}
    loaded = sweep.load(store)
    assert [dict(r) for r in loaded] == [dict(r) for r in results]


def test_rerun_skips_finished_cells(tmp_path):
    fn, log = logged(tmp_path)
    grid = helpers.grid(6)
    store = tmp_path / "s.sqlite"
    first = sweep.run(fn, grid[:4], store, progress=False)
    assert len(calls(log)) == 4

    results = sweep.run(fn, grid, store, progress=False)
    assert calls(log)[4:] == [(5.0, 1), (6.0, 2)]  # only the two new cells ran
    assert [r["T"] for r in results] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [dict(r) for r in results[:4]] == [dict(r) for r in first]  # stored, not recomputed

    again = sweep.run(fn, grid, store, progress=False)
    assert len(calls(log)) == 6
    assert [dict(r) for r in again] == [dict(r) for r in results]
    check_store(store, grid)


def test_failed_cell_is_recorded_reported_and_retried(tmp_path):
    grid = helpers.grid(4)
    store = tmp_path / "s.sqlite"
    broken, log = logged(tmp_path, fail_T=2.0)
    with pytest.raises(sweep.SweepError) as info:
        sweep.run(broken, grid, store, progress=False)
    err = info.value
    assert '{"T": 2.0, "seed": 1}: ValueError: T=2.0 is not allowed' in str(err)
    assert "1 of 4 cells failed" in str(err)
    assert [r["T"] for r in err.results] == [1.0, 3.0, 4.0]
    (failure,) = err.failures
    assert failure["T"] == 2.0 and failure["seed"] == 1
    assert failure["_error_type"] == "ValueError"
    assert failure["_error"] == "T=2.0 is not allowed"
    assert failure["_attempts"] == 1
    assert "sweep_helpers.py" in failure["_traceback"]
    assert 'raise ValueError(f"T={T} is not allowed")' in failure["_traceback"]
    assert sweep.status(store) == {"done": 3, "failed": 1, "in_flight": 0}
    assert [r["T"] for r in sweep.load(store)] == [1.0, 3.0, 4.0]
    assert sweep.load(store).failures[0]["_error_type"] == "ValueError"

    # still broken, raise_errors=False: retried (attempt 2), reported in .failures
    quiet = sweep.run(broken, grid, store, progress=False, raise_errors=False)
    assert len(quiet) == 3 and quiet.failures[0]["_attempts"] == 2
    assert calls(log) == [(1.0, 0), (2.0, 1), (3.0, 2), (4.0, 0), (2.0, 1)]

    fixed, _ = logged(tmp_path)
    results = sweep.run(fixed, grid, store, progress=False)
    assert calls(log)[5:] == [(2.0, 1)]  # only the failed cell ran again
    assert [r["score"] for r in results] == [100, 201, 302, 400]
    assert sweep.status(store) == {"done": 4, "failed": 0, "in_flight": 0}
    check_store(store, grid)


def test_result_validation_failures_are_recorded(tmp_path):
    store = tmp_path / "s.sqlite"

    def not_a_dict(T):
        return T * 2

    def numpy_scalar(T):
        return {"acc": np.float32(T)}

    def clashing(T):
        return {"T": T}

    cases = [(not_a_dict, "must return a dict"), (numpy_scalar, "float(x)"),
             (clashing, "also a cell key")]
    for fn, text in cases:
        with pytest.raises(sweep.SweepError, match="TypeError|ValueError") as info:
            sweep.run(fn, [{"T": 1.0}], store, progress=False, namespace=fn.__name__)
        (failure,) = info.value.failures
        assert text in failure["_error"]
        assert sweep.status(store, namespace=fn.__name__)["failed"] == 1
    assert sweep.status(store) == {"done": 0, "failed": 3, "in_flight": 0}


def test_namespaces_keep_sweeps_apart(tmp_path):
    fn, log = logged(tmp_path)
    store = tmp_path / "s.sqlite"
    sweep.run(fn, helpers.grid(2), store, progress=False, namespace="nb03")
    sweep.run(fn, helpers.grid(3), store, progress=False, namespace="nb04")
    assert len(calls(log)) == 5  # same cells, different namespace: computed again
    assert [r["T"] for r in sweep.load(store, namespace="nb03")] == [1.0, 2.0]
    assert len(sweep.load(store, namespace="nb04")) == 3
    assert len(sweep.load(store)) == 0
    assert sweep.status(store, namespace="nb04")["done"] == 3
    assert sweep.status(store)["done"] == 5


# --------------------------------------------------------------------------- validation


def test_validation_errors_before_anything_runs(tmp_path):
    fn, log = logged(tmp_path)
    store = tmp_path / "s.sqlite"
    with pytest.raises(ValueError, match=r"key 'temp'.*\['T', 'fail_T', 'log_path'"):
        sweep.run(fn, [{"T": 1.0, "seed": 0}, {"temp": 1.0, "seed": 0}], store)
    with pytest.raises(ValueError, match=r"lacks required parameter\(s\) \['seed'\]"):
        sweep.run(fn, [{"T": 1.0}], store)
    with pytest.raises(ValueError, match="grid is empty"):
        sweep.run(fn, iter([]), store)
    with pytest.raises(TypeError, match=r"wrap a single cell in a list"):
        sweep.run(fn, {"T": 1.0, "seed": 0}, store)
    with pytest.raises(TypeError, match=r"grid\[1\] must be a dict"):
        sweep.run(fn, [{"T": 1.0, "seed": 0}, (1.0, 0)], store)
    with pytest.raises(TypeError, match=r"grid\[0\]\['T'\] is a numpy.float32.*float\(x\)"):
        sweep.run(fn, [{"T": np.float32(1.0), "seed": 0}], store)
    with pytest.raises(TypeError, match=r"grid\[0\]\['T'\] is a builtins.set"):
        sweep.run(fn, [{"T": {1.0}, "seed": 0}], store)
    with pytest.raises(TypeError, match="must be finite"):
        sweep.run(fn, [{"T": float("nan"), "seed": 0}], store)
    with pytest.raises(ValueError, match=r"grid\[2\] = .* duplicates grid\[0\]"):
        sweep.run(fn, [{"T": 1.0, "seed": 0}, {"T": 2.0, "seed": 0}, {"seed": 0, "T": 1.0}],
                  store)
    with pytest.raises(ValueError, match="reserved"):
        sweep.run(lambda **kw: {}, [{"_key": 1}], store)
    with pytest.raises(TypeError, match="fn must be callable"):
        sweep.run("fn", [{"T": 1.0}], store)
    with pytest.raises(TypeError, match="concurrent.futures.Executor"):
        sweep.run(fn, [{"T": 1.0, "seed": 0}], store, executor=object())
    with pytest.raises(TypeError, match="namespace must be None or a non-empty str"):
        sweep.run(fn, [{"T": 1.0, "seed": 0}], store, namespace="")
    with pytest.raises(TypeError, match="progress must be True or False"):
        sweep.run(fn, [{"T": 1.0, "seed": 0}], store, progress=0)
    with pytest.raises(TypeError, match="store must be a path"):
        sweep.run(fn, [{"T": 1.0, "seed": 0}], 3)
    assert calls(log) == [] and not store.exists()

    with ProcessPoolExecutor(max_workers=1) as pool:  # no worker starts: rejected up front
        with pytest.raises(TypeError, match="cannot be pickled for ProcessPoolExecutor"):
            sweep.run(lambda T: {"x": T}, [{"T": 1.0}], store, executor=pool)
    assert not store.exists()

    # **kwargs accepts any key
    out = sweep.run(lambda **kw: {"n": len(kw)}, [{"a": 1, "b": [1, 2]}], store, progress=False)
    assert out[0]["n"] == 2 and out[0]["b"] == [1, 2]


def test_store_and_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sweep.load(tmp_path / "missing.sqlite")
    other = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE stuff (x)")
        conn.commit()
    with pytest.raises(ValueError, match="other tables"):
        sweep.run(helpers.record_cell, [{"T": 1.0, "seed": 0}], other, progress=False)
    with pytest.raises(ValueError, match="not a kdlib sweep store"):
        sweep.load(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all, just text" * 10)
    with pytest.raises(ValueError, match="not a usable SQLite sweep store"):
        sweep.status(junk)


# --------------------------------------------------------------------------- crash and concurrency


def start_sweep_process(store, log, n_cells, sleep, workers=None) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    pool = [] if workers is None else [str(workers)]
    return subprocess.Popen(
        [sys.executable, str(TESTS_DIR / "sweep_helpers.py"), str(store), str(log),
         str(n_cells), str(sleep), *pool],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def wait_until(predicate, what, proc=None, limit=60.0, every=0.02):
    deadline = time.monotonic() + limit
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"sweep process exited early while waiting for {what}: "
                                 f"{proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def done_count(store) -> int:
    try:
        return sweep.status(store)["done"]
    except (FileNotFoundError, ValueError, sqlite3.Error):
        return 0  # not created yet


def test_sigkill_mid_run_loses_only_cells_in_flight(tmp_path):
    store, log = tmp_path / "s.sqlite", tmp_path / "calls.log"
    grid = helpers.grid(30)
    proc = start_sweep_process(store, log, 30, 0.1)
    try:
        wait_until(lambda: done_count(store) >= 5, "5 finished cells", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()  # reap it, so its pid is no longer alive
    assert proc.returncode == -signal.SIGKILL

    with closing(sqlite3.connect(store)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db_rows(store)
    n_done = len(rows)
    assert 5 <= n_done < 30
    assert len({key for key, _, _ in rows}) == n_done
    for key, cell, result in rows:  # every row is complete and correct
        cell = json.loads(cell)
        assert key == sweep.cell_key(cell)
        assert json.loads(result) == helpers.expected(**cell)
    started = len(calls(log))
    assert started in (n_done, n_done + 1)  # at most the one cell in flight was lost
    assert sweep.status(store) == {"done": n_done, "failed": 0, "in_flight": 0}  # owner dead

    fn = functools.partial(helpers.record_cell, log_path=str(log))
    results = sweep.run(fn, grid, store, progress=False)  # the dead run's claim is stale
    stored = {(json.loads(cell)["T"], json.loads(cell)["seed"]) for _, cell, _ in rows}
    rerun = calls(log)[started:]
    assert len(rerun) == 30 - n_done  # resumed: only the unfinished cells ran, once each
    assert set(rerun) == {(c["T"], c["seed"]) for c in grid} - stored
    assert [r["T"] for r in results] == [c["T"] for c in grid]
    assert sorted(set(calls(log))) == sorted((c["T"], c["seed"]) for c in grid)
    check_store(store, grid)
    assert sweep.status(store) == {"done": 30, "failed": 0, "in_flight": 0}


def test_two_processes_on_one_store_compute_each_cell_once(tmp_path):
    store, log = tmp_path / "s.sqlite", tmp_path / "calls.log"
    grid = helpers.grid(30)
    procs = [start_sweep_process(store, log, 30, 0.05) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        summary = json.loads(out)
        assert summary["n"] == 30
        assert summary["rows"] == sorted(
            [c["T"], c["seed"], helpers.expected(**c)["score"], helpers.expected(**c)["tag"]]
            for c in grid
        )
    # claims: no cell was computed twice, and no row is duplicated
    assert sorted(calls(log)) == sorted((c["T"], c["seed"]) for c in grid)
    check_store(store, grid)
    assert sweep.status(store) == {"done": 30, "failed": 0, "in_flight": 0}


# --------------------------------------------------------------------------- executors


def comparable(results):
    frame = results.to_frame()
    return frame.drop(columns=["_seconds", "_finished_at"])


def test_thread_and_process_pools_match_in_process(tmp_path):
    grid = helpers.grid(6)
    reference = comparable(sweep.run(helpers.record_cell, grid, tmp_path / "a.sqlite",
                                     progress=False))
    fn, log = logged(tmp_path)
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = sweep.run(fn, grid, tmp_path / "b.sqlite", executor=pool, progress=False)
    assert comparable(threaded).equals(reference)
    assert sorted(calls(log)) == sorted((c["T"], c["seed"]) for c in grid)
    check_store(tmp_path / "b.sqlite", grid)

    with ProcessPoolExecutor(max_workers=2) as pool:
        forked = sweep.run(helpers.record_cell, grid, tmp_path / "c.sqlite", executor=pool,
                           progress=False)
    assert comparable(forked).equals(reference)


def test_dask_local_cluster_matches_in_process(tmp_path):
    distributed = pytest.importorskip("distributed")
    grid = helpers.grid(6)
    reference = comparable(sweep.run(helpers.record_cell, grid, tmp_path / "a.sqlite",
                                     progress=False))
    fn, log = logged(tmp_path)
    broken, _ = logged(tmp_path, fail_T=3.0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        executor = client.get_executor()
        with pytest.raises(sweep.SweepError) as info:
            sweep.run(broken, grid, tmp_path / "b.sqlite", executor=executor, progress=False)
        (failure,) = info.value.failures
        assert failure["_error"] == "T=3.0 is not allowed"
        assert "sweep_helpers.py" in failure["_traceback"]  # formatted on the worker
        on_dask = sweep.run(fn, grid, tmp_path / "b.sqlite", executor=executor, progress=False)
        worker_pids = {c["pid"] for c in helpers.read_log(log)}
    assert comparable(on_dask).equals(reference)
    assert os.getpid() not in worker_pids
    # 6 calls by the broken run, then only the failed cell again
    assert sorted(calls(log)) == sorted([(c["T"], c["seed"]) for c in grid] + [(3.0, 2)])
    check_store(tmp_path / "b.sqlite", grid)


# --------------------------------------------------------------------------- dying workers


def death_fn(tmp_path, **kwargs):
    log = tmp_path / "calls.log"
    return functools.partial(helpers.die_cell, log_path=str(log), **kwargs), log


def death_rows(store) -> dict:
    with closing(sqlite3.connect(store)) as conn:
        return dict(conn.execute("SELECT key, deaths FROM sweep_deaths").fetchall())


def test_dying_worker_fails_only_its_cell_and_the_rest_run_on_a_fresh_pool(tmp_path):
    grid = helpers.grid(6)
    store = tmp_path / "s.sqlite"
    # cell 3 kills its worker once cell 4 (its neighbour, sleeping 0.3 s) has started
    fn, log = death_fn(tmp_path, die_T=3.0, sleep=0.3, wait_lines=4)
    with ProcessPoolExecutor(max_workers=2, initializer=helpers.set_init_tag,
                             initargs=("ready",)) as pool:
        with pytest.raises(sweep.SweepError) as info:
            sweep.run(fn, grid, store, executor=pool, progress=False)
    err = info.value
    (failure,) = err.failures  # the innocent neighbour in flight is not blamed
    assert (failure["T"], failure["seed"]) == (3.0, 2)
    (dead_pid,) = [c["pid"] for c in helpers.read_log(log) if c["T"] == 3.0]
    assert failure["_error_type"] == "WorkerDied"
    assert failure["_error"].startswith(
        f"worker process {dead_pid} died (killed by signal 9, SIGKILL: out of memory?) "
        "while running this cell; worker deaths of this cell: 1"
    )
    assert failure["_deaths"] == 1 and failure["_attempts"] == 1
    assert "1 of 6 cells failed" in str(err) and "WorkerDied: worker process" in str(err)
    # every other cell finished, on the fresh pool, whose workers ran the user's initializer
    assert [r["T"] for r in err.results] == [1.0, 2.0, 4.0, 5.0, 6.0]
    assert [r["init"] for r in err.results] == ["ready"] * 5
    assert [r["score"] for r in err.results] == [100, 201, 400, 501, 602]
    ran = calls(log)
    assert ran.count((4.0, 0)) == 2  # in flight when the pool broke: re-queued, run again
    assert ran.count((3.0, 2)) == 1  # not retried within the run
    assert sorted(set(ran)) == sorted((c["T"], c["seed"]) for c in grid)
    assert sweep.status(store) == {"done": 5, "failed": 1, "in_flight": 0}
    assert death_rows(store) == {sweep.cell_key(grid[2]): 1}


def test_worker_deaths_are_counted_across_runs_then_the_cell_is_skipped(tmp_path):
    grid = helpers.grid(3)
    store = tmp_path / "s.sqlite"
    fn, log = death_fn(tmp_path, die_T=2.0, exit_code=3)
    for bad, exc in ((0, ValueError), (True, TypeError), (2.0, TypeError)):
        with pytest.raises(exc, match="max_worker_deaths must be None"):
            sweep.run(fn, grid, store, max_worker_deaths=bad)
    assert not store.exists()

    messages = []
    for _ in range(2):
        with ProcessPoolExecutor(max_workers=2) as pool:
            with pytest.raises(sweep.SweepError) as info:
                sweep.run(fn, grid, store, executor=pool, progress=False)
        (failure,) = info.value.failures
        messages.append(failure["_error"])
        assert [r["T"] for r in info.value.results] == [1.0, 3.0]
    assert "died (exited with code 3) while running this cell; worker deaths of this " \
           "cell: 1 (the next run retries it)" in messages[0]
    assert "worker deaths of this cell: 2 (max_worker_deaths=2: the next run skips it)" \
           in messages[1]
    assert failure["_attempts"] == 2
    assert calls(log).count((2.0, 1)) == 2

    with ProcessPoolExecutor(max_workers=2) as pool:  # third run: skipped, fn not called
        with pytest.raises(sweep.SweepError, match="skipped: its worker process died 2 times"):
            sweep.run(fn, grid, store, executor=pool, progress=False)
    assert calls(log).count((2.0, 1)) == 2
    quiet = sweep.run(fn, grid, store, progress=False, raise_errors=False)  # also inline
    (failure,) = quiet.failures
    assert failure["_deaths"] == 2 and failure["_error"].startswith("skipped")
    assert "Last time: worker process" in failure["_error"]
    assert calls(log).count((2.0, 1)) == 2

    fixed, _ = logged(tmp_path)  # the cause is fixed: let it run again
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = sweep.run(fixed, grid, store, executor=pool, progress=False,
                            max_worker_deaths=None)
    assert [r["score"] for r in results] == [100, 201, 302]
    assert death_rows(store) == {}  # success clears the count
    check_store(store, grid)


def test_unattributable_break_reruns_the_suspects_one_at_a_time(tmp_path, monkeypatch):
    # without exit codes a break cannot tell the dead worker from the one the pool stopped
    monkeypatch.setattr(sweep._ProcessPoolKeeper, "exit_code", lambda self, pid: None)
    grid = helpers.grid(4)
    store = tmp_path / "s.sqlite"
    fn, log = death_fn(tmp_path, die_T=1.0, sleep=0.3, wait_lines=2)
    with ProcessPoolExecutor(max_workers=2) as pool:
        with pytest.raises(sweep.SweepError) as info:
            sweep.run(fn, grid, store, executor=pool, progress=False)
    (failure,) = info.value.failures
    assert failure["T"] == 1.0
    assert "died (exit status unknown) while running this cell" in failure["_error"]
    assert failure["_deaths"] == 1  # one death recorded, although it died twice
    assert [r["T"] for r in info.value.results] == [2.0, 3.0, 4.0]
    ran = calls(log)
    assert len(ran) == 6
    assert sorted(ran[:2]) == [(1.0, 0), (2.0, 1)]  # both in flight when the pool broke
    assert ran[2:4] == [(1.0, 0), (2.0, 1)]  # both rerun, one at a time, in grid order
    assert sorted(ran[4:]) == [(3.0, 2), (4.0, 0)]  # the rest only after the suspects
    assert death_rows(store) == {sweep.cell_key(grid[0]): 1}


def test_pool_that_breaks_outside_any_cell_raises_instead_of_looping(tmp_path):
    store = tmp_path / "s.sqlite"
    fn, log = logged(tmp_path)
    with ProcessPoolExecutor(max_workers=2, initializer=helpers.failing_initializer) as pool:
        with pytest.raises(RuntimeError, match="broke 3 times in a row and no cell could be "
                                               "blamed"):
            sweep.run(fn, helpers.grid(3), store, executor=pool, progress=False)
    assert calls(log) == []
    assert sweep.status(store) == {"done": 0, "failed": 0, "in_flight": 0}  # nobody blamed


def pid_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan's zombie may wait for init)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def kill_and_wait_gone(proc, pids, limit=5.0) -> list[int]:
    """SIGKILL `proc`, reap it, wait up to `limit` s for `pids` to end; the pids still
    running."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # not communicate(): surviving children would hold its pipes open
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()
    deadline = time.monotonic() + limit
    while any(pid_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if pid_running(p)]


def kill_leftovers(proc, pids) -> None:
    """Do not leave processes behind when a test fails."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def test_pool_workers_exit_when_the_sweep_process_is_killed(tmp_path):
    store, log = tmp_path / "s.sqlite", tmp_path / "calls.log"
    proc = start_sweep_process(store, log, 4, 30.0, workers=2)  # cells sleep 30 s
    pids: set = set()
    try:
        wait_until(lambda: len({c["pid"] for c in helpers.read_log(log)}) == 2,
                   "two workers running cells", proc)
        pids = {c["pid"] for c in helpers.read_log(log)}
        assert proc.pid not in pids
        assert kill_and_wait_gone(proc, pids) == []
    finally:
        kill_leftovers(proc, pids)


def test_watchdog_alone_ends_a_worker_whose_parent_died(tmp_path):
    """The portable fallback (no PR_SET_PDEATHSIG): a thread polling the parent."""
    log = tmp_path / "calls.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, str(TESTS_DIR / "sweep_helpers.py"), "--watchdog",
                             str(log)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pids: list = []
    try:
        wait_until(lambda: len(helpers.read_log(log)) == 1, "the guarded child", proc)
        pids = [c["pid"] for c in helpers.read_log(log)]
        assert pid_running(pids[0])
        assert kill_and_wait_gone(proc, pids, limit=3.0) == []
    finally:
        kill_leftovers(proc, pids)


def test_executor_from_env_sends_cells_to_a_dask_scheduler(tmp_path, monkeypatch):
    """KDLIB_EXECUTOR=dask://HOST:PORT makes run() without an executor compute on the
    scheduler's workers (other pids), with the same records as in-process; resources are
    parsed and bad values named."""
    distributed = pytest.importorskip("distributed")
    grid = helpers.grid(4)
    reference = comparable(sweep.run(helpers.record_cell, grid, tmp_path / "a.sqlite",
                                     progress=False))
    fn, log = logged(tmp_path)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  resources={"GPU": 1}) as cluster:
        monkeypatch.setenv(sweep.EXECUTOR_ENV, cluster.scheduler_address.replace("tcp://",
                                                                                "dask://"))
        monkeypatch.setenv(sweep.RESOURCES_ENV, "GPU=1")
        on_dask = sweep.run(fn, grid, tmp_path / "b.sqlite", progress=False)
        for client in sweep._CLIENTS.values():
            client.close()
        sweep._CLIENTS.clear()
    assert comparable(on_dask).equals(reference)
    assert os.getpid() not in {c["pid"] for c in helpers.read_log(log)}
    assert sweep.parse_resources("GPU=1,MEM=2.5") == {"GPU": 1.0, "MEM": 2.5}
    with pytest.raises(ValueError, match="NAME=AMOUNT"):
        sweep.parse_resources("GPU")
    monkeypatch.setenv(sweep.EXECUTOR_ENV, "spark://x")
    with pytest.raises(ValueError, match="expected dask://HOST:PORT"):
        sweep.executor_from_env()
