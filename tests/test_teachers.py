import errno
import shutil
import warnings

import pytest
import torch

import kdlib.teachers as teachers
import kdlib.train as engine
from kdlib.atomic import DiskFullError
from kdlib.checkpoint import (
    CorruptCheckpointError,
    hash_path,
    load_checkpoint,
    save_atomic,
    verify_hash,
)
from kdlib.recipe import Recipe
from kdlib.teachers import get_teacher, load_weights, teacher_checkpoints, teacher_key
from kdlib.train import make_model

ARCH = "resnet8"
SMOKE = Recipe.preset("smoke")  # 2 epochs


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the same for the reference and every retrain
    yield
    torch.set_num_threads(n)


def _get(data, cache, recipe=SMOKE, **kw):
    return get_teacher(ARCH, data, recipe, 0, cache_dir=cache, device="cpu", progress=False,
                       **kw)


@pytest.fixture(scope="module")
def reference(digits_small, tmp_path_factory, _one_thread):
    """A teacher trained from seed in a fresh cache: (cache dir, its folder, weights, record)."""
    cache = tmp_path_factory.mktemp("ref")
    model, record = _get(digits_small, cache, SMOKE.replace(checkpoint_every=1))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    return cache, record["cache_dir"].rsplit("/", 1)[-1], weights, record


def _copy(reference, tmp_path):
    cache, name, _, _ = reference
    dst = tmp_path / "cache"
    shutil.copytree(cache, dst)
    return dst, dst / name


def _same(model, weights) -> bool:
    sd = model.state_dict()
    return sd.keys() == weights.keys() and all(torch.equal(sd[k], weights[k]) for k in sd)


def _no_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("should load from the cache, not train")
    monkeypatch.setattr(engine, "train", boom)


