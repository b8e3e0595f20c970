"""Resumable sweeps over a grid of cells, committed one by one to an SQLite store.

A *cell* is a dict of keyword arguments (plain JSON values: None, bool, int, float, str and
lists/dicts of them), e.g. ``{"loss": "kd", "T": 4.0, "seed": 0}``. ``run(fn, grid, store)``
calls ``fn(**cell)`` for every cell of ``grid`` not finished yet and commits each result (a dict
of plain JSON values) to the SQLite file ``store`` as soon as it is known, so a crash or a
SIGKILL loses only the cells in flight. Rerunning skips finished cells and retries failed ones.

Store layout (tables ``sweep_results``, ``sweep_errors``, ``sweep_claims``, ``sweep_meta``):
one row per finished cell, keyed by ``cell_key(cell, namespace)``; failed cells have a row in
``sweep_errors`` until they succeed (the result row and the deletion of the error row are one
transaction). Processes that run the same sweep on the same store share the work through
short-lived claims, so no cell is computed twice while its first computation is alive.

Only the process that calls ``run`` writes the store; with an executor (thread pool, process
pool, ``dask.distributed.Client.get_executor()``) workers only compute ``fn``.

A process pool whose worker dies in a cell (out-of-memory killer, segfault) breaks; ``run``
then records that cell as failed (``_error_type`` ``"WorkerDied"``), re-queues the innocent
cells that were in flight, continues on a fresh pool and raises ``SweepError`` at the end. To
tell which cell killed the pool, each worker writes "cell K started in pid P" to a marker file
before calling fn; after a break, the cells whose worker died by itself (any exit status but
the pool's own SIGTERM) are blamed, the others re-queued. Deaths are counted per cell in the
store (table ``sweep_deaths``, cleared when the cell succeeds): after ``max_worker_deaths``
of them the cell is skipped. Pool workers exit when the process that runs the sweep dies
(``PR_SET_PDEATHSIG`` on Linux, a thread watching the parent pid everywhere).

Records (``SweepResults`` items) hold the cell's keys, then the result's keys, then metadata
columns whose names start with ``_``: ``_key``, ``_seconds`` (duration of the fn call, seconds)
and ``_finished_at`` (UTC, ISO 8601).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as _dt
import hashlib
import inspect
import itertools
import json
import math
import os
import pickle
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = [
    "EXECUTOR_ENV",
    "RESOURCES_ENV",
    "SweepError",
    "executor_from_env",
    "parse_resources",
    "SweepResults",
    "cell_key",
    "load",
    "product_grid",
    "run",
    "status",
]

META_PREFIX = "_"
"""Prefix of metadata columns in records; cell and result keys may not start with it."""

SCHEMA_VERSION = "1"
LEASE_SECONDS = 60.0
"""A claim not renewed for this long is considered abandoned (claims are renewed every
LEASE_SECONDS / 4 while the owner lives; a dead owner on the same host is detected at once)."""
POLL_SECONDS = 0.2
MAX_WORKER_DEATHS = 2
"""Default ``max_worker_deaths`` of run(): a cell whose worker process died this many times
(counted in the store, across runs) is skipped instead of run again."""
MAX_UNBLAMED_BREAKS = 3
"""run() raises after this many process-pool breaks in a row that no cell can be blamed for
(e.g. the pool's initializer fails, or workers are killed while idle)."""
WATCHDOG_SECONDS = 0.5
"""How often a pool worker checks that the process running the sweep is still alive."""
WORKER_DIED = "WorkerDied"
"""``_error_type`` of a cell whose worker process died while running it."""
"""How often a run re-checks cells that another live process is computing."""
BUSY_TIMEOUT_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweep_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_results (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    cell TEXT NOT NULL,
    result TEXT NOT NULL,
    seconds REAL NOT NULL,
    finished_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_errors (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    cell TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    seconds REAL,
    failed_at TEXT NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_deaths (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    deaths INTEGER NOT NULL,
    last_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_claims (
    key TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
"""
_TABLES = ("sweep_meta", "sweep_results", "sweep_errors", "sweep_claims")
"""Tables every store has; ``sweep_deaths`` (added later, created by run) is optional."""

_ALL = object()  # status(): every namespace


# --------------------------------------------------------------------------- executors

EXECUTOR_ENV = "KDLIB_EXECUTOR"
"""When set, `run` calls without an executor use this one: ``dask://HOST:PORT`` (a Dask
scheduler; its workers compute the cells). Set by ``kdlib run --executor``."""
RESOURCES_ENV = "KDLIB_EXECUTOR_RESOURCES"
"""Dask worker resources every cell asks for, e.g. ``GPU=1`` (workers started with
``--resources GPU=1`` then run one cell per GPU). Unset: no resources asked."""

_CLIENTS: dict[str, object] = {}


def parse_resources(text: str | None) -> dict[str, float]:
    """``"GPU=1,MEM=2"`` -> ``{"GPU": 1.0, "MEM": 2.0}``; "" or None -> {}."""
    if not text:
        return {}
    if not isinstance(text, str):
        raise TypeError(f"resources must be a string such as 'GPU=1', got {text!r}")
    out = {}
    for part in text.split(","):
        name, sep, amount = part.strip().partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = float("nan")
        if not sep or not name or not value > 0:
            raise ValueError(f"resource {part!r} must read NAME=AMOUNT with AMOUNT > 0, "
                             f"e.g. GPU=1")
        out[name] = value
    return out


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker
        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def executor_from_env() -> cf.Executor | None:
    """The executor named by KDLIB_EXECUTOR (None when unset, or inside a Dask worker).

    ``dask://HOST:PORT`` connects one `distributed.Client` per process and address and
    returns ``client.get_executor(resources=...)`` (KDLIB_EXECUTOR_RESOURCES). Anything
    else is a ValueError naming the forms allowed.
    """
    url = os.environ.get(EXECUTOR_ENV, "").strip()
    if not url or _in_dask_worker():
        return None
    if not url.startswith("dask://") or not url[len("dask://"):]:
        raise ValueError(f"{EXECUTOR_ENV}={url!r}: expected dask://HOST:PORT (a Dask "
                         f"scheduler address)")
    resources = parse_resources(os.environ.get(RESOURCES_ENV))
    try:
        import distributed
    except ImportError as err:
        raise ImportError(f"{EXECUTOR_ENV}={url!r} needs dask.distributed: pip install "
                          f"'kdlib[dask]'") from err
    address = "tcp://" + url[len("dask://"):]
    client = _CLIENTS.get(address)
    if client is None or client.status not in ("running", "connecting"):
        client = _CLIENTS[address] = distributed.Client(address, set_as_default=False)
    return client.get_executor(resources=resources) if resources else client.get_executor()


# --------------------------------------------------------------------------- errors, results


class SweepError(RuntimeError):
    """Some cells raised. ``.failures``: one dict per failed cell (the cell's keys plus
    ``_key``, ``_error_type``, ``_error``, ``_traceback``, ``_failed_at``, ``_attempts``; cells
    whose pool worker died: ``_error_type`` ``"WorkerDied"`` and ``_deaths``, the deaths counted
    so far); ``.results``: the ``SweepResults`` of the cells that succeeded (committed)."""

    def __init__(self, message: str, failures: list[dict], results: SweepResults):
        super().__init__(message)
        self.failures = failures
        self.results = results


class SweepResults(list):
    """A list of records (dicts: cell keys, result keys, ``_key``, ``_seconds``,
    ``_finished_at``), one per finished cell. ``.failures`` lists the cells that failed
    (same format as ``SweepError.failures``)."""

    def __init__(self, records: Iterable[dict] = (), failures: Iterable[dict] = ()):
        super().__init__(records)
        self.failures = list(failures)

    def to_frame(self):
        """pandas DataFrame, one row per record; columns: cell keys (first-seen order), then
        result keys, then ``_key``, ``_seconds``, ``_finished_at`` (tz-aware UTC datetimes)."""
        import pandas as pd

        cell_cols: dict[str, None] = {}
        result_cols: dict[str, None] = {}
        for rec in self:
            for col in getattr(rec, "cell_keys", ()):
                cell_cols.setdefault(col)
        for rec in self:
            for col in rec:
                if col not in cell_cols and not col.startswith(META_PREFIX):
                    result_cols.setdefault(col)
        meta = ["_key", "_seconds", "_finished_at"] if len(self) else []
        columns = [*cell_cols, *result_cols, *meta]
        frame = pd.DataFrame([{c: rec.get(c) for c in columns} for rec in self], columns=columns)
        if len(self):
            frame["_finished_at"] = pd.to_datetime(frame["_finished_at"], utc=True)
        return frame


class _Record(dict):
    """A plain record dict that also remembers which keys came from the cell (`cell_keys`),
    so that to_frame() puts cell columns first even when cells differ in their keys."""

    cell_keys: tuple[str, ...] = ()


def _make_record(key: str, cell_json: str, result_json: str, seconds, finished_at) -> dict:
    cell = json.loads(cell_json)
    record = _Record(cell)
    record.update(json.loads(result_json))
    record["_key"] = key
    record["_seconds"] = float(seconds)
    record["_finished_at"] = finished_at
    record.cell_keys = tuple(cell)
    return record


def _make_failure(key, cell_json, error_type, message, tb, failed_at, attempts) -> dict:
    failure = dict(json.loads(cell_json))
    failure.update(
        _key=key,
        _error_type=error_type,
        _error=message,
        _traceback=tb,
        _failed_at=failed_at,
        _attempts=attempts,
    )
    return failure


# --------------------------------------------------------------------------- validation


def _check_plain(value, where: str, allow_nan: bool) -> None:
    """Raise TypeError unless `value` is a plain JSON value (nested lists/dicts allowed)."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not allow_nan and not math.isfinite(value):
            raise TypeError(f"{where} is {value!r}; cell values must be finite numbers")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]", allow_nan)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-str key {k!r}; JSON object keys must be str")
            _check_plain(item, f"{where}[{k!r}]", allow_nan)
        return
    hint = ""
    if hasattr(value, "item") and hasattr(value, "dtype"):
        hint = " (a numpy/torch scalar or array: convert it with float(x), int(x) or x.tolist())"
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}, which is not a plain "
        f"JSON value; allowed: None, bool, int, float, str and lists/dicts of them{hint}"
    )


