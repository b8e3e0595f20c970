import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlib.losses import (
    FitNetHint,
    dist_loss,
    dist_loss_from_probs,
    kd_loss,
    pearson_rows,
    soft_cross_entropy,
)

S = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
T = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]


def _softmax_by_hand(row, tau):
    e = [math.exp(v / tau) for v in row]
    z = sum(e)
    return [v / z for v in e]


def _kl_by_hand(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _pearson_by_hand(a, b, eps=1e-8):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ac = [v - ma for v in a]
    bc = [v - mb for v in b]
    num = sum(x * y for x, y in zip(ac, bc, strict=True))
    na = math.sqrt(sum(x * x for x in ac))
    nb = math.sqrt(sum(y * y for y in bc))
    return num / (na * nb + eps)


def _np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _np_dist(zs, zt, tau, beta, gamma):
    """Independent numpy DIST: per-row correlations via np.corrcoef."""
    ps, pt = _np_softmax(zs / tau), _np_softmax(zt / tau)
    inter = 1 - np.mean([np.corrcoef(ps[i], pt[i])[0, 1] for i in range(ps.shape[0])])
    intra = 1 - np.mean([np.corrcoef(ps[:, j], pt[:, j])[0, 1] for j in range(ps.shape[1])])
    return tau**2 * (beta * inter + gamma * intra)


# ----------------------------------------------------------------------------- KD
@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_kd_loss_hand_computed(tau):
    expected = (
        tau**2
        * sum(
            _kl_by_hand(_softmax_by_hand(t, tau), _softmax_by_hand(s, tau))
            for s, t in zip(S, T, strict=True)
        )
        / len(S)
    )
    got = kd_loss(torch.tensor(S, dtype=torch.float64), torch.tensor(T, dtype=torch.float64), tau)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_kd_loss_first_row_value():
    # Row 1 at tau = 1 only, worked out completely by hand-level arithmetic.
    p = _softmax_by_hand(T[0], 1.0)
    q = _softmax_by_hand(S[0], 1.0)
    kl = _kl_by_hand(p, q)
    s0, t0 = torch.tensor([S[0]], dtype=torch.float64), torch.tensor([T[0]], dtype=torch.float64)
    got = kd_loss(s0, t0, 1.0)
    assert got.item() == pytest.approx(kl, rel=1e-12)
    # p = (e^2, 1, e)/(e^2 + 1 + e) = (.6652, .0900, .2447); q = (.2312, .6285, .1402)
    assert kl == pytest.approx(0.66431, abs=1e-5)


def test_kd_loss_tau_squared_scaling_and_batchmean():
    s = torch.randn(8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.randn(8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tau = 3.0
    kl_sum = F.kl_div(
        F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), log_target=True, reduction="sum"
    )
    got = kd_loss(s, t, tau)
    assert got.item() == pytest.approx(tau**2 * kl_sum.item() / 8, rel=1e-12)
    # 'batchmean', not 'mean' (which would also divide by C = 10)
    kl_batchmean = F.kl_div(
        F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), log_target=True, reduction="batchmean"
    )
    assert got.item() == pytest.approx(tau**2 * kl_batchmean.item(), rel=1e-12)
    assert got.item() > 5 * tau**2 * kl_sum.item() / 80
    # tau^2 scaling: same tempered distributions at tau = 1 give a loss 9x smaller
    assert kd_loss(s / tau, t / tau, 1.0).item() == pytest.approx(got.item() / tau**2, rel=1e-12)


def test_kd_loss_duplicating_batch_leaves_value_unchanged():
    s, t = torch.tensor(S), torch.tensor(T)
    one = kd_loss(s, t, 2.0)
    two = kd_loss(torch.cat([s, s]), torch.cat([t, t]), 2.0)
    assert two.item() == pytest.approx(one.item(), rel=1e-6)


@pytest.mark.parametrize("tau", [0.5, 1.0, 4.0])
def test_kd_and_dist_zero_when_student_equals_teacher(tau):
    # logits scaled with tau so that the tempered probabilities are not all close to 1/C
    z = 3.0 * tau * torch.randn(16, 10, generator=torch.Generator().manual_seed(2))
    assert abs(kd_loss(z, z.clone(), tau).item()) < 1e-6
    assert abs(dist_loss(z.double(), z.double().clone(), tau).item()) < 1e-6
    assert kd_loss(z, z + 1.0, tau).abs().item() < 1e-6  # softmax is shift invariant


def test_dist_self_loss_is_exactly_the_eps_residual():
    # With nearly uniform tempered probabilities the 1e-8 in the Pearson denominator is
    # visible: pearson(p, p) = |p_c|^2 / (|p_c|^2 + 1e-8). Check the official formula exactly.
    tau = 4.0
    z = torch.randn(16, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    p = F.softmax(z / tau, 1)
    rows = ((p - p.mean(1, keepdim=True)) ** 2).sum(1)
    cols = ((p - p.mean(0, keepdim=True)) ** 2).sum(0)
    expected = tau**2 * ((1e-8 / (rows + 1e-8)).mean() + (1e-8 / (cols + 1e-8)).mean())
    got = dist_loss(z, z.clone(), tau)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0 < got.item() < 1e-3


def test_kd_loss_positive_for_different_inputs():
    assert kd_loss(torch.tensor(S), torch.tensor(T), 1.0).item() > 0.1


# ----------------------------------------------------------------------------- DIST
def test_pearson_rows_hand_computed():
    a = [[1.0, 2.0, 4.0], [3.0, 0.0, 1.0]]
    b = [[2.0, 1.0, 5.0], [1.0, 1.0, 2.0]]
    got = pearson_rows(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    expected = [_pearson_by_hand(a[0], b[0]), _pearson_by_hand(a[1], b[1])]
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    # row 0: a_c = (-4/3, -1/3, 5/3), b_c = (-2/3, -5/3, 7/3); <.,.> = 48/9
    assert got[0].item() == pytest.approx((48 / 9) / (math.sqrt(42 / 9 * 78 / 9) + 1e-8), rel=1e-12)


def test_pearson_rows_constant_row_is_zero_and_perfect_is_one():
    a = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 1.0, 2.0], [0.0, 2.0, 4.0]], dtype=torch.float64)
    got = pearson_rows(a, b)
    assert got[0].item() == 0.0
    assert got[1].item() == pytest.approx(1.0, abs=1e-8)
    assert pearson_rows(a[1:], -b[1:]).item() == pytest.approx(-1.0, abs=1e-8)


