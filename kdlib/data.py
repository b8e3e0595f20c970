"""Data sets as in-memory tensors: scikit-learn digits, Gaussian-mixture tasks, CIFAR-10/100
and Tiny-ImageNet, with verified downloads and safe archive extraction.

`load_dataset(name, root="data", download=False, seed=0)` returns a `Dataset`:

- images are N x C x H x W, uint8 (CIFAR, Tiny-ImageNet: 0..255) or float32 (digits: 0..1);
  vectors (GMM tasks) are float32 N x d; labels are int64;
- `mean`/`std` are per-channel statistics of the train split in the units of the network input
  before normalization (uint8 / 255, or the float values as stored); None for GMM tasks, whose
  inputs are used as is;
- `augment`, `pad`, `flip` describe the random crop (zero padding of `pad` pixels, applied to the
  raw image before normalization, i.e. the padding is black) and the horizontal flip that
  `kdlib.batches` applies to training batches.

Archives (see data/README.md): `<root>/cifar-10-python.tar.gz` or its folder
`<root>/cifar-10-batches-py`, `<root>/cifar-100-python.tar.gz` or `<root>/cifar-100-python`,
`<root>/tiny-imagenet-200.zip` or `<root>/tiny-imagenet-200` (decoded once into
`<root>/tiny-imagenet-200.cache.pt`). `download=True` fetches the official archive, checks its
MD5 and extracts it (downloads and extraction live in `kdlib.archives`; `download_file`,
`file_md5`, `verify_md5` and `extract_archive` are re-exported here).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kdlib._validate import check_choice, check_fraction, check_int
from kdlib.archives import download_file, ensure_folder, extract_archive, file_md5, verify_md5
from kdlib.atomic import atomic_torch_save

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "load_dataset",
    "download_file",  # these four: from kdlib.archives
    "file_md5",
    "verify_md5",
    "extract_archive",
    "stratified_indices",
    "channel_stats",
    "missing_dataset",
    "DATASET_FILES",
]

DATASET_NAMES = ("digits", "gmm10", "gmm100", "cifar10", "cifar100", "tinyimagenet")

# Official sources and their published MD5 sums (module constants so tests can patch them).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"

GMM_DEFAULT_TRAIN = 10_000
GMM_DEFAULT_TEST = 3_000
DIGITS_DEFAULT_TEST_SIZE = 0.3

_TINY_CACHE_FORMAT = 1
_TINY_SIZE = (64, 64)  # Tiny-ImageNet images: height, width in pixels
_PICKLE_SLACK = 1 << 16  # bytes of arrays a batch pickle may hold beyond its own size


# --------------------------------------------------------------------------------------------
# The Dataset container
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A data set held as tensors.

    train_x/test_x: N x C x H x W images (uint8 0..255 or float32) or N x d float32 vectors.
    train_y/test_y: N int64 labels in [0, num_classes).
    classes: class names, one per label.
    mean/std: per-channel (images) or per-feature (vectors) statistics of the train split in the
        units of the input after uint8 / 255; None means "no normalization".
    augment: whether training batches get a random crop (zero padding of `pad` pixels) and,
        if `flip`, a random horizontal flip.
    train_posterior/test_posterior: N x num_classes float32 exact posteriors (GMM tasks) or None.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list
    mean: tuple | None = None
    std: tuple | None = None
    augment: bool = False
    pad: int = 0
    flip: bool = False
    train_posterior: torch.Tensor | None = None
    test_posterior: torch.Tensor | None = None

    def __post_init__(self):
        self.classes = [str(c) for c in self.classes]
        if not self.classes:
            raise ValueError("classes must name at least one class")
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise TypeError(f"{split}_x and {split}_y must be torch tensors")
            if x.dim() not in (2, 4):
                raise ValueError(f"{split}_x must be N x d or N x C x H x W, got shape "
                                 f"{tuple(x.shape)}")
            if x.dtype not in (torch.uint8, torch.float32, torch.float64):
                raise ValueError(f"{split}_x must be uint8, float32 or float64, got {x.dtype}")
            if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
                raise ValueError(f"{split}_y must be an int64 vector of length {len(x)}, got "
                                 f"{y.dtype} with shape {tuple(y.shape)}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ValueError(f"{split}_y must lie in [0, {len(self.classes)}), got "
                                 f"[{int(y.min())}, {int(y.max())}]")
            post = getattr(self, f"{split}_posterior")
            if post is not None and (not isinstance(post, torch.Tensor)
                                     or tuple(post.shape) != (len(x), len(self.classes))):
                raise ValueError(f"{split}_posterior must be a {len(x)} x {len(self.classes)} "
                                 f"tensor or None")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"train and test samples differ in shape: "
                             f"{tuple(self.train_x.shape[1:])} vs {tuple(self.test_x.shape[1:])}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must both be given or both be None")
        if self.mean is not None:
            self.mean = tuple(float(m) for m in self.mean)
            self.std = tuple(float(s) for s in self.std)
            channels = self.train_x.shape[1]
            if len(self.mean) != channels or len(self.std) != channels:
                raise ValueError(f"mean and std need one value per channel ({channels}), got "
                                 f"{len(self.mean)} and {len(self.std)}")
            if any(not s > 0 for s in self.std):
                raise ValueError(f"std values must be > 0, got {self.std}")
        self.pad = check_int(self.pad, "pad", minimum=0)
        if self.augment and self.train_x.dim() != 4:
            raise ValueError("augment=True needs image data (N x C x H x W)")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple:
        """Shape of one sample, e.g. (3, 32, 32) or (2,)."""
        return tuple(self.train_x.shape[1:])

    def subset(self, n_train: int | None = None, n_test: int | None = None,
               seed: int = 0) -> Dataset:
        """A smaller Dataset with `n_train`/`n_test` samples (None keeps a split whole), drawn
        per class in proportion to the class sizes (stratified), in the original order.

        Normalization statistics are kept from the full train split.
        """
        seed = check_int(seed, "seed", minimum=0)
        changes = {}
        for split, n in (("train", n_train), ("test", n_test)):
            if n is None:
                continue
            y = getattr(self, f"{split}_y")
            idx = torch.from_numpy(stratified_indices(y.numpy(), n, seed, name=f"n_{split}"))
            changes[f"{split}_x"] = getattr(self, f"{split}_x")[idx]
            changes[f"{split}_y"] = y[idx]
            post = getattr(self, f"{split}_posterior")
            if post is not None:
                changes[f"{split}_posterior"] = post[idx]
        return replace(self, **changes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.train_x.shape)} {self.train_x.dtype}, "
                f"test={tuple(self.test_x.shape)}, classes={self.num_classes}, "
                f"augment={self.augment}, pad={self.pad}, flip={self.flip})")


def stratified_indices(labels, n: int, seed: int = 0, name: str = "n") -> np.ndarray:
    """Sorted indices of `n` samples drawn without replacement, class by class in proportion
    to the class counts (largest-remainder rounding), using numpy's generator seeded `seed`."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a vector, got shape {labels.shape}")
    n = check_int(n, name, minimum=1, maximum=len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
              for c, k in zip(classes, take, strict=True) if k]
    return np.sort(np.concatenate(chosen))


