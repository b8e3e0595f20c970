import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, multivariate_normal, norm

from kdlib.gmm import GMM_PRESETS, GaussianMixtureTask, gmm_preset, tempered_posterior


@pytest.fixture(scope="module")
def task3():
    pri = np.array([0.5, 0.3, 0.2])
    return GaussianMixtureTask(3, dim=2, priors=pri, spread=3.0, scale=1.0, seed=1)


def _posterior_scipy(task, x):
    dens = np.stack(
        [
            p * multivariate_normal(m, c).pdf(x)
            for m, c, p in zip(task.means, task.covariances, task.priors, strict=True)
        ],
        axis=1,
    )
    return dens / dens.sum(axis=1, keepdims=True)


def test_generated_parameters_have_documented_shapes(task3):
    assert task3.means.shape == (3, 2) and task3.means.dtype == np.float64
    assert task3.covariances.shape == (3, 2, 2)
    assert task3.priors.tolist() == [0.5, 0.3, 0.2]
    assert (task3.num_classes, task3.dim) == (3, 2)
    for cov in task3.covariances:
        np.testing.assert_allclose(cov, cov.T)
        assert np.all(np.linalg.eigvalsh(cov) > 0)
        assert abs(cov[0, 1]) > 1e-3  # full, not diagonal
    assert np.all(np.abs(task3.means) <= 3.0)


