"""Tests for kdlib.calibration: hand-computed values, boundary rules, invariants, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdlib import calibration as cal

# The worked example used throughout (3 classes, 6 samples).
#
#  row  probs               label  argmax  conf  correct  bin (M=5, ((m-1)/5, m/5])
#   1   [.90, .05, .05]      0      0      .90    1        5  (.8, 1]
#   2   [.70, .20, .10]      1      0      .70    0        4  (.6, .8]
#   3   [.10, .65, .25]      1      1      .65    1        4
#   4   [.30, .30, .40]      0      2      .40    0        2  (.2, .4]  (exactly 2/5)
#   5   [.35, .45, .20]      1      1      .45    1        3  (.4, .6]
#   6   [.50, .25, .25]      2      0      .50    0        3
#
#  bin 1: empty
#  bin 2: {4}     conf .400  acc 0    gap .400  weight 1/6
#  bin 3: {5, 6}  conf .475  acc 1/2  gap .025  weight 2/6
#  bin 4: {2, 3}  conf .675  acc 1/2  gap .175  weight 2/6
#  bin 5: {1}     conf .900  acc 1    gap .100  weight 1/6
#  ECE = (.4 + 2*.025 + 2*.175 + .1) / 6 = .9 / 6 = 0.15;  MCE = 0.4
P = np.array(
    [
        [0.90, 0.05, 0.05],
        [0.70, 0.20, 0.10],
        [0.10, 0.65, 0.25],
        [0.30, 0.30, 0.40],
        [0.35, 0.45, 0.20],
        [0.50, 0.25, 0.25],
    ]
)
Y = np.array([0, 1, 1, 0, 1, 2])


def _random_probs(n, c, seed, scale=3.0):
    g = np.random.default_rng(seed)
    z = g.normal(size=(n, c)) * scale
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p, g.integers(0, c, size=n)


def _naive_bins(probs, labels, n_bins):
    """Loop reference: per-bin (count, sum conf, sum correct) with the ((m-1)/M, m/M] rule."""
    out = np.zeros((n_bins, 3))
    for row, label in zip(probs, labels, strict=True):
        conf = float(row.max())
        m = min(max(math.ceil(conf * n_bins) - 1, 0), n_bins - 1)
        out[m] += (1, conf, float(np.argmax(row) == label))
    return out


# ----------------------------------------------------------------------- hand values


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ece_and_mce_hand_values(dtype):
    p = P.astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    assert cal.ece(p, Y, n_bins=5) == pytest.approx(0.15, abs=tol)
    assert cal.mce(p, Y, n_bins=5) == pytest.approx(0.4, abs=tol)
    assert isinstance(cal.ece(p, Y, n_bins=5), float)
    # One bin: |overall accuracy - mean confidence| = |3/6 - 3.6/6| = 0.1.
    assert cal.ece(p, Y, n_bins=1) == pytest.approx(0.1, abs=tol)
    assert cal.mce(p, Y, n_bins=1) == pytest.approx(0.1, abs=tol)


def test_reliability_bins_hand_values_and_empty_bins():
    bins = cal.reliability_bins(P, Y, n_bins=5)
    np.testing.assert_allclose(bins.edges, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_array_equal(bins.count, [0, 1, 2, 2, 1])
    assert bins.count.dtype == np.int64
    assert bins.n_bins == 5
    # Empty bin 1: count 0, NaN confidence and accuracy.
    assert np.isnan(bins.confidence[0]) and np.isnan(bins.accuracy[0])
    np.testing.assert_allclose(bins.confidence[1:], [0.4, 0.475, 0.675, 0.9], atol=1e-12)
    np.testing.assert_allclose(bins.accuracy[1:], [0.0, 0.5, 0.5, 1.0], atol=1e-12)


def test_boundary_rule_confidence_on_edges():
    # M = 4, edges 0, .25, .5, .75, 1 (exact in binary). Confidence .25 -> bin 1,
    # .5 -> bin 2, .75 -> bin 3, 1.0 -> bin 4 (the last), and just above .5 -> bin 3.
    rows = [
        [0.25, 0.25, 0.25, 0.25],
        [0.5, 0.5, 0.0, 0.0],
        [0.75, 0.25, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [np.nextafter(0.5, 1.0), np.nextafter(0.5, 0.0), 0.0, 0.0],
    ]
    labels = [0, 0, 0, 0, 0]
    for dtype in (np.float64, np.float32):
        p = np.array(rows, dtype=dtype)
        p[4, :2] = [np.nextafter(dtype(0.5), dtype(1)), np.nextafter(dtype(0.5), dtype(0))]
        np.testing.assert_array_equal(cal.reliability_bins(p, labels, 4).count, [1, 1, 2, 1])
    # M = 10 (edges not exact in binary): a confidence equal to 0.4 (= 4/10 in the input's
    # dtype) goes in bin 4, (.3, .4]; 0.6 in bin 6, (.5, .6].
    for dtype in (np.float64, np.float32):
        p = np.array([[0.3, 0.3, 0.4], [0.6, 0.2, 0.2]], dtype=dtype)
        count = cal.reliability_bins(p, [2, 0], 10).count
        np.testing.assert_array_equal(np.flatnonzero(count), [3, 5])


def test_boundary_rule_changes_ece_as_in_the_paper():
    # M = 2. Row 1: conf exactly .5, correct -> bin 1 (0, .5]; row 2: conf .9, wrong -> bin 2.
    # ECE = 1/2 * |1 - .5| + 1/2 * |0 - .9| = 0.7. With [lo, hi) bins both rows would share
    # bin 2 and ECE would be |1/2 - .7| = 0.2.
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert cal.ece(p, [0, 1], n_bins=2) == pytest.approx(0.7, abs=1e-12)
    assert cal.mce(p, [0, 1], n_bins=2) == pytest.approx(0.9, abs=1e-12)


def test_confidence_exactly_one_from_float32_softmax_goes_in_last_bin():
    probs = cal.tempered_softmax(torch.tensor([[100.0, 0.0, 0.0]]), 1.0)
    assert probs.dtype == torch.float32 and float(probs.max()) == 1.0
    bins = cal.reliability_bins(probs, [0], n_bins=15)
    np.testing.assert_array_equal(bins.count, [0] * 14 + [1])
    assert cal.ece(probs, [0]) == 0.0
    assert cal.ece(probs, [1]) == 1.0


def test_empty_bins_contribute_zero():
    # Four samples with confidence .7 (bin 11 of 15: (10/15, 11/15]), two correct:
    # ECE = |1/2 - .7| = 0.2 whatever the 14 empty bins hold.
    p = np.tile([0.7, 0.3], (4, 1))
    labels = [0, 0, 1, 1]
    bins = cal.reliability_bins(p, labels)
    assert bins.count.tolist() == [0] * 10 + [4] + [0] * 4
    assert np.isnan(bins.confidence).sum() == 14
    assert cal.ece(p, labels) == pytest.approx(0.2, abs=1e-12)
    assert cal.mce(p, labels) == pytest.approx(0.2, abs=1e-12)


def test_perfect_calibration_gives_zero():
    # conf .9 with 9/10 right, conf .6 with 3/5 right, conf .75 with 3/4 right.
    rows = [[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 5 + [[0.25, 0.75]] * 4
    labels = [0] * 9 + [1] + [0] * 3 + [1] * 2 + [1] * 3 + [0]
    assert cal.ece(rows, labels) == pytest.approx(0.0, abs=1e-12)
    assert cal.mce(rows, labels) == pytest.approx(0.0, abs=1e-12)
    # One equal-mass bin: accuracy 15/19 equals mean confidence (9 + 3 + 3)/19.
    assert cal.adaptive_ece(rows, labels, n_bins=1) == pytest.approx(0.0, abs=1e-12)


def test_adaptive_ece_hand_values():
    # Sorted confidences (correct): .40 (0) .45 (1) .50 (0) .65 (1) .70 (0) .90 (1).
    # 2 bins of 3: conf .45 acc 1/3 gap 7/60; conf .75 acc 2/3 gap 1/12 -> (.35 + .25)/6 = 0.1
    assert cal.adaptive_ece(P, Y, n_bins=2) == pytest.approx(0.1, abs=1e-12)
    # 3 bins of 2: gaps .075, .075, .3 -> (.15 + .15 + .6)/6 = 0.15
    assert cal.adaptive_ece(P, Y, n_bins=3) == pytest.approx(0.15, abs=1e-12)
    # 10 bins for 6 samples: one sample per bin (4 empty) -> mean |correct - conf|
    # = (.1 + .7 + .35 + .4 + .55 + .5)/6 = 2.6/6
    assert cal.adaptive_ece(P, Y, n_bins=10) == pytest.approx(2.6 / 6, abs=1e-12)


def test_adaptive_ece_bin_sizes_differ_by_at_most_one():
    # 5 samples, 2 bins: ranks 0,1,2 -> bin 0, ranks 3,4 -> bin 1.
    p = np.array([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1], [0.95, 0.05]])
    labels = [0, 0, 0, 1, 1]
    # bin 0: conf .7 acc 1 gap .3 (3 samples); bin 1: conf .925 acc 0 gap .925 (2 samples)
    expected = (3 * 0.3 + 2 * 0.925) / 5
    assert cal.adaptive_ece(p, labels, n_bins=2) == pytest.approx(expected, abs=1e-12)


def test_classwise_ece_hand_value():
    # Per class k, bin the column p[:, k] (M = 5) and sum |sum[y == k] - sum p_k| over bins:
    # class 0: p = .9 .7 .1 .3 .35 .5, y = 1 0 0 1 0 0
    #   bins 5:{.9,y1} .1; 4:{.7} .7; 1:{.1} .1; 2:{.3 y1, .35} |1-.65|=.35; 3:{.5} .5 -> 1.75
    # class 1: p = .05 .2 .65 .3 .45 .25, y = 0 1 1 0 1 0
    #   bin 1:{.05, .2 y1} (.2 is exactly 1/5) |1-.25|=.75; 2:{.3,.25} .55;
    #   3:{.45 y1} .55; 4:{.65 y1} .35 -> 2.2
    # class 2: p = .05 .1 .25 .4 .2 .25, y = 0 0 0 0 0 1
    #   bin 1:{.05,.1,.2} .35; 2:{.25,.4,.25 y1} |1-.9|=.1 -> .45
    # classwise ECE = (1.75 + 2.2 + .45) / 6 / 3 = 4.4 / 18
    assert cal.classwise_ece(P, Y, n_bins=5) == pytest.approx(4.4 / 18, abs=1e-12)
    assert cal.classwise_ece(P.astype(np.float32), Y, n_bins=5) == pytest.approx(
        4.4 / 18, abs=1e-6
    )


def test_brier_score_hand_values():
    # Per row sum_k (p_k - onehot_k)^2:
    # .01+.0025+.0025=.015; .49+.64+.01=1.14; .01+.1225+.0625=.195; .49+.09+.16=.74;
    # .1225+.3025+.04=.465; .25+.0625+.5625=.875 -> total 3.43, mean 3.43/6
    assert cal.brier_score(P, Y) == pytest.approx(3.43 / 6, abs=1e-12)
    onehot = np.eye(3)[[0, 2, 1]]
    assert cal.brier_score(onehot, [0, 2, 1]) == 0.0
    assert cal.brier_score(onehot, [1, 0, 2]) == pytest.approx(2.0)  # worst case: 1 + 1
    # The input is not modified (the float64 path works on a copy).
    p = P.copy()
    cal.brier_score(p, Y)
    np.testing.assert_array_equal(p, P)


def test_nll_hand_values_and_zero_probability_clamp():
    expected = -(
        math.log(0.9)
        + math.log(0.2)
        + math.log(0.65)
        + math.log(0.3)
        + math.log(0.45)
        + math.log(0.25)
    ) / 6
    assert cal.nll(P, Y) == pytest.approx(expected, abs=1e-12)
    assert cal.nll(P.astype(np.float32), Y) == pytest.approx(expected, rel=1e-6)
    # p(true) = 0 is clamped to the smallest normal of the dtype: finite, known cost.
    zero = np.array([[1.0, 0.0]])
    assert cal.nll(zero.astype(np.float32), [1]) == pytest.approx(
        -math.log(np.finfo(np.float32).tiny)
    )
    assert cal.nll(zero, [1]) == pytest.approx(-math.log(np.finfo(np.float64).tiny))
    assert cal.nll(zero, [0]) == 0.0


def test_metrics_match_loop_reference_on_random_data():
    p, y = _random_probs(400, 7, seed=1)
    for n_bins in (1, 3, 15):
        ref = _naive_bins(p, y, n_bins)
        bins = cal.reliability_bins(p, y, n_bins)
        np.testing.assert_array_equal(bins.count, ref[:, 0])
        full = ref[:, 0] > 0
        np.testing.assert_allclose(bins.confidence[full], ref[full, 1] / ref[full, 0])
        np.testing.assert_allclose(bins.accuracy[full], ref[full, 2] / ref[full, 0])
        gaps = np.abs(ref[full, 2] - ref[full, 1])
        assert cal.ece(p, y, n_bins) == pytest.approx(gaps.sum() / len(y), abs=1e-12)
        assert cal.mce(p, y, n_bins) == pytest.approx(
            (gaps / ref[full, 0]).max(), abs=1e-12
        )
    # Class-wise ECE with one bin: mean over classes of |freq(y == k) - mean p_k|.
    freq = np.bincount(y, minlength=7) / len(y)
    assert cal.classwise_ece(p, y, 1) == pytest.approx(
        np.abs(freq - p.mean(axis=0)).mean(), abs=1e-12
    )


# ----------------------------------------------------------------------- temperature


def test_tempered_softmax_values_dtype_and_shape():
    z = np.array([[0.0, math.log(3.0)], [1.0, 1.0]])
    p = cal.tempered_softmax(z, 1.0)
    assert isinstance(p, torch.Tensor) and p.dtype == torch.float64
    np.testing.assert_allclose(p.numpy(), [[0.25, 0.75], [0.5, 0.5]], atol=1e-15)
    # T = 2 halves the logits: p1 = sqrt(3) / (1 + sqrt(3)).
    p2 = cal.tempered_softmax(z, 2.0)
    assert float(p2[0, 1]) == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)), abs=1e-15)
    # int and float16 logits become float32; 1-D and 3-D inputs softmax over the last axis.
    assert cal.tempered_softmax(np.array([[1, 2]]), 1).dtype == torch.float32
    assert cal.tempered_softmax(torch.ones(2, 3, dtype=torch.float16), 1.0).dtype == (
        torch.float32
    )
    assert cal.tempered_softmax(torch.zeros(4), 5.0).tolist() == [0.25] * 4
    assert cal.tempered_softmax(torch.randn(2, 3, 5), 0.5).sum(-1).allclose(torch.ones(2, 3))


def test_ece_vs_temperature_equals_ece_of_tempered_softmax():
    g = torch.Generator().manual_seed(0)
    # 10,000 x 50 with 11 temperatures spans several row chunks of the batched path.
    z = torch.randn(10_000, 50, generator=g) * 4
    y = torch.randint(0, 50, (10_000,), generator=g)
    temps = [0.05, 0.1, 0.3, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 20.0]
    got = cal.ece_vs_temperature(z, y, temps)
    assert isinstance(got, np.ndarray) and got.shape == (11,) and got.dtype == np.float64
    for t, value in zip(temps, got, strict=True):
        assert value == pytest.approx(cal.ece(cal.tempered_softmax(z, t), y), abs=1e-12)
    # n_bins is honoured.
    got5 = cal.ece_vs_temperature(z, y, [1.0, 4.0], n_bins=5)
    for t, value in zip([1.0, 4.0], got5, strict=True):
        assert value == pytest.approx(cal.ece(cal.tempered_softmax(z, t), y, 5), abs=1e-12)


def test_nll_vs_temperature_values():
    z = np.array([[0.0, math.log(3.0)]])
    got = cal.nll_vs_temperature(z, [1], [1.0, 2.0])
    expected = [-math.log(0.75), -math.log(math.sqrt(3) / (1 + math.sqrt(3)))]
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2000, 20, generator=g) * 3
    y = torch.randint(0, 20, (2000,), generator=g)
    temps = np.array([0.2, 1.0, 3.0, 10.0])
    got = cal.nll_vs_temperature(z, y, temps)
    assert got.shape == (4,)
    for t, value in zip(temps, got, strict=True):
        assert value == pytest.approx(cal.nll(cal.tempered_softmax(z, t), y), rel=1e-5)


def _calibrated_sample(n, c, seed):
    """Logits z and labels drawn from softmax(z): a perfectly calibrated model."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 2.0
    y = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
    return z, y