def _canonical_json(cell: Mapping) -> str:
    return json.dumps(cell, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _check_namespace(namespace) -> str:
    """Validated namespace as stored ('' for None)."""
    if namespace is None:
        return ""
    if not isinstance(namespace, str) or not namespace:
        raise TypeError(f"namespace must be None or a non-empty str, got {namespace!r}")
    return namespace


def _check_cell(cell, where: str) -> dict:
    if not isinstance(cell, Mapping):
        raise TypeError(f"{where} must be a dict of keyword arguments, got {type(cell).__name__}")
    cell = dict(cell)
    for k in cell:
        if not isinstance(k, str):
            raise TypeError(f"{where} has a non-str key {k!r}; keys are fn's parameter names")
        if k.startswith(META_PREFIX):
            raise ValueError(
                f"{where} has key {k!r}; keys starting with {META_PREFIX!r} are reserved for "
                "metadata columns (_key, _seconds, _finished_at)"
            )
    _check_plain(cell, where, allow_nan=False)
    return cell


def cell_key(cell: Mapping, namespace: str | None = None) -> str:
    """Stable key of a cell: sha256 (32 hex digits) of the canonical JSON of the cell (sorted
    keys, no spaces), prefixed by ``namespace`` when given. ``{"T": 4}`` and ``{"T": 4.0}``
    are different cells."""
    cell = _check_cell(cell, "cell")
    ns = _check_namespace(namespace)
    payload = _canonical_json(cell) if not ns else f"{ns}\x00{_canonical_json(cell)}"
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def product_grid(**axes: Iterable) -> list[dict]:
    """Cartesian product of named axes as a list of cells, last axis fastest:
    ``product_grid(T=[1, 4], seed=[0, 1])`` -> ``[{"T": 1, "seed": 0}, {"T": 1, "seed": 1},
    {"T": 4, "seed": 0}, {"T": 4, "seed": 1}]``. Every axis must be a non-empty iterable."""
    if not axes:
        raise ValueError("product_grid needs at least one axis, e.g. product_grid(T=[1, 4])")
    values = {}
    for name, axis in axes.items():
        if isinstance(axis, (str, bytes, Mapping)) or not isinstance(axis, Iterable):
            raise TypeError(f"axis {name!r} must be a list of values, got {type(axis).__name__}")
        values[name] = list(axis)
        if not values[name]:
            raise ValueError(f"axis {name!r} is empty; every axis needs at least one value")
    return [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]


def _fn_parameters(fn) -> tuple[set[str] | None, set[str], str]:
    """(accepted keyword names or None if fn takes **kwargs, required names, description)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, set(), "?"
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = {n for n, p in sig.parameters.items() if p.kind in kinds}
    required = {
        n
        for n, p in sig.parameters.items()
        if p.kind in kinds and p.default is inspect.Parameter.empty
    }
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None, required, str(sig)
    return accepted, required, str(sig)


def _check_grid(fn, grid, namespace: str) -> tuple[list[dict], list[str]]:
    if isinstance(grid, (str, bytes)) or isinstance(grid, Mapping):
        raise TypeError(
            f"grid must be an iterable of dicts, got a {type(grid).__name__}"
            + (" (wrap a single cell in a list: [cell])" if isinstance(grid, Mapping) else "")
        )
    if not isinstance(grid, Iterable):
        raise TypeError(f"grid must be an iterable of dicts, got {type(grid).__name__}")
    cells = [_check_cell(cell, f"grid[{i}]") for i, cell in enumerate(grid)]
    if not cells:
        raise ValueError("grid is empty; it must hold at least one cell (a dict of fn's kwargs)")
    accepted, required, sig = _fn_parameters(fn)
    name = getattr(fn, "__name__", type(fn).__name__)
    for i, cell in enumerate(cells):
        if accepted is not None:
            unknown = [k for k in cell if k not in accepted]
            if unknown:
                raise ValueError(
                    f"grid[{i}] has key {unknown[0]!r}, which {name} does not accept; "
                    f"{name}{sig} accepts {sorted(accepted)}"
                )
        missing = sorted(required - set(cell))
        if missing:
            raise ValueError(
                f"grid[{i}] = {cell} lacks required parameter(s) {missing} of {name}{sig}"
            )
    keys = []
    seen: dict[str, int] = {}
    for i, cell in enumerate(cells):
        key = cell_key(cell, namespace or None)
        if key in seen:
            raise ValueError(
                f"grid[{i}] = {cell} duplicates grid[{seen[key]}]; every cell must be unique "
                "(a duplicate would map to the same stored row)"
            )
        seen[key] = i
        keys.append(key)
    return cells, keys


def _check_store_path(store) -> Path:
    if not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be a path (str or os.PathLike), got {type(store).__name__}")
    path = Path(store)
    if str(store) in ("", ":memory:"):
        raise ValueError(f"store must be a file path, got {str(store)!r}")
    if path.exists() and not path.is_file():
        raise ValueError(f"store {str(path)!r} exists and is not a file")
    return path


# --------------------------------------------------------------------------- SQLite store


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    """Connection in autocommit mode (transactions are explicit BEGIN IMMEDIATE ... COMMIT)."""
    if not create and not path.exists():
        raise FileNotFoundError(f"store {str(path)!r} does not exist; run() creates it")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        if create:
            _check_foreign_tables(conn, path)  # before touching the file's journal mode
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ValueError(f"could not put store {str(path)!r} in WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            with _write_tx(conn):
                _check_foreign_tables(conn, path)
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO sweep_meta(name, value) VALUES ('schema', ?)",
                    (SCHEMA_VERSION,),
                )
        _check_schema(conn, path)
    except sqlite3.DatabaseError as err:
        conn.close()
        raise ValueError(f"store {str(path)!r} is not a usable SQLite sweep store: {err}") from err
    except BaseException:
        conn.close()
        raise
    return conn


def _check_foreign_tables(conn, path) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "sweep_meta" not in tables:
        raise ValueError(
            f"store {str(path)!r} is an SQLite file with other tables {sorted(tables)}; "
            "use a separate file for sweeps"
        )


def _check_schema(conn, path) -> None:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return  # an empty file: read functions see an empty store
    if not set(_TABLES) <= tables:
        raise ValueError(
            f"store {str(path)!r} is not a kdlib sweep store (tables {sorted(tables)})"
        )
    row = conn.execute("SELECT value FROM sweep_meta WHERE name = 'schema'").fetchone()
    if row is None or row[0] != SCHEMA_VERSION:
        raise ValueError(
            f"store {str(path)!r} has sweep schema {row and row[0]!r}; this kdlib reads "
            f"schema {SCHEMA_VERSION!r}"
        )


def _has_tables(conn) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='sweep_results'"
    ).fetchone()
    return bool(row[0])


@contextlib.contextmanager
def _write_tx(conn: sqlite3.Connection):
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_HOST = socket.gethostname()


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_is_live(host: str, pid: int, expires_at: float) -> bool:
    if expires_at < time.time():
        return False
    if host == _HOST and not _pid_alive(pid):
        return False
    return True


class _Store:
    """The writing side of a sweep store, used only by the process that calls run()."""

    def __init__(self, path: Path, namespace: str):
        self.path = path
        self.namespace = namespace
        self.owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex}"
        self.conn = _connect(path, create=True)

    def close(self) -> None:
        self.conn.close()

    def results_for(self, keys: list[str]) -> dict[str, dict]:
        found = {}
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                "SELECT key, cell, result, seconds, finished_at FROM sweep_results "
                f"WHERE key IN ({marks})",
                chunk,
            ):
                found[row[0]] = _make_record(*row)
        return found

    def result(self, key: str) -> dict | None:
        return self.results_for([key]).get(key)

    def claim(self, keys: list[str], limit: int) -> tuple[list, list, list]:
        """Claim up to `limit` of `keys` (in order) in one transaction. Returns (claimed: ours
        now, done: have a result, busy: claimed by another live run); keys after the limit
        are in none of them."""
        claimed, done, busy = [], [], []
        expires = time.time() + LEASE_SECONDS
        with _write_tx(self.conn):
            for key in keys:
                if len(claimed) >= limit:
                    break
                if self.conn.execute(
                    "SELECT 1 FROM sweep_results WHERE key = ?", (key,)
                ).fetchone():
                    done.append(key)
                    continue
                row = self.conn.execute(
                    "SELECT owner, host, pid, expires_at FROM sweep_claims WHERE key = ?", (key,)
                ).fetchone()
                if row is not None and row[0] != self.owner and _claim_is_live(*row[1:]):
                    busy.append(key)
                    continue
                self.conn.execute(
                    "INSERT OR REPLACE INTO sweep_claims(key, namespace, owner, host, pid, "
                    "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (key, self.namespace, self.owner, _HOST, os.getpid(), expires),
                )
                claimed.append(key)
        return claimed, done, busy

    def commit_result(self, key: str, cell: dict, result: dict, seconds: float) -> dict:
        """Insert the result row, clear the cell's error row and our claim: one transaction.
        Returns the stored record (the first writer wins if two processes raced)."""
        with _write_tx(self.conn):
            self.conn.execute(
                "INSERT OR IGNORE INTO sweep_results(key, namespace, cell, result, seconds, "
                "finished_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key, self.namespace, json.dumps(cell, allow_nan=False), json.dumps(result),
                 seconds, _utc_now()),
            )
            self.conn.execute("DELETE FROM sweep_errors WHERE key = ?", (key,))
            self.conn.execute("DELETE FROM sweep_deaths WHERE key = ?", (key,))
            self.conn.execute(
                "DELETE FROM sweep_claims WHERE key = ? AND owner = ?", (key, self.owner)
            )
        return self.result(key)

    def deaths_for(self, keys: list[str]) -> dict[str, int]:
        """Worker deaths recorded for `keys` (only keys with at least one)."""
        found = {}
        for chunk in _chunks(keys, 500):
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(
                f"SELECT key, deaths FROM sweep_deaths WHERE key IN ({marks})", chunk
            ).fetchall())
        return found

    def failure(self, key: str) -> dict | None:
        """The stored failure of `key` (SweepError.failures format), or None."""
        row = self.conn.execute(
            "SELECT key, cell, error_type, message, traceback, failed_at, attempts "
            "FROM sweep_errors WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else _make_failure(*row)

    def commit_error(self, key: str, cell: dict, error_type: str, message: str, tb: str,
                     seconds: float | None,
                     death: Callable[[int], str] | None = None) -> dict | None:
        """Record a failure (unless a result exists by now) and drop our claim: one
        transaction. `death`: count a worker death too; called with the cell's death count,
        it returns the message (the failure then has ``_deaths``). Returns the failure dict,
        or None if the cell has a result."""
        now = _utc_now()
        with _write_tx(self.conn):
            self.conn.execute(
                "DELETE FROM sweep_claims WHERE key = ? AND owner = ?", (key, self.owner)
            )
            if self.conn.execute("SELECT 1 FROM sweep_results WHERE key = ?", (key,)).fetchone():
                return None
            deaths = None
            if death is not None:
                row = self.conn.execute(
                    "SELECT deaths FROM sweep_deaths WHERE key = ?", (key,)
                ).fetchone()
                deaths = (row[0] if row else 0) + 1
                self.conn.execute(
                    "INSERT OR REPLACE INTO sweep_deaths(key, namespace, deaths, last_at) "
                    "VALUES (?, ?, ?, ?)", (key, self.namespace, deaths, now),
                )
                message = death(deaths)
                tb = f"{error_type}: {message}\n"
            row = self.conn.execute(
                "SELECT attempts FROM sweep_errors WHERE key = ?", (key,)
            ).fetchone()
            attempts = (row[0] if row else 0) + 1
            cell_json = json.dumps(cell, allow_nan=False)
            self.conn.execute(
                "INSERT OR REPLACE INTO sweep_errors(key, namespace, cell, error_type, message, "
                "traceback, seconds, failed_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, self.namespace, cell_json, error_type, message, tb, seconds, now, attempts),
            )
        failure = _make_failure(key, cell_json, error_type, message, tb, now, attempts)
        if deaths is not None:
            failure["_deaths"] = deaths
        return failure

    def release_claims(self) -> None:
        with _write_tx(self.conn):
            self.conn.execute("DELETE FROM sweep_claims WHERE owner = ?", (self.owner,))


class _Heartbeat(threading.Thread):
    """Renews this run's claims every LEASE_SECONDS / 4 so long cells keep their claim."""

    def __init__(self, path: Path, owner: str):
        super().__init__(name="kdlib-sweep-heartbeat", daemon=True)
        self.path, self.owner = path, owner
        self.stop_event = threading.Event()

    def run(self) -> None:
        conn = None
        try:
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_SECONDS,
                                   isolation_level=None)
            while not self.stop_event.wait(LEASE_SECONDS / 4):
                with contextlib.suppress(sqlite3.Error), _write_tx(conn):
                    conn.execute(
                        "UPDATE sweep_claims SET expires_at = ? WHERE owner = ?",
                        (time.time() + LEASE_SECONDS, self.owner),
                    )
        except sqlite3.Error:
            pass  # claims then expire after LEASE_SECONDS; results are unaffected
        finally:
            if conn is not None:
                conn.close()


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --------------------------------------------------------------------------- calling fn