def test_dist_loss_hand_computed():
    tau = 2.0
    ps = [_softmax_by_hand(r, tau) for r in S]
    pt = [_softmax_by_hand(r, tau) for r in T]
    inter = 1 - sum(_pearson_by_hand(a, b) for a, b in zip(ps, pt, strict=True)) / 2
    cols_s = [[ps[0][j], ps[1][j]] for j in range(3)]
    cols_t = [[pt[0][j], pt[1][j]] for j in range(3)]
    intra = 1 - sum(_pearson_by_hand(a, b) for a, b in zip(cols_s, cols_t, strict=True)) / 3
    beta, gamma = 0.7, 1.3
    expected = tau**2 * (beta * inter + gamma * intra)
    got = dist_loss(
        torch.tensor(S, dtype=torch.float64), torch.tensor(T, dtype=torch.float64), tau, beta, gamma
    )
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # with B = 2 each column pair is perfectly (anti-)correlated: intra is a count of signs
    signs = [
        1 if (a[1] - a[0]) * (b[1] - b[0]) > 0 else -1 for a, b in zip(cols_s, cols_t, strict=True)
    ]
    assert intra == pytest.approx(1 - sum(signs) / 3, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dist_loss_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    b, c = 32, 17
    zs, zt = 2 * rng.normal(size=(b, c)), 2 * rng.normal(size=(b, c))
    tau, beta, gamma = [1.0, 4.0, 0.5][seed], [1.0, 2.0, 0.0][seed], [1.0, 0.5, 3.0][seed]
    expected = _np_dist(zs, zt, tau, beta, gamma)
    got = dist_loss(torch.from_numpy(zs), torch.from_numpy(zt), tau, beta, gamma)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_dist_loss_weights_split_into_inter_and_intra():
    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    inter = dist_loss(zs, zt, 2.0, 1.0, 0.0)
    intra = dist_loss(zs, zt, 2.0, 0.0, 1.0)
    both = dist_loss(zs, zt, 2.0, 3.0, 0.5)
    assert both.item() == pytest.approx(3 * inter.item() + 0.5 * intra.item(), rel=1e-5)
    # tau^2 factor: same probabilities, loss scales with tau^2
    assert dist_loss(2 * zs, 2 * zt, 2.0).item() == pytest.approx(
        4 * dist_loss(zs, zt, 1.0).item(), rel=1e-5
    )


def test_dist_invariant_to_positive_affine_change_of_student_probs():
    g = torch.Generator().manual_seed(4)
    ps = F.softmax(2 * torch.randn(12, 7, generator=g, dtype=torch.float64), 1)
    pt = F.softmax(2 * torch.randn(12, 7, generator=g, dtype=torch.float64), 1)
    base = dist_loss_from_probs(ps, pt, 1.0, 1.0)
    # one (a, b) for the whole matrix: rows and columns both keep their correlations
    moved = dist_loss_from_probs(0.5 * ps + 0.1, pt, 1.0, 1.0)
    assert moved.item() == pytest.approx(base.item(), abs=1e-6)
    # per-row (a_i, b_i): the inter (row) term is invariant
    a = torch.rand(12, 1, generator=g, dtype=torch.float64) + 0.2
    b = torch.randn(12, 1, generator=g, dtype=torch.float64)
    inter = dist_loss_from_probs(ps, pt, 1.0, 0.0)
    assert dist_loss_from_probs(a * ps + b, pt, 1.0, 0.0).item() == pytest.approx(
        inter.item(), abs=1e-6
    )
    # ...but the intra (column) term is not, so the test above is not vacuous
    intra = dist_loss_from_probs(ps, pt, 0.0, 1.0)
    assert abs(dist_loss_from_probs(a * ps + b, pt, 0.0, 1.0).item() - intra.item()) > 1e-3
    # a negative scale flips the correlations
    flipped = dist_loss_from_probs(-ps, pt, 1.0, 1.0)
    assert flipped.item() == pytest.approx(4.0 - base.item(), abs=1e-6)


def test_dist_batch_of_one_has_constant_intra_term():
    zs, zt = torch.tensor([S[0]]), torch.tensor([T[0]])
    assert dist_loss(zs, zt, 1.0, 0.0, 1.0).item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- soft CE
def test_soft_cross_entropy_equals_ce_on_one_hot():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(10, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (10,), generator=g)
    got = soft_cross_entropy(z, F.one_hot(y, 6).double())
    assert got.item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-12)


