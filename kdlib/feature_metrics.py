"""Metrics of a feature space: how well the classes of N points (N x D features, one integer
label each) are separated, and the penultimate features of a kdlib model.

    feats, labels = penultimate_features(model, data)     # N x D float32, N int64
    feature_metrics(feats, labels, k=5)                    # all metrics at once

    knn_accuracy      leave-one-out k-NN accuracy (Euclidean, plurality vote), in [0, 1]
    silhouette        mean silhouette coefficient of the classes (Euclidean), in [-1, 1]
    n_confused        points whose k nearest neighbours are mostly (> k/2) of other classes
    separation_ratio  mean distance between class centroids / mean distance of a point to
                      its class centroid (scale-free)
"""

from __future__ import annotations

import numpy as np
import torch

from kdlib._validate import as_tensor, check_int


@torch.no_grad()
def penultimate_features(model, data, batch_size: int = 1024, device="auto"):
    """Penultimate features of `model` (eval mode) on the normalized, unaugmented test split.

    data: a kdlib Dataset or DeviceData. Returns (features N x D float32, labels N int64),
    both CPU tensors, in test-set order. The model's train/eval mode is restored.
    """
    from kdlib.devices import resolve_device
    from kdlib.train import as_device_data

    batch_size = check_int(batch_size, "batch_size", minimum=1)
    dev = resolve_device(device)
    dd = as_device_data(data, dev)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.to(dev).eval()
    feats, labels = [], []
    try:
        for b in dd.test_batches(batch_size):
            out = model(b.x, return_features=True)
            feats.append(out[1].float().cpu())
            labels.append(b.y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def _check_features(features, min_points: int = 2) -> np.ndarray:
    x = as_tensor(features, "features")
    if x.dim() != 2:
        raise ValueError(f"features must be N x D, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.dtype.is_complex:
        raise TypeError(f"features must be real numbers, got {x.dtype}")
    x = x.detach().cpu().double().numpy()
    if len(x) < min_points:
        raise ValueError(f"need at least {min_points} points, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite (found NaN or inf)")
    return x


def _check_features_labels(features, labels, min_points: int = 2):
    x = _check_features(features, min_points)
    y = as_tensor(labels, "labels")
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or y.dtype.is_complex:
        raise TypeError(f"labels must be a 1-D integer array, got {y.dtype} with shape "
                        f"{tuple(y.shape)}")
    y = y.detach().cpu().long().numpy()
    if len(y) != len(x):
        raise ValueError(f"labels has {len(y)} entries but features has {len(x)} rows")
    if (y < 0).any():
        raise ValueError("labels must be >= 0")
    return x, y


def _check_k(k, n: int) -> int:
    return check_int(k, "k", minimum=1, maximum=n - 1)


def nearest_neighbours(features, k: int = 5, chunk: int = 1024) -> np.ndarray:
    """Indices (N x k int64) of each point's k nearest OTHER points (Euclidean), nearest
    first; equal distances are ordered by index. A point's exact duplicates count as
    neighbours (at distance 0); the point itself never does. Ties at the k-th distance
    are broken arbitrarily."""
    x = _check_features(features)
    n = len(x)
    k = _check_k(k, n)
    sq = (x * x).sum(1)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * x[start:stop] @ x.T
        np.maximum(d2, 0.0, out=d2)
        rows = np.arange(stop - start)
        d2[rows, rows + start] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        dist = np.take_along_axis(d2, part, axis=1)
        order = np.lexsort((part, dist), axis=1)  # by distance, then by index
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out


def _vote(neighbour_labels: np.ndarray) -> np.ndarray:
    """Plurality label of each row; a tie goes to the tied class met first (nearest)."""
    pred = np.empty(len(neighbour_labels), dtype=np.int64)
    for i, row in enumerate(neighbour_labels):
        counts = np.bincount(row)
        top = counts.max()
        pred[i] = next(c for c in row if counts[c] == top)
    return pred


def confused_mask(features, labels, k: int = 5) -> np.ndarray:
    """Boolean N-vector: True where fewer than k/2 of the point's k nearest other points
    (Euclidean) share its label (the points `confused_points` counts)."""
    x, y = _check_features_labels(features, labels)
    nb = nearest_neighbours(x, _check_k(k, len(x)))
    return 2 * (y[nb] == y[:, None]).sum(1) < k


def knn_accuracy(features, labels, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy in feature space (fraction in [0, 1]): each point is
    classified by the plurality label of its k nearest other points (Euclidean); a tie goes
    to the tied class whose member is nearest."""
    x, y = _check_features_labels(features, labels)
    nb = nearest_neighbours(x, _check_k(k, len(x)))
    return float((_vote(y[nb]) == y).mean())


def confused_points(features, labels, k: int = 5) -> int:
    """Number of points whose k nearest other points are mostly (more than k/2) from other
    classes, i.e. fewer than k/2 of them share the point's label."""
    return int(confused_mask(features, labels, k).sum())


def silhouette(features, labels) -> float:
    """Mean silhouette coefficient (Euclidean) of the classes, in [-1, 1]; needs 2 to N - 1
    distinct labels."""
    from sklearn.metrics import silhouette_score

    x, y = _check_features_labels(features, labels, min_points=3)
    n_labels = len(np.unique(y))
    if not 2 <= n_labels <= len(x) - 1:
        raise ValueError(f"silhouette needs between 2 and N - 1 = {len(x) - 1} distinct "
                         f"labels, got {n_labels}")
    return float(silhouette_score(x, y, metric="euclidean"))


def separation_ratio(features, labels) -> float:
    """Mean Euclidean distance between the class centroids (over all pairs of classes)
    divided by the mean distance of a point to its own class centroid. Scale-free; larger
    means classes further apart relative to their spread. Needs >= 2 classes."""
    x, y = _check_features_labels(features, labels)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"separation_ratio needs >= 2 classes, got {len(classes)}")
    centroids = np.stack([x[y == c].mean(0) for c in classes])
    index = np.searchsorted(classes, y)
    spread = np.linalg.norm(x - centroids[index], axis=1).mean()
    i, j = np.triu_indices(len(classes), 1)
    between = np.linalg.norm(centroids[i] - centroids[j], axis=1).mean()
    if spread == 0:
        return float("inf")
    return float(between / spread)


def feature_metrics(features, labels, k: int = 5) -> dict:
    """All feature-space metrics at once (the neighbours are searched once):
    {"knn_accuracy", "silhouette", "n_confused", "confused_fraction", "separation_ratio",
    "n"} as Python numbers."""
    x, y = _check_features_labels(features, labels, min_points=3)
    k = _check_k(k, len(x))
    nb = nearest_neighbours(x, k)
    same = (y[nb] == y[:, None]).sum(1)
    n_confused = int((2 * same < k).sum())
    return {"knn_accuracy": float((_vote(y[nb]) == y).mean()),
            "silhouette": silhouette(x, y),
            "n_confused": n_confused,
            "confused_fraction": n_confused / len(x),
            "separation_ratio": separation_ratio(x, y),
            "n": len(x)}


__all__ = ["confused_mask", "confused_points", "feature_metrics", "knn_accuracy",
           "nearest_neighbours", "penultimate_features", "separation_ratio", "silhouette"]