class _CellCall:
    """Picklable wrapper run on the worker: calls fn(**cell), times it, checks the result and
    turns exceptions into data (type, message, traceback text) so the parent can record them.

    For process pools (`marker_dir` and `parent_pid` given) it first arms the worker's
    parent-death guard (once per process) and writes the marker file ``marker_dir/key``
    holding this worker's pid: "cell `key` started in this pid"."""

    def __init__(self, fn: Callable, marker_dir: str | None = None,
                 parent_pid: int | None = None):
        self.fn = fn
        self.marker_dir = marker_dir
        self.parent_pid = parent_pid

    def __call__(self, cell: dict, key: str | None = None):
        if self.parent_pid is not None:
            _guard_worker(self.parent_pid)
        if self.marker_dir is not None and key is not None:
            with contextlib.suppress(OSError):  # the sweep ended meanwhile: nobody reads it
                with open(os.path.join(self.marker_dir, key), "w") as marker:
                    marker.write(str(os.getpid()))
        start = time.perf_counter()
        try:
            result = self.fn(**cell)
            seconds = time.perf_counter() - start
            _check_result(result, cell)
            return ("ok", result, seconds)
        except Exception as err:
            seconds = time.perf_counter() - start
            tb = err.__traceback__.tb_next or err.__traceback__  # drop this wrapper's frame
            text = "".join(traceback.format_exception(type(err), err, tb))
            return ("error", type(err).__name__, str(err), text, seconds)