def test_fit_temperature_recovers_known_temperature_and_matches_grid():
    z, y = _calibrated_sample(10_000, 10, seed=2)
    t_fit = cal.fit_temperature(3.0 * z, y)
    assert isinstance(t_fit, float)
    assert t_fit == pytest.approx(3.0, rel=0.05)
    # Grid search of the NLL over [0.05, 20], then refined twice around the best point:
    # steps of 2%, 0.05% and finally 1e-5 (relative), all independent of fit_temperature.
    grid = np.geomspace(0.05, 20.0, 301)
    for width, num in [(1.025, 101), (1.001, 201), (None, None)]:
        nlls = cal.nll_vs_temperature(3.0 * z, y, grid)
        best = grid[np.argmin(nlls)]
        if width is not None:
            grid = np.geomspace(best / width, best * width, num)
    t_grid = best
    assert abs(t_fit - t_grid) / t_grid < 1e-3
    assert cal.nll_vs_temperature(3.0 * z, y, [t_fit])[0] <= nlls.min() + 1e-12
    # float32 numpy logits give the same answer.
    t32 = cal.fit_temperature((3.0 * z).float().numpy(), y.numpy())
    assert t32 == pytest.approx(t_fit, rel=1e-4)


def test_fit_temperature_on_overconfident_and_underconfident_logits():
    z, y = _calibrated_sample(5000, 5, seed=3)
    assert cal.fit_temperature(z, y) == pytest.approx(1.0, rel=0.1)
    assert cal.fit_temperature(0.5 * z, y) == pytest.approx(0.5, rel=0.1)


