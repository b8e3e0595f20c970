"""Atomic checkpoint files, loaded with weights_only=True.

A checkpoint is a dict of tensors and plain Python values (numbers, strings, lists,
dicts), so `torch.load(..., weights_only=True)` can read it without unpickling code.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, garbled or not a checkpoint)."""


def save_atomic(obj, path) -> Path:
    """Write `obj` with torch.save to a temporary file beside `path`, then os.replace it.

    A reader never sees a half-written file: either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint dict with weights_only=True.

    Raises FileNotFoundError if missing and CorruptCheckpointError if unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, wrong format ...
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable: {err}") from err
    if not isinstance(obj, dict):
        raise CorruptCheckpointError(f"checkpoint {path} holds {type(obj).__name__}, not a dict")
    return obj