def _check_result(result, cell: dict) -> None:
    if not isinstance(result, dict):
        raise TypeError(
            f"fn returned a {type(result).__name__}; it must return a dict of plain JSON values "
            "(e.g. {'acc': 0.71, 'ece': 0.05})"
        )
    for k in result:
        if not isinstance(k, str):
            raise TypeError(f"fn's result has a non-str key {k!r}; result keys must be str")
        if k.startswith(META_PREFIX):
            raise ValueError(
                f"fn's result has key {k!r}; keys starting with {META_PREFIX!r} are reserved "
                "for metadata columns"
            )
        if k in cell:
            raise ValueError(
                f"fn's result has key {k!r}, which is also a cell key; rename it so that the "
                "record has one column per name"
            )
    _check_plain(result, "fn's result", allow_nan=True)


def _is_pickling_error(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return isinstance(err, pickle.PicklingError) or "pickl" in text


_PICKLE_HINT = (
    "fn (and everything it references) must be picklable for process-based executors "
    "(ProcessPoolExecutor, dask): define it at module level in an importable module, "
    "not as a lambda or a nested function"
)


def _check_picklable(fn, executor) -> None:
    """Fail before running when fn cannot be shipped to the executor's workers."""
    if isinstance(executor, cf.ProcessPoolExecutor):
        dumps = pickle.dumps
    elif type(executor).__module__.startswith("distributed"):
        try:
            import cloudpickle
        except ImportError:  # pragma: no cover - distributed depends on cloudpickle
            return
        dumps = cloudpickle.dumps
    else:
        return
    try:
        dumps(_CellCall(fn))
    except Exception as err:
        raise TypeError(
            f"fn cannot be pickled for {type(executor).__name__}: {type(err).__name__}: {err}. "
            + _PICKLE_HINT
        ) from err


class _InlineExecutor(cf.Executor):
    """Runs each submitted call at once, in this thread (executor=None)."""

    _max_workers = 1

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        future.set_result(fn(*args, **kwargs))
        return future


# --------------------------------------------------------------------------- process pools

_GUARDED_PID: int | None = None  # the pid whose parent-death guard is armed (fork copies it)


def _set_pdeathsig() -> bool:
    """Linux: ask the kernel to SIGKILL this process when its parent dies. False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1  # noqa: N806 - the name in <sys/prctl.h>
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, ppid: int) -> None:
    """Worker thread: exit the process once the sweep's process (or our parent) is gone."""
    while True:
        time.sleep(WATCHDOG_SECONDS)
        if os.getppid() != ppid or not _pid_alive(parent_pid):
            os._exit(1)


def _guard_worker(parent_pid: int) -> None:
    """Make this pool worker exit when `parent_pid` (the process running the sweep) dies:
    PR_SET_PDEATHSIG on Linux, plus a daemon thread polling the parent everywhere. Once per
    process; a worker whose sweep process is already gone exits at once."""
    global _GUARDED_PID
    if _GUARDED_PID == os.getpid():
        return
    _GUARDED_PID = os.getpid()
    _set_pdeathsig()
    ppid = os.getppid()
    if not _pid_alive(parent_pid):  # died before the guard was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, ppid), daemon=True,
                     name="kdlib-sweep-parent-watchdog").start()