def _flip_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def _get_warned(data, cache, recipe=SMOKE, match="unusable"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _get(data, cache, recipe)
    assert any(match in str(w.message) for w in caught), [str(w.message) for w in caught]
    return out


# ----------------------------------------------------------------- key and cadence


def test_key_ignores_checkpoint_cadence_only(digits_small):
    k0 = teacher_key(ARCH, digits_small, SMOKE, 0)
    assert k0 == teacher_key(ARCH, digits_small, SMOKE.replace(checkpoint_every=2), 0)
    assert "checkpoint_every" not in k0["recipe"] and k0["format"] == teachers.CACHE_FORMAT
    for other in (SMOKE.replace(lr=0.1), SMOKE.replace(epochs=3), SMOKE.replace(batch_size=32)):
        assert teacher_key(ARCH, digits_small, other, 0) != k0
    assert teacher_key(ARCH, digits_small, SMOKE, 1) != k0


def test_cadence_rules():
    assert [teachers.base_cadence(e) for e in (2, 30, 31, 60, 100, 240, 1000)] == \
        [1, 1, 2, 2, 5, 10, 50]
    # short runs: every epoch whatever the caller asks; long runs: refined to the base
    assert teachers.cache_cadence(30, 5) == teachers.cache_cadence(30, 2) == 1
    assert teachers.cache_cadence(240, 0) == teachers.cache_cadence(240, 10) == 10
    assert teachers.cache_cadence(240, 5) == 5
    assert teachers.cache_cadence(240, 3) == 3  # gcd 1 would be 240 files
    assert teachers.needed_epochs(Recipe(epochs=7, checkpoint_every=3)) == [3, 6]
    assert teachers.needed_epochs(SMOKE) == []


def test_one_teacher_for_every_cadence(reference, digits_small, tmp_path, monkeypatch):
    cache, name, weights, ref_rec = reference
    assert sorted(teacher_checkpoints(ref_rec)) == [1, 2]
    cache2, folder = _copy(reference, tmp_path)
    _no_training(monkeypatch)
    for every, listed in ((0, []), (1, [1, 2]), (2, [2])):
        model, rec = _get(digits_small, cache2, SMOKE.replace(checkpoint_every=every))
        assert _same(model, weights) and not model.training
        assert rec["metrics"] == ref_rec["metrics"]
        assert rec["cache_dir"] == str(folder) and rec["checkpoint_epochs"] == listed
        assert sorted(teacher_checkpoints(rec)) == listed
    # the reference itself was trained with checkpoint_every=0's key: same folder
    monkeypatch.undo()
    fresh, rec0 = _get(digits_small, tmp_path / "fresh")  # checkpoint_every=0, trains
    assert rec0["cache_dir"].rsplit("/", 1)[-1] == name and _same(fresh, weights)
    assert sorted(p.name for p in (tmp_path / "fresh" / name).glob("epoch_*.pt")) == \
        ["epoch_0001.pt", "epoch_0002.pt"]  # written anyway (base cadence)


def test_missing_cadence_is_filled_once(digits_small, tmp_path, monkeypatch):
    monkeypatch.setattr(teachers, "MAX_BASE_CHECKPOINTS", 0)  # no base cadence
    cache = tmp_path / "c"
    m2, r2 = _get(digits_small, cache, SMOKE.replace(checkpoint_every=2))
    folder = tmp_path / "c" / r2["cache_dir"].rsplit("/", 1)[-1]
    assert sorted(p.name for p in folder.glob("epoch_*.pt")) == ["epoch_0002.pt"]
    m1, r1 = _get_warned(digits_small, cache, SMOKE.replace(checkpoint_every=1),
                         match="lacks the checkpoints of epochs [1]")
    assert sorted(teacher_checkpoints(r1)) == [1, 2]
    assert _same(m1, m2.state_dict())  # the same teacher, deterministically
    _no_training(monkeypatch)
    for every in (1, 2):
        _, r = _get(digits_small, cache, SMOKE.replace(checkpoint_every=every))
        assert r["checkpoint_epochs"] == list(range(every, 3, every))


# ----------------------------------------------------------------- unusable final.pt


def _truncate(final):
    final.write_bytes(final.read_bytes()[:200])


def _drop_hash(final):
    hash_path(final).unlink()


def _rewrite(change):
    def edit(final):
        ckpt = load_checkpoint(final, require_hash=True)
        change(ckpt)
        save_atomic(ckpt, final)  # a valid hash: only the content check can catch it
    return edit


def _drop_tensor(ckpt):
    ckpt["model"].pop(next(iter(ckpt["model"])))


CORRUPTIONS = {
    "truncated": _truncate,
    "flipped byte": _flip_byte,
    "no hash": _drop_hash,
    "tensor missing": _rewrite(_drop_tensor),
    "record missing": _rewrite(lambda c: c.pop("record")),
    "record not a dict": _rewrite(lambda c: c.__setitem__("record", "oops")),
    "model not a dict": _rewrite(lambda c: c.__setitem__("model", [1, 2])),
    "other key": _rewrite(lambda c: c["key"].__setitem__("seed", 7)),
}


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_unusable_final_is_moved_aside_and_retrained_from_seed(reference, digits_small,
                                                               tmp_path, how):
    _, _, weights, ref_rec = reference
    cache, folder = _copy(reference, tmp_path)
    final = folder / "final.pt"
    CORRUPTIONS[how](final)
    bad = final.read_bytes()
    model, rec = _get_warned(digits_small, cache)
    # the retrained teacher is the from-seed one, not a partly loaded one
    assert _same(model, weights)
    assert isinstance(rec, dict) and rec["metrics"] == ref_rec["metrics"]
    moved = list(folder.glob("final.pt.bad-*"))
    assert [p.read_bytes() for p in moved if not p.name.endswith(".sha256")] == [bad]
    assert verify_hash(final, require=True)
    model2, _ = _get(digits_small, cache)  # and the new file is used from now on
    assert _same(model2, weights)


def test_truncated_state_without_final_restarts(reference, digits_small, tmp_path):
    _, _, weights, _ = reference
    cache, folder = _copy(reference, tmp_path)
    for p in (folder / "final.pt", hash_path(folder / "final.pt")):
        p.unlink()
    state = folder / "state.pt"
    state.write_bytes((folder / "epoch_0001.pt").read_bytes()[:300])
    model, _ = _get_warned(digits_small, cache)
    assert _same(model, weights)
    moved = [p for p in folder.glob("state.pt.bad-*")]
    assert len(moved) == 1 and len(moved[0].read_bytes()) == 300
    assert not state.exists()  # superseded by final.pt


def test_state_of_another_run_is_moved_aside(reference, digits_small, tmp_path):
    _, _, weights, _ = reference
    cache, folder = _copy(reference, tmp_path)
    for p in (folder / "final.pt", hash_path(folder / "final.pt")):
        p.unlink()
    save_atomic({"model": {}, "extra": [], "optimizer": {}, "scheduler": {}, "generator": None,
                 "history": [], "config": {"recipe": SMOKE.replace(lr=0.2).to_dict(),
                                           "seed": 0, "device": "cpu"}}, folder / "state.pt")
    model, _ = _get_warned(digits_small, cache, match="another recipe")
    assert _same(model, weights)
    moved = sorted(folder.glob("state.pt.bad-*"))
    assert len(moved) == 2 and hash_path(moved[0]) == moved[1]  # the file and its sidecar


def test_file_in_place_of_the_folder_is_moved_aside(reference, digits_small, tmp_path):
    _, name, weights, _ = reference
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / name).write_text("not a folder")
    model, _ = _get_warned(digits_small, tmp_path / "c", match="cache folder")
    assert _same(model, weights)
    [moved] = (tmp_path / "c").glob(f"{name}.bad-*")
    assert moved.read_text() == "not a folder"