def test_fit_temperature_degenerate_cases_stay_positive_and_finite():
    # Constant rows: the NLL does not depend on T -> 1.0.
    assert cal.fit_temperature(np.zeros((5, 3)), [0, 1, 2, 0, 1]) == 1.0
    # Separable, all right: the NLL keeps falling as T -> 0 -> t_min.
    z = np.array([[5.0, 0.0], [0.0, 5.0], [4.0, 1.0]])
    assert cal.fit_temperature(z, [0, 1, 0]) == 0.05
    assert cal.fit_temperature(z, [0, 1, 0], t_min=0.5, t_max=2.0) == 0.5
    # All wrong: the NLL keeps falling as T -> infinity -> t_max.
    assert cal.fit_temperature(z, [1, 0, 1]) == 20.0
    # Huge logits.
    t = cal.fit_temperature(np.array([[1e30, 0.0], [0.0, 1e30], [1e30, 0.0]]), [0, 1, 1])
    assert math.isfinite(t) and 0.05 <= t <= 20.0


# ----------------------------------------------------------------------- input types


def test_numpy_torch_and_list_inputs_agree():
    p, y = _random_probs(300, 6, seed=4)
    z = np.log(p)
    variants = [
        (p, y),
        (p.astype(np.float32), y.astype(np.int32)),
        (torch.from_numpy(p), torch.from_numpy(y)),
        (torch.from_numpy(p).float(), y),
        (p.tolist(), y.tolist()),
        (torch.from_numpy(np.ascontiguousarray(p.T)).T, torch.from_numpy(y).to(torch.uint8)),
    ]
    fns = [cal.ece, cal.mce, cal.adaptive_ece, cal.classwise_ece, cal.brier_score, cal.nll]
    for fn in fns:
        ref = fn(p, y)
        for probs, labels in variants:
            assert fn(probs, labels) == pytest.approx(ref, abs=1e-6), fn.__name__
    ref = cal.ece_vs_temperature(z, y, [0.5, 2.0])
    np.testing.assert_allclose(
        cal.ece_vs_temperature(torch.from_numpy(z), torch.from_numpy(y), torch.tensor([0.5, 2.0])),
        ref,
    )
    assert cal.fit_temperature(torch.from_numpy(z), y) == pytest.approx(
        cal.fit_temperature(z, y), rel=1e-12
    )