class _GuardedInitializer:
    """Picklable pool initializer: arms the parent-death guard, then runs the user's
    initializer (if any) with its arguments."""

    def __init__(self, parent_pid: int, initializer: Callable | None, initargs: tuple):
        self.parent_pid = parent_pid
        self.initializer = initializer
        self.initargs = tuple(initargs)

    def __call__(self) -> None:
        _guard_worker(self.parent_pid)
        if self.initializer is not None:
            self.initializer(*self.initargs)


def _install_guard(pool: cf.ProcessPoolExecutor) -> None:
    """Chain the guard in front of the initializer of a pool that has no workers yet (workers
    that exist already arm it when they get their first cell)."""
    init = getattr(pool, "_initializer", None)
    if getattr(pool, "_processes", None) == {} and not isinstance(init, _GuardedInitializer):
        pool._initializer = _GuardedInitializer(os.getpid(), init, pool._initargs)
        pool._initargs = ()


def _fresh_process_pool(broken: cf.ProcessPoolExecutor) -> cf.ProcessPoolExecutor:
    """A new ProcessPoolExecutor with the settings of `broken`: max_workers, mp_context,
    initializer and initargs, max_tasks_per_child (Python >= 3.11), the guard chained in."""
    init, initargs = broken._initializer, broken._initargs
    if not isinstance(init, _GuardedInitializer):
        init, initargs = _GuardedInitializer(os.getpid(), init, initargs), ()
    kwargs = dict(max_workers=broken._max_workers, mp_context=broken._mp_context,
                  initializer=init, initargs=initargs)
    if getattr(broken, "_max_tasks_per_child", None) is not None:
        kwargs["max_tasks_per_child"] = broken._max_tasks_per_child
    return cf.ProcessPoolExecutor(**kwargs)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "?"
        hint = {"SIGKILL": ": out of memory?", "SIGSEGV": ": a crash in native code?"}
        return f"killed by signal {-code}, {name}{hint.get(name, '')}"
    return f"exited with code {code}"


