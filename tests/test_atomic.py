import errno
import os
import stat

import pytest
import torch

from kdlib import atomic


def test_new_file_gets_umask_mode_and_replacement_keeps_the_old_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic.atomic_write(tmp_path / "a.txt", "one")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.chmod(path, 0o640)
        atomic.atomic_write(path, b"two")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert path.read_bytes() == b"two"
    finally:
        os.umask(umask)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
])
def test_disk_full_is_named_and_the_previous_file_stays(tmp_path, error):
    path = atomic.atomic_torch_save({"w": torch.arange(3)}, tmp_path / "x.pt")
    before = path.read_bytes()

    with pytest.raises(atomic.DiskFullError, match="is full") as info:
        with atomic.atomic_writer(path) as fh:
            fh.write(b"partial")
            raise error
    assert str(tmp_path) in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]  # no temporary left


def test_other_errors_pass_through_and_leave_nothing(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic.atomic_writer(tmp_path / "y.bin") as fh:
            fh.write(b"abc")
            raise ZeroDivisionError("boom")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="str or bytes"):
        atomic.atomic_write(tmp_path / "z", 3)
    with pytest.raises(IsADirectoryError):
        atomic.atomic_write(tmp_path, "x")


def test_sha256_file(tmp_path):
    path = atomic.atomic_write(tmp_path / "h", b"abc")
    assert atomic.sha256_file(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