def test_tensors_requiring_grad():
    p, y = _random_probs(50, 4, seed=6)
    pt = torch.from_numpy(p).requires_grad_(True)
    assert cal.ece(pt, y) == pytest.approx(cal.ece(p, y), abs=1e-15)
    assert cal.reliability_bins(pt, y).count.sum() == 50
    z = torch.from_numpy(np.log(p)).requires_grad_(True)
    assert cal.fit_temperature(z, y) == pytest.approx(cal.fit_temperature(np.log(p), y))
    # tempered_softmax keeps the graph: d/dz of sum(softmax) is 0.
    cal.tempered_softmax(z, 2.0).sum().backward()
    assert z.grad is not None and float(z.grad.abs().max()) < 1e-12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_agree_with_cpu():
    p, y = _random_probs(2000, 10, seed=5)
    pc, yc = torch.from_numpy(p).cuda(), torch.from_numpy(y).cuda()
    for fn in (cal.ece, cal.mce, cal.adaptive_ece, cal.classwise_ece, cal.brier_score, cal.nll):
        assert fn(pc, yc) == pytest.approx(fn(p, y), abs=1e-9)
    z = np.log(p)
    np.testing.assert_allclose(
        cal.ece_vs_temperature(torch.from_numpy(z).cuda(), yc, [0.5, 2.0]),
        cal.ece_vs_temperature(z, y, [0.5, 2.0]),
        atol=1e-9,
    )
    assert cal.tempered_softmax(torch.from_numpy(z).cuda(), 2.0).is_cuda


