import numpy as np
import pytest
import torch

import kdlib.tsne as kt
from kdlib.tsne import available_backends, resolve_backend, tsne

HAVE_OPENTSNE = "opentsne" in available_backends()
BACKENDS = ["sklearn"] + (["opentsne"] if HAVE_OPENTSNE else [])


def blobs(n_per=30, clusters=3, dim=8, gap=20.0, seed=0):
    """Well-separated Gaussian blobs: centres `gap` apart along the axes, unit noise."""
    rng = np.random.default_rng(seed)
    centres = np.eye(clusters, dim) * gap
    y = np.repeat(np.arange(clusters), n_per)
    return centres[y] + rng.normal(size=(len(y), dim)), y


def loo_knn(points, labels, k=5):
    d = ((points[:, None] - points[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nb = np.argsort(d, axis=1)[:, :k]
    votes = np.array([np.bincount(labels[r]).argmax() for r in nb])
    return (votes == labels).mean()


@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_dtype_and_components(backend):
    x, _ = blobs()
    out = tsne(x, backend=backend, perplexity=10)
    assert isinstance(out, np.ndarray) and type(out) is np.ndarray
    assert out.shape == (90, 2) and out.dtype == np.float64
    assert np.isfinite(out).all()
    assert tsne(x, n_components=1, perplexity=10, backend=backend).shape == (90, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_for_a_seed(backend):
    x, _ = blobs(seed=1)
    a = tsne(x, perplexity=10, seed=3, backend=backend)
    b = tsne(x, perplexity=10, seed=3, backend=backend)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_separated_clusters_stay_separated(backend):
    x, y = blobs(n_per=30, clusters=4, dim=10)
    xy = tsne(x, perplexity=15, seed=0, backend=backend)
    assert loo_knn(xy, y) == 1.0
    # and every cluster's points are closer to their own centroid than to any other
    cent = np.stack([xy[y == c].mean(0) for c in range(4)])
    nearest = np.argmin(((xy[:, None] - cent[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y).all()


def test_accepts_torch_and_lists_same_result():
    x, _ = blobs(n_per=10)
    a = tsne(x, perplexity=5, backend="sklearn")
    b = tsne(torch.from_numpy(x), perplexity=5, backend="sklearn")
    c = tsne(x.tolist(), perplexity=5, backend="sklearn")
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, c)


def test_auto_prefers_opentsne_when_installed():
    expected = "opentsne" if HAVE_OPENTSNE else "sklearn"
    assert resolve_backend("auto") == expected
    assert resolve_backend("sklearn") == "sklearn"


def test_fallback_when_opentsne_missing(monkeypatch):
    monkeypatch.setattr(kt, "find_spec", lambda name: None)
    assert available_backends() == ["sklearn"]
    assert resolve_backend("auto") == "sklearn"
    with pytest.raises(ImportError, match="pip install openTSNE"):
        resolve_backend("opentsne")
    x, _ = blobs(n_per=10)
    np.testing.assert_array_equal(tsne(x, perplexity=5, backend="auto"),
                                  tsne(x, perplexity=5, backend="sklearn"))


@pytest.mark.skipif(not HAVE_OPENTSNE, reason="openTSNE not installed")
def test_backends_both_separate_but_differ():
    x, y = blobs(n_per=20)
    a = tsne(x, perplexity=10, backend="opentsne")
    b = tsne(x, perplexity=10, backend="sklearn")
    assert loo_knn(a, y) == loo_knn(b, y) == 1.0
    assert not np.allclose(a, b)


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros(10), ValueError, "2-D"),
    (np.zeros((2, 10, 3)), ValueError, "2-D"),
    (np.zeros((3, 4)), ValueError, ">= 4 rows"),
    (np.zeros((10, 0)), ValueError, ">= 1 column"),
    (np.array([[1.0, np.nan]] * 10), ValueError, "finite"),
    (np.array([[1.0, np.inf]] * 10), ValueError, "finite"),
    (np.ones((10, 2), dtype=bool), TypeError, "real numbers"),
    (np.ones((10, 2)), ValueError, "identical"),
    (np.array([["a", "b"]] * 10, dtype=object), TypeError, "numeric"),
    ("features", TypeError, "numpy array or torch tensor"),
])
def test_validates_features(bad, err, match):
    with pytest.raises(err, match=match):
        tsne(bad, perplexity=2, backend="sklearn")


@pytest.mark.parametrize("kwargs, err, match", [
    ({"perplexity": 10}, ValueError, "perplexity must be < the number of points"),
    ({"perplexity": 12}, ValueError, "perplexity must be < the number of points"),
    ({"perplexity": 0}, ValueError, "perplexity must be finite and > 0"),
    ({"perplexity": float("nan")}, ValueError, "perplexity"),
    ({"perplexity": "5"}, TypeError, "perplexity"),
    ({"n_components": 0}, ValueError, "n_components must be >= 1"),
    ({"n_components": 4}, ValueError, "n_components must be <= 3"),
    ({"n_components": 2.0}, TypeError, "n_components must be an integer"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
    ({"seed": 1.5}, TypeError, "seed must be an integer"),
    ({"backend": "tsnecuda"}, ValueError, "backend must be one of"),
    ({"n_jobs": 0}, ValueError, "n_jobs must be >= 1"),
])
def test_validates_parameters(kwargs, err, match):
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(err, match=match):
        tsne(x, **{"perplexity": 3, **kwargs})
