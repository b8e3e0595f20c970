"""Archives of the image data sets: verified downloads, MD5 sums and bounded, link-free
extraction.

    download_file(url, "data/cifar-10-python.tar.gz", md5="c58f...")   # atomic, MD5-checked
    extract_archive("data/cifar-10-python.tar.gz", "data", "cifar-10-batches-py")

The CIFAR tars and the Tiny-ImageNet zip hold only regular files and folders, so
`extract_archive` accepts nothing else, on every Python version and for tar and zip alike:
every member is checked before anything is written, and a symbolic link, hard link, device,
FIFO, a name that is absolute, has a `..` component, a backslash or a drive letter, a
duplicate, or an archive with more than `max_members` members or more than `max_bytes`
declared bytes (or more than `max_ratio` times its own size) raises ValueError naming it.
Because no link is ever created, a member's place is exactly its lexically normalized name
under the staging folder. kdlib writes each file itself (exclusive create, no link following)
and counts the bytes it writes, so a header that under-declares a size is caught too.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

from kdlib._validate import check_int
from kdlib.atomic import atomic_writer

__all__ = [
    "MAX_MEMBERS",
    "MAX_BYTES",
    "MAX_RATIO",
    "MAX_NAME_CHARS",
    "download_file",
    "file_md5",
    "verify_md5",
    "extract_archive",
    "ensure_folder",
]

# Bounds on extraction. The real archives: CIFAR-10/100 python tars ~ 180 MB extracted in a
# dozen files, ratio ~1.1; Tiny-ImageNet zip ~ 120,600 members, ~ 500 MB, ratio ~2.
MAX_MEMBERS = 250_000  # members (files and folders) per archive
MAX_BYTES = 2 * 2**30  # bytes of all extracted files together (declared and written)
MAX_RATIO = 50.0  # extracted bytes per byte of archive (plus 1 MiB)
MAX_NAME_CHARS = 1024  # characters in one member name; 255 UTF-8 bytes per component

_CHUNK = 1 << 20  # bytes per read when downloading / hashing / extracting
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                    *(f"{d}{i}" for d in ("COM", "LPT") for i in "0123456789¹²³")}
_RATIO_SLACK = 1 << 20


# --------------------------------------------------------------------------------------------
# Checksums and downloads
# --------------------------------------------------------------------------------------------


def file_md5(path) -> str:
    """MD5 of a file's bytes, as 32 hex characters."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _md5_mismatch(path, expected: str, actual: str) -> ValueError:
    return ValueError(f"MD5 mismatch for {str(path)!r}: expected {expected}, got {actual}. "
                      f"The file is corrupt or incomplete; delete it and download it again.")


def _check_md5_text(expected) -> str | None:
    if expected is None:
        return None
    if not isinstance(expected, str) or len(expected) != 32 or any(
            c not in "0123456789abcdef" for c in expected.lower()):
        raise ValueError(f"md5 must be 32 hex characters or None, got {expected!r}")
    return expected.lower()


def verify_md5(path, expected: str | None) -> None:
    """Raise ValueError naming the file and both sums when its MD5 is not `expected`
    (None skips the check)."""
    expected = _check_md5_text(expected)
    if expected is None:
        return
    actual = file_md5(path)
    if actual != expected:
        raise _md5_mismatch(path, expected, actual)


def download_file(url: str, dest, md5: str | None = None, progress: bool = True) -> Path:
    """Fetch `url` to `dest` atomically (kdlib.atomic): stream into a temporary file next to
    `dest`, hashing as it goes; only a complete file whose MD5 is `md5` (None: any) is renamed
    to `dest`. On any failure the temporary file is removed and `dest` is left untouched."""
    if not isinstance(url, str) or not url:
        raise TypeError(f"url must be a non-empty str, got {url!r}")
    md5 = _check_md5_text(md5)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    from tqdm.auto import tqdm

    dest = Path(dest)
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_writer(dest) as out, urllib.request.urlopen(url) as response:
        length = response.headers.get("Content-Length") if response.headers else None
        total = int(length) if length and str(length).isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                  disable=not progress) as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
        if md5 is not None and digest.hexdigest() != md5:
            raise _md5_mismatch(dest, md5, digest.hexdigest())
    return dest