# ----------------------------------------------------------------------- validation

PROB_FNS = [
    cal.ece,
    cal.mce,
    cal.reliability_bins,
    cal.adaptive_ece,
    cal.classwise_ece,
    cal.brier_score,
    cal.nll,
]
BINNED_FNS = [cal.ece, cal.mce, cal.reliability_bins, cal.adaptive_ece, cal.classwise_ece]


@pytest.mark.parametrize("fn", PROB_FNS)
@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (np.zeros((0, 3)), np.zeros(0, dtype=int), "empty"),
        (np.zeros((2, 0)), [0, 0], "0 classes"),
        (P, Y[:5], "length mismatch.*6 rows.*5 entries"),
        (P, [], "length mismatch.*6 rows.*0 entries"),
        (P[0], Y[:1], "2-D"),
        (P[None], Y, "2-D"),
        (P, Y.astype(float), "integer class indices"),
        (P, np.array([True] * 6), "integer class indices"),
        (P, Y[:, None], "1-D"),
        (P, [0, 1, 3, 0, 1, 2], r"\[0, 3\).*\[0, 3\]"),
        (P, [0, 1, -1, 0, 1, 2], r"\[0, 3\).*\[-1, 2\]"),
        (np.where(P == 0.9, np.nan, P), Y, "NaN or inf"),
        (np.where(P == 0.9, np.inf, P), Y, "NaN or inf"),
        (P * 2, Y, "do not sum to 1.*logits.*tempered_softmax"),
        (np.log(P), Y, "logits.*tempered_softmax"),
        (np.array([[1.5, -0.5]]), [0], "negative"),
    ],
)
def test_probability_input_errors(fn, probs, labels, match):
    with pytest.raises(ValueError, match=match):
        fn(probs, labels)


