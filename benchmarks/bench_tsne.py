"""Seconds per t-SNE backend on clustered features (default 10,000 x 64, 10 clusters).

    .venv/bin/python benchmarks/bench_tsne.py                  # every installed backend
    .venv/bin/python benchmarks/bench_tsne.py --n 2000 --backend opentsne --threads 1

Prints one line per backend: seconds, and the 5-NN accuracy of the cluster labels in the
embedding (a check that the clusters stay apart; ~1.0 expected). Target: the fast backend
embeds 10,000 x 64 in under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from kdlib.tsne import available_backends, tsne


def clustered_features(n: int, dim: int, clusters: int, seed: int = 0):
    """n x dim Gaussian blobs (unit noise, centres ~N(0, 4^2)) and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (clusters, dim))
    labels = rng.integers(0, clusters, n)
    return centres[labels] + rng.normal(0.0, 1.0, (n, dim)), labels


def knn_accuracy_2d(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    # leave-one-out via k + 1 neighbours including the point itself
    nn = KNeighborsClassifier(n_neighbors=k + 1).fit(points, labels)
    idx = nn.kneighbors(points, return_distance=False)[:, 1:]
    votes = np.array([np.bincount(labels[row]).argmax() for row in idx])
    return float((votes == labels).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--backend", action="append", choices=["opentsne", "sklearn"],
                    help="repeat for several; default: every installed backend")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads (default: kdlib.tsne's choice, all cores from 5,000 points)")
    args = ap.parse_args()
    x, y = clustered_features(args.n, args.dim, args.clusters)
    backends = args.backend or available_backends()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"t-SNE of {args.n} x {args.dim} features ({args.clusters} clusters), "
          f"threads {args.threads or 'auto'} of {cores} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for backend in backends:
        t0 = time.perf_counter()
        xy = tsne(x, seed=0, backend=backend, n_jobs=args.threads)
        seconds = time.perf_counter() - t0
        acc = knn_accuracy_2d(xy, y)
        print(f"  {backend:9s} {seconds:7.1f} s   5-NN accuracy in 2-D {acc:.3f}")


if __name__ == "__main__":
    main()