def channel_stats(x: torch.Tensor, scale: float = 1.0, chunk: int = 4096) -> tuple:
    """Per-channel (dim 1) mean and population std of `x / scale` over all other dims,
    accumulated in float64 chunk by chunk. Returns (mean tuple, std tuple)."""
    if x.dim() < 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty N x C x ... tensor, got shape {tuple(x.shape)}")
    channels = x.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].to(torch.float64).transpose(0, 1).reshape(channels, -1)
        total += part.sum(1)
        total_sq += (part * part).sum(1)
    count = x.numel() // channels
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    return (tuple((mean / scale).tolist()), tuple((var.sqrt() / scale).tolist()))


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def load_dataset(name, root="data", download: bool = False, seed: int = 0,
                 progress: bool = True, *, n_train: int | None = None,
                 n_test: int | None = None, test_size: float | None = None) -> Dataset:
    """Load a data set by name ("digits", "gmm10", "gmm100", "cifar10", "cifar100",
    "tinyimagenet") or from a `kdlib.gmm.GaussianMixtureTask` instance.

    root: folder holding archives and caches. download: fetch a missing archive from its
    official URL. seed: digits train/test split; GMM sample draws; subset draws.
    n_train/n_test: GMM tasks draw this many samples (default 10,000 / 3,000); other data sets
    return a stratified subset of this size (default: all).
    test_size: digits only, the test fraction of the 1,797 images (default 0.3).
    """
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder path (str or Path), got {type(root).__name__}")
    root = Path(root)
    for value, label in ((n_train, "n_train"), (n_test, "n_test")):
        if value is not None:
            check_int(value, label, minimum=1)

    if _is_gmm_task(name):
        task, key = name, _gmm_task_name(name)
    elif isinstance(name, str):
        key = check_choice(name.lower(), "name", DATASET_NAMES)
        task = None
    else:
        raise TypeError(f"name must be one of {list(DATASET_NAMES)} or a GaussianMixtureTask, "
                        f"got {type(name).__name__}")
    if test_size is not None and key != "digits":
        raise ValueError(f"test_size applies only to 'digits', not to {key!r}")

    if task is not None or key.startswith("gmm"):
        if task is None:
            from kdlib.gmm import gmm_preset

            task = gmm_preset(key)
        return _load_gmm(task, key, seed,
                         GMM_DEFAULT_TRAIN if n_train is None else n_train,
                         GMM_DEFAULT_TEST if n_test is None else n_test)
    if key == "digits":
        data = _load_digits(seed, DIGITS_DEFAULT_TEST_SIZE if test_size is None else test_size)
    elif key == "cifar10":
        data = _load_cifar(root, 10, download, progress)
    elif key == "cifar100":
        data = _load_cifar(root, 100, download, progress)
    else:
        data = _load_tinyimagenet(root, download, progress)
    if n_train is not None or n_test is not None:
        data = data.subset(n_train, n_test, seed=seed)
    return data