@pytest.mark.parametrize("fn", BINNED_FNS)
def test_n_bins_errors(fn):
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        fn(P, Y, n_bins=0)
    for bad in (2.5, "15", True, None):
        with pytest.raises(TypeError, match="n_bins must be an integer"):
            fn(P, Y, n_bins=bad)


def test_n_bins_errors_for_logit_functions():
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        cal.ece_vs_temperature(np.log(P), Y, [1.0], n_bins=-3)
    with pytest.raises(TypeError, match="n_bins must be an integer"):
        cal.ece_vs_temperature(np.log(P), Y, [1.0], n_bins=15.0)


def test_non_numeric_inputs_are_type_errors():
    with pytest.raises(TypeError, match="real-valued"):
        cal.ece(P.astype(complex), Y)
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        cal.ece("probs", Y)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_errors(bad):
    z = np.log(P)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        cal.tempered_softmax(z, bad)
    for fn in (cal.ece_vs_temperature, cal.nll_vs_temperature):
        with pytest.raises(ValueError, match=r"temperatures\[1\] must be finite and > 0"):
            fn(z, Y, [1.0, bad, 2.0])
        with pytest.raises(ValueError, match=r"temperatures\[0\] must be finite and > 0"):
            fn(z, Y, np.array([bad]))


def test_temperature_list_errors():
    z = np.log(P)
    for fn in (cal.ece_vs_temperature, cal.nll_vs_temperature):
        with pytest.raises(ValueError, match="temperatures is empty"):
            fn(z, Y, [])
        with pytest.raises(TypeError, match="1-D sequence"):
            fn(z, Y, 2.0)
        with pytest.raises(TypeError, match="1-D sequence"):
            fn(z, Y, [[1.0, 2.0]])
        with pytest.raises(TypeError, match="real number > 0"):
            fn(z, Y, [1.0, True])
    with pytest.raises(TypeError, match="real number > 0"):
        cal.tempered_softmax(z, "2")


@pytest.mark.parametrize(
    "fn",
    [
        lambda z, y: cal.ece_vs_temperature(z, y, [1.0]),
        lambda z, y: cal.nll_vs_temperature(z, y, [1.0]),
        cal.fit_temperature,
    ],
)
def test_logit_input_errors(fn):
    z = np.log(P)
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(np.where(P == 0.9, np.nan, z), Y)
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(np.where(P == 0.9, -np.inf, z), Y)
    with pytest.raises(ValueError, match="2-D"):
        fn(z[0], Y[:1])
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="length mismatch"):
        fn(z, Y[:4])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        fn(z, Y + 1)
    with pytest.raises(ValueError, match="integer class indices"):
        fn(z, Y.astype(np.float32))


