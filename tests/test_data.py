"""kdlib.data: archives written in the exact official formats into tmp_path."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
import urllib.request
import zipfile

import numpy as np
import pytest
import torch

from kdlib import data as kd_data
from kdlib.data import Dataset, load_dataset, stratified_indices

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def add_bytes(tf: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tf.addfile(info, io.BytesIO(payload))


def cifar_batch(rng, n, label_key, num_classes, batch_label):
    """A batch dict exactly as the official pickles hold it: bytes keys, N x 3072 uint8."""
    batch = {
        b"batch_label": batch_label.encode(),
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [v // 5 for v in batch[label_key]]
    return batch


def py2_pickle(obj) -> bytes:
    """Pickle `obj` with the opcodes Python 2's cPickle (protocol 2) wrote into the official
    CIFAR files: byte strings as SHORT_BINSTRING/BINSTRING, numpy arrays via
    numpy.core.multiarray._reconstruct. Handles bytes, ints, None, lists, tuples, dicts and
    uint8 arrays, which is all a CIFAR batch holds."""

    def enc(o):
        if o is None:
            return b"N"
        if isinstance(o, bytes):
            head = b"U" + bytes([len(o)]) if len(o) < 256 else b"T" + struct.pack("<I", len(o))
            return head + o
        if isinstance(o, int):
            return b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o)
        if isinstance(o, list):
            return b"]" + (b"(" + b"".join(map(enc, o)) + b"e" if o else b"")
        if isinstance(o, tuple):
            return b"(" + b"".join(map(enc, o)) + b"t"
        if isinstance(o, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in o.items()) + b"u"
        if isinstance(o, np.ndarray) and o.dtype == np.uint8:
            dtype = (b"cnumpy\ndtype\n" + enc((b"u1", 0, 1)) + b"R"
                     + enc((3, b"|", None, None, None, -1, -1, 0)) + b"b")
            return (b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n" + enc((0,))
                    + enc(b"b") + b"tR(" + enc(1) + enc(o.shape) + dtype + b"\x89"
                    + enc(o.tobytes()) + b"tb")
        raise TypeError(f"py2_pickle does not handle {type(o).__name__}")

    return b"\x80\x02" + enc(obj) + b"."


def test_py2_pickle_helper_round_trips():
    batch = cifar_batch(np.random.default_rng(9), 3, b"labels", 10, "training batch 1 of 5")
    back = pickle.loads(py2_pickle(batch), encoding="bytes")
    assert back.keys() == batch.keys() and back[b"labels"] == batch[b"labels"]
    assert back[b"data"].dtype == np.uint8 and np.array_equal(back[b"data"], batch[b"data"])


@pytest.fixture
def cifar10(tmp_path, monkeypatch):
    """root/cifar-10-python.tar.gz with 5 train batches of 4 images and a test batch of 6,
    pickled with Python 2 opcodes like the official archive."""
    rng = np.random.default_rng(0)
    batches = [cifar_batch(rng, 4, b"labels", 10, f"training batch {i} of 5")
               for i in range(1, 6)]
    test = cifar_batch(rng, 6, b"labels", 10, "testing batch 1 of 1")
    batches[0][b"data"][0, 2 * 1024 + 5 * 32 + 7] = 201  # channel 2, row 5, column 7
    batches[0][b"data"][0, 0 * 1024 + 31 * 32 + 0] = 13  # channel 0, row 31, column 0
    meta = {b"num_cases_per_batch": 4, b"label_names": [n.encode() for n in CIFAR10_NAMES],
            b"num_vis": 3072}
    root = tmp_path / "root"
    root.mkdir()
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for i, batch in enumerate(batches, start=1):
            add_bytes(tf, f"cifar-10-batches-py/data_batch_{i}", py2_pickle(batch))
        add_bytes(tf, "cifar-10-batches-py/test_batch", py2_pickle(test))
        add_bytes(tf, "cifar-10-batches-py/batches.meta", py2_pickle(meta))
        add_bytes(tf, "cifar-10-batches-py/readme.html", b"<html></html>")
    monkeypatch.setattr(kd_data, "CIFAR10_MD5", md5(archive))
    return root, archive, batches, test


def test_cifar10_archive_loads_shapes_labels_pixels_names(cifar10):
    root, _, batches, test = cifar10
    ds = load_dataset("cifar10", root=root, progress=False)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (6, 3, 32, 32) and ds.test_y.dtype == torch.int64
    assert ds.train_y.tolist() == sum((b[b"labels"] for b in batches), [])
    assert ds.test_y.tolist() == test[b"labels"]
    assert int(ds.train_x[0, 2, 5, 7]) == 201 and int(ds.train_x[0, 0, 31, 0]) == 13
    # the 3rd image of data_batch_2 is train sample 4 + 2
    assert int(ds.train_x[6, 1, 0, 3]) == int(batches[1][b"data"][2, 1024 + 3])
    assert torch.equal(ds.test_x.reshape(6, -1), torch.from_numpy(test[b"data"]))
    assert ds.classes == CIFAR10_NAMES and ds.num_classes == 10
    assert ds.input_shape == (3, 32, 32)
    assert (ds.augment, ds.pad, ds.flip) == (True, 4, True)
    pixels = np.concatenate([b[b"data"] for b in batches]).reshape(20, 3, -1) / 255.0
    np.testing.assert_allclose(ds.mean, pixels.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(ds.std, pixels.std(axis=(0, 2)), rtol=1e-9)
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_cifar10_extracted_folder_is_used_without_archive(cifar10):
    root, archive, _, _ = cifar10
    first = load_dataset("cifar10", root=root, progress=False)
    archive.unlink()
    again = load_dataset("cifar10", root=str(root), progress=False)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)


def test_cifar100_uses_fine_labels_and_names(tmp_path, monkeypatch):
    # pickled by Python 3 (protocol 2): bytes keys go through _codecs.encode
    rng = np.random.default_rng(1)
    train = cifar_batch(rng, 7, b"fine_labels", 100, "training batch 1 of 1")
    test = cifar_batch(rng, 3, b"fine_labels", 100, "testing batch 1 of 1")
    train[b"data"][3, 1 * 1024 + 0 * 32 + 31] = 77  # channel 1, row 0, column 31
    fine = [f"fine_{i:02d}".encode() for i in range(100)]
    meta = {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        add_bytes(tf, "cifar-100-python/train", pickle.dumps(train, protocol=2))
        add_bytes(tf, "cifar-100-python/test", pickle.dumps(test, protocol=2))
        add_bytes(tf, "cifar-100-python/meta", pickle.dumps(meta, protocol=2))
    monkeypatch.setattr(kd_data, "CIFAR100_MD5", md5(archive))
    ds = load_dataset("cifar100", root=tmp_path, progress=False)
    assert ds.train_x.shape == (7, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.train_y.tolist() == train[b"fine_labels"] != train[b"coarse_labels"]
    assert ds.test_y.tolist() == test[b"fine_labels"]
    assert int(ds.train_x[3, 1, 0, 31]) == 77
    assert ds.classes[0] == "fine_00" and ds.classes[99] == "fine_99" and ds.num_classes == 100


def test_corrupted_archive_fails_md5_check(cifar10):
    root, archive, _, _ = cifar10
    expected = md5(archive)
    payload = bytearray(archive.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    archive.write_bytes(bytes(payload))
    with pytest.raises(ValueError, match="MD5 mismatch") as err:
        load_dataset("cifar10", root=root, progress=False)
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and expected in message
    assert md5(archive) in message
    assert not (root / "cifar-10-batches-py").exists()


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_tar_member_escaping_the_folder_is_refused(tmp_path, monkeypatch, kind):
    root = tmp_path / "root"
    root.mkdir()
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        add_bytes(tf, "cifar-10-batches-py/batches.meta", b"x")
        if kind == "dotdot":
            bad = "cifar-10-batches-py/../../evil.txt"
            add_bytes(tf, bad, b"owned")
        elif kind == "absolute":
            bad = str(tmp_path / "evil.txt")
            add_bytes(tf, bad, b"owned")
        else:
            bad = "cifar-10-batches-py/link"
            info = tarfile.TarInfo(bad)
            info.type = tarfile.SYMTYPE
            info.linkname = "../../../evil.txt"
            tf.addfile(info)
    monkeypatch.setattr(kd_data, "CIFAR10_MD5", md5(archive))
    with pytest.raises(ValueError, match="refusing to extract") as err:
        load_dataset("cifar10", root=root, progress=False)
    assert repr(bad.lstrip("/") if kind != "absolute" else bad)[1:-1] in str(err.value)
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]


def test_missing_archive_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path / "nowhere", progress=False)
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and "download=True" in message
    assert str(tmp_path / "nowhere") in message
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python\.tar\.gz.*download=True"):
        load_dataset("cifar100", root=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match=r"tiny-imagenet-200\.zip.*download=True"):
        load_dataset("tinyimagenet", root=tmp_path, progress=False)


def test_download_from_file_url(cifar10, tmp_path, monkeypatch):
    _, archive, _, _ = cifar10
    monkeypatch.setattr(kd_data, "CIFAR10_URL", archive.resolve().as_uri())
    root = tmp_path / "fresh"
    ds = load_dataset("cifar10", root=root, download=True, progress=False)
    assert ds.train_x.shape == (20, 3, 32, 32)
    assert md5(root / "cifar-10-python.tar.gz") == md5(archive)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py",
                                                       "cifar-10-python.tar.gz"]


class BrokenResponse:
    """A urlopen response that delivers part of the file, then loses the connection."""

    headers = {"Content-Length": "1000"}

    def __init__(self):
        self.calls = 0

    def read(self, size=-1):
        self.calls += 1
        if self.calls > 2:
            raise ConnectionResetError("connection lost")
        return b"x" * 100

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_interrupted_download_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url: BrokenResponse())
    with pytest.raises(ConnectionResetError):
        load_dataset("cifar10", root=tmp_path, download=True, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_with_wrong_md5_is_discarded(cifar10, tmp_path, monkeypatch):
    _, archive, _, _ = cifar10
    monkeypatch.setattr(kd_data, "CIFAR10_URL", archive.resolve().as_uri())
    monkeypatch.setattr(kd_data, "CIFAR10_MD5", "0" * 32)
    root = tmp_path / "fresh"
    with pytest.raises(ValueError, match="expected 0{32}, got " + md5(archive)):
        load_dataset("cifar10", root=root, download=True, progress=False)
    assert list(root.iterdir()) == []


def test_pickle_with_foreign_globals_is_refused(cifar10):
    root, _, _, _ = cifar10
    load_dataset("cifar10", root=root, progress=False)

    class Evil:
        def __reduce__(self):
            return (print, ("side effect",))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match="refusing to unpickle builtins.print"):
        load_dataset("cifar10", root=root, progress=False)


# ---------------------------------------------------------------------------- Tiny-ImageNet

WNIDS = ["n01443537", "n01629819", "n01641577"]
COLORS = {"n01443537": (250, 10, 10), "n01629819": (10, 250, 10), "n01641577": (10, 10, 250)}


def write_jpeg(path, color, gray=False):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if gray:
        Image.new("L", (64, 64), color[0]).save(path, "JPEG", quality=95)
    else:
        Image.new("RGB", (64, 64), color).save(path, "JPEG", quality=95)


def write_tinyimagenet(root):
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (folder / "words.txt").write_text("n00001740\tentity\n"
                                      "n01443537\tgoldfish, Carassius auratus\n"
                                      "n01641577\tbullfrog, Rana catesbeiana\n")
    for wnid in WNIDS:
        for i in range(2):
            write_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", COLORS[wnid])
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
    val = [("val_0.JPEG", "n01641577"), ("val_1.JPEG", "n01443537"), ("val_2.JPEG", "n01629819"),
           ("val_3.JPEG", "n01443537")]
    for name, wnid in val:
        write_jpeg(folder / "val" / "images" / name, COLORS[wnid], gray=name == "val_3.JPEG")
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t0\t0\t63\t63\n" for name, wnid in val))
    (folder / "test" / "images").mkdir(parents=True)
    return folder


def check_tiny(ds):
    assert ds.train_x.shape == (6, 3, 64, 64) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (4, 3, 64, 64)
    assert ds.train_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.test_y.tolist() == [2, 0, 1, 0]
    assert ds.classes == ["goldfish", "n01629819", "bullfrog"]
    centre = ds.train_x[:, :, 32, 32].int()
    expected = torch.tensor([COLORS[w] for w in WNIDS for _ in range(2)])
    assert (centre - expected).abs().max() <= 3
    gray = ds.test_x[3].int()  # grayscale JPEG -> three equal channels
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert abs(int(gray[0, 10, 10]) - 250) <= 3
    assert (ds.augment, ds.pad, ds.flip) == (True, 4, True)
    pixels = ds.train_x.double().div(255).transpose(0, 1).reshape(3, -1)
    np.testing.assert_allclose(ds.mean, pixels.mean(1).numpy(), rtol=1e-9)
    np.testing.assert_allclose(ds.std, pixels.std(1, correction=0).numpy(), rtol=1e-9)


def test_tinyimagenet_folder_decodes_and_caches(tmp_path):
    write_tinyimagenet(tmp_path)
    ds = load_dataset("tinyimagenet", root=tmp_path, progress=False)
    check_tiny(ds)
    cache = tmp_path / "tiny-imagenet-200.cache.pt"
    assert cache.is_file()
    import shutil

    shutil.rmtree(tmp_path / "tiny-imagenet-200")  # the cache alone must suffice now
    again = load_dataset("tinyimagenet", root=tmp_path, progress=False)
    assert torch.equal(again.train_x, ds.train_x) and again.classes == ds.classes


def test_tinyimagenet_truncated_cache_is_rebuilt_with_warning(tmp_path):
    write_tinyimagenet(tmp_path)
    first = load_dataset("tinyimagenet", root=tmp_path, progress=False)
    cache = tmp_path / "tiny-imagenet-200.cache.pt"
    cache.write_bytes(cache.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        ds = load_dataset("tinyimagenet", root=tmp_path, progress=False)
    assert torch.equal(ds.test_x, first.test_x)
    torch.load(cache, weights_only=True)  # rewritten whole
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_tinyimagenet_zip_is_extracted_and_escaping_zip_refused(tmp_path, monkeypatch):
    src = tmp_path / "src"
    folder = write_tinyimagenet(src)
    root = tmp_path / "root"
    root.mkdir()
    archive = root / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(src).as_posix())
    monkeypatch.setattr(kd_data, "TINYIMAGENET_MD5", md5(archive))
    check_tiny(load_dataset("tinyimagenet", root=root, progress=False))

    bad_root = tmp_path / "bad"
    bad_root.mkdir()
    bad = bad_root / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("tiny-imagenet-200/wnids.txt", "n01443537\n")
        zf.writestr("tiny-imagenet-200/../../escape.txt", "owned")
    monkeypatch.setattr(kd_data, "TINYIMAGENET_MD5", md5(bad))
    with pytest.raises(ValueError, match=r"refusing to extract.*tiny-imagenet-200/\.\./\.\./"):
        load_dataset("tinyimagenet", root=bad_root, progress=False)
    assert not (tmp_path / "escape.txt").exists()


# ---------------------------------------------------------------------------- digits, GMM


def test_digits_split_is_stratified_and_deterministic():
    from sklearn.datasets import load_digits

    full = np.bincount(load_digits().target)
    ds = load_dataset("digits", seed=3)
    assert len(ds.train_y) + len(ds.test_y) == 1797
    assert len(ds.test_y) == round(0.3 * 1797) == 539
    assert ds.train_x.shape == (1258, 1, 8, 8) and ds.train_x.dtype == torch.float32
    test_counts = np.bincount(ds.test_y.numpy(), minlength=10)
    np.testing.assert_array_equal(test_counts + np.bincount(ds.train_y.numpy()), full)
    assert np.abs(test_counts - 0.3 * full).max() < 1
    assert float(ds.train_x.min()) == 0.0 and float(ds.train_x.max()) == 1.0
    assert ds.classes == [str(d) for d in range(10)]
    assert (ds.augment, ds.pad, ds.flip) == (True, 1, False)
    assert ds.mean[0] == pytest.approx(float(ds.train_x.double().mean()), rel=1e-12)
    assert ds.std[0] == pytest.approx(float(ds.train_x.double().std(correction=0)), rel=1e-9)
    same = load_dataset("digits", seed=3)
    assert torch.equal(same.test_x, ds.test_x) and torch.equal(same.train_y, ds.train_y)
    other = load_dataset("digits", seed=4)
    assert not torch.equal(other.test_x, ds.test_x)
    assert len(load_dataset("digits", test_size=0.5).test_y) == 898


class FakeTask:
    """The GaussianMixtureTask interface: 3 classes on the line, unit variance."""

    num_classes = 3
    centres = np.array([-2.0, 0.0, 2.0])

    def sample(self, n, seed=0):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        return (self.centres[y] + rng.standard_normal(n))[:, None].astype(np.float32), y

    def posterior(self, x):
        logits = -0.5 * (np.asarray(x)[:, :1] - self.centres) ** 2
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)


def test_gmm_task_object_keeps_exact_posteriors():
    ds = load_dataset(FakeTask(), seed=5, n_train=200, n_test=50)
    assert ds.name == "gmm3-custom" and ds.classes == ["0", "1", "2"]
    assert ds.train_x.shape == (200, 1) and ds.train_x.dtype == torch.float32
    assert ds.mean is None and ds.std is None and not ds.augment
    np.testing.assert_allclose(ds.train_posterior.numpy(),
                               FakeTask().posterior(ds.train_x.numpy()), rtol=1e-6)
    assert not torch.equal(ds.train_x[:50], ds.test_x)  # distinct seeds for the two splits
    assert torch.equal(load_dataset(FakeTask(), seed=5, n_train=200, n_test=50).test_x, ds.test_x)
    assert not torch.equal(load_dataset(FakeTask(), seed=6, n_train=200, n_test=50).test_x,
                           ds.test_x)


def test_gmm10_preset_posteriors_sum_to_one():
    ds = load_dataset("gmm10", seed=0)
    assert ds.train_x.shape == (10_000, 2) and ds.test_x.shape == (3_000, 2)
    assert ds.train_posterior.shape == (10_000, 10) and ds.train_posterior.dtype == torch.float32
    np.testing.assert_allclose(ds.train_posterior.sum(1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(ds.test_posterior.sum(1).numpy(), 1.0, atol=1e-5)
    bayes = (ds.test_posterior.argmax(1) == ds.test_y).float().mean()
    assert 0.1 < float(bayes) <= 1.0  # the exact posterior beats chance
    assert ds.num_classes == 10 and ds.input_shape == (2,) and ds.name == "gmm10"


def test_gmm_task_instances_get_distinct_names():
    from kdlib.gmm import GaussianMixtureTask

    a = load_dataset(GaussianMixtureTask(10, seed=1), n_train=20, n_test=10)
    b = load_dataset(GaussianMixtureTask(10, seed=2), n_train=20, n_test=10)
    assert a.name.startswith("gmm10-") and b.name.startswith("gmm10-") and a.name != b.name
    assert load_dataset(GaussianMixtureTask(10, seed=1), n_train=20, n_test=10).name == a.name


# ---------------------------------------------------------------------------- subset, checks


def test_subset_is_stratified_and_keeps_posteriors_aligned():
    ds = load_dataset(FakeTask(), seed=0, n_train=300, n_test=90)
    sub = ds.subset(n_train=30, n_test=9, seed=1)
    counts = np.bincount(ds.train_y.numpy(), minlength=3)
    sub_counts = np.bincount(sub.train_y.numpy(), minlength=3)
    assert sub_counts.sum() == 30 and np.abs(sub_counts - counts / 10).max() < 1
    np.testing.assert_allclose(sub.train_posterior.numpy(),
                               FakeTask().posterior(sub.train_x.numpy()), rtol=1e-6)
    assert len(sub.test_y) == 9 and sub.test_posterior.shape == (9, 3)
    assert torch.equal(ds.subset(30, seed=1).train_x, sub.train_x)
    assert ds.subset(n_test=9).train_x is ds.train_x
    with pytest.raises(ValueError, match="n_train must be <= 300"):
        ds.subset(n_train=301)


def test_stratified_indices_largest_remainder():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    idx = stratified_indices(labels, 5, seed=0)
    assert np.bincount(labels[idx], minlength=3).tolist() == [3, 2, 0]
    assert len(set(idx.tolist())) == 5 and list(idx) == sorted(idx)


def test_invalid_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"name must be one of \['digits', 'gmm10', 'gmm100', "
                                         r"'cifar10', 'cifar100', 'tinyimagenet'\]"):
        load_dataset("imagenet", root=tmp_path)
    with pytest.raises(TypeError, match="name must be"):
        load_dataset(3)
    with pytest.raises(ValueError, match="test_size applies only to 'digits'"):
        load_dataset("gmm10", test_size=0.2)
    with pytest.raises(TypeError, match="seed must be an integer"):
        load_dataset("digits", seed=1.5)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"train_y must lie in \[0, 2\)"):
        Dataset("t", x, torch.tensor([0, 1, 2, 0]), x, torch.zeros(4, dtype=torch.int64),
                ["a", "b"])
    with pytest.raises(ValueError, match="one value per channel"):
        Dataset("t", x, torch.zeros(4, dtype=torch.int64), x, torch.zeros(4, dtype=torch.int64),
                ["a"], mean=(0.0,), std=(1.0,))


def test_no_partial_files_after_success(cifar10):
    root, _, _, _ = cifar10
    load_dataset("cifar10", root=root, progress=False)
    leftovers = [p for p in os.listdir(root) if p.startswith(".")]
    assert leftovers == []


# ---------------------------------------------------------------------------- crafted batches


def replace_batch(root, payload: bytes, name="test_batch"):
    """Extract the fixture once, then put `payload` in place of one batch file."""
    load_dataset("cifar10", root=root, progress=False)
    (root / "cifar-10-batches-py" / name).write_bytes(payload)


def test_tiny_pickle_declaring_a_huge_array_is_refused_before_allocating(cifar10):
    """86 bytes: a dict whose 'data' is numpy's _reconstruct of a 20000 x 3072 array, with no
    pixel bytes behind it. Unpickling alone used to allocate ~60 MB."""
    import tracemalloc

    root = cifar10[0]
    payload = (b"\x80\x02}(U\x04datacnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n"
               b"(M\x20NM\x00\x0ctU\x01btRU\x06labels]u.")
    assert len(payload) < 90
    replace_batch(root, payload)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as err:
            load_dataset("cifar10", root=root, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # bytes; the array alone would be 61,440,000
    assert re.search(r"test_batch'.*shape \(20000, 3072\).*cannot hold", str(err.value))


class SharedBufferArray:
    """Pickles as a numpy array whose raw bytes are `buf`; many of them share one memoized
    buffer in the pickle, so N arrays of len(buf) bytes cost len(buf) bytes of file."""

    def __init__(self, buf):
        self.buf = buf

    def __reduce__(self):
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (0,), b"b"),
                (1, (1, len(self.buf)), np.dtype(np.uint8), False, self.buf))


def test_one_buffer_reused_for_many_arrays_is_refused(cifar10):
    root = cifar10[0]
    buf = bytes(3072 * 100)
    payload = pickle.dumps({b"data": [SharedBufferArray(buf) for _ in range(200)],
                            b"labels": [0] * 200}, protocol=2)
    assert len(payload) < 2 * len(buf)  # 200 arrays of 300 KB in a 300 KB file
    replace_batch(root, payload)
    with pytest.raises(ValueError, match="test_batch'.*the file cannot hold its data"):
        load_dataset("cifar10", root=root, progress=False)


@pytest.mark.parametrize("call", [b"R", b"\x81"])  # REDUCE: ndarray(shape); NEWOBJ
def test_pickle_calling_ndarray_directly_is_refused(cifar10, call):
    root = cifar10[0]
    replace_batch(root, b"\x80\x02}(U\x04datacnumpy\nndarray\n((M\x20NM\x00\x0ctt" + call
                  + b"U\x06labels]u.")  # numpy.ndarray((20000, 3072)): 491 MB
    with pytest.raises(ValueError, match="test_batch': refusing to call numpy.ndarray"):
        load_dataset("cifar10", root=root, progress=False)


class SharedEncode:
    """Pickles as `_codecs.encode(text, encoding)`: many share one memoized `text`."""

    def __init__(self, text, encoding):
        self.text, self.encoding = text, encoding

    def __reduce__(self):
        import _codecs

        return (_codecs.encode, (self.text, self.encoding))


@pytest.mark.parametrize("copies, encoding, message", [
    (100, "latin1", "refusing to unpickle 200,000 more bytes of strings"),
    (1, "utf-32", "refusing _codecs.encode of str to 'utf-32'"),
])
def test_string_amplification_through_codecs_encode_is_refused(cifar10, copies, encoding,
                                                               message):
    root = cifar10[0]
    text = "a" * 200_000
    payload = pickle.dumps({b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 6,
                            b"extra": [SharedEncode(text, encoding) for _ in range(copies)]},
                           protocol=2)
    assert len(payload) < 250_000  # 100 x 200 KB of bytes from a 220 KB file
    replace_batch(root, payload)
    with pytest.raises(ValueError, match=message):
        load_dataset("cifar10", root=root, progress=False)


@pytest.mark.parametrize("data, labels, message", [
    (np.full((6, 3072), 300.7), [0] * 6, r"'data' must hold integers, got dtype float64"),
    (np.full((6, 3072), 300, dtype=np.int16), [0] * 6, r"pixel values must lie in 0\.\.255"),
    (np.full((6, 3072), -1, dtype=np.int64), [0] * 6, r"pixel values must lie in 0\.\.255"),
    (np.zeros((6, 3072), np.uint8), [0, 1, 2.7, 3, 4, 5], "'labels' must hold integers"),
    (np.zeros((6, 3072), np.uint8), [0, 1, True, 3, 4, 5], "'labels' must hold integers"),
    (np.zeros((6, 3072), np.uint8), [0, 1, 2, 3, 4, 10], r"'labels' must lie in \[0, 10\)"),
    (np.zeros((6, 3072), np.uint8), [0, 1, 2, 3, 4, -1], r"'labels' must lie in \[0, 10\)"),
    (np.zeros((6, 3072), np.uint8).tolist(), [0] * 6, "'data' must be a numpy array"),
    (np.zeros((6, 3072), dtype=object), [0] * 6, "object array"),
    (np.zeros((6, 3072), np.uint8), [0] * 5, "expected N x 3072 data and N labels"),
])
def test_batches_with_wrong_types_or_values_are_refused(cifar10, data, labels, message):
    root = cifar10[0]
    replace_batch(root, pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    with pytest.raises(ValueError, match=message) as err:
        load_dataset("cifar10", root=root, progress=False)
    assert "test_batch" in str(err.value)


def test_batch_with_int64_pixels_in_range_still_loads(cifar10):
    root, _, _, test = cifar10
    replace_batch(root, pickle.dumps({b"data": test[b"data"].astype(np.int64),
                                      b"labels": np.array(test[b"labels"])}, protocol=2))
    ds = load_dataset("cifar10", root=root, progress=False)
    assert ds.test_x.dtype == torch.uint8
    assert torch.equal(ds.test_x.reshape(6, -1), torch.from_numpy(test[b"data"]))
    assert ds.test_y.tolist() == test[b"labels"]


# ---------------------------------------------------------------------------- damaged images


def test_truncated_jpeg_error_names_the_file(tmp_path):
    folder = write_tinyimagenet(tmp_path)
    bad = folder / "train" / "n01629819" / "images" / "n01629819_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(ValueError, match="cannot decode image") as err:
        load_dataset("tinyimagenet", root=tmp_path, progress=False)
    assert str(bad) in str(err.value)
    assert not (tmp_path / "tiny-imagenet-200.cache.pt").exists()


def test_image_of_the_wrong_size_is_refused_from_its_header(tmp_path):
    from PIL import Image

    folder = write_tinyimagenet(tmp_path)
    bad = folder / "train" / "n01443537" / "images" / "n01443537_0.JPEG"  # the first image
    Image.new("RGB", (4000, 3000)).save(bad, "JPEG")
    with pytest.raises(ValueError, match=r"is 4000x3000 pixels; Tiny-ImageNet images are 64x64"):
        load_dataset("tinyimagenet", root=tmp_path, progress=False)


def test_missing_training_image_is_refused_naming_it(tmp_path):
    folder = write_tinyimagenet(tmp_path)
    gone = folder / "train" / "n01629819" / "images" / "n01629819_0.JPEG"  # in the boxes file
    gone.unlink()
    with pytest.raises(FileNotFoundError, match="training image .* listed in .* is missing") as e:
        load_dataset("tinyimagenet", root=tmp_path, progress=False)
    assert str(gone) in str(e.value)
    boxes = folder / "train" / "n01629819" / "n01629819_boxes.txt"
    boxes.unlink()
    with pytest.raises(FileNotFoundError, match="n01629819_boxes.txt' is missing"):
        load_dataset("tinyimagenet", root=tmp_path, progress=False)
    assert not (tmp_path / "tiny-imagenet-200.cache.pt").exists()


def test_annotation_names_must_be_plain_file_names(tmp_path):
    folder = write_tinyimagenet(tmp_path)
    annotations = folder / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "../../../etc/x.JPEG\tn01443537\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"line 5: '\.\./\.\./\.\./etc/x\.JPEG' is not a plain"):
        load_dataset("tinyimagenet", root=tmp_path, progress=False)


def test_public_archive_names_stay_importable_from_kdlib_data():
    from kdlib import archives

    for name in ("download_file", "file_md5", "verify_md5", "extract_archive"):
        assert getattr(kd_data, name) is getattr(archives, name) and name in kd_data.__all__
