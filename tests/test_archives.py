"""kdlib.archives: crafted tar and zip archives built in tmp_path. Every refused archive must
leave nothing outside the extraction folder, nothing changed there, and no staging folder."""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile

import pytest

from kdlib import archives
from kdlib.archives import extract_archive

FOLDER = "cifar-10-batches-py"


def add_dir(tf, name):
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tf.addfile(info)


def add_file(tf, name, payload=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tf.addfile(info, io.BytesIO(payload))


def add_link(tf, name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tf.addfile(info)


def long_path_chain(tf):
    """The chain that gets past `filter="data"` of Pythons before 3.11.13 / 3.12.11: 16
    one-letter links to 247-character folders make the real path of `escape` longer than
    PATH_MAX, so os.path.realpath stops resolving links and sees `escape` two levels below
    the extraction folder, while the kernel resolves it to two levels above."""
    comp, steps, path = "d" * 247, "abcdefghijklmnop", ""
    for step in steps:
        add_dir(tf, os.path.join(path, comp))
        add_link(tf, os.path.join(path, step), comp)
        path = os.path.join(path, comp)
    inner = os.path.join(*steps, "l" * 254)
    add_link(tf, inner, "../" * len(steps))  # really: the extraction folder
    add_link(tf, "escape", inner + "/../..")  # lexically inside; really two levels up


def two_link_chain(tf):
    """Each link lands inside the folder when checked alone (nothing exists yet); together
    `escape` is two levels above it."""
    add_link(tf, "a/b/c/l1", "../../..")  # really: the extraction folder
    add_link(tf, "escape", "a/b/c/l1/../..")  # lexically a/; really two levels up


@pytest.fixture
def root(tmp_path):
    """tmp_path/outside/root: archives go into root; `outside` must stay as the test left it."""
    path = tmp_path / "outside" / "root"
    path.mkdir(parents=True)
    return path


def make_tar(root, build, mode="w", name="x.tar"):
    archive = root / name
    with tarfile.open(archive, mode, format=tarfile.PAX_FORMAT) as tf:
        add_dir(tf, FOLDER)
        add_file(tf, f"{FOLDER}/batches.meta", b"meta")
        build(tf)
    return archive


def make_zip(root, entries, name="x.zip"):
    """entries: (ZipInfo or name, bytes)."""
    archive = root / name
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{FOLDER}/batches.meta", b"meta")
        for info, payload in entries:
            zf.writestr(info, payload)
    return archive


def assert_nothing_left(root, archive):
    """Only the archive in root, nothing new beside root."""
    assert sorted(p.name for p in root.iterdir()) == [archive.name]
    assert sorted(p.name for p in root.parent.iterdir()) == ["root"]


@pytest.mark.parametrize("chain", [long_path_chain, two_link_chain])
@pytest.mark.parametrize("with_filter", [True, False])
def test_symlink_chain_cannot_write_outside(root, monkeypatch, chain, with_filter):
    if not with_filter:  # a Python without extraction filters (requires-python allows 3.10.x)
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    written = []
    monkeypatch.setattr(archives, "_copy_bounded", lambda *a: written.append(a) or 0,
                        raising=False)

    def build(tf):
        chain(tf)
        add_file(tf, "escape/evil.txt", b"owned")

    archive = make_tar(root, build)
    with pytest.raises(ValueError, match="refusing to extract archive member .*symbolic link"):
        extract_archive(archive, root, FOLDER)
    assert written == []  # refused before any file was written
    assert not (root.parent / "evil.txt").exists() and not (root / "evil.txt").exists()
    assert_nothing_left(root, archive)


@pytest.mark.parametrize("chain", [long_path_chain, two_link_chain])
def test_hard_link_through_chain_cannot_overwrite_outside(root, chain):
    victim = root.parent / "victim.txt"
    victim.write_text("precious")

    def build(tf):
        chain(tf)
        add_link(tf, "h", "escape/victim.txt", kind=tarfile.LNKTYPE)
        add_file(tf, "h", b"overwritten")

    archive = make_tar(root, build)
    with pytest.raises(ValueError, match="refusing to extract archive member"):
        extract_archive(archive, root, FOLDER)
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in root.parent.iterdir()) == ["root", "victim.txt"]


@pytest.mark.parametrize("kind, what", [
    (tarfile.SYMTYPE, "symbolic link"),  # even one pointing inside
    (tarfile.LNKTYPE, "hard link"),  # even one to a member inside
    (tarfile.CHRTYPE, "device file"),
    (tarfile.BLKTYPE, "device file"),
    (tarfile.FIFOTYPE, "FIFO"),
])
def test_tar_members_other_than_files_and_folders_are_refused(root, kind, what):
    def build(tf):
        add_link(tf, f"{FOLDER}/data_batch_1", f"{FOLDER}/batches.meta"
                 if kind == tarfile.LNKTYPE else "batches.meta", kind=kind)

    archive = make_tar(root, build)
    with pytest.raises(ValueError, match=f"member '{FOLDER}/data_batch_1': it is a.* {what}"):
        extract_archive(archive, root, FOLDER)
    assert_nothing_left(root, archive)


@pytest.mark.parametrize("mode, what", [(stat.S_IFLNK | 0o777, "symbolic link"),
                                        (stat.S_IFIFO | 0o644, "FIFO"),
                                        (stat.S_IFCHR | 0o644, "device file")])
def test_zip_members_with_link_or_device_modes_are_refused(root, mode, what):
    info = zipfile.ZipInfo(f"{FOLDER}/data_batch_1")
    info.create_system, info.external_attr = 3, mode << 16
    archive = make_zip(root, [(info, b"../../../etc/passwd")])
    with pytest.raises(ValueError, match=f"member '{FOLDER}/data_batch_1': it is a {what}"):
        extract_archive(archive, root, FOLDER)
    assert_nothing_left(root, archive)


BAD_NAMES = [
    ("/abs/evil.txt", "absolute"),
    (f"{FOLDER}/../../evil.txt", "'..' component"),
    ("..", "'..' component"),
    ("..\\..\\evil.txt", "backslash"),
    (f"{FOLDER}\\..\\..\\evil.txt", "backslash"),
    ("C:/evil.txt", "drive letter"),
    ("C:\\evil.txt", "backslash"),
    (f"{FOLDER}/meta:stream", "drive letter"),
    (f"{FOLDER}/" + "x" * 300, "longer than 255 bytes"),
    (f"{FOLDER}/CON", "Windows device name"),
    (f"{FOLDER}/nul.txt", "Windows device name"),
    (f"{FOLDER}/Com1.meta", "Windows device name"),
    (f"{FOLDER}/data_batch_1.", "ends in '.'"),
    (f"{FOLDER}/data_batch_1 ", "ends in '.' or ' '"),
]


@pytest.mark.parametrize("name, why", BAD_NAMES)
@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_bad_member_names_are_refused(root, name, why, fmt):
    if fmt == "tar":
        archive = make_tar(root, lambda tf: add_file(tf, name, b"owned"), mode="w:gz",
                           name="x.tar.gz")
    else:
        archive = make_zip(root, [(zipfile.ZipInfo(name), b"owned")])
    with pytest.raises(ValueError, match="refusing to extract archive member") as err:
        extract_archive(archive, root, FOLDER)
    assert why in str(err.value) and repr(name)[1:40] in str(err.value)
    assert_nothing_left(root, archive)


def test_duplicate_member_and_file_used_as_folder_are_refused(root):
    archive = make_tar(root, lambda tf: add_file(tf, f"{FOLDER}/batches.meta", b"again"))
    with pytest.raises(ValueError, match="occurs twice"):
        extract_archive(archive, root, FOLDER)
    archive.unlink()
    archive = make_tar(root, lambda tf: add_file(tf, f"{FOLDER}/batches.meta/x", b"under"))
    with pytest.raises(ValueError, match="'cifar-10-batches-py/batches.meta' is a file"):
        extract_archive(archive, root, FOLDER)
    assert_nothing_left(root, archive)


def members(n):
    return lambda tf: [add_file(tf, f"{FOLDER}/f{i}", b"abc") for i in range(n)]


def test_member_count_bound(root):
    archive = make_tar(root, members(8))  # 10 members with the folder and batches.meta
    with pytest.raises(ValueError, match="more than max_members=9 members"):
        extract_archive(archive, root, FOLDER, max_members=9)
    assert_nothing_left(root, archive)
    out = extract_archive(archive, root, FOLDER, max_members=10)  # exactly the bound
    assert sorted(p.name for p in out.iterdir()) == ["batches.meta"] + [f"f{i}" for i in
                                                                          range(8)]


def test_declared_size_bound(root):
    archive = make_tar(root, members(8))  # 4 + 8 * 3 = 28 bytes
    with pytest.raises(ValueError, match="declared sizes of its first 10 members "
                                         r"\(28 bytes\) exceed the bound of max_bytes=27"):
        extract_archive(archive, root, FOLDER, max_bytes=27)
    assert_nothing_left(root, archive)
    assert (extract_archive(archive, root, FOLDER, max_bytes=28) / "f7").read_bytes() == b"abc"


def test_huge_declared_size_is_refused_before_reading_data(root):
    """A 3 GiB header with no data behind it: refused from the header alone."""
    info = tarfile.TarInfo(f"{FOLDER}/data_batch_1")
    info.size = 3 * 2**30
    archive = root / "x.tar"
    archive.write_bytes(info.tobuf(tarfile.PAX_FORMAT) + bytes(4096))
    with pytest.raises(ValueError, match=r"\(3,221,225,472 bytes\) exceed the bound of "
                                         r"max_bytes=2,147,483,648"):
        extract_archive(archive, root, FOLDER, max_ratio=None)
    with pytest.raises(ValueError, match=r"exceed the bound of 1,\d{3},\d{3} bytes \(max_ratio"):
        extract_archive(archive, root, FOLDER)
    assert_nothing_left(root, archive)


def test_compression_bomb_is_refused_by_the_default_ratio(root):
    """16 MiB of zeros in a ~16 KB tar.gz (the issue's 160 KB -> 64 MB, scaled down)."""
    archive = make_tar(root, lambda tf: add_file(tf, f"{FOLDER}/data_batch_1", bytes(16 << 20)),
                       mode="w:gz", name="x.tar.gz")
    assert archive.stat().st_size < 100_000
    with pytest.raises(ValueError, match="max_ratio=50.0 times the archive's"):
        extract_archive(archive, root, FOLDER)
    assert_nothing_left(root, archive)


def test_default_bounds_fit_the_real_archives():
    """CIFAR-100: ~180 MB in a few files; Tiny-ImageNet: ~120,600 members, ~500 MB, ~2x."""
    assert archives.MAX_MEMBERS >= 2 * 120_600
    assert archives.MAX_BYTES >= 2 * 500 * 10**6 and archives.MAX_BYTES >= 10 * 180 * 10**6
    assert archives.MAX_RATIO >= 10


def lying_zip(root, declared):
    """One 1 MiB deflated member whose headers declare `declared` bytes."""
    payload = bytes(1 << 20)
    archive = make_zip(root, [(f"{FOLDER}/data_batch_1", payload)])
    raw = bytearray(archive.read_bytes())
    size = struct.pack("<I", len(payload))
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local, central header
        at = raw.rfind(sig)
        assert raw[at + offset:at + offset + 4] == size
        raw[at + offset:at + offset + 4] = struct.pack("<I", declared)
    archive.write_bytes(bytes(raw))
    return archive


def test_zip_with_lying_size_header_is_refused(root):
    archive = lying_zip(root, 100)
    with pytest.raises(ValueError, match=f"member '{FOLDER}/data_batch_1' .* damaged"):
        extract_archive(archive, root, FOLDER)
    assert_nothing_left(root, archive)


def test_bytes_written_are_bounded_whatever_the_reader_yields(root, monkeypatch):
    """A zip reader that trusts no header (here: a stand-in yielding 1 MiB for a member that
    declares 100 bytes) still cannot make extraction write more than declared."""
    archive = lying_zip(root, 100)
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, info, *a, **k: io.BytesIO(bytes(1 << 20)))
    sizes = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: sizes.append(a) or real_replace(a, b))
    with pytest.raises(ValueError, match=f"'{FOLDER}/batches.meta': it holds more bytes than "
                                         r"its header declares \(4\)"):
        extract_archive(archive, root, FOLDER)
    assert sizes == []
    assert_nothing_left(root, archive)


