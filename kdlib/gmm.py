"""Gaussian-mixture classification task with its exact class posterior (paper section 3.2).

Class c has prior pi_c and density N(x; mu_c, Sigma_c) with a full covariance. The exact
posterior p(c | x) plays the role of a perfectly calibrated teacher.

Random generator (used when means/covariances are not given): means uniform in the cube
[-spread, spread]^dim, kept at least a fraction `separation` of the nominal spacing
2 * spread / C^(1/dim) apart; Sigma_c = R_c diag(s_c)^2 R_c^T with R_c a uniformly random
rotation and per-axis standard deviations s_c uniform in [0.5 * scale, 1.5 * scale];
uniform priors. All in float64 numpy; samples are returned as float32.

Size bounds (checked at entry, ValueError naming the parameter): num_classes <= 1,000 and
dim <= 64 (construction draws a d x d rotation per class and places the means by dart
throwing, O(C^2 d): 0.25 s at C = 1000, d = 64), spread and scale in [1e-6, 1e6], and
n * dim <= 2**28 per `sample` call (2 GiB of float64 while drawing).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import logsumexp

from kdlib._validate import check_choice, check_int, check_positive, check_real

__all__ = ["GaussianMixtureTask", "gmm_preset", "GMM_PRESETS", "tempered_posterior"]

MAX_CLASSES = 1_000
MAX_DIM = 64
LENGTH_RANGE = (1e-6, 1e6)  # spread and scale
MAX_SAMPLE_ELEMENTS = 2**28  # n * dim of one sample() call
_DARTS_PER_MEAN = 100  # placement attempts per mean (sep <= 0.75 needs fewer than 10)
_ROWS_PER_CHUNK_ELEMENTS = 1 << 22  # sample(): rows * dim * dim per einsum chunk

_LOG_2PI = float(np.log(2.0 * np.pi))


def _random_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    """Haar-distributed orthogonal matrix with determinant +1."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _spaced_means(
    rng: np.random.Generator, c: int, d: int, spread: float, separation: float
) -> np.ndarray:
    """c points uniform in [-spread, spread]^d, pairwise at least
    separation * 2 * spread / c^(1/d) apart (dart throwing; separation 0 = no constraint).

    Candidates are drawn one after another and each is kept when it is far enough from all
    kept ones; at most _DARTS_PER_MEAN * c candidates. They are drawn in batches and tested
    against the means kept before the batch in one vectorized step, the few survivors then
    in order against those kept within the batch; the generator is finally rewound to just
    after the last candidate used, so the result and the generator's later draws are those
    of the one-at-a-time loop.
    """
    min_dist = separation * 2.0 * spread / c ** (1.0 / d)
    means = np.empty((c, d))
    k, used, budget = 0, 0, _DARTS_PER_MEAN * c
    while used < budget:
        batch = min(budget - used, 1024, max(1, (1 << 20) // max(1, k * d)))
        state = rng.bit_generator.state
        cands = rng.uniform(-spread, spread, size=(batch, d))
        if k:
            dist = np.linalg.norm(means[None, :k] - cands[:, None], axis=2)
            survivors = np.flatnonzero(dist.min(axis=1) >= min_dist)
        else:
            survivors = np.arange(batch)
        k0 = k
        for j in survivors:
            if k == k0 or np.min(np.linalg.norm(means[k0:k] - cands[j], axis=1)) >= min_dist:
                means[k] = cands[j]
                k += 1
                if k == c:
                    rng.bit_generator.state = state
                    rng.uniform(-spread, spread, size=(j + 1, d))  # rewind: j + 1 used
                    return means
        used += batch
    raise ValueError(
        f"could not place {c} means {min_dist:.3g} apart in [-{spread}, {spread}]^{d} "
        f"within {budget} random draws; lower separation (allowed: 0 <= separation < "
        "about 0.7)"
    )


def _as_float_array(value, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a numeric array of shape {shape}; {err}") from err
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values")
    return arr


class GaussianMixtureTask:
    """A C-class Gaussian mixture in `dim` dimensions with exact posteriors.

    Parameters
    ----------
    num_classes : C >= 2.
    dim : input dimension d >= 1.
    means : optional C x d class means (overrides the random ones).
    covariances : optional C x d x d symmetric positive definite matrices.
    priors : optional C class probabilities, each > 0, summing to 1 (default uniform).
    spread : half-width of the cube the random means are drawn from (> 0).
    scale : typical per-axis standard deviation of the random covariances (> 0).
    separation : random means are at least separation * 2 * spread / C^(1/d) apart
        (a fraction of the nominal spacing, in [0, 1); 0 = independent uniform means).
    seed : seed of the random means and covariances (integer >= 0).

    Attributes: means (C x d float64), covariances (C x d x d float64), priors (C,),
    num_classes, dim.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int = 2,
        means=None,
        covariances=None,
        priors=None,
        spread: float = 10.0,
        scale: float = 1.0,
        separation: float = 0.5,
        seed: int = 0,
    ):
        self.num_classes = c = check_int(num_classes, "num_classes", minimum=2,
                                         maximum=MAX_CLASSES)
        self.dim = d = check_int(dim, "dim", minimum=1, maximum=MAX_DIM)
        spread = check_real(check_positive(spread, "spread"), "spread", *LENGTH_RANGE)
        scale = check_real(check_positive(scale, "scale"), "scale", *LENGTH_RANGE)
        separation = check_real(separation, "separation", 0.0, 1.0)
        if separation == 1.0:
            raise ValueError(f"separation must be in [0, 1), got {separation}")
        seed = check_int(seed, "seed", minimum=0)
        rng = np.random.default_rng(seed)

        # draw the random parameters first so that overriding one keeps the others fixed
        rand_means = _spaced_means(rng, c, d, spread, separation)
        rand_cov = np.empty((c, d, d))
        for k in range(c):
            rot = _random_rotation(rng, d)
            std = scale * rng.uniform(0.5, 1.5, size=d)
            rand_cov[k] = (rot * std**2) @ rot.T
        rand_cov = 0.5 * (rand_cov + rand_cov.transpose(0, 2, 1))

        self.means = rand_means if means is None else _as_float_array(means, "means", (c, d))
        if covariances is None:
            self.covariances = rand_cov
        else:
            self.covariances = _as_float_array(covariances, "covariances", (c, d, d))
        if priors is None:
            self.priors = np.full(c, 1.0 / c)
        else:
            self.priors = _as_float_array(priors, "priors", (c,))
            if np.any(self.priors <= 0):
                raise ValueError(f"priors must all be > 0, got {self.priors.tolist()}")
            if abs(self.priors.sum() - 1.0) > 1e-8:
                raise ValueError(f"priors must sum to 1 (within 1e-8), got {self.priors.sum()!r}")

        self._chol = np.empty_like(self.covariances)
        for k in range(c):
            cov = self.covariances[k]
            if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12 * np.abs(cov).max()):
                raise ValueError(f"covariances[{k}] must be symmetric, got {cov.tolist()}")
            try:
                self._chol[k] = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"covariances[{k}] must be positive definite, got {cov.tolist()}"
                ) from None
        self._log_det = 2.0 * np.log(np.diagonal(self._chol, axis1=1, axis2=2)).sum(axis=1)
        self._log_priors = np.log(self.priors)

    def __repr__(self) -> str:
        return f"GaussianMixtureTask(num_classes={self.num_classes}, dim={self.dim})"

    # ------------------------------------------------------------------ inputs
    def _check_x(self, x) -> np.ndarray:
        if hasattr(x, "detach"):  # torch tensor
            x = x.detach().cpu().numpy()
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"x must be a numeric n x {self.dim} array; {err}") from err
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("x must contain only finite values")
        return arr

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Draw n labelled points: y ~ priors, then x ~ N(mu_y, Sigma_y).

        Returns (x, y): x float32 of shape (n, d), y int64 of shape (n,). Deterministic in seed.
        """
        n = check_int(n, "n", minimum=1, maximum=MAX_SAMPLE_ELEMENTS // self.dim)
        seed = check_int(seed, "seed", minimum=0)
        rng = np.random.default_rng(seed)
        y = rng.choice(self.num_classes, size=n, p=self.priors).astype(np.int64)
        eps = rng.standard_normal((n, self.dim))
        x = np.empty((n, self.dim), dtype=np.float32)
        # Row chunks keep the n x d x d gathered Cholesky factors small; every row is
        # computed exactly as in one einsum over all rows.
        step = max(1, _ROWS_PER_CHUNK_ELEMENTS // (self.dim * self.dim))
        for start in range(0, n, step):
            rows = slice(start, min(n, start + step))
            yr = y[rows]
            x[rows] = self.means[yr] + np.einsum("nij,nj->ni", self._chol[yr], eps[rows])
        return x, y

    # ------------------------------------------------------------------ posterior
    def log_joint(self, x) -> np.ndarray:
        """n x C matrix of log pi_c + log N(x; mu_c, Sigma_c) (float64)."""
        x = self._check_x(x)
        out = np.empty((x.shape[0], self.num_classes))
        for k in range(self.num_classes):
            z = solve_triangular(self._chol[k], (x - self.means[k]).T, lower=True)
            maha = np.einsum("ij,ij->j", z, z)
            out[:, k] = self._log_priors[k] - 0.5 * (self.dim * _LOG_2PI + self._log_det[k] + maha)
        return out

    def log_posterior(self, x) -> np.ndarray:
        """n x C matrix of exact log p(c | x) (float64), normalized by log-sum-exp."""
        lj = self.log_joint(x)
        return lj - logsumexp(lj, axis=1, keepdims=True)

    def posterior(self, x) -> np.ndarray:
        """n x C matrix of exact class posteriors p(c | x) (float64, rows sum to 1)."""
        return np.exp(self.log_posterior(x))

    def bayes_accuracy(self, x, y) -> float:
        """Fraction in [0, 1] of points whose posterior argmax equals the label y (ints < C)."""
        x = self._check_x(x)
        if hasattr(y, "detach"):
            y = y.detach().cpu().numpy()
        y = np.asarray(y)
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},) to match x, got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"y must hold labels in [0, {self.num_classes - 1}]")
        return float(np.mean(np.argmax(self.log_joint(x), axis=1) == y))

    def expected_bayes_accuracy(self, n: int = 200_000, seed: int = 12345) -> float:
        """Monte-Carlo estimate of the Bayes accuracy from n fresh samples (std error
        about sqrt(a (1 - a) / n), i.e. 0.07 percentage points at a = 0.9, n = 200000;
        n * dim <= 2**28 as for `sample`)."""
        x, y = self.sample(n, seed)
        return self.bayes_accuracy(x, y)


# ---------------------------------------------------------------------- presets
_PRESET_PARAMS = {
    "gmm10": dict(num_classes=10, dim=2, spread=10.0, scale=1.70, separation=0.5, seed=0),
    "gmm100": dict(num_classes=100, dim=2, spread=10.0, scale=0.356, separation=0.5, seed=0),
}
GMM_PRESETS: tuple[str, ...] = tuple(_PRESET_PARAMS)


def gmm_preset(name: str) -> GaussianMixtureTask:
    """The paper's GMM tasks (Table 1): 2-D inputs, uniform priors, full covariances.

    name: one of GMM_PRESETS. Scales were tuned so that the Bayes accuracy sits near the test
    accuracies of Table 1 (Monte-Carlo, 10^6 samples, sample seed 99):
        "gmm10":  10 classes, scale 1.70 in [-10, 10]^2, Bayes accuracy 0.8996
        "gmm100": 100 classes, scale 0.356 in [-10, 10]^2, Bayes accuracy 0.9503
    Per-class Bayes accuracies range from about 0.77 to 0.99 (gmm10) and 0.73 to 1.0
    (gmm100), so the classes have neighbours they are confused with.
    """
    check_choice(name, "name", GMM_PRESETS)
    return GaussianMixtureTask(**_PRESET_PARAMS[name])


# ---------------------------------------------------------------------- tempered posteriors


def tempered_posterior(posterior, temperature: float):
    """softmax(log p / t) row by row: N x C probabilities (float32 torch tensor) from an
    N x C posterior (numpy array, tensor or nested list; rows of probabilities).

    t > 1 softens, t < 1 sharpens, t = 1 returns p (up to rounding); t = 0 is the limit, the
    one-hot of argmax p (ties to the lowest index). Every t keeps the argmax (the Bayes
    decision). Computed in float64; zero entries stay 0. Equivalently
    p_c^(1/t) / sum_k p_k^(1/t).
    """
    import torch

    from kdlib._validate import as_tensor

    p = as_tensor(posterior, "posterior").to(torch.float64)
    if p.dim() != 2 or p.shape[1] < 2:
        raise ValueError(f"posterior must be N x C with C >= 2, got shape {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError("posterior must hold finite, non-negative probabilities")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)):
        raise TypeError(f"temperature must be a real number >= 0, got {temperature!r}")
    t = float(temperature)
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if t == 0:
        return torch.nn.functional.one_hot(p.argmax(1), p.shape[1]).to(torch.float32)
    return torch.softmax(torch.log(p) / t, dim=1).to(torch.float32)