def test_random_means_respect_separation():
    g = GaussianMixtureTask(50, spread=10.0, separation=0.6, seed=3)
    d = np.linalg.norm(g.means[:, None] - g.means[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 0.6 * 20.0 / math.sqrt(50)


def test_posterior_matches_scipy_bayes_rule(task3):
    x, _ = task3.sample(200, seed=5)
    x = x.astype(np.float64)
    post = task3.posterior(x)
    np.testing.assert_allclose(post, _posterior_scipy(task3, x), rtol=0, atol=1e-10)
    np.testing.assert_allclose(task3.log_posterior(x), np.log(post), rtol=0, atol=1e-10)
    assert post.shape == (200, 3)


def test_posterior_matches_scipy_in_3d():
    g = GaussianMixtureTask(4, dim=3, priors=[0.1, 0.2, 0.3, 0.4], spread=2.0, seed=2)
    x = np.random.default_rng(0).normal(size=(50, 3)) * 2
    np.testing.assert_allclose(g.posterior(x), _posterior_scipy(g, x), rtol=0, atol=1e-10)


def test_posterior_far_away_is_finite_and_normalized(task3):
    x = np.array([[1e3, 0.0], [-1e3, 1e3], [0.0, -1e3], [3e3, 3e3]])
    post = task3.posterior(x)
    assert np.all(np.isfinite(post))
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.isfinite(task3.log_posterior(x)))
    # far away, the class with the widest covariance along that direction wins outright
    assert np.all(post.max(axis=1) > 0.999)


def test_posterior_rows_sum_to_one_and_accepts_torch(task3):
    x, _ = task3.sample(100, seed=6)
    np.testing.assert_allclose(task3.posterior(x).sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(task3.posterior(torch.from_numpy(x)), task3.posterior(x))


def test_sample_types_and_class_frequencies(task3):
    x, y = task3.sample(20000, seed=11)
    assert x.dtype == np.float32 and x.shape == (20000, 2)
    assert y.dtype == np.int64 and y.shape == (20000,)
    counts = np.bincount(y, minlength=3)
    assert chisquare(counts, 20000 * task3.priors).pvalue > 0.01
    # and the test has power: the wrong priors are rejected
    assert chisquare(counts, 20000 * np.array([0.4, 0.35, 0.25])).pvalue < 1e-6


def test_sample_class_means_and_covariances():
    g = GaussianMixtureTask(2, dim=2, seed=4)
    x, y = g.sample(40000, seed=0)
    for k in range(2):
        xk = x[y == k].astype(np.float64)
        se = np.sqrt(np.diag(g.covariances[k]) / len(xk))
        assert np.all(np.abs(xk.mean(0) - g.means[k]) < 5 * se)
        np.testing.assert_allclose(
            np.cov(xk.T), g.covariances[k], rtol=0.05, atol=0.05 * np.abs(g.covariances[k]).max()
        )


def test_sample_is_deterministic_in_seed(task3):
    x1, y1 = task3.sample(500, seed=3)
    x2, y2 = task3.sample(500, seed=3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x3, y3 = task3.sample(500, seed=4)
    assert not np.array_equal(x1, x3)
    assert not np.array_equal(y1, y3)


def test_generator_is_deterministic_in_seed():
    a, b = GaussianMixtureTask(5, seed=7), GaussianMixtureTask(5, seed=7)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.covariances, b.covariances)
    assert not np.array_equal(a.means, GaussianMixtureTask(5, seed=8).means)


@pytest.mark.parametrize("mu0, mu1, sigma", [(0.0, 1.0, 1.0), (-1.0, 2.0, 0.7), (3.0, 0.5, 2.0)])
def test_bayes_accuracy_closed_form_1d(mu0, mu1, sigma):
    g = GaussianMixtureTask(
        2, dim=1, means=[[mu0], [mu1]], covariances=[[[sigma**2]], [[sigma**2]]], priors=[0.5, 0.5]
    )
    expected = norm.cdf(abs(mu1 - mu0) / (2 * sigma))
    n = 400_000
    got = g.expected_bayes_accuracy(n=n, seed=1)
    se = math.sqrt(expected * (1 - expected) / n)
    assert abs(got - expected) < 4 * se
    # the decision boundary is the midpoint
    mid = (mu0 + mu1) / 2
    np.testing.assert_allclose(g.posterior([[mid]]), [[0.5, 0.5]], atol=1e-12)


def test_bayes_accuracy_hand_check_small():
    g = GaussianMixtureTask(
        2, dim=1, means=[[0.0], [2.0]], covariances=[[[1.0]], [[1.0]]], priors=[0.5, 0.5]
    )
    x = np.array([[-1.0], [0.9], [1.1], [5.0]])
    y = np.array([0, 1, 1, 0])  # predictions are 0, 0, 1, 1
    assert g.bayes_accuracy(x, y) == 0.5
    # posterior of class 1 is the logistic function of 2x - 2
    np.testing.assert_allclose(
        g.posterior(x)[:, 1], 1 / (1 + np.exp(-(2 * x[:, 0] - 2))), rtol=1e-12
    )


def test_unequal_priors_shift_the_boundary():
    # log-odds for class 1: 2x - 2 + log(0.8 / 0.2); boundary at x = 1 - log(4) / 2
    g = GaussianMixtureTask(
        2, dim=1, means=[[0.0], [2.0]], covariances=[[[1.0]], [[1.0]]], priors=[0.2, 0.8]
    )
    b = 1 - math.log(4) / 2
    np.testing.assert_allclose(g.posterior([[b]]), [[0.5, 0.5]], atol=1e-12)


@pytest.mark.parametrize(
    "name, expected, n", [("gmm10", 0.8996, 400_000), ("gmm100", 0.9503, 200_000)]
)
def test_preset_bayes_accuracy(name, expected, n):
    g = gmm_preset(name)
    assert g.num_classes == int(name[3:]) and g.dim == 2
    acc = g.expected_bayes_accuracy(n=n, seed=99)
    assert abs(acc - expected) < 0.005
    # full covariances
    assert np.all(np.abs(g.covariances[:, 0, 1]) > 0)


def test_preset_names():
    assert GMM_PRESETS == ("gmm10", "gmm100")
    with pytest.raises(ValueError, match="gmm10"):
        gmm_preset("gmm1000")


# ----------------------------------------------------------------------------- validation
def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        GaussianMixtureTask(1)
    with pytest.raises(TypeError, match="num_classes"):
        GaussianMixtureTask(2.5)
    with pytest.raises(ValueError, match="dim"):
        GaussianMixtureTask(3, dim=0)
    with pytest.raises(ValueError, match="scale"):
        GaussianMixtureTask(3, scale=0.0)
    with pytest.raises(ValueError, match="spread"):
        GaussianMixtureTask(3, spread=-1.0)
    with pytest.raises(ValueError, match="separation"):
        GaussianMixtureTask(3, separation=1.5)
    with pytest.raises(ValueError, match="could not place"):
        GaussianMixtureTask(10, separation=0.99)
    with pytest.raises(ValueError, match="seed"):
        GaussianMixtureTask(3, seed=-1)


def test_invalid_explicit_parameters():
    eye = np.stack([np.eye(2)] * 3)
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixtureTask(3, means=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixtureTask(3, means=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="finite"):
        GaussianMixtureTask(3, means=[[0, 0], [1, 1], [np.nan, 0]])
    with pytest.raises(ValueError, match="covariances must have shape"):
        GaussianMixtureTask(3, covariances=np.stack([np.eye(2)] * 2))
    with pytest.raises(ValueError, match="covariances must have shape"):
        GaussianMixtureTask(3, covariances=np.ones((3, 2)))
    bad = eye.copy()
    bad[1, 0, 1] = 0.5  # not symmetric
    with pytest.raises(ValueError, match=r"covariances\[1\] must be symmetric"):
        GaussianMixtureTask(3, covariances=bad)
    bad = eye.copy()
    bad[2] = [[1.0, 2.0], [2.0, 1.0]]  # symmetric, eigenvalues 3 and -1
    with pytest.raises(ValueError, match=r"covariances\[2\] must be positive definite"):
        GaussianMixtureTask(3, covariances=bad)
    bad = eye.copy()
    bad[0] = 0.0  # singular
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixtureTask(3, covariances=bad)
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixtureTask(3, priors=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="> 0"):
        GaussianMixtureTask(3, priors=[1.2, -0.1, -0.1])
    with pytest.raises(ValueError, match="priors must have shape"):
        GaussianMixtureTask(3, priors=[0.5, 0.5])
    with pytest.raises(TypeError, match="means"):
        GaussianMixtureTask(3, means="abc")


def test_invalid_method_arguments(task3):
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        task3.posterior(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        task3.log_posterior(np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        task3.posterior([[0.0, np.inf]])
    with pytest.raises(ValueError, match="n must be >= 1"):
        task3.sample(0)
    with pytest.raises(TypeError, match="n must be an integer"):
        task3.sample(10.0)
    with pytest.raises(ValueError, match="seed"):
        task3.sample(10, seed=-3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        task3.expected_bayes_accuracy(n=0)
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="y must have shape"):
        task3.bayes_accuracy(x, np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        task3.bayes_accuracy(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"labels in \[0, 2\]"):
        task3.bayes_accuracy(x, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="x must have shape"):
        task3.bayes_accuracy(np.zeros((4, 1)), np.zeros(4, dtype=np.int64))


@pytest.mark.parametrize("c, d, sep", [(10, 2, 0.5), (100, 2, 0.7), (40, 5, 0.5), (2, 1, 0.0)])
def test_batched_mean_placement_equals_one_at_a_time(c, d, sep):
    # The reference: the one-candidate-at-a-time loop the batched version replaces. Same
    # means, and the generator ends in the same state (so the covariances match too).
    from kdlib.gmm import _spaced_means

    ref_rng, rng = np.random.default_rng(7), np.random.default_rng(7)
    min_dist = sep * 2.0 * 10.0 / c ** (1.0 / d)
    ref, k = np.empty((c, d)), 0
    while k < c:
        cand = ref_rng.uniform(-10.0, 10.0, size=d)
        if k == 0 or np.min(np.linalg.norm(ref[:k] - cand, axis=1)) >= min_dist:
            ref[k] = cand
            k += 1
    np.testing.assert_array_equal(_spaced_means(rng, c, d, 10.0, sep), ref)
    assert rng.bit_generator.state == ref_rng.bit_generator.state


# ---------------------------------------------------------------------- tempered posteriors


def test_tempered_posterior_hand_values():
    p = torch.tensor([[0.8, 0.15, 0.05], [0.2, 0.5, 0.3]])
    # t = 0.5 squares and renormalizes: 0.64, 0.0225, 0.0025 over 0.665
    sharp = tempered_posterior(p, 0.5)
    assert sharp[0].tolist() == pytest.approx([0.64 / 0.665, 0.0225 / 0.665, 0.0025 / 0.665],
                                              rel=1e-6)
    # t = 2 takes square roots
    r = np.sqrt([0.8, 0.15, 0.05])
    assert tempered_posterior(p, 2.0)[0].tolist() == pytest.approx(r / r.sum(), rel=1e-6)
    assert torch.allclose(tempered_posterior(p, 1.0), p, atol=1e-7)
    assert tempered_posterior(p, 0.0).tolist() == [[1, 0, 0], [0, 1, 0]]
    # zero probabilities stay zero, the rows still sum to 1
    z = tempered_posterior(torch.tensor([[0.0, 1.0], [0.5, 0.5]]), 3.0)
    assert z.tolist() == [[0.0, 1.0], [0.5, 0.5]]
    with pytest.raises(ValueError, match=">= 0"):
        tempered_posterior(p, -1.0)
    with pytest.raises(TypeError, match="temperature"):
        tempered_posterior(p, "2")
    with pytest.raises(ValueError, match="non-negative"):
        tempered_posterior(-p, 2.0)
    with pytest.raises(ValueError, match="N x C"):
        tempered_posterior(torch.ones(3), 2.0)


def test_tempered_posterior_of_a_gmm_keeps_the_bayes_decision(task3):
    # p_c^(1/t) / sum_k p_k^(1/t) computed directly from the exact posterior
    x, _ = task3.sample(300, seed=2)
    p = task3.posterior(x)
    for t in (0.25, 0.5, 2.0, 8.0):
        q = tempered_posterior(p, t).double().numpy()
        ref = p ** (1.0 / t)
        ref /= ref.sum(1, keepdims=True)
        np.testing.assert_allclose(q, ref, atol=1e-6)
        assert (q.argmax(1) == p.argmax(1)).all()
        # sharper for t < 1, softer for t > 1: the mean top probability moves accordingly
        if t < 1:
            assert q.max(1).mean() > p.max(1).mean()
        else:
            assert q.max(1).mean() < p.max(1).mean()