def test_tempered_softmax_input_errors():
    with pytest.raises(ValueError, match="NaN or inf"):
        cal.tempered_softmax(np.array([[0.0, np.nan]]), 1.0)
    with pytest.raises(ValueError, match="at least one dimension"):
        cal.tempered_softmax(torch.tensor(1.0), 1.0)
    with pytest.raises(ValueError, match="at least one dimension"):
        cal.tempered_softmax(np.zeros((2, 0)), 1.0)


def test_fit_temperature_bound_errors():
    z = np.log(P)
    with pytest.raises(ValueError, match="t_min must be < t_max"):
        cal.fit_temperature(z, Y, t_min=2.0, t_max=1.0)
    with pytest.raises(ValueError, match="t_min must be finite and > 0"):
        cal.fit_temperature(z, Y, t_min=0.0)
    with pytest.raises(ValueError, match="t_max must be finite and > 0"):
        cal.fit_temperature(z, Y, t_max=float("inf"))


def test_bounds_themselves_are_accepted():
    z = np.log(P)
    assert cal.MAX_BINS == 10_000 and (cal.TEMPERATURE_MIN, cal.TEMPERATURE_MAX) == (1e-3, 1e4)
    assert 0 <= cal.ece(P, Y, n_bins=cal.MAX_BINS) <= 1
    sharp = cal.tempered_softmax(z, cal.TEMPERATURE_MIN)
    assert torch.isfinite(sharp).all()
    assert torch.equal(sharp.argmax(1), torch.as_tensor(P).argmax(1))
    flat = cal.tempered_softmax(z, cal.TEMPERATURE_MAX)
    torch.testing.assert_close(flat, torch.full_like(flat, 1 / 3), atol=1e-3, rtol=0)
    eces = cal.ece_vs_temperature(z, Y, [cal.TEMPERATURE_MIN, cal.TEMPERATURE_MAX])
    assert np.isfinite(eces).all()
    assert 1e-3 <= cal.fit_temperature(z, Y, t_min=1e-3, t_max=1e4) <= 1e4


# ----------------------------------------------------------------------- equal-mass bins
# Worked example with M = 3 equal-mass bins: sorted confidences .40 (wrong), .45 (right),
# .50 (wrong) | .65 (right), .70 (wrong) | .90 (right) -> two samples per bin:
#  bin 1: conf .425 acc 1/2 gap .075;  bin 2: conf .575 acc 1/2 gap .075;
#  bin 3: conf .800 acc 1/2 gap .300.  ECE = 2 * (.075 + .075 + .3) / 6 = 0.15, MCE = 0.3
#  edges: .40, (.45 + .50) / 2, (.65 + .70) / 2, .90

PROBS4 = torch.tensor([[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]], dtype=torch.float64)


def test_equal_mass_bins_worked_example():
    b = cal.equal_mass_bins(P, Y, 3)
    assert b.binning == "equal_mass" and b.n_bins == 3
    assert b.count.tolist() == [2, 2, 2]
    np.testing.assert_allclose(b.confidence, [0.425, 0.575, 0.8])
    np.testing.assert_allclose(b.accuracy, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(b.edges, [0.40, 0.475, 0.675, 0.90])
    assert b.ece == pytest.approx(0.15) and b.mce == pytest.approx(0.3)
    assert b.ece == pytest.approx(cal.adaptive_ece(P, Y, 3), abs=1e-12)


def test_equal_mass_bins_hand_computed_two_bins():
    labels = torch.tensor([1, 1, 0, 0])  # the two least confident are wrong
    b = cal.binned_calibration(PROBS4, labels, n_bins=2, binning="equal_mass")
    assert b.count.tolist() == [2, 2]
    np.testing.assert_allclose(b.confidence, [0.65, 0.85])
    np.testing.assert_allclose(b.accuracy, [0.0, 1.0])
    np.testing.assert_allclose(b.edges, [0.6, 0.75, 0.9])
    assert b.ece == pytest.approx(0.5 * 0.65 + 0.5 * 0.15)
    assert b.mce == pytest.approx(0.65)
    assert b.ece == pytest.approx(cal.adaptive_ece(PROBS4, labels, 2))


def test_equal_mass_bins_fewer_samples_than_bins():
    # ranks 0, 1 with M = 4 go to bins floor(0 * 4 / 2) = 0 and floor(1 * 4 / 2) = 2
    p = np.array([[0.6, 0.4], [0.8, 0.2]])
    b = cal.equal_mass_bins(p, [0, 1], 4)
    assert b.count.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(b.confidence[[0, 2]], [0.6, 0.8])
    np.testing.assert_allclose(b.accuracy[[0, 2]], [1.0, 0.0])
    assert np.isnan(b.confidence[1]) and np.isnan(b.accuracy[3])
    np.testing.assert_allclose(b.edges, [0.6, 0.7, 0.7, 0.8, 0.8])  # empty bins: width 0
    assert b.ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.8)