def test_soft_cross_entropy_is_entropy_plus_kl():
    g = torch.Generator().manual_seed(6)
    z = torch.randn(10, 6, generator=g, dtype=torch.float64)
    q = F.softmax(torch.randn(10, 6, generator=g, dtype=torch.float64), 1)
    entropy = -(q * q.log()).sum(1).mean()
    kl = (q * (q.log() - F.log_softmax(z, 1))).sum(1).mean()
    assert soft_cross_entropy(z, q).item() == pytest.approx((entropy + kl).item(), rel=1e-12)
    # KD at tau = 1 with a teacher whose softmax is q is exactly the KL part
    assert kd_loss(z, q.log(), 1.0).item() == pytest.approx(kl.item(), rel=1e-10)


def test_soft_cross_entropy_hand_computed():
    p = _softmax_by_hand(S[0], 1.0)
    q = [0.2, 0.5, 0.3]
    expected = -sum(qi * math.log(pi) for qi, pi in zip(q, p, strict=True))
    got = soft_cross_entropy(
        torch.tensor([S[0]], dtype=torch.float64), torch.tensor([q], dtype=torch.float64)
    )
    assert got.item() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- gradients
def test_gradients_are_finite():
    g = torch.Generator().manual_seed(7)
    zs = (10 * torch.randn(8, 5, generator=g)).requires_grad_()
    zt = 10 * torch.randn(8, 5, generator=g)
    q = F.softmax(zt, 1)
    for loss in (
        kd_loss(zs, zt, 4.0),
        kd_loss(zs, zt, 0.1),
        dist_loss(zs, zt, 4.0),
        dist_loss(zs, zt, 0.5),
        soft_cross_entropy(zs, q),
    ):
        (grad,) = torch.autograd.grad(loss, zs)
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0


