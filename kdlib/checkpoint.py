"""Atomic checkpoint files, loaded with weights_only=True.

A checkpoint is a dict of tensors and plain Python values (numbers, strings, lists,
dicts), so `torch.load(..., weights_only=True)` can read it without unpickling code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdlib.atomic import atomic_torch_save


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, garbled or not a checkpoint)."""


def save_atomic(obj, path) -> Path:
    """Write `obj` with torch.save to `path` atomically (see kdlib.atomic); returns the path.

    A reader never sees a half-written file: either the old file or the new one.
    """
    return atomic_torch_save(obj, path)


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


def move_aside(path) -> Path:
    """Rename an unusable file to `<name>.bad-<UTC time>` beside it (never deleted) and
    return the new path, so that a rerun starts over while the evidence stays on disk."""
    import time

    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.bad-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.bad-{stamp}-{n}")
        n += 1
    path.replace(target)
    return target