def test_equal_width_binned_calibration_hand_computed():
    labels = torch.tensor([1, 1, 0, 0])
    b = cal.binned_calibration(PROBS4, labels, n_bins=2, binning="equal_width")
    # bins (0, .5], (.5, 1]: everything in the second bin, accuracy 1/2, confidence 0.75
    assert b.count.tolist() == [0, 4]
    assert math.isnan(b.accuracy[0]) and b.accuracy[1] == pytest.approx(0.5)
    assert b.ece == pytest.approx(0.25) and b.mce == pytest.approx(0.25)
    np.testing.assert_allclose(b.edges, [0.0, 0.5, 1.0])
    w = cal.binned_calibration(P, Y, 5)  # the worked example: ECE 0.15, MCE 0.4
    assert w.ece == pytest.approx(0.15) and w.mce == pytest.approx(0.4)


@pytest.mark.parametrize("n, n_bins", [(300, 15), (301, 7), (6, 10)])
def test_binned_calibration_agrees_with_the_metrics(n, n_bins):
    g = torch.Generator().manual_seed(n)
    z = 3.0 * torch.randn(n, 5, generator=g)
    y = torch.randint(0, 5, (n,), generator=g)
    z[: n // 3] = z[: n // 3].round()  # ties in confidence
    p = torch.softmax(z, 1)
    w = cal.binned_calibration(p, y, n_bins, "equal_width")
    assert w.ece == pytest.approx(cal.ece(p, y, n_bins), abs=1e-12)
    assert w.mce == pytest.approx(cal.mce(p, y, n_bins), abs=1e-12)
    m = cal.binned_calibration(p, y, n_bins, "equal_mass")
    assert m.ece == pytest.approx(cal.adaptive_ece(p, y, n_bins), abs=1e-12)
    assert m.count.sum() == n and m.count.max() - m.count[m.count > 0].min() <= 1
    conf = p.max(1).values.double()
    assert np.all(np.diff(m.edges) >= 0)
    assert m.edges[0] == float(conf.min()) and m.edges[-1] == float(conf.max())
    full = m.count > 0
    assert np.all(m.edges[:-1][full] <= m.confidence[full] + 1e-12)
    assert np.all(m.confidence[full] <= m.edges[1:][full] + 1e-12)


def test_binned_calibration_validates():
    with pytest.raises(ValueError, match="binning"):
        cal.binned_calibration(PROBS4, [0, 0, 0, 0], 2, "quantile")
    with pytest.raises(ValueError, match="sum to 1"):
        cal.binned_calibration(PROBS4 * 2, [0, 0, 0, 0], 2, "equal_mass")
    with pytest.raises(ValueError, match="labels"):
        cal.binned_calibration(PROBS4, [0, 0, 0, 2], 2, "equal_mass")
    with pytest.raises(ValueError, match="n_bins"):
        cal.binned_calibration(PROBS4, [0, 0, 0, 0], 0)


def test_adaptive_ece_vs_temperature_equals_adaptive_ece_per_temperature():
    z = torch.log(torch.as_tensor(P))
    temps = [0.5, 1.0, 3.0]
    curve = cal.adaptive_ece_vs_temperature(z, Y, temps, 3)
    assert curve.shape == (3,)
    assert curve[1] == pytest.approx(0.15, abs=1e-9)  # T = 1 gives back P: the example
    for t, v in zip(temps, curve, strict=True):
        assert v == pytest.approx(cal.adaptive_ece(cal.tempered_softmax(z, t), Y, 3))
    with pytest.raises(ValueError, match="temperature"):
        cal.adaptive_ece_vs_temperature(z, Y, [0.0])