def test_kd_gradient_matches_closed_form():
    # d KD / d z_s = tau * (p_s - p_t) / B
    g = torch.Generator().manual_seed(8)
    zs = torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_()
    zt = torch.randn(4, 3, generator=g, dtype=torch.float64)
    tau = 2.5
    (grad,) = torch.autograd.grad(kd_loss(zs, zt, tau), zs)
    expected = tau * (F.softmax(zs / tau, 1) - F.softmax(zt / tau, 1)) / 4
    torch.testing.assert_close(grad, expected.detach(), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- FitNet
@pytest.mark.parametrize(
    "s_shape, t_shape",
    [
        ((16, 32, 32), (16, 32, 32)),  # same stage
        ((16, 32, 32), (64, 8, 8)),  # channels up, spatial down
        ((64, 8, 8), (16, 32, 32)),  # channels down, spatial up
        ((32, 16, 16), (32, 8, 8)),  # spatial down only
        ((32, 7, 7), (128, 4, 4)),  # non-divisible pooling
        ((8, 4, 16), (8, 8, 8)),  # mixed: H up, W down
        ((64,), (256,)),  # pooled vectors
        ((256,), (64,)),
    ],
)
def test_fitnet_hint_shapes_and_gradients(s_shape, t_shape):
    torch.manual_seed(0)
    hint = FitNetHint(s_shape, t_shape)
    s = torch.randn(3, *s_shape, requires_grad=True)
    t = torch.randn(3, *t_shape, requires_grad=True)
    assert hint.regress(s).shape == (3, *t_shape)
    loss = hint(s, t)
    assert loss.dim() == 0 and loss.item() > 0
    loss.backward()
    assert t.grad is None  # teacher detached
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    for p in hint.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_fitnet_hint_value_is_mse_of_regressed_feature():
    hint = FitNetHint((5,), (3,))
    s = torch.randn(4, 5)
    t = torch.randn(4, 3)
    expected = ((hint.regressor(s) - t) ** 2).mean()
    assert hint(s, t).item() == pytest.approx(expected.item(), rel=1e-6)
    # a regressor that reproduces the teacher gives zero loss
    with torch.no_grad():
        hint.regressor.weight.zero_()
        hint.regressor.weight[:, :3] = torch.eye(3)
        hint.regressor.bias.zero_()
    assert hint(s, s[:, :3]).item() == pytest.approx(0.0, abs=1e-12)


def test_fitnet_hint_conv_pooling_value():
    hint = FitNetHint((1, 4, 4), (1, 2, 2)).eval()  # eval: BN uses running stats (identity)
    with torch.no_grad():
        hint.regressor[0].weight.fill_(1.0)
    s = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = torch.tensor([[2.5, 4.5], [10.5, 12.5]]).reshape(1, 1, 2, 2)
    scale = 1 / math.sqrt(1 + hint.regressor[1].eps)
    torch.testing.assert_close(hint.regress(s), pooled * scale)
    assert hint(s, pooled * scale).item() == pytest.approx(0.0, abs=1e-10)


def test_fitnet_hint_conv_upsampling_is_bilinear():
    hint = FitNetHint((1, 2, 2), (1, 4, 4)).eval()
    with torch.no_grad():
        hint.regressor[0].weight.fill_(1.0)
    s = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])
    scale = 1 / math.sqrt(1 + hint.regressor[1].eps)
    # bilinear, align_corners=False: the first row is 0, 1, 3, 4 (edge-clamped)
    expected = torch.tensor([0.0, 1.0, 3.0, 4.0]).reshape(1, 4) + 2 * torch.tensor(
        [0.0, 1.0, 3.0, 4.0]
    ).reshape(4, 1)
    torch.testing.assert_close(hint.regress(s)[0, 0], expected * scale)


# ----------------------------------------------------------------------------- validation
Z = torch.zeros(2, 3)


