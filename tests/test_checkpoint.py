import errno
import hashlib
import os

import pytest
import torch

import kdlib.atomic
from kdlib.atomic import DiskFullError, sha256_file
from kdlib.checkpoint import (
    CorruptCheckpointError,
    hash_path,
    load_checkpoint,
    move_aside,
    read_hash,
    save_atomic,
    verify_hash,
)


def _obj(value=1.0):
    return {"model": {"w": torch.full((256,), value)}, "epoch": 3}


def _flip_tensor_byte(path):
    """Flip one byte inside the tensor data (the zip's structure stays readable)."""
    raw = bytearray(path.read_bytes())
    pattern = torch.full((64,), 1.0).numpy().tobytes()
    at = raw.find(pattern)
    assert at > 0
    raw[at + 10] ^= 0x40
    path.write_bytes(bytes(raw))


def test_save_writes_sha256_sidecar(tmp_path):
    p = save_atomic(_obj(), tmp_path / "a.pt")
    side = hash_path(p)
    assert side.name == "a.pt.sha256"
    digest, name = side.read_text().split()
    assert name == "a.pt"
    assert digest == sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    assert read_hash(p) == digest and verify_hash(p, require=True)
    assert torch.equal(load_checkpoint(p, require_hash=True)["model"]["w"], torch.ones(256))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.pt", "a.pt.sha256"]  # no temps


def test_flipped_byte_is_detected(tmp_path):
    p = save_atomic(_obj(), tmp_path / "a.pt")
    _flip_tensor_byte(p)
    # torch itself loads the damaged file without complaint ...
    w = torch.load(p, weights_only=True)["model"]["w"]
    assert not torch.equal(w, torch.ones(256))
    # ... the sidecar does not
    with pytest.raises(CorruptCheckpointError, match="does not match its hash"):
        load_checkpoint(p)
    assert load_checkpoint(p, verify=False)["epoch"] == 3  # explicit opt-out still reads it


def test_missing_or_garbled_sidecar(tmp_path):
    p = save_atomic(_obj(), tmp_path / "a.pt")
    hash_path(p).unlink()
    assert verify_hash(p) is False
    assert load_checkpoint(p)["epoch"] == 3  # not required: loads
    with pytest.raises(CorruptCheckpointError, match="no hash file"):
        load_checkpoint(p, require_hash=True)
    hash_path(p).write_text("not a hash\n")
    with pytest.raises(CorruptCheckpointError, match="does not hold a SHA-256"):
        load_checkpoint(p)
    with pytest.raises(ValueError, match="require_hash"):
        load_checkpoint(p, verify=False, require_hash=True)
    with pytest.raises(TypeError, match="bools"):
        load_checkpoint(p, verify="yes")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 512"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_disk_full_keeps_previous_pair(tmp_path, monkeypatch, error):
    p = save_atomic(_obj(1.0), tmp_path / "a.pt")
    before = (p.read_bytes(), hash_path(p).read_bytes())
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise error

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFullError, match="is full") as info:
        save_atomic(_obj(2.0), p)
    msg = str(info.value)
    assert str(tmp_path) in msg and "'a.pt'" in msg and ".sha256" not in msg
    monkeypatch.setattr(torch, "save", real_save)
    assert (p.read_bytes(), hash_path(p).read_bytes()) == before
    assert torch.equal(load_checkpoint(p, require_hash=True)["model"]["w"], torch.ones(256))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.pt", "a.pt.sha256"]


def test_kill_between_file_and_sidecar_is_a_mismatch(tmp_path, monkeypatch):
    p = save_atomic(_obj(1.0), tmp_path / "a.pt")
    real_replace = os.replace

    class Killed(BaseException):
        pass

    def replace(src, dst):
        if str(dst).endswith(".sha256"):
            raise Killed
        return real_replace(src, dst)

    monkeypatch.setattr(kdlib.atomic.os, "replace", replace)
    with pytest.raises(Killed):
        save_atomic(_obj(2.0), p)
    monkeypatch.undo()
    # the new file is in place beside the old hash: never a pair that verifies
    assert torch.load(p, weights_only=True)["model"]["w"][0] == 2.0
    with pytest.raises(CorruptCheckpointError, match="does not match"):
        load_checkpoint(p)


def test_move_aside_keeps_file_and_sidecar(tmp_path):
    p = save_atomic(_obj(), tmp_path / "a.pt")
    data, side = p.read_bytes(), hash_path(p).read_bytes()
    moved = move_aside(p)
    assert not p.exists() and not hash_path(p).exists()
    assert moved.name.startswith("a.pt.bad-") and moved.read_bytes() == data
    assert hash_path(moved).read_bytes() == side
    assert verify_hash(moved, require=True)  # the evidence is still checkable
    p.write_bytes(b"junk")  # a second bad file in the same second gets its own name
    moved2 = move_aside(p)
    assert moved2 != moved and moved2.read_bytes() == b"junk" and moved.exists()
    with pytest.raises(FileNotFoundError):
        move_aside(tmp_path / "none.pt")
