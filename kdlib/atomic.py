"""The one atomic-write helper of kdlib: files appear whole or not at all.

    with atomic_writer("data/x.pt") as fh:      # binary file handle on a temporary file
        torch.save(obj, fh)
    atomic_write("reports/index.html", html)    # str (UTF-8) or bytes

The data go to a hidden temporary file in the destination folder, are flushed and
fsync'ed, and then `os.replace` puts them in place: a reader sees either the previous
file or the complete new one, never a half-written one, and the previous file is left
intact if anything fails (the temporary file is removed). A full disk is reported as
`DiskFullError` naming the folder, whatever layer (torch's zip writer included) hit it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class DiskFullError(OSError):
    """Writing failed because the destination's file system is full (ENOSPC/EDQUOT)."""


_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_TEXT = ("no space left", "unexpected pos", "disk quota", "file too large")


def _is_disk_full(err: BaseException) -> bool:
    """True when `err` (or an exception it was raised from) means the disk is full.

    torch's zip writer reports ENOSPC as `RuntimeError: ... unexpected pos`, so the
    message is read as well as the errno.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
            return True
        if any(text in str(err).lower() for text in _FULL_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _disk_full_error(path: Path, err: BaseException) -> DiskFullError:
    try:
        free = shutil.disk_usage(path.parent).free
        free_text = f"{free / 2**20:.1f} MiB free"
    except OSError:
        free_text = "free space unknown"
    return DiskFullError(errno.ENOSPC,
                         f"the disk holding {str(path.parent)!r} is full ({free_text}) while "
                         f"writing {path.name!r}; free space there and run again (the previous "
                         f"{path.name!r}, if any, is unchanged)")


def _file_mode(path: Path) -> int:
    """The mode the replacement gets: the existing file's, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_writer(path) -> Iterator:
    """Context manager: a binary file handle whose contents replace `path` on success.

    The parent folder is created. On any exception the temporary file is removed and
    `path` is left as it was; a full disk raises `DiskFullError`.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {str(path)!r}: it is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; keep the file readable
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, Exception) and _is_disk_full(err):
            raise _disk_full_error(path, err) from err
        raise


def atomic_write(path, data: str | bytes) -> Path:
    """Write `data` (str as UTF-8, or bytes) to `path` atomically; returns the path."""
    if not isinstance(data, str | bytes):
        raise TypeError(f"data must be str or bytes, got {type(data).__name__}")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_writer(path) as fh:
        fh.write(payload)
    return Path(path)


def atomic_torch_save(obj, path) -> Path:
    """`torch.save(obj)` to `path` atomically; returns the path."""
    import torch

    with atomic_writer(path) as fh:
        torch.save(obj, fh)
    return Path(path)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as 64 hex characters."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