@pytest.mark.parametrize("fn", [kd_loss, dist_loss])
def test_logit_validation(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="2-D"):
        fn(torch.zeros(3), torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="2-D"):
        fn(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), 1.0)
    with pytest.raises(TypeError, match="floating"):
        fn(torch.zeros(2, 3, dtype=torch.long), Z, 1.0)
    with pytest.raises(TypeError, match="floating"):
        fn(Z, torch.zeros(2, 3, dtype=torch.int32), 1.0)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            fn(Z, Z, bad)
    with pytest.raises(TypeError, match="temperature"):
        fn(Z, Z, "2")
    with pytest.raises(ValueError, match="at least one row"):
        fn(torch.zeros(0, 3), torch.zeros(0, 3), 1.0)


def test_dist_weight_validation():
    for kw in ({"beta": -0.1}, {"gamma": -1.0}, {"beta": float("nan")}, {"gamma": float("inf")}):
        with pytest.raises(ValueError, match="beta|gamma"):
            dist_loss(Z, Z, 1.0, **kw)
        with pytest.raises(ValueError, match="beta|gamma"):
            dist_loss_from_probs(Z, Z, **kw)
    with pytest.raises(TypeError, match="beta"):
        dist_loss(Z, Z, 1.0, beta=None)
    with pytest.raises(ValueError, match="same shape"):
        dist_loss_from_probs(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="same shape"):
        pearson_rows(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="eps"):
        pearson_rows(Z, Z, eps=-1.0)


def test_soft_cross_entropy_validation():
    with pytest.raises(ValueError, match="target_probs"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        soft_cross_entropy(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="floating"):
        soft_cross_entropy(Z, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="logits"):
        soft_cross_entropy("z", Z)


def test_numpy_inputs_are_accepted():
    got = kd_loss(np.array(S), np.array(T), 1.0)
    assert got.item() == pytest.approx(
        kd_loss(
            torch.tensor(S, dtype=torch.float64), torch.tensor(T, dtype=torch.float64), 1.0
        ).item()
    )


def test_fitnet_validation():
    with pytest.raises(ValueError, match="both be"):
        FitNetHint((16, 8, 8), (64,))
    for bad in ((16, 8), (), "abc", (1, 2, 3, 4), 16):
        with pytest.raises(ValueError, match="per-sample shape"):
            FitNetHint(bad, (16, 8, 8))
    with pytest.raises(ValueError, match=">= 1"):
        FitNetHint((0, 8, 8), (16, 8, 8))
    with pytest.raises(TypeError, match="integer"):
        FitNetHint((16.0, 8, 8), (16, 8, 8))
    hint = FitNetHint((16, 8, 8), (32, 4, 4))
    with pytest.raises(ValueError, match="student_feat"):
        hint(torch.zeros(2, 16, 4, 4), torch.zeros(2, 32, 4, 4))
    with pytest.raises(ValueError, match="teacher_feat"):
        hint(torch.zeros(2, 16, 8, 8), torch.zeros(2, 16, 4, 4))
    with pytest.raises(ValueError, match="student_feat"):
        hint(torch.zeros(16, 8, 8), torch.zeros(2, 32, 4, 4))
    with pytest.raises(ValueError, match="batch size"):
        hint(torch.zeros(2, 16, 8, 8), torch.zeros(3, 32, 4, 4))
    with pytest.raises(TypeError, match="floating"):
        hint(torch.zeros(2, 16, 8, 8, dtype=torch.long), torch.zeros(2, 32, 4, 4))
    vec = FitNetHint((5,), (3,))
    with pytest.raises(ValueError, match="teacher_feat"):
        vec(torch.zeros(2, 5), torch.zeros(2, 4))


def test_stacked_kd_dist_equals_per_student_losses():
    import torch.nn.functional as F

    from kdlib.losses import dist_loss, kd_loss, stacked_kd_dist

    g = torch.Generator().manual_seed(0)
    k, b, c = 5, 7, 4
    s = torch.randn(k, b, c, generator=g, dtype=torch.float64) * 3
    t = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, c, (b,), generator=g)
    taus = [1.0, 2.0, 4.0, 1.5, 8.0]
    dist = [False, True, False, True, True]
    alphas = [1.0, 1.0, 0.5, 0.25, 0.0]
    got = stacked_kd_dist(s, t, taus, dist, alphas, y)
    for i in range(k):
        term = (dist_loss if dist[i] else kd_loss)(s[i], t, taus[i])
        want = alphas[i] * term + (1 - alphas[i]) * F.cross_entropy(s[i], y)
        assert float(got[i]) == pytest.approx(float(want), rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError, match="K x B x C"):
        stacked_kd_dist(s[0], t, taus, dist, alphas, y)
    with pytest.raises(ValueError, match="> 0"):
        stacked_kd_dist(s, t, [0.0] * k, dist, alphas, y)


