"""t-SNE embeddings of feature vectors, for pictures such as the paper's Figure 5.

    xy = tsne(features)                      # N x D -> N x 2 numpy (float64)

Backends:
    "opentsne"  openTSNE (BSD, FFT-accelerated interpolation for N >= 10,000, Barnes-Hut
                below; exact nearest neighbours up to EXACT_KNN_MAX_N points): the fast one.
    "sklearn"   scikit-learn's Barnes-Hut TSNE: always installed, several times slower.
    "auto"      openTSNE if it imports, else scikit-learn.

Both start from a PCA initialisation and are deterministic for a given `seed` (also with
several threads). They do not give the same coordinates: compare pictures, not numbers.
"""

from __future__ import annotations

import os
from importlib.util import find_spec

import numpy as np

from kdlib._validate import as_tensor, check_choice, check_int, check_positive

BACKENDS = ("auto", "opentsne", "sklearn")
EXACT_KNN_MAX_N = 20_000  # exact k-NN below this many points (a few seconds at 10,000 x 64)
MIN_POINTS = 4
# Below this many points one thread is faster: thread start-up and (on a busy machine)
# OpenMP spin-waiting cost more than the work (90 points: 0.4 s on 1 thread, 10-35 s on 2
# threads of a loaded 2-core machine).
SINGLE_THREAD_BELOW_N = 5_000
MAX_JOBS = 1_024  # threads; each backend starts that many, so a typo must not reach it


def available_backends() -> list[str]:
    """The concrete backends that import here, fastest first (e.g. ["opentsne", "sklearn"])."""
    fast = ["opentsne"] if find_spec("openTSNE") is not None else []
    return fast + ["sklearn"]


def resolve_backend(backend: str = "auto") -> str:
    """The concrete backend `backend` stands for: "opentsne" or "sklearn".

    "auto" picks openTSNE when it is installed. Asking for "opentsne" when it is not
    installed raises ImportError with the pip command.
    """
    check_choice(backend, "backend", BACKENDS)
    have = available_backends()
    if backend == "auto":
        return have[0]
    if backend not in have:
        raise ImportError("backend 'opentsne' needs openTSNE: pip install openTSNE "
                          "(or use backend='sklearn')")
    return backend


def _as_features(features) -> np.ndarray:
    import torch

    t = as_tensor(features, "features")
    if t.dim() != 2:
        raise ValueError(f"features must be a 2-D array N x D, got shape {tuple(t.shape)}")
    if t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"features must be real numbers (float or int), got {t.dtype}")
    x = t.detach().cpu().double().numpy()
    if x.shape[0] < MIN_POINTS or x.shape[1] < 1:
        raise ValueError(f"features must have >= {MIN_POINTS} rows and >= 1 column, "
                         f"got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite (found NaN or inf)")
    if np.ptp(x, axis=0).max() == 0:
        raise ValueError("all rows of features are identical; there is nothing to embed")
    return np.ascontiguousarray(x)


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def tsne(features, n_components: int = 2, perplexity: float = 30.0, seed: int = 0,
         backend: str = "auto", n_jobs: int | None = None) -> np.ndarray:
    """Embed N x D `features` (numpy, torch or nested lists of real numbers) in
    `n_components` (1, 2 or 3) dimensions with t-SNE; returns an N x n_components float64
    numpy array.

    perplexity: > 0 and < N (the effective number of neighbours; each point's kernel uses
    its min(N - 1, 3 * perplexity) nearest neighbours). seed: integer >= 0, fixes the result.
    backend: "auto" (openTSNE if installed, else scikit-learn), "opentsne" or "sklearn".
    n_jobs: threads (1 .. MAX_JOBS = 1024); None = 1 below SINGLE_THREAD_BELOW_N points, else
    every core this process may use. Needs N >= 4 finite rows, not all identical.
    """
    x = _as_features(features)
    n = x.shape[0]
    n_components = check_int(n_components, "n_components", minimum=1, maximum=3)
    perplexity = check_positive(perplexity, "perplexity")
    if perplexity >= n:
        raise ValueError(f"perplexity must be < the number of points ({n}), got {perplexity:g}")
    seed = check_int(seed, "seed", minimum=0, maximum=2**32 - 1)
    if n_jobs is None:
        n_jobs = 1 if n < SINGLE_THREAD_BELOW_N else _cores()
    n_jobs = check_int(n_jobs, "n_jobs", minimum=1, maximum=MAX_JOBS)
    which = resolve_backend(backend)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(n_jobs):  # BLAS and OpenMP pools of both backends
        if which == "opentsne":
            return _opentsne(x, n_components, perplexity, seed, n_jobs)
        return _sklearn(x, n_components, perplexity, seed, n_jobs)


def _opentsne(x: np.ndarray, n_components: int, perplexity: float, seed: int,
              n_jobs: int) -> np.ndarray:
    import logging

    import openTSNE

    n = x.shape[0]
    # FFT interpolation pays off from ~10,000 points and exists only for 1-2 dimensions
    method = "fft" if (n >= 10_000 and n_components <= 2) else "bh"
    model = openTSNE.TSNE(
        n_components=n_components, perplexity=perplexity, initialization="pca",
        neighbors="exact" if n <= EXACT_KNN_MAX_N else "annoy",
        negative_gradient_method=method, n_jobs=n_jobs, random_state=seed,
        verbose=False)
    log = logging.getLogger("openTSNE")
    level = log.level
    log.setLevel(logging.ERROR)  # it logs the (documented) neighbour/perplexity choices
    try:
        embedding = model.fit(x)
    finally:
        log.setLevel(level)
    return np.array(embedding, dtype=np.float64)


def _sklearn(x: np.ndarray, n_components: int, perplexity: float, seed: int,
             n_jobs: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    model = TSNE(n_components=n_components, perplexity=perplexity, init="pca",
                 learning_rate="auto", method="barnes_hut", random_state=seed,
                 n_jobs=n_jobs)
    return np.asarray(model.fit_transform(x), dtype=np.float64)