# The files a file data set is read from: (folder, archive, URL), either one will do.
DATASET_FILES = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz", CIFAR10_URL),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", CIFAR100_URL),
    "tinyimagenet": ("tiny-imagenet-200", "tiny-imagenet-200.zip", TINYIMAGENET_URL),
}


def missing_dataset(name: str, root="data") -> str | None:
    """None when data set `name` can be loaded from `root` without a download; otherwise
    one sentence naming the file to fetch (embedded data sets are never missing).

    Only presence is checked (a folder, an archive or Tiny-ImageNet's decoded cache);
    a damaged file still fails in `load_dataset`, with its own message.
    """
    key = check_choice(name.lower() if isinstance(name, str) else name, "name", DATASET_NAMES)
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder path (str or Path), got {type(root).__name__}")
    if key not in DATASET_FILES:
        return None
    root = Path(root)
    folder, archive, url = DATASET_FILES[key]
    present = [root / folder, root / archive]
    if key == "tinyimagenet":
        present.append(root / "tiny-imagenet-200.cache.pt")
    if any(p.exists() for p in present):
        return None
    return (f"{key} is not in {str(root)!r}: put {archive} (from {url}) or its extracted "
            f"folder {folder}/ there, or load it once with download=True")


def _is_gmm_task(obj) -> bool:
    return all(hasattr(obj, attr) for attr in ("sample", "posterior", "num_classes"))


def _gmm_task_name(task) -> str:
    """'gmm<C>-<8 hex digits of its means, covariances and priors>' for a task object, so that
    different mixtures never share a name (the presets are named 'gmm10' and 'gmm100')."""
    digest = hashlib.sha1()
    for attr in ("means", "covariances", "priors"):
        value = getattr(task, attr, None)
        if value is None:
            return f"gmm{int(task.num_classes)}-custom"
        digest.update(np.ascontiguousarray(value, dtype=np.float64).tobytes())
    return f"gmm{int(task.num_classes)}-{digest.hexdigest()[:8]}"