# ------------------------------------------------------------------- logit standardization
def _zscore_by_hand(row, eps=1e-7):
    n = len(row)
    m = sum(row) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in row) / (n - 1))  # unbiased, as torch.std
    return [(v - m) / (sd + eps) for v in row]


def test_standardize_logits_hand_computed():
    from kdlib.losses import standardize_logits

    got = standardize_logits(torch.tensor(S, dtype=torch.float64))
    for row, want in zip(got.tolist(), (_zscore_by_hand(r) for r in S), strict=True):
        assert row == pytest.approx(want, rel=1e-12)
    # row 0 = (1, 2, 0.5): mean 7/6, unbiased var 7/12, so z_1 = (5/6) / sqrt(7/12)
    assert got[0, 1].item() == pytest.approx((5 / 6) / math.sqrt(7 / 12), rel=1e-6)
    assert got[0, 1].item() == pytest.approx(1.091089, abs=1e-6)
    # unbiased std: the z-scored row has sample std 1 (a biased std would give sqrt(3/2))
    assert got.std(dim=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_standardize_constant_row_uses_the_guard_and_stays_finite():
    from kdlib.losses import standardize_logits

    z = torch.tensor([[5.0, 5.0, 5.0], [1.0, 2.0, 3.0]], requires_grad=True)
    out = standardize_logits(z)
    assert out[0].tolist() == [0.0, 0.0, 0.0]  # 0 / (0 + 1e-7), not 0 / 0
    assert out[1].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    # a constant teacher row is uniform after standardization: KD-LS = KL(uniform || student)
    s = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[5.0, 5.0, 5.0]], dtype=torch.float64)
    q = _softmax_by_hand(_zscore_by_hand(S[0]), 2.0)
    want = 4.0 * _kl_by_hand([1 / 3] * 3, q)
    value = kd_loss(s, t, 2.0, standardize=True)
    assert value.item() == pytest.approx(want, rel=1e-9)
    # a constant student row: finite value and gradient (of order 1 / 1e-7, as in the authors' code)
    (grad,) = torch.autograd.grad(kd_loss(z, z.detach() * 2, 1.0, standardize=True), z)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_kd_loss_standardized_hand_computed(tau):
    expected = tau**2 * sum(
        _kl_by_hand(_softmax_by_hand(_zscore_by_hand(t), tau),
                    _softmax_by_hand(_zscore_by_hand(s), tau))
        for s, t in zip(S, T, strict=True)) / len(S)
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(T, dtype=torch.float64)
    assert kd_loss(s, t, tau, standardize=True).item() == pytest.approx(expected, rel=1e-10)
    assert kd_loss(s, t, tau, True).item() == pytest.approx(expected, rel=1e-10)  # positional
    # the default is unchanged, plain KD
    assert kd_loss(s, t, tau).item() == pytest.approx(kd_loss(s, t, tau, False).item(), rel=0)
    assert kd_loss(s, t, tau).item() != pytest.approx(expected, rel=1e-3)


def test_standardized_kd_ignores_the_students_scale_and_shift():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 10, generator=g, dtype=torch.float64)
    t = torch.randn(6, 10, generator=g, dtype=torch.float64) * 5
    base = kd_loss(s, t, 2.0, standardize=True).item()
    moved = kd_loss(7.0 * s - 3.0, 0.25 * t + 1.0, 2.0, standardize=True).item()
    assert moved == pytest.approx(base, rel=1e-6)  # exact up to the 1e-7 guard
    # plain KD is not scale invariant: the test above could fail
    assert kd_loss(7.0 * s, t, 2.0).item() != pytest.approx(kd_loss(s, t, 2.0).item(), rel=0.01)


# ----------------------------------------------------------------------------- DKD
Y = [0, 2]