def test_copy_is_bounded_by_the_declared_size_and_the_budget(tmp_path):
    with pytest.raises(ValueError, match=r"more bytes than its header declares \(100\)"):
        archives._copy_bounded(io.BytesIO(bytes(5000)), tmp_path / "a", 100, "m", 10**6)
    assert (tmp_path / "a").stat().st_size == 0
    with pytest.raises(ValueError, match="exceed the bound on extracted bytes"):
        archives._copy_bounded(io.BytesIO(bytes(5000)), tmp_path / "b", 5000, "m", 4999)
    assert (tmp_path / "b").stat().st_size == 0
    assert archives._copy_bounded(io.BytesIO(b"abc"), tmp_path / "c", 3, "m", 3) == 3
    assert (tmp_path / "c").read_bytes() == b"abc"
    os.symlink(tmp_path / "elsewhere", tmp_path / "d")
    with pytest.raises(FileExistsError):  # never follows or replaces an existing entry
        archives._copy_bounded(io.BytesIO(b"abc"), tmp_path / "d", 3, "m", 3)
    assert not (tmp_path / "elsewhere").exists()


def test_good_archives_extract_exactly(root):
    """'./'-prefixed tar names, nested folders, an empty file; the same tree from a zip."""
    files = {f"{FOLDER}/data_batch_1": os.urandom(3000), f"{FOLDER}/sub/readme.html": b"<p>",
             f"{FOLDER}/empty": b""}

    def build(tf):
        add_dir(tf, f"./{FOLDER}/sub")
        for name, payload in files.items():
            add_file(tf, "./" + name, payload)

    tar = make_tar(root, build, mode="w:gz", name="x.tar.gz")
    out = extract_archive(tar, root, FOLDER)
    got = {p.relative_to(root).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == {**files, f"{FOLDER}/batches.meta": b"meta"}
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert sorted(p.name for p in root.iterdir()) == [FOLDER, "x.tar.gz"]
    with pytest.raises(FileExistsError, match="already exists"):
        extract_archive(tar, root, FOLDER)
    zroot = root.parent / "zroot"
    zroot.mkdir()
    zout = extract_archive(make_zip(zroot, list(files.items())), zroot, FOLDER)
    zgot = {p.relative_to(zroot).as_posix(): p.read_bytes() for p in zout.rglob("*")
            if p.is_file()}
    assert zgot == got


def test_truncated_tar_gz_is_a_value_error_naming_the_archive(root):
    payload = os.urandom(1 << 16)
    archive = make_tar(root, lambda tf: add_file(tf, f"{FOLDER}/data_batch_1", payload),
                       mode="w:gz", name="x.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"tar archive '.*x\.tar\.gz' is damaged after 3 "):
        extract_archive(archive, root, FOLDER)
    assert_nothing_left(root, archive)


def test_invalid_arguments(root):
    archive = make_tar(root, members(1))
    for bad in ("", "..", "a/b", "c:", "a\\b"):
        with pytest.raises(ValueError, match="folder must be a plain folder name"):
            extract_archive(archive, root, bad)
    with pytest.raises(ValueError, match="max_members must be >= 1"):
        extract_archive(archive, root, FOLDER, max_members=0)
    with pytest.raises(ValueError, match="max_ratio must be a number > 0 or None"):
        extract_archive(archive, root, FOLDER, max_ratio=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        extract_archive(root / "nope.tar", root, FOLDER)
    with pytest.raises(ValueError, match="md5 must be 32 hex characters"):
        archives.verify_md5(archive, "abc")


def test_download_is_atomic_and_hashed_while_streaming(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    dest = tmp_path / "out" / "a.bin"
    archives.download_file(src.as_uri(), dest, md5=archives.file_md5(src), progress=False)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(ValueError, match="MD5 mismatch"):
        archives.download_file(src.as_uri(), tmp_path / "out" / "b.bin", md5="0" * 32,
                               progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin"]
