"""Results that leave the notebook: result frames as CSV, per-run records as JSONL.

    from kdlib.outputs import save_frame, save_records
    save_frame("table6", frame)            # -> $KDLIB_RESULTS_DIR/table6.csv
    save_records("runs", [{"seed": 0, "accuracy": 0.91}, ...])   # -> runs.jsonl

The report runner (``kdlib report``) sets KDLIB_RESULTS_DIR for every notebook to a folder
beside its HTML report (``<out>/<notebook>.results/``), lists the files in summary.json and
links them from index.html. When KDLIB_RESULTS_DIR is not set (a notebook opened in
JupyterLab) nothing is written and the functions return None: set the variable yourself to
keep the files. Files are written atomically (kdlib.atomic); a name is used once per
notebook run (a second save under the same name replaces the file).
"""

from __future__ import annotations

import json
import math
import os
import re
from numbers import Integral, Real
from pathlib import Path

from kdlib.atomic import atomic_write

RESULTS_ENV = "KDLIB_RESULTS_DIR"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
"""A result name: a letter or digit, then letters, digits, '_' or '-' (64 characters at
most, no dots or slashes); the extension (.csv / .jsonl) is added."""


def results_dir() -> Path | None:
    """The folder named by KDLIB_RESULTS_DIR (created if missing), or None when unset."""
    value = os.environ.get(RESULTS_ENV, "").strip()
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_name(name) -> str:
    """`name` if it is a safe result name (NAME_PATTERN), else TypeError/ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"name must be 1-64 letters, digits, '_' or '-' (starting with a "
                         f"letter or digit; no extension), got {name!r}")
    return name


def save_frame(name: str, frame) -> Path | None:
    """Write a pandas DataFrame as ``<name>.csv`` into the results folder; returns its path
    (None when KDLIB_RESULTS_DIR is unset). The index is written unless it is the default
    RangeIndex (a MultiIndex from groupby keeps its level names as columns)."""
    import pandas as pd

    check_name(name)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__} "
                        "(a Series: use series.to_frame())")
    folder = results_dir()
    if folder is None:
        return None
    default_index = isinstance(frame.index, pd.RangeIndex) and frame.index.name is None
    text = frame.to_csv(index=not default_index)
    return atomic_write(folder / f"{name}.csv", text)


def _plain(value, where: str):
    """`value` as plain JSON data: numpy/torch scalars unwrapped, NaN/inf -> None."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if not isinstance(value, (Real, str)) and hasattr(value, "item") and (
            getattr(value, "size", 1) == 1 or getattr(value, "numel", lambda: 2)() == 1):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # arrays and tensors with more than one element
        return _plain(value.tolist(), where)
    raise TypeError(f"{where} must be JSON data (numbers, strings, bools, None, lists, "
                    f"dicts), got {type(value).__name__}")


def save_records(name: str, records) -> Path | None:
    """Write records (a list of dicts, one per run) as ``<name>.jsonl``, one JSON object a
    line, into the results folder; returns its path (None when KDLIB_RESULTS_DIR is unset).
    numpy/torch scalars become plain numbers and NaN/inf become null."""
    check_name(name)
    if isinstance(records, (dict, str, bytes)) or not hasattr(records, "__iter__"):
        raise TypeError(f"records must be a list of dicts, got {type(records).__name__}")
    lines = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise TypeError(f"records[{i}] must be a dict, got {type(record).__name__}")
        lines.append(json.dumps(_plain(record, f"records[{i}]"), allow_nan=False))
    folder = results_dir()
    if folder is None:
        return None
    return atomic_write(folder / f"{name}.jsonl", "".join(line + "\n" for line in lines))


def list_results(folder) -> list[str]:
    """Names of the .csv and .jsonl files in `folder`, sorted ([] if it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and p.suffix in (".csv", ".jsonl") and not p.name.startswith("."))


__all__ = ["NAME_PATTERN", "RESULTS_ENV", "check_name", "list_results", "results_dir",
           "save_frame", "save_records"]