# ----------------------------------------------------------------- epoch checkpoints


def test_flipped_epoch_checkpoint_is_detected_and_rewritten(reference, digits_small, tmp_path):
    cache, folder = _copy(reference, tmp_path)
    ep1 = folder / "epoch_0001.pt"
    good = load_checkpoint(ep1, require_hash=True)["model"]
    _flip_byte(ep1)
    probe = make_model(ARCH, digits_small, seed=0)
    before = {k: v.clone() for k, v in probe.state_dict().items()}
    with pytest.raises(CorruptCheckpointError, match="does not match"):
        load_weights(probe, ep1)
    assert _same(probe, before)  # left unchanged
    model, rec = _get_warned(digits_small, cache, SMOKE.replace(checkpoint_every=1))
    assert len(list(folder.glob("epoch_0001.pt.bad-*"))) == 2  # file and its sidecar
    loaded = load_weights(make_model(ARCH, digits_small, seed=0), teacher_checkpoints(rec)[1])
    assert _same(loaded, good)


def test_load_weights_refuses_unfitting_or_unhashed(reference, digits_small, tmp_path):
    _, folder = _copy(reference, tmp_path)
    ep2 = folder / "epoch_0002.pt"
    other = make_model("resnet14", digits_small, seed=0)
    with pytest.raises(CorruptCheckpointError, match="does not fit"):
        load_weights(other, ep2)
    hash_path(ep2).unlink()
    with pytest.raises(CorruptCheckpointError, match="no hash file"):
        load_weights(make_model(ARCH, digits_small, seed=0), ep2)
    m = load_weights(make_model(ARCH, digits_small, seed=0), ep2, require_hash=False)
    assert torch.equal(next(iter(m.state_dict().values())),
                       next(iter(load_checkpoint(ep2)["model"].values())))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        load_weights("model", ep2)


# ----------------------------------------------------------------- full disk


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 9216 vs 9108"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_full_disk_surfaces_and_keeps_files(reference, digits_small, tmp_path, monkeypatch,
                                            error):
    _, _, weights, _ = reference
    cache = tmp_path / "c"
    real_save = torch.save
    calls = {"final": 0}

    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and "key" in obj:  # only final.pt's write hits the full disk
            calls["final"] += 1
            f.write(b"PK partial")
            raise error
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(DiskFullError, match="is full") as info:
        _get(digits_small, cache)
    assert "final.pt" in str(info.value) and calls["final"] == 1  # no retrain loop
    folder = next(cache.iterdir())
    assert not (folder / "final.pt").exists()
    for name in ("epoch_0001.pt", "epoch_0002.pt", "state.pt"):
        assert verify_hash(folder / name, require=True)  # the files written before: intact
    assert not list(folder.glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    model, _ = _get(digits_small, cache)  # space freed: resumes from state.pt, same teacher
    assert _same(model, weights)


# ----------------------------------------------------------------- inputs


def test_inputs_are_checked_before_anything_runs(digits_small, tmp_path, monkeypatch):
    _no_training(monkeypatch)
    a_file = tmp_path / "f"
    a_file.write_text("x")
    cases = [
        (TypeError, "arch", dict(arch=3)),
        (ValueError, "resnet7", dict(arch="resnet7")),
        (TypeError, "data must be", dict(data=5)),
        (TypeError, "recipe must be", dict(recipe="smoke")),
        (ValueError, "seed", dict(seed=-1)),
        (TypeError, "cache_dir", dict(cache_dir=3)),
        (ValueError, "is a file", dict(cache_dir=a_file)),
        (TypeError, "progress", dict(progress="no")),
        (TypeError, "model_kwargs", dict(model_kwargs=[1])),
    ]
    for exc, match, change in cases:
        kw = dict(arch=ARCH, data=digits_small, recipe=SMOKE, seed=0, cache_dir=tmp_path / "c",
                  progress=False, device="cpu", **{})
        kw.update(change)
        with pytest.raises(exc, match=match):
            get_teacher(kw.pop("arch"), kw.pop("data"), kw.pop("recipe"), kw.pop("seed"), **kw)
    assert not (tmp_path / "c").exists()
    with pytest.raises(TypeError, match="cache_dir"):
        teacher_checkpoints({"metrics": {}})
