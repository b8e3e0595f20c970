"""Atomic checkpoint files with a SHA-256 sidecar, loaded with weights_only=True.

A checkpoint is a dict of tensors and plain Python values (numbers, strings, lists,
dicts), so `torch.load(..., weights_only=True)` can read it without unpickling code.

`save_atomic(obj, "x.pt")` also writes `x.pt.sha256` (one line, `sha256sum -c` format:
64 hex characters, two spaces, the file name). torch does not check the CRCs of its zip
archive, so a flipped byte inside `x.pt` would load silently; `load_checkpoint` compares
the file with its sidecar when there is one, and `require_hash=True` refuses a file
without one.

Order of writes: the checkpoint and its sidecar are both written in full to temporary
files first, then the checkpoint replaces `x.pt`, then the sidecar replaces `x.pt.sha256`.
A failure while writing (a full disk) leaves the previous pair untouched. A kill between
the two renames leaves the new file beside the old hash: a mismatch, which is reported
as corruption, never a pair that passes verification.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

from kdlib.atomic import DiskFullError, atomic_writer, sha256_file

HASH_SUFFIX = ".sha256"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used (truncated, garbled, hash mismatch,
    missing hash where one is required, or not a checkpoint)."""


def hash_path(path) -> Path:
    """The SHA-256 sidecar of a checkpoint: `<path>.sha256`."""
    path = Path(path)
    return path.with_name(path.name + HASH_SUFFIX)


class _HashingWriter:
    """A write-only file object that hashes every byte it passes on to `fh`."""

    def __init__(self, fh):
        self.fh = fh
        self.sha = hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def save_atomic(obj, path) -> Path:
    """Write `obj` with torch.save to `path` atomically, and its SHA-256 to
    `<path>.sha256` (see the module docstring for the order); returns the path.

    A reader never sees a half-written file: either the old file or the new one. A full
    disk raises kdlib.atomic.DiskFullError naming the folder; the previous files are kept.
    """
    path = Path(path)
    sidecar = hash_path(path)
    try:
        with atomic_writer(sidecar) as side_fh:
            with atomic_writer(path) as fh:
                writer = _HashingWriter(fh)
                torch.save(obj, writer)
                side_fh.write(f"{writer.sha.hexdigest()}  {path.name}\n".encode())
                side_fh.flush()
                os.fsync(side_fh.fileno())
            # `path` is in place here; the sidecar's rename follows when the outer block ends
    except DiskFullError as err:
        # the inner writer already named the checkpoint; do not report it as the sidecar's
        inner = err.__cause__
        if isinstance(inner, DiskFullError):
            raise inner from inner.__cause__
        raise
    return path


def read_hash(path) -> str | None:
    """The SHA-256 (64 lower-case hex characters) recorded beside `path`, or None if
    there is no sidecar. Raises CorruptCheckpointError for a garbled sidecar."""
    sidecar = hash_path(path)
    if not sidecar.is_file():
        return None
    try:
        text = sidecar.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError(f"hash file {sidecar} is unreadable: {err}") from err
    digest = text.split()[0].lower() if text else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise CorruptCheckpointError(f"hash file {sidecar} does not hold a SHA-256 "
                                     f"(64 hex characters), got {text[:80]!r}")
    return digest


def verify_hash(path, require: bool = False) -> bool:
    """Compare `path` with its sidecar. Returns True if they match, False if there is no
    sidecar and `require` is False; raises CorruptCheckpointError on a mismatch, on a
    garbled sidecar, or on a missing one when `require` is True (FileNotFoundError if
    `path` itself is missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    expected = read_hash(path)
    if expected is None:
        if require:
            raise CorruptCheckpointError(
                f"checkpoint {path} has no hash file {hash_path(path).name}: it was not "
                f"written completely by kdlib.checkpoint.save_atomic, so it is not trusted")
        return False
    actual = sha256_file(path)
    if actual != expected:
        raise CorruptCheckpointError(
            f"checkpoint {path} does not match its hash file (sha256 {actual[:12]}..., "
            f"expected {expected[:12]}...): the file is corrupted or was replaced")
    return True


def load_checkpoint(path, map_location="cpu", *, verify: bool = True,
                    require_hash: bool = False) -> dict:
    """Load a checkpoint dict with weights_only=True.

    verify: compare the file with its `.sha256` sidecar when there is one.
    require_hash: also refuse a file without a sidecar (implies verify).
    Raises FileNotFoundError if missing and CorruptCheckpointError if unusable.
    """
    if not isinstance(verify, bool) or not isinstance(require_hash, bool):
        raise TypeError(f"verify and require_hash must be bools, got "
                        f"{type(verify).__name__} and {type(require_hash).__name__}")
    if require_hash and not verify:
        raise ValueError("require_hash=True needs verify=True")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if verify:
        verify_hash(path, require=require_hash)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, wrong format ...
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable: {err}") from err
    if not isinstance(obj, dict):
        raise CorruptCheckpointError(f"checkpoint {path} holds {type(obj).__name__}, not a dict")
    return obj


def move_aside(path) -> Path:
    """Rename an unusable file to `<name>.bad-<UTC time>` beside it (never deleted) and
    return the new path, so that a rerun starts over while the evidence stays on disk.

    Its `.sha256` sidecar, if any, moves along to `<name>.bad-<UTC time>.sha256`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cannot move {path} aside: it does not exist")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.bad-{stamp}")
    n = 1
    while target.exists() or hash_path(target).exists():
        target = path.with_name(f"{path.name}.bad-{stamp}-{n}")
        n += 1
    path.replace(target)
    sidecar = hash_path(path)
    if sidecar.is_file():
        sidecar.replace(hash_path(target))
    return target