# --------------------------------------------------------------------------------------------
# digits and Gaussian mixtures
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple:
    """scikit-learn's 1,797 bundled 8x8 digits: (images float32 in [0, 1], labels int64)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0  # values 0..16 -> 0..1
    x.flags.writeable = False
    y = bunch.target.astype(np.int64)
    y.flags.writeable = False
    return x, y


def _load_digits(seed: int, test_size: float) -> Dataset:
    test_size = check_fraction(test_size, "test_size")
    x, y = _digits_arrays()
    n_test = int(round(test_size * len(y)))
    if not 10 <= n_test <= len(y) - 10:
        raise ValueError(f"test_size={test_size} leaves {n_test} of {len(y)} digits for test; "
                         f"both splits need at least one image per class (10)")
    test_idx = stratified_indices(y, n_test, seed, name="test images")
    train_mask = np.ones(len(y), dtype=bool)
    train_mask[test_idx] = False
    train_x = torch.from_numpy(x[train_mask][:, None])
    mean, std = channel_stats(train_x)
    return Dataset(
        name="digits",
        train_x=train_x, train_y=torch.from_numpy(y[train_mask]),
        test_x=torch.from_numpy(x[test_idx][:, None]), test_y=torch.from_numpy(y[test_idx]),
        classes=[str(d) for d in range(10)], mean=mean, std=std,
        augment=True, pad=1, flip=False,
    )


def _load_gmm(task, key: str, seed: int, n_train: int, n_test: int) -> Dataset:
    train_seed, test_seed = (int(s.generate_state(1)[0])
                             for s in np.random.SeedSequence([seed, 0x6A4D]).spawn(2))
    splits = {}
    for split, n, split_seed in (("train", n_train, train_seed), ("test", n_test, test_seed)):
        x, y = task.sample(n, seed=split_seed)
        x = np.ascontiguousarray(x, dtype=np.float32)
        post = np.ascontiguousarray(task.posterior(x), dtype=np.float32)
        splits[split] = (torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.int64)),
                         torch.from_numpy(post))
    return Dataset(
        name=key,
        train_x=splits["train"][0], train_y=splits["train"][1],
        test_x=splits["test"][0], test_y=splits["test"][1],
        classes=[str(c) for c in range(int(task.num_classes))],
        mean=None, std=None, augment=False, pad=0, flip=False,
        train_posterior=splits["train"][2], test_posterior=splits["test"][2],
    )


# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------


class _GuardedArray(np.ndarray):
    """The array type `_ArrayUnpickler` builds: its `__setstate__` (pickle's BUILD) charges
    the array's bytes to the unpickler's budget before numpy allocates them."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ValueError("refusing to unpickle a numpy array with an unknown state layout")
        shape, dtype = state[-4], state[-3]
        self._kd_unpickler.charge(shape, dtype)
        super().__setstate__(state)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only: a CIFAR batch needs no more, and
    refusing every other global keeps a tampered pickle from running code.

    Every numpy array is charged, before numpy allocates it, against a budget of the file's
    own size (+ 64 KiB): an honest batch stores its pixels raw, so a few bytes declaring a
    huge shape (or one buffer reused for many arrays) are refused instead of allocated.
    `numpy.ndarray` may only be passed to `_reconstruct` (calling it would allocate), object
    arrays are refused, and `_codecs.encode` (how Python 3 pickles bytes) takes only latin-1
    with its output charged to a second budget of the same size.
    """

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def __init__(self, fh, path: Path, budget: int):
        super().__init__(fh, encoding="bytes")
        self.path, self.budget, self.text_budget = path, budget, budget

        def refuse(cls, *args, **kwargs):
            raise ValueError(f"{str(path)!r}: refusing to call numpy.ndarray while unpickling "
                             f"(CIFAR batches build arrays with _reconstruct)")

        self._ndarray = type("ndarray", (), {"__new__": refuse})

    def _encode(self, obj, encoding="utf-8", errors="strict"):
        if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
            raise ValueError(f"{str(self.path)!r}: refusing _codecs.encode of "
                             f"{type(obj).__name__} to {encoding!r}; CIFAR pickles use latin1")
        if len(obj) > self.text_budget:
            raise ValueError(f"{str(self.path)!r}: refusing to unpickle {len(obj):,} more bytes "
                             f"of strings: the file cannot hold them")
        self.text_budget -= len(obj)
        return obj.encode("latin1", errors)

    def charge(self, shape, dtype) -> None:
        """Count prod(shape) * itemsize bytes; ValueError when they exceed the budget."""
        try:
            dtype = np.dtype(dtype)
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{str(self.path)!r}: a numpy array with an unreadable shape or "
                             f"dtype ({err})") from err
        if dtype.hasobject:
            raise ValueError(f"{str(self.path)!r}: refusing to unpickle a numpy object array; "
                             f"CIFAR batches hold integer arrays")
        if any(d < 0 for d in dims):
            raise ValueError(f"{str(self.path)!r}: a numpy array with negative shape {dims}")
        size = math.prod(dims) * dtype.itemsize
        if size > self.budget:
            raise ValueError(f"{str(self.path)!r}: refusing to unpickle a numpy array of shape "
                             f"{dims} and dtype {dtype} ({size:,} bytes): the file cannot hold "
                             f"its data (at most {self.budget:,} more array bytes allowed)")
        self.budget -= size

    def _reconstruct(self, subtype, shape, dtype):
        if subtype is not self._ndarray:
            raise ValueError(f"{str(self.path)!r}: refusing to unpickle an array of type "
                             f"{getattr(subtype, '__name__', subtype)!r}")
        self.charge(shape, dtype)
        arr = np.ndarray.__new__(_GuardedArray, shape, dtype)
        arr._kd_unpickler = self
        return arr

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise ValueError(f"refusing to unpickle {module}.{name}: CIFAR batches hold only "
                             f"dicts, lists and numpy arrays")
        if name == "_reconstruct":
            return self._reconstruct
        if name == "ndarray":
            return self._ndarray
        if name == "encode":
            return self._encode
        found = super().find_class(module, name)
        if name == "scalar":
            def scalar(dtype, *args):
                self.charge((), dtype)
                return found(dtype, *args)

            return scalar
        return found


def _plain(obj):
    """`obj` with every `_GuardedArray` inside dicts and lists turned into a plain ndarray."""
    if isinstance(obj, _GuardedArray):
        obj.__dict__.pop("_kd_unpickler", None)
        return obj.view(np.ndarray)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _read_batch(path: Path) -> dict:
    """One CIFAR pickle as a dict with str keys (the originals use bytes keys)."""
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR batch file {str(path)!r} is missing")
    with open(path, "rb") as fh:
        budget = os.fstat(fh.fileno()).st_size + _PICKLE_SLACK
        try:
            raw = _ArrayUnpickler(fh, path, budget).load()
        except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, UnicodeDecodeError) as err:
            raise ValueError(f"{str(path)!r} is not a readable CIFAR batch pickle "
                             f"({type(err).__name__}: {err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{str(path)!r} does not hold a CIFAR batch dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: _plain(v)
            for k, v in raw.items()}


def _int_array(values, path: Path, key: str) -> np.ndarray:
    """`values` (a numpy array or a list) as an integer numpy array; ValueError for floats,
    bools and anything else, which a cast would silently round or wrap."""
    if isinstance(values, list):
        bad = next((v for v in values if isinstance(v, bool | np.bool_)
                    or not isinstance(v, int | np.integer)), None)
        if bad is not None:
            raise ValueError(f"{str(path)!r}: {key!r} must hold integers, got {bad!r} "
                             f"({type(bad).__name__})")
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError as err:
            raise ValueError(f"{str(path)!r}: {key!r} holds an integer out of range "
                             f"({err})") from err
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "iu":
        what = f"dtype {values.dtype}" if isinstance(values, np.ndarray) else (
            type(values).__name__)
        raise ValueError(f"{str(path)!r}: {key!r} must hold integers, got {what} "
                         f"(non-integer values would be rounded or wrapped)")
    return values


def _batch_arrays(path: Path, label_key: str, num_classes: int) -> tuple:
    """(N x 3 x 32 x 32 uint8 images, N int64 labels in [0, num_classes)) of one batch."""
    batch = _read_batch(path)
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(f"{str(path)!r} has no {key!r} entry (keys: {sorted(batch)})")
    if not isinstance(batch["data"], np.ndarray):
        raise ValueError(f"{str(path)!r}: 'data' must be a numpy array, got "
                         f"{type(batch['data']).__name__}")
    data = _int_array(batch["data"], path, "data")
    labels = _int_array(batch[label_key], path, label_key)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise ValueError(f"{str(path)!r}: expected N x 3072 data and N labels, got "
                         f"{data.shape} and {labels.shape}")
    if len(data) and (int(data.min()) < 0 or int(data.max()) > 255):
        raise ValueError(f"{str(path)!r}: pixel values must lie in 0..255, got "
                         f"{int(data.min())}..{int(data.max())}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{str(path)!r}: {label_key!r} must lie in [0, {num_classes}), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return (data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32),
            labels.astype(np.int64, copy=False))


def _names(path: Path, key: str) -> list:
    meta = _read_batch(path)
    if key not in meta:
        raise ValueError(f"{str(path)!r} has no {key!r} entry (keys: {sorted(meta)})")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[key]]


def _load_cifar(root: Path, num_classes: int, download: bool, progress: bool) -> Dataset:
    if num_classes == 10:
        folder = ensure_folder(root, "cifar-10-batches-py", "cifar-10-python.tar.gz",
                                CIFAR10_URL, CIFAR10_MD5, download, progress, "CIFAR-10")
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file = folder / "test_batch", folder / "batches.meta"
        label_key, names_key = "labels", "label_names"
    else:
        folder = ensure_folder(root, "cifar-100-python", "cifar-100-python.tar.gz",
                                CIFAR100_URL, CIFAR100_MD5, download, progress, "CIFAR-100")
        train_files = [folder / "train"]
        test_file, meta_file = folder / "test", folder / "meta"
        label_key, names_key = "fine_labels", "fine_label_names"
    parts = [_batch_arrays(f, label_key, num_classes) for f in train_files]
    train_x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    train_y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    test_x, test_y = (torch.from_numpy(a)
                      for a in _batch_arrays(test_file, label_key, num_classes))
    classes = _names(meta_file, names_key)
    if len(classes) != num_classes:
        raise ValueError(f"{str(meta_file)!r} names {len(classes)} classes, expected "
                         f"{num_classes}")
    mean, std = channel_stats(train_x, scale=255.0)
    return Dataset(name=f"cifar{num_classes}", train_x=train_x, train_y=train_y, test_x=test_x,
                   test_y=test_y, classes=classes, mean=mean, std=std,
                   augment=True, pad=4, flip=True)


# --------------------------------------------------------------------------------------------
# Tiny-ImageNet
# --------------------------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def _read_image(path: Path) -> np.ndarray:
    """One Tiny-ImageNet image as 3 x 64 x 64 uint8 (grayscale -> RGB); ValueError naming the
    file when it is not a readable 64 x 64 image (checked from the header, before decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.size != _TINY_SIZE[::-1]:
                raise ValueError(f"{str(path)!r} is {im.size[0]}x{im.size[1]} pixels; "
                                 f"Tiny-ImageNet images are {_TINY_SIZE[1]}x{_TINY_SIZE[0]}")
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)  # H x W x 3
    except FileNotFoundError:
        raise FileNotFoundError(f"image {str(path)!r} is missing") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot decode image {str(path)!r} ({type(err).__name__}: {err}); "
                         f"the file is damaged or not an image: replace it (re-extract the "
                         f"archive) and run again") from err
    return arr.transpose(2, 0, 1)