def _dkd_by_hand(s, t, y, tau):
    """(TCKD, NCKD) of one row from the DKD paper's definitions, without tau^2."""
    ps, pt = _softmax_by_hand(s, tau), _softmax_by_hand(t, tau)
    tckd = _kl_by_hand([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
    qs = [p / (1 - ps[y]) for j, p in enumerate(ps) if j != y]
    qt = [p / (1 - pt[y]) for j, p in enumerate(pt) if j != y]
    return tckd, _kl_by_hand(qt, qs)


def test_dkd_terms_first_row_worked_out():
    from kdlib.losses import dkd_terms

    # row 0, target 0, tau 1: p^T = (e^2, 1, e) / (e^2 + 1 + e) = (.66524, .09003, .24473),
    # p^S = (e, e^2, e^.5) / (e + e^2 + e^.5) = (.23122, .62853, .14024);
    # TCKD = .66524 ln(.66524/.23122) + .33476 ln(.33476/.76878) = .42469;
    # non-target: q^T = (1, e) / (1 + e) = (.26894, .73106), q^S = (e^2, e^.5) / (e^2 + e^.5)
    # = (.81757, .18243); NCKD = .26894 ln(.26894/.81757) + .73106 ln(.73106/.18243) = .71580.
    s0, t0 = torch.tensor([S[0]], dtype=torch.float64), torch.tensor([T[0]], dtype=torch.float64)
    tckd, nckd = dkd_terms(s0, t0, torch.tensor([0]), 1.0)
    assert tckd.item() == pytest.approx(0.42469, abs=2e-5)
    assert nckd.item() == pytest.approx(0.71580, abs=2e-5)
    # the paper's eq. 1: KD = TCKD + (1 - p^T_target) * NCKD (row 0's KD is 0.66431, above)
    assert (tckd + (1 - 0.665241) * nckd).item() == pytest.approx(0.66431, abs=2e-5)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("standardize", [False, True])
def test_dkd_loss_hand_computed(tau, standardize):
    from kdlib.losses import dkd_loss, dkd_terms

    prep = _zscore_by_hand if standardize else list
    rows = [_dkd_by_hand(prep(s), prep(t), y, tau) for s, t, y in zip(S, T, Y, strict=True)]
    tckd = tau**2 * sum(r[0] for r in rows) / 2
    nckd = tau**2 * sum(r[1] for r in rows) / 2
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(T, dtype=torch.float64)
    y = torch.tensor(Y)
    got_t, got_n = dkd_terms(s, t, y, tau, standardize)
    assert got_t.item() == pytest.approx(tckd, rel=1e-10)
    assert got_n.item() == pytest.approx(nckd, rel=1e-10)
    got = dkd_loss(s, t, y, 1.0, 8.0, tau, standardize)
    assert got.dim() == 0
    assert got.item() == pytest.approx(tckd + 8.0 * nckd, rel=1e-10)
    assert dkd_loss(s, t, y, 0.5, 0.0, tau, standardize=standardize).item() == pytest.approx(
        0.5 * tckd, rel=1e-10)


def test_dkd_decomposes_kd_per_row():
    # KD = TCKD + (1 - p^T_y) NCKD holds row by row, so with alpha = 1 and beta = 1 - p^T_y
    # (one row at a time) DKD is exactly KD; with beta = 8 it is larger.
    from kdlib.losses import dkd_loss

    g = torch.Generator().manual_seed(4)
    s = torch.randn(5, 7, generator=g, dtype=torch.float64) * 2
    t = torch.randn(5, 7, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 7, (5,), generator=g)
    for i in range(5):
        pty = F.softmax(t[i] / 3.0, 0)[y[i]].item()
        got = dkd_loss(s[i:i + 1], t[i:i + 1], y[i:i + 1], 1.0, 1 - pty, 3.0)
        assert got.item() == pytest.approx(kd_loss(s[i:i + 1], t[i:i + 1], 3.0).item(),
                                           rel=1e-10)
    assert abs(dkd_loss(s, s.clone(), y, 1.0, 8.0, 3.0).item()) < 1e-12  # zero at the teacher


def test_dkd_removes_the_target_exactly_at_a_small_temperature():
    # The official code subtracts 1000 from the target's tempered logit. At tau = 1e-3 a
    # target leading by 3 is 3000 / tau-units ahead, so that trick keeps the target in the
    # "non-target" softmax; kdlib drops the column and gets the paper's q_j = p_j / (1 - p_y).
    from kdlib.losses import dkd_terms

    tau = 1e-3
    t = torch.tensor([[3.0, 0.0, 0.001]], dtype=torch.float64)
    s = torch.tensor([[0.0, 0.002, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    qt = [1 / (1 + math.e), math.e / (1 + math.e)]  # non-target tempered logits (0, 1)
    qs = [math.e**2 / (1 + math.e**2), 1 / (1 + math.e**2)]  # (2, 0)
    _, nckd = dkd_terms(s, t, y, tau)
    assert nckd.item() == pytest.approx(tau**2 * _kl_by_hand(qt, qs), rel=1e-9)
    trick_t = F.softmax(t / tau - 1000.0 * F.one_hot(y, 3), dim=1)
    assert trick_t[0, 0].item() > 0.99  # the official trick leaks the target here


def test_dkd_is_finite_over_the_allowed_temperatures_and_in_16_bit():
    from kdlib.losses import dkd_loss

    g = torch.Generator().manual_seed(5)
    s = (torch.randn(8, 10, generator=g) * 1e3).requires_grad_()
    t = torch.randn(8, 10, generator=g) * 1e3
    y = torch.randint(0, 10, (8,), generator=g)
    for tau in (1e-3, 1.0, 1e3):
        for standardize in (False, True):
            value = dkd_loss(s, t, y, 1.0, 8.0, tau, standardize)
            (grad,) = torch.autograd.grad(value, s)
            assert torch.isfinite(value) and torch.isfinite(grad).all(), (tau, standardize)
    s16, t16 = (s.detach() / 30).half(), (t / 30).half()
    value = dkd_loss(s16, t16, y, 1.0, 8.0, 0.01)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(
        dkd_loss(s16.float(), t16.float(), y, 1.0, 8.0, 0.01).item(), rel=1e-6)


def test_dkd_and_standardize_validation():
    from kdlib.losses import dkd_loss, dkd_terms, standardize_logits

    s, t, y = torch.tensor(S), torch.tensor(T), torch.tensor(Y)
    for tau in (0.0, -1.0, 1e-4, 1e4, float("nan")):
        with pytest.raises(ValueError, match="temperature must be"):
            dkd_loss(s, t, y, 1.0, 8.0, tau)
    with pytest.raises(TypeError, match="temperature must be a real"):
        dkd_loss(s, t, y, 1.0, 8.0, "4")
    with pytest.raises(TypeError, match="labels must be integer"):
        dkd_loss(s, t, y.float(), 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="batch's 2 class indices"):
        dkd_loss(s, t, y.view(2, 1), 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="batch's 2 class indices"):
        dkd_loss(s, t, torch.tensor([0, 1, 2]), 1.0, 8.0, 4.0)
    for bad in ([0, 3], [-1, 0]):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            dkd_loss(s, t, torch.tensor(bad), 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="alpha must be finite and >= 0"):
        dkd_loss(s, t, y, -1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        dkd_loss(s, t, y, 1.0, float("inf"), 4.0)
    with pytest.raises(TypeError, match="standardize must be True or False"):
        dkd_loss(s, t, y, 1.0, 8.0, 4.0, standardize=1)
    with pytest.raises(TypeError, match="standardize must be True or False"):
        kd_loss(s, t, 4.0, "yes")
    with pytest.raises(ValueError, match="same shape"):
        dkd_loss(s, t[:, :2], y, 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(s[:, :1], t[:, :1], torch.zeros(2, dtype=torch.long), 1.0, 8.0, 4.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        kd_loss(s[:, :1], t[:, :1], 4.0, standardize=True)
    with pytest.raises(ValueError, match="at least 2 classes"):
        standardize_logits(s[:, :1])
    with pytest.raises(TypeError, match="floating"):
        standardize_logits(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="2-D"):
        standardize_logits(torch.ones(3))
    # two classes: the non-target distribution is one point mass, NCKD = 0
    _, nckd = dkd_terms(s[:, :2], t[:, :2], torch.tensor([0, 1]), 2.0)
    assert nckd.item() == 0.0
