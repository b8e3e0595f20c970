"""Small CIFAR-10, CIFAR-100 and Tiny-ImageNet in exactly their published on-disk formats.

    write_cifar10(root)        root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
    write_cifar100(root)       root/cifar-100-python/{train,test,meta}
    write_tinyimagenet(root)   root/tiny-imagenet-200/{wnids.txt,words.txt,train/<wnid>/images/
                               *.JPEG, train/<wnid>/<wnid>_boxes.txt, val/images/*.JPEG,
                               val/val_annotations.txt, test/images/*.JPEG}

The pickles hold the real keys (bytes keys as the Python 2 originals: b"data" as N x 3072
uint8 rows in channel-major order, b"labels"/b"fine_labels"/b"coarse_labels", the meta
names), with the real class counts (10, 100, 200) and a few images per class. Images are
random noise (seeded), so nothing can be learned from them: they exist so that the paper
presets run end to end. Command line: ``python tests/fake_datasets.py PROJECT_DIR`` writes
all three under PROJECT_DIR/data (plus the files a project folder needs).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

CIFAR100_COARSE = 20


def _rows(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def _labels(n: int, num_classes: int) -> list[int]:
    return [i % num_classes for i in range(n)]


def _dump(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root, per_class_train: int = 2, per_class_test: int = 4, seed: int = 0) -> Path:
    """CIFAR-10 as the extracted `cifar-10-batches-py` folder: 5 train batches + test."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    n_train = 10 * per_class_train
    labels = _labels(n_train, 10)
    for b in range(5):
        idx = list(range(b, n_train, 5))
        _dump(folder / f"data_batch_{b + 1}",
              {b"batch_label": f"training batch {b + 1} of 5".encode(),
               b"labels": [labels[i] for i in idx], b"data": _rows(rng, len(idx)),
               b"filenames": [f"img_{i}.png".encode() for i in idx]})
    n_test = 10 * per_class_test
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1",
                                  b"labels": _labels(n_test, 10), b"data": _rows(rng, n_test),
                                  b"filenames": [f"t_{i}.png".encode() for i in range(n_test)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in names],
                                    b"num_cases_per_batch": n_train // 5, b"num_vis": 3072})
    return folder


def write_cifar100(root, per_class_train: int = 2, per_class_test: int = 1,
                   seed: int = 1) -> Path:
    """CIFAR-100 as the extracted `cifar-100-python` folder: train, test, meta."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        n = 100 * per_class
        fine = _labels(n, 100)
        _dump(folder / split, {b"filenames": [f"{split}_{i}.png".encode() for i in range(n)],
                               b"batch_label": f"{split}ing batch 1 of 1".encode(),
                               b"fine_labels": fine,
                               b"coarse_labels": [f % CIFAR100_COARSE for f in fine],
                               b"data": _rows(rng, n)})
    _dump(folder / "meta", {b"fine_label_names": [f"class_{i:03d}".encode() for i in range(100)],
                            b"coarse_label_names": [f"super_{i:02d}".encode()
                                                    for i in range(CIFAR100_COARSE)]})
    return folder


def write_tinyimagenet(root, per_class_train: int = 1, n_val: int = 200, n_test: int = 4,
                       seed: int = 2) -> Path:
    """Tiny-ImageNet as the extracted `tiny-imagenet-200` folder (200 classes, 64x64 JPEGs)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{1440000 + i:08d}" for i in range(200)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))

    def jpeg(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=90)

    for wnid in wnids:
        boxes = []
        for i in range(per_class_train):
            jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    lines = []
    for i in range(n_val):
        jpeg(folder / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnids[i % 200]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    for i in range(n_test):
        jpeg(folder / "test" / "images" / f"test_{i}.JPEG")
    return folder


def write_project(project) -> Path:
    """A project folder for the paper presets: data/ with all three data sets, and the
    `notebooks/` + `pyproject.toml` markers kdlib uses to find a project."""
    project = Path(project)
    data = project / "data"
    write_cifar10(data)
    write_cifar100(data)
    write_tinyimagenet(data)
    return project


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/fake_datasets.py PROJECT_DIR")
    print(write_project(sys.argv[1]))