def _decode_images(paths: list, progress: bool, desc: str) -> np.ndarray:
    """len(paths) x 3 x 64 x 64 uint8."""
    from tqdm.auto import tqdm

    out = np.empty((len(paths), 3) + _TINY_SIZE, dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=desc, disable=not progress)):
        out[i] = _read_image(path)
    return out


def _plain_file_name(name: str, listing: Path, n: int) -> str:
    if not name or name in (".", "..") or any(c in name for c in "/\\:\x00"):
        raise ValueError(f"{str(listing)!r} line {n}: {name!r} is not a plain file name")
    return name


def _train_files(folder: Path, wnid: str) -> list:
    """The training images of class `wnid`: those in `train/<wnid>/images/` plus every one
    listed in `train/<wnid>/<wnid>_boxes.txt`, which must all be present."""
    class_dir = folder / "train" / wnid
    image_dir = class_dir / "images"
    files = {p.name: p for p in image_dir.glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES}
    boxes = class_dir / f"{wnid}_boxes.txt"
    if not boxes.is_file():
        raise FileNotFoundError(f"{str(boxes)!r} is missing: it lists the training images of "
                                f"class {wnid!r}, without it a missing image goes unnoticed; "
                                f"re-extract tiny-imagenet-200")
    for n, line in enumerate(boxes.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name = _plain_file_name(line.split("\t")[0].strip(), boxes, n)
        if name not in files:
            raise FileNotFoundError(f"training image {str(image_dir / name)!r} listed in "
                                    f"{str(boxes)!r} line {n} is missing; re-extract "
                                    f"tiny-imagenet-200")
    if not files:
        raise ValueError(f"no training images for class {wnid!r} in {str(image_dir)!r}")
    return [files[name] for name in sorted(files)]


def _decode_tinyimagenet(folder: Path, progress: bool) -> dict:
    wnids_file = folder / "wnids.txt"
    if not wnids_file.is_file():
        raise FileNotFoundError(f"{str(wnids_file)!r} is missing; is {str(folder)!r} an "
                                f"extracted tiny-imagenet-200 folder?")
    wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids) or not wnids:
        raise ValueError(f"{str(wnids_file)!r} must list distinct class ids, one per line")
    label_of = {w: i for i, w in enumerate(wnids)}
    words = {}
    words_file = folder / "words.txt"
    if words_file.is_file():
        for line in words_file.read_text().splitlines():
            wnid, _, text = line.partition("\t")
            if wnid in label_of and text.strip():
                words[wnid] = text.split(",")[0].strip()
    classes = [words.get(w, w) for w in wnids]

    train_paths, train_labels = [], []
    for wnid in wnids:
        files = _train_files(folder, wnid)
        train_paths += files
        train_labels += [label_of[wnid]] * len(files)

    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise FileNotFoundError(f"{str(annotations)!r} is missing")
    val = {}
    for n, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise ValueError(f"{str(annotations)!r} line {n}: expected 'file<TAB>wnid<TAB>box', "
                             f"with a wnid from wnids.txt, got {line!r}")
        val[_plain_file_name(fields[0], annotations, n)] = label_of[fields[1]]
    if not val:
        raise ValueError(f"{str(annotations)!r} lists no validation images")
    val_names = sorted(val)
    val_paths = [folder / "val" / "images" / name for name in val_names]
    for path in val_paths:
        if not path.is_file():
            raise FileNotFoundError(f"validation image {str(path)!r} listed in "
                                    f"val_annotations.txt is missing")

    train_x = torch.from_numpy(_decode_images(train_paths, progress, "tiny-imagenet train"))
    test_x = torch.from_numpy(_decode_images(val_paths, progress, "tiny-imagenet val"))
    mean, std = channel_stats(train_x, scale=255.0)
    return {
        "format": _TINY_CACHE_FORMAT,
        "train_x": train_x, "train_y": torch.tensor(train_labels, dtype=torch.int64),
        "test_x": test_x, "test_y": torch.tensor([val[n] for n in val_names], dtype=torch.int64),
        "classes": classes, "wnids": wnids, "mean": list(mean), "std": list(std),
    }