class _ProcessPoolKeeper:
    """The process pool of one run(): submits cells with start markers, remembers every
    worker process (pid -> multiprocessing.Process, for exit codes after a break), and
    replaces a broken pool with a fresh one (owned, hence shut down, by run)."""

    def __init__(self, pool: cf.ProcessPoolExecutor, fn: Callable):
        _install_guard(pool)
        self.pool = pool
        self.owned = False
        self.marker_dir = tempfile.mkdtemp(prefix="kdlib-sweep-")
        self.call = _CellCall(fn, self.marker_dir, os.getpid())
        self.processes: dict = {}

    def remember_workers(self) -> None:
        self.processes.update(getattr(self.pool, "_processes", None) or {})

    def submit(self, cell: dict, key: str) -> cf.Future:
        self.forget(key)
        future = self.pool.submit(self.call, cell, key)
        self.remember_workers()
        return future

    def forget(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.marker_dir, key))

    def started(self, key: str) -> tuple[bool, int | None]:
        """(whether a worker started cell `key`, that worker's pid if readable)."""
        try:
            with open(os.path.join(self.marker_dir, key)) as marker:
                text = marker.read().strip()
        except FileNotFoundError:
            return False, None
        return True, int(text) if text.isdigit() else None

    def exit_code(self, pid: int | None) -> int | None:
        """Exit code of worker `pid` (negative: killed by that signal), None if unknown."""
        proc = self.processes.get(pid)
        return None if proc is None else proc.exitcode

    def settle_broken(self) -> None:
        """Wait until the broken pool has failed every future and reaped every worker."""
        self.remember_workers()
        with contextlib.suppress(Exception):
            self.pool.shutdown(wait=True)

    def renew(self) -> None:
        fresh = _fresh_process_pool(self.pool)
        self.pool, self.owned, self.processes = fresh, True, {}

    def close(self, wait: bool) -> None:
        if self.owned:
            with contextlib.suppress(Exception):
                self.pool.shutdown(wait=wait, cancel_futures=True)
        shutil.rmtree(self.marker_dir, ignore_errors=True)


def _is_broken(future: cf.Future) -> bool:
    return (future.done() and not future.cancelled()
            and isinstance(future.exception(), cf.BrokenExecutor))


# --------------------------------------------------------------------------- run / load / status