def ensure_folder(root, folder: str, archive: str, url: str, md5: str | None,
                  download: bool, progress: bool, what: str) -> Path:
    """Return `root/folder`, extracting `root/archive` (downloading it from `url` first if
    `download`) after checking its MD5; FileNotFoundError says where and how when neither the
    folder nor the archive is there."""
    root = Path(root)
    if (root / folder).is_dir():
        return root / folder
    path = root / archive
    if not path.is_file():
        if not download:
            raise FileNotFoundError(
                f"{what}: neither {archive!r} nor its extracted folder was found in "
                f"{str(root)!r}. Place the archive there (from {url}) or pass download=True "
                f"to fetch it.")
        download_file(url, path, md5=md5, progress=progress)
    else:
        verify_md5(path, md5)
    return extract_archive(path, root, folder)


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def _refuse(name, why: str) -> ValueError:
    return ValueError(f"refusing to extract archive member {name!r}: {why}; the data set "
                      f"archives hold only regular files and folders with relative names")


def _member_parts(name) -> tuple:
    """The path components of member `name` below the extraction folder, or ValueError.

    Refused: empty, over-long or absolute names, '..' components, backslashes, colons (drive
    letters, NTFS streams), NUL, and components Windows would alias (reserved device names
    such as CON or nul.txt, a trailing dot or space). '.' and empty components are dropped.
    """
    if not isinstance(name, str) or not name:
        raise _refuse(name, "its name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise _refuse(name[:80] + "...", f"its name is {len(name)} characters long (at most "
                                         f"{MAX_NAME_CHARS})")
    if "\x00" in name:
        raise _refuse(name, "its name contains a NUL character")
    if "\\" in name:
        raise _refuse(name, "its name contains a backslash (a Windows path separator)")
    if ":" in name:
        raise _refuse(name, "its name contains ':' (a drive letter or a Windows stream)")
    if name.startswith("/"):
        raise _refuse(name, "its name is an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(name, "its name has a '..' component")
    if any(len(p.encode("utf-8", "surrogateescape")) > 255 for p in parts):
        raise _refuse(name, "a component of its name is longer than 255 bytes")
    for part in parts:
        if part.endswith((".", " ")) or part.split(".")[0].upper().rstrip() in _WINDOWS_DEVICES:
            raise _refuse(name, f"its component {part!r} is a Windows device name or ends in "
                                f"'.' or ' ' (Windows would write it elsewhere)")
    return parts


class _Plan:
    """Checked members: (parts, is_dir, declared size, source) in archive order, with the
    running bounds. Filled before anything is written."""

    def __init__(self, archive: Path, max_members: int, max_bytes: int,
                 max_ratio: float | None):
        self.archive, self.max_members = archive, max_members
        self.max_bytes, self.bound_text = max_bytes, f"max_bytes={max_bytes:,}"
        if max_ratio is not None:
            size = archive.stat().st_size
            by_ratio = int(max_ratio * size) + _RATIO_SLACK
            if by_ratio < max_bytes:
                self.max_bytes = by_ratio
                self.bound_text = (f"{by_ratio:,} bytes (max_ratio={max_ratio} times the "
                                   f"archive's {size:,} bytes + 1 MiB)")
        self.entries, self.files, self.dirs, self.declared = [], set(), set(), 0

    def too_large(self, what: str) -> ValueError:
        return ValueError(f"refusing to extract {str(self.archive)!r}: {what} exceed the "
                          f"bound of {self.bound_text}; pass larger bounds to extract_archive "
                          f"if the archive is trusted")

    def add(self, name, kind: str, size: int, source) -> None:
        """kind: 'dir', 'file' or a description of a refused type."""
        if len(self.entries) >= self.max_members:
            raise ValueError(f"refusing to extract {str(self.archive)!r}: it has more than "
                             f"max_members={self.max_members:,} members")
        if kind not in ("dir", "file"):
            raise _refuse(name, f"it is {kind}")
        parts = _member_parts(name)
        if not parts:
            if kind == "dir":
                return  # "./": the extraction folder itself
            raise _refuse(name, "a file cannot be the extraction folder itself")
        if size < 0:
            raise _refuse(name, f"it declares a negative size ({size})")
        self.declared += size
        if self.declared > self.max_bytes:
            raise self.too_large(f"the declared sizes of its first {len(self.entries) + 1} "
                                  f"members ({self.declared:,} bytes)")
        if parts in self.files or (kind == "file" and parts in self.dirs):
            raise _refuse(name, "its path occurs twice in the archive (as file or folder)")
        for depth in range(1, len(parts)):
            if parts[:depth] in self.files:
                raise _refuse(name, f"its parent {'/'.join(parts[:depth])!r} is a file")
            self.dirs.add(parts[:depth])
        (self.dirs if kind == "dir" else self.files).add(parts)
        self.entries.append((parts, kind == "dir", size, name, source))


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return f"a symbolic link (to {_short(member.linkname)!r})"
    if member.islnk():
        return f"a hard link (to {_short(member.linkname)!r})"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    return f"of tar type {member.type!r}"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = (info.external_attr >> 16) & 0xFFFF
    fmt = stat.S_IFMT(mode)
    if info.is_dir():
        return "dir" if fmt in (0, stat.S_IFDIR) else f"a folder name with file mode {mode:o}"
    if fmt in (0, stat.S_IFREG):
        return "file"
    if fmt == stat.S_IFLNK:
        return "a symbolic link"
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        return "a device file"
    if fmt == stat.S_IFIFO:
        return "a FIFO"
    return f"of file mode {mode:o}"


def _copy_bounded(src, dest: Path, declared: int, name: str, budget: int) -> int:
    """Copy the readable `src` into the new file `dest` (exclusive create, no link followed);
    refuse when it yields more than `declared` bytes or more than `budget`. Returns bytes."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_BINARY", 0)
    written = 0
    with os.fdopen(os.open(dest, flags, 0o644), "wb") as out:
        while True:
            block = src.read(min(_CHUNK, declared - written + 1))
            if not block:
                return written
            written += len(block)
            if written > declared:
                raise _refuse(name, f"it holds more bytes than its header declares ({declared})")
            if written > budget:
                raise _refuse(name, "the bytes written so far exceed the bound on extracted "
                                    "bytes")
            out.write(block)


def _plan_tar(tf: tarfile.TarFile, plan: _Plan) -> None:
    while True:
        member = tf.next()  # one header at a time: the bounds stop a huge archive early
        if member is None:
            return
        plan.add(member.name, _tar_kind(member), member.size, member)


def _plan_zip(zf: zipfile.ZipFile, plan: _Plan) -> None:
    for info in zf.infolist():
        plan.add(info.filename, _zip_kind(info), info.file_size, info)


def _write_plan(plan: _Plan, target: Path, open_member) -> None:
    written = 0
    for parts, is_dir, size, name, source in plan.entries:
        path = target.joinpath(*parts)
        if is_dir:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open_member(source) as src:
                written += _copy_bounded(src, path, size, name, plan.max_bytes - written)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error,
                gzip.BadGzipFile) as err:
            raise ValueError(f"archive member {name!r} of {str(plan.archive)!r} is damaged: "
                             f"{err}") from err


def extract_archive(archive, root, folder: str, *, max_members: int = MAX_MEMBERS,
                    max_bytes: int = MAX_BYTES, max_ratio: float | None = MAX_RATIO) -> Path:
    """Extract a tar (any compression) or zip `archive` that holds `folder` into `root`;
    returns `root/folder`.

    Every member is checked before anything is written (only regular files and folders with
    relative, '..'-free names; at most `max_members` members and `max_bytes` declared bytes,
    and at most `max_ratio` times the archive's size + 1 MiB, None: no ratio bound); a refused
    member raises ValueError naming it. Members go into a temporary folder under `root`, the
    bytes written are counted against the same bounds, and `folder` is renamed into place when
    complete; on any failure nothing is left behind.
    """
    archive, root = Path(archive), Path(root)
    if not isinstance(folder, str) or folder in ("", ".", "..") or any(
            c in folder for c in "/\\:\x00"):
        raise ValueError(f"folder must be a plain folder name, got {folder!r}")
    max_members = check_int(max_members, "max_members", minimum=1)
    max_bytes = check_int(max_bytes, "max_bytes", minimum=0)
    if max_ratio is not None and (isinstance(max_ratio, bool)
                                  or not isinstance(max_ratio, int | float)
                                  or not max_ratio > 0):
        raise ValueError(f"max_ratio must be a number > 0 or None, got {max_ratio!r}")
    if not archive.is_file():
        raise FileNotFoundError(f"archive {str(archive)!r} does not exist")
    final = root / folder
    if final.exists():
        raise FileExistsError(f"{str(final)!r} already exists; remove it to re-extract")
    plan = _Plan(archive, max_members, max_bytes, max_ratio)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".extract", dir=root))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _plan_zip(zf, plan)
                _write_plan(plan, staging, zf.open)
        else:
            try:
                tf = tarfile.open(archive, "r:*")
            except tarfile.TarError as err:
                raise ValueError(f"{str(archive)!r} is neither a zip nor a readable tar "
                                 f"archive: {err}") from err
            with tf:
                try:
                    _plan_tar(tf, plan)
                except (tarfile.TarError, EOFError, OSError) as err:
                    raise ValueError(f"tar archive {str(archive)!r} is damaged after "
                                     f"{len(plan.entries)} members: {err}") from err
                _write_plan(plan, staging, tf.extractfile)
        if not (staging / folder).is_dir():
            raise ValueError(f"archive {str(archive)!r} does not contain the folder {folder!r}")
        if final.exists():
            raise FileExistsError(f"{str(final)!r} already exists; remove it to re-extract")
        os.replace(staging / folder, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