def _read_tiny_cache(path: Path) -> dict | None:
    """The cached tensors, or None (with a warning) when the file is unreadable or stale."""
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
        keys = {"format", "train_x", "train_y", "test_x", "test_y", "classes", "mean", "std"}
        if not isinstance(cache, dict) or not keys <= set(cache):
            raise ValueError("missing entries")
        if cache["format"] != _TINY_CACHE_FORMAT:
            raise ValueError(f"cache format {cache['format']}, expected {_TINY_CACHE_FORMAT}")
        return cache
    except Exception as err:  # any unreadable cache is rebuilt from the images
        warnings.warn(f"Tiny-ImageNet cache {str(path)!r} is unreadable ({err}); rebuilding it "
                      f"from the images", RuntimeWarning, stacklevel=3)
        return None


def _load_tinyimagenet(root: Path, download: bool, progress: bool) -> Dataset:
    cache_path = root / "tiny-imagenet-200.cache.pt"
    cache = _read_tiny_cache(cache_path) if cache_path.is_file() else None
    if cache is None:
        folder = ensure_folder(root, "tiny-imagenet-200", "tiny-imagenet-200.zip",
                                TINYIMAGENET_URL, TINYIMAGENET_MD5, download, progress,
                                "Tiny-ImageNet")
        cache = _decode_tinyimagenet(folder, progress)
        atomic_torch_save(cache, cache_path)
    return Dataset(name="tinyimagenet", train_x=cache["train_x"], train_y=cache["train_y"],
                   test_x=cache["test_x"], test_y=cache["test_y"], classes=cache["classes"],
                   mean=tuple(cache["mean"]), std=tuple(cache["std"]),
                   augment=True, pad=4, flip=True)