def run(
    fn: Callable[..., dict],
    grid: Iterable[Mapping],
    store: str | os.PathLike,
    executor: cf.Executor | None = None,
    progress: bool = True,
    raise_errors: bool = True,
    namespace: str | None = None,
    *,
    max_in_flight: int | None = None,
    max_worker_deaths: int | None = MAX_WORKER_DEATHS,
) -> SweepResults:
    """Call ``fn(**cell)`` for every cell of ``grid`` that ``store`` has no result for, and
    commit each result to the SQLite file ``store`` as soon as it arrives.

    fn: returns a dict of plain JSON values (NaN allowed); its keys may not repeat a cell key
        or start with ``_``. Must be picklable for process-based executors.
    grid: non-empty iterable of distinct dicts of plain JSON values whose keys fn accepts
        (duplicates raise ValueError; they would share one stored row).
    store: path of the SQLite file (created with its parent folders if missing). Only this
        process writes it.
    executor: None runs cells here, one after the other (or on the executor named by the
        KDLIB_EXECUTOR environment variable, see `executor_from_env`); any
        concurrent.futures.Executor
        (ThreadPoolExecutor, ProcessPoolExecutor, dask ``client.get_executor()``) runs them
        there while results are committed here as they complete. A ProcessPoolExecutor that
        breaks (a worker died) is shut down and replaced by a new one with the same
        max_workers, mp_context, initializer/initargs and max_tasks_per_child, which run
        shuts down before it returns.
    namespace: keeps sweeps that share a store apart (e.g. the notebook name).
    max_in_flight: how many cells are submitted at a time; default: the pool's worker count
        for thread/process pools, all pending cells for other executors (e.g. dask).
    max_worker_deaths: a cell whose pool worker died this many times (counted in the store,
        across runs) is skipped and reported as failed; None never skips.

    Returns the records of all finished cells in grid order (stored ones included). Cells
    that raised, or whose worker process died, are recorded with type, message and traceback,
    retried by the next run, and reported by a SweepError after every other cell was attempted
    (or listed in ``.failures`` of the result when ``raise_errors`` is False).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    for flag, name in ((progress, "progress"), (raise_errors, "raise_errors")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if executor is not None and not isinstance(executor, cf.Executor):
        hint = " (for dask pass client.get_executor())" if hasattr(executor, "scheduler") else ""
        raise TypeError(
            f"executor must be None or a concurrent.futures.Executor, got "
            f"{type(executor).__name__}{hint}"
        )
    if max_in_flight is not None:
        # imported here: kdlib._validate imports torch, which sweep itself (and its
        # subprocesses / dask workers) otherwise never needs
        from kdlib._validate import check_int

        max_in_flight = check_int(max_in_flight, "max_in_flight", minimum=1)
    if max_worker_deaths is not None and (
        isinstance(max_worker_deaths, bool) or not isinstance(max_worker_deaths, int)
    ):
        raise TypeError(f"max_worker_deaths must be None or an int >= 1, got "
                        f"{max_worker_deaths!r}")
    if max_worker_deaths is not None and max_worker_deaths < 1:
        raise ValueError(f"max_worker_deaths must be None (never skip) or >= 1, got "
                         f"{max_worker_deaths}")
    ns = _check_namespace(namespace)
    path = _check_store_path(store)
    cells, keys = _check_grid(fn, grid, ns)
    if executor is None:
        executor = executor_from_env()
    if executor is not None:
        _check_picklable(fn, executor)

    keeper = None
    if executor is None:
        pool, window = _InlineExecutor(), 1
    else:
        pool = executor
        workers = getattr(executor, "_max_workers", None)
        window = max_in_flight or (workers if isinstance(workers, int) else len(cells))
    cell_of = dict(zip(keys, cells, strict=True))

    db = _Store(path, ns)
    records: dict[str, dict] = db.results_for(keys)
    failures: dict[str, dict] = {}
    queue = [k for k in keys if k not in records]
    counts = {"done": 0, "skipped": len(records), "failed": 0}
    in_flight: dict[cf.Future, str] = {}
    isolate: set[str] = set()  # suspects of an unattributed break: run them one at a time
    unblamed = [0]  # pool breaks in a row that no cell could be blamed for
    if max_worker_deaths is not None:
        for key, deaths in db.deaths_for(queue).items():
            if deaths >= max_worker_deaths:
                failures[key] = _skipped_failure(db, key, cell_of[key], deaths,
                                                 max_worker_deaths)
        queue = [k for k in queue if k not in failures]
        counts["failed"] = len(failures)
    if isinstance(executor, cf.ProcessPoolExecutor):
        keeper = _ProcessPoolKeeper(executor, fn)
    heartbeat = _Heartbeat(path, db.owner)
    heartbeat.start()
    bar = _progress_bar(len(cells), progress, counts)

    def tally(name: str) -> None:
        counts[name] += 1
        bar.update(1)
        bar.set_postfix(counts, refresh=False)

    def commit_failure(key: str, *error, death=None) -> None:
        failure = db.commit_error(key, cell_of[key], *error, death=death)
        if failure is None:  # another process finished it meanwhile
            records[key] = db.result(key)
            tally("skipped")
        else:
            failures[key] = failure
            tally("failed")

    def finish(future: cf.Future, key: str) -> None:
        isolate.discard(key)
        try:
            outcome = future.result()
        except BaseException as err:  # the executor failed: pickling, dead worker, cancel...
            msg = f"{err}" + (f" ({_PICKLE_HINT})" if _is_pickling_error(err) else "")
            tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            outcome = ("error", type(err).__name__, msg, tb, None)
        if outcome[0] == "ok":
            records[key] = db.commit_result(key, cell_of[key], outcome[1], outcome[2])
            tally("done")
        else:
            commit_failure(key, *outcome[1:])

    def blame(key: str, pid: int | None, code: int | None) -> None:
        def message(deaths: int) -> str:
            who = "worker process" + (f" {pid}" if pid is not None else "")
            text = (f"{who} died ({_describe_exit(code)}) while running this cell; "
                    f"worker deaths of this cell: {deaths}")
            if max_worker_deaths is not None and deaths >= max_worker_deaths:
                return text + (f" (max_worker_deaths={max_worker_deaths}: the next run "
                               "skips it)")
            return text + " (the next run retries it)"

        commit_failure(key, WORKER_DIED, "", "", None, death=message)

    def on_break(err: BaseException) -> None:
        """The pool broke: settle every in-flight cell, blame the one whose worker died by
        itself, re-queue the others (first; several candidates are then run one at a time),
        and continue on a fresh pool."""
        keeper.settle_broken()
        settled = list(in_flight.items())
        in_flight.clear()
        unstarted, suspects = [], []  # suspects: (key, pid, exit code of that pid)
        for future, key in settled:
            if future.done() and not future.cancelled() and not _is_broken(future):
                finish(future, key)  # completed before the break
                continue
            started, pid = keeper.started(key)
            if started:
                suspects.append((key, pid, keeper.exit_code(pid)))
            else:
                unstarted.append(key)
        # the pool SIGTERMs the workers it stops; any other exit status died by itself
        candidates = [s for s in suspects if s[2] != -signal.SIGTERM]
        died = [s for s in candidates if s[2] is not None]
        culprits = []
        if len(died) == 1 or (not died and len(candidates) == 1):
            culprits = died or candidates
        elif len(candidates) > 1:  # cannot single one out: rerun each alone
            isolate.update(k for k, _, _ in candidates)
        for key, pid, code in culprits:
            isolate.discard(key)
            blame(key, pid, code)
        blamed = {k for k, _, _ in culprits}
        queue[:0] = [k for k, _, _ in suspects if k not in blamed] + unstarted
        unblamed[0] = 0 if culprits else unblamed[0] + 1
        if unblamed[0] >= MAX_UNBLAMED_BREAKS:
            raise RuntimeError(
                f"the process pool broke {unblamed[0]} times in a row and no cell could be "
                "blamed (workers died outside any cell: does the pool's initializer raise, or "
                f"is something killing idle workers?); finished cells are committed to "
                f"{str(path)!r}"
            ) from err
        keeper.renew()

    def settle(future: cf.Future) -> None:
        if keeper is not None and _is_broken(future):
            on_break(future.exception())
        else:
            finish(future, in_flight.pop(future))

    completed = False
    try:
        while queue or in_flight:
            candidates, limit = queue, window - len(in_flight)
            if isolate:  # suspects of a break: one at a time, nothing else in flight
                suspects = [k for k in queue if k in isolate]
                if suspects or in_flight:
                    candidates, limit = suspects, (0 if in_flight else 1)
                else:
                    isolate.clear()
            if candidates and limit > 0:
                claimed, done, busy = db.claim(candidates, limit)
                seen = set(claimed) | set(done) | set(busy)
                isolate.difference_update(done, busy)
                queue[:] = busy + [k for k in queue if k not in seen]
                if done:  # finished by another run since we looked
                    records.update(db.results_for(done))
                    counts["skipped"] += len(done)
                    bar.update(len(done))
                    bar.set_postfix(counts, refresh=False)
                for i, key in enumerate(claimed):
                    try:
                        if keeper is not None:
                            future = keeper.submit(cell_of[key], key)
                        else:
                            future = pool.submit(_CellCall(fn), cell_of[key])
                    except cf.BrokenExecutor as err:
                        if keeper is None:
                            raise
                        queue[:0] = claimed[i:]
                        on_break(err)
                        break
                    in_flight[future] = key
                    if future.done():
                        settle(future)
                if claimed and not in_flight:
                    continue  # ran inline: claim the next cell at once
            if in_flight:
                done, _ = cf.wait(in_flight, timeout=POLL_SECONDS,
                                  return_when=cf.FIRST_COMPLETED)
                for future in done:
                    if future in in_flight:  # not settled by a break meanwhile
                        settle(future)
            elif queue:
                time.sleep(POLL_SECONDS)  # every pending cell is being computed elsewhere
        completed = True
    finally:
        for future, key in list(in_flight.items()):
            if future.done() and not future.cancelled() and not _is_broken(future):
                with contextlib.suppress(Exception):
                    finish(future, key)  # keep work that finished before the interruption
            else:
                future.cancel()
        if keeper is not None:
            keeper.close(wait=completed)
        heartbeat.stop_event.set()
        heartbeat.join(timeout=1.0)
        with contextlib.suppress(sqlite3.Error):
            db.release_claims()
        db.close()
        bar.close()

    results = SweepResults(
        [records[k] for k in keys if k in records],
        [failures[k] for k in keys if k in failures],
    )
    if results.failures and raise_errors:
        raise SweepError(_failure_message(results, len(cells), path), results.failures, results)
    return results


def _skipped_failure(db: _Store, key: str, cell: dict, deaths: int, limit: int) -> dict:
    """The failure reported for a cell skipped because its worker died `deaths` times."""
    failure = db.failure(key) or _make_failure(key, json.dumps(cell), WORKER_DIED, "", "",
                                               _utc_now(), deaths)
    last = f" Last time: {failure['_error']}" if failure["_error"] else ""
    failure.update(
        _error_type=WORKER_DIED,
        _error=(f"skipped: its worker process died {deaths} times while running this cell "
                f"(max_worker_deaths={limit}); fix the cause (memory, a crash in native code) "
                f"and rerun with a higher max_worker_deaths, or None, to try it again.{last}"),
        _deaths=deaths,
    )
    return failure


def _progress_bar(total: int, progress: bool, counts: dict):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not progress, desc="sweep", unit="cell")
    bar.update(counts["skipped"])
    bar.set_postfix(counts)
    return bar


def _failure_message(results: SweepResults, total: int, path: Path, shown: int = 20) -> str:
    lines = [
        f"{len(results.failures)} of {total} cells failed; the {len(results)} that finished are "
        f"committed to {str(path)!r}. Fix the cause and rerun to retry only the failed cells:"
    ]
    for failure in results.failures[:shown]:
        cell = {k: v for k, v in failure.items() if not k.startswith(META_PREFIX)}
        last = failure["_traceback"].strip().splitlines()[-1:] or [""]
        lines.append(f"  {json.dumps(cell)}: {failure['_error_type']}: {failure['_error']}")
        if last[0] and not last[0].startswith(failure["_error_type"]):
            lines.append(f"      {last[0]}")
    if len(results.failures) > shown:
        lines.append(f"  ... and {len(results.failures) - shown} more (see SweepError.failures)")
    return "\n".join(lines)


def load(store: str | os.PathLike, namespace: str | None = None) -> SweepResults:
    """Records of every finished cell of ``namespace`` (None: cells run without a namespace)
    in ``store``, in commit order, without running anything; ``.failures`` lists the cells
    whose last attempt failed."""
    ns = _check_namespace(namespace)
    path = _check_store_path(store)
    conn = _connect(path, create=False)
    try:
        if not _has_tables(conn):
            return SweepResults()
        rows = conn.execute(
            "SELECT key, cell, result, seconds, finished_at FROM sweep_results "
            "WHERE namespace = ? ORDER BY rowid",
            (ns,),
        ).fetchall()
        errors = conn.execute(
            "SELECT key, cell, error_type, message, traceback, failed_at, attempts "
            "FROM sweep_errors WHERE namespace = ? ORDER BY rowid",
            (ns,),
        ).fetchall()
    finally:
        conn.close()
    return SweepResults([_make_record(*r) for r in rows], [_make_failure(*e) for e in errors])


def status(store: str | os.PathLike, namespace=_ALL) -> dict[str, int]:
    """Counts in ``store``: ``{"done": cells with a result, "failed": cells whose last attempt
    failed, "in_flight": cells claimed by a live run}``. Default: all namespaces; pass
    ``namespace`` (None for cells run without one) to count one sweep."""
    path = _check_store_path(store)
    where, args = "", ()
    if namespace is not _ALL:
        where, args = " WHERE namespace = ?", (_check_namespace(namespace),)
    conn = _connect(path, create=False)
    try:
        if not _has_tables(conn):
            return {"done": 0, "failed": 0, "in_flight": 0}
        done = conn.execute(f"SELECT count(*) FROM sweep_results{where}", args).fetchone()[0]
        failed = conn.execute(f"SELECT count(*) FROM sweep_errors{where}", args).fetchone()[0]
        claims = conn.execute(
            f"SELECT host, pid, expires_at FROM sweep_claims{where}", args
        ).fetchall()
    finally:
        conn.close()
    in_flight = sum(_claim_is_live(*claim) for claim in claims)
    return {"done": int(done), "failed": int(failed), "in_flight": int(in_flight)}
