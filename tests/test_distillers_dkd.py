"""DKD and logit-standardized distillers, and the stacked loss path for every logit loss."""

import pytest
import torch
import torch.nn.functional as F

from kdlib.distillers import (
    DKD,
    DKDLS,
    KD,
    KDLS,
    LOSSES,
    check_loss_kwargs,
    loss_options,
    make_distiller,
)
from kdlib.losses import (
    STACKED_LOSSES,
    dist_loss,
    dkd_loss,
    kd_loss,
    stacked_kd_dist,
    stacked_logit_losses,
)

G = torch.Generator().manual_seed(0)
S = torch.randn(6, 5, generator=G, dtype=torch.float64) * 2
T = torch.randn(6, 5, generator=G, dtype=torch.float64) * 2
Y = torch.randint(0, 5, (6,), generator=G)


def test_loss_names_resolve_to_one_class_each():
    assert {"kd", "kd_ls", "dist", "dkd", "dkd_ls", "fitnet", "fitnet_ce"} == set(LOSSES)
    for name, cls in (("kd", KD), ("kd_ls", KDLS), ("dkd", DKD), ("dkd_ls", DKDLS)):
        assert type(make_distiller(name, 4.0)) is cls
    assert loss_options("dkd") == ("tckd_weight", "nckd_weight") == loss_options("dkd_ls", True)
    assert loss_options("kd_ls") == () and loss_options("fitnet", user=True) == ("hint_weight",
                                                                                 "stage")
    assert check_loss_kwargs("dkd", {"nckd_weight": 2.0}) == {"nckd_weight": 2.0}
    with pytest.raises(ValueError, match=r"'dkd' takes only \['tckd_weight', 'nckd_weight'\]"):
        check_loss_kwargs("dkd", {"beta": 8.0})
    with pytest.raises(ValueError, match="'kd_ls' takes no loss_kwargs"):
        make_distiller("kd_ls", 4.0, beta=1.0)
    with pytest.raises(ValueError, match="loss must be one of"):
        make_distiller("dkd_ls_x", 4.0)


@pytest.mark.parametrize("alpha", [1.0, 0.25])
def test_distillers_equal_their_losses_plus_ce(alpha):
    ce = F.cross_entropy(S, Y).item()
    cases = [
        (make_distiller("kd", 4.0, alpha), kd_loss(S, T, 4.0)),
        (make_distiller("kd_ls", 2.0, alpha), kd_loss(S, T, 2.0, standardize=True)),
        (make_distiller("dkd", 4.0, alpha), dkd_loss(S, T, Y, 1.0, 8.0, 4.0)),
        (make_distiller("dkd", 4.0, alpha, tckd_weight=0.5, nckd_weight=2.0),
         dkd_loss(S, T, Y, 0.5, 2.0, 4.0)),
        (make_distiller("dkd_ls", 2.0, alpha), dkd_loss(S, T, Y, 1.0, 8.0, 2.0, True)),
    ]
    for distiller, term in cases:
        want = alpha * term.item() + (1 - alpha) * ce
        assert distiller(S, T, Y).item() == pytest.approx(want, rel=1e-10), type(distiller)
    # the DKD defaults are the paper's CIFAR-100 alpha = 1, beta = 8
    d = make_distiller("dkd", 4.0)
    assert (d.tckd_weight, d.nckd_weight, d.standardize) == (1.0, 8.0, False)
    assert make_distiller("dkd_ls", 4.0).standardize is True


def test_dkd_distiller_validates_its_weights_and_trains():
    with pytest.raises(ValueError, match="nckd_weight must be finite and >= 0"):
        make_distiller("dkd", 4.0, nckd_weight=-1.0)
    with pytest.raises(TypeError, match="tckd_weight must be a real number"):
        make_distiller("dkd", 4.0, tckd_weight="1")
    s = S.clone().requires_grad_()
    make_distiller("dkd_ls", 4.0)(s, T, Y).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_stacked_logit_losses_equal_the_per_member_losses():
    k = 7
    s = torch.randn(k, 6, 5, generator=G, dtype=torch.float64) * 3
    names = ["kd", "kd_ls", "dist", "dkd", "dkd_ls", "dkd", "kd_ls"]
    taus = [4.0, 2.0, 1.0, 4.0, 2.0, 0.5, 8.0]
    alphas = [1.0, 1.0, 0.5, 1.0, 0.25, 0.0, 0.75]
    got = stacked_logit_losses(s, T, taus, names, alphas, Y, tckd_weight=0.5, nckd_weight=3.0)
    assert got.shape == (k,)
    terms = {
        "kd": lambda x, tau: kd_loss(x, T, tau),
        "kd_ls": lambda x, tau: kd_loss(x, T, tau, standardize=True),
        "dist": lambda x, tau: dist_loss(x, T, tau),
        "dkd": lambda x, tau: dkd_loss(x, T, Y, 0.5, 3.0, tau),
        "dkd_ls": lambda x, tau: dkd_loss(x, T, Y, 0.5, 3.0, tau, standardize=True),
    }
    for i, name in enumerate(names):
        want = (alphas[i] * terms[name](s[i], taus[i])
                + (1 - alphas[i]) * F.cross_entropy(s[i], Y))
        assert got[i].item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12), (i, name)
    # one family only: the same values, and the KD/DIST subset equals stacked_kd_dist
    only = stacked_logit_losses(s[:2], T, [2.0, 4.0], ["dkd_ls"] * 2, [1.0, 1.0], Y)
    for i, tau in enumerate((2.0, 4.0)):
        assert only[i].item() == pytest.approx(
            dkd_loss(s[i], T, Y, 1.0, 8.0, tau, True).item(), rel=1e-10)
    kd_dist = stacked_logit_losses(s, T, taus, ["kd", "dist"] * 3 + ["kd"], alphas, Y)
    old = stacked_kd_dist(s, T, taus, [False, True] * 3 + [False], alphas, Y)
    assert torch.allclose(kd_dist, old, rtol=1e-12, atol=0)


def test_stacked_logit_losses_gradients_match_per_member():
    s = (torch.randn(3, 6, 5, generator=G, dtype=torch.float64) * 2).requires_grad_()
    names, taus = ["dkd", "kd_ls", "dkd_ls"], [4.0, 2.0, 3.0]
    stacked_logit_losses(s, T, taus, names, [1.0] * 3, Y).sum().backward()
    x = s.detach().clone().requires_grad_()
    (dkd_loss(x[0], T, Y, 1.0, 8.0, 4.0) + kd_loss(x[1], T, 2.0, True)
     + dkd_loss(x[2], T, Y, 1.0, 8.0, 3.0, True)).backward()
    assert torch.allclose(s.grad, x.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("change, exc, message", [
    ({"losses": ["kd", "fitnet"]}, ValueError, r"losses\[1\] must be one of"),
    ({"losses": "kd"}, TypeError, "losses must be a sequence"),
    ({"losses": ["kd"]}, ValueError, r"losses needs one entry per student \(K = 2\)"),
    ({"nckd_weight": -1.0}, ValueError, "nckd_weight must be finite and >= 0"),
    ({"temperatures": [1.0, 0.0]}, ValueError, r"temperatures\[1\] must be"),
    ({"labels": torch.tensor([0, 1, 5, 2])}, ValueError, r"labels must lie in \[0, 5\)"),
    ({"labels": torch.tensor([0.0, 1.0, 2.0, 3.0])}, TypeError, "labels must be integer"),
    ({"student_logits": torch.randn(2, 4, 1), "teacher_logits": torch.randn(4, 1),
      "labels": torch.zeros(4, dtype=torch.long)}, ValueError, "at least 2 classes"),
])
def test_stacked_logit_losses_validates_its_arguments(change, exc, message):
    args = {"student_logits": torch.randn(2, 4, 5), "teacher_logits": torch.randn(4, 5),
            "temperatures": [1.0, 2.0], "losses": ["dkd", "kd_ls"], "alphas": [1.0, 0.5],
            "labels": torch.tensor([0, 1, 2, 4])}
    assert torch.isfinite(stacked_logit_losses(**args)).all()
    args.update(change)
    with pytest.raises(exc, match=message):
        stacked_logit_losses(**args)


def test_stacked_loss_names_are_the_logit_losses():
    assert set(STACKED_LOSSES) == set(LOSSES) - {"fitnet", "fitnet_ce"}


def test_fitnet_ce_is_cross_entropy_plus_the_hint_without_kd():
    """The hint-only arm: CE on the labels + hint_weight * MSE(regressor(s), t); the teacher's
    logits and the temperature do not enter (changing them changes nothing)."""
    import torch.nn.functional as F

    from kdlib.distillers import FitNetCE, make_distiller

    torch.manual_seed(0)
    d = make_distiller("fitnet_ce", 4.0, student_shape=(2, 3, 3), teacher_shape=(4, 3, 3),
                       hint_weight=10.0, stage=0)
    assert isinstance(d, FitNetCE)
    s_logits, labels = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    s_stage, t_stage = torch.randn(5, 2, 3, 3), torch.randn(5, 4, 3, 3)
    student = (s_logits, None, [s_stage])
    d.train()
    got = d(student, (torch.randn(5, 3), None, [t_stage]), labels)
    d.train()  # the regressor's BatchNorm normalizes with the batch statistics
    by_hand = F.cross_entropy(s_logits, labels) + 10.0 * F.mse_loss(d.hint.regressor(s_stage),
                                                                    t_stage)
    assert float(got.detach()) == pytest.approx(float(by_hand.detach()), rel=1e-6)
    other = d(student, (torch.randn(5, 3) * 50, None, [t_stage]), labels)
    assert float(other.detach()) == pytest.approx(float(got.detach()), rel=1e-7)


def test_stacked_logit_losses_per_member_teachers_in_sweep_order():
    # a sweep's order (each loss's members consecutive: slices) with one teacher per member
    s = torch.randn(6, 6, 5, generator=G, dtype=torch.float64) * 2
    t = torch.randn(6, 6, 5, generator=G, dtype=torch.float64) * 2
    names, taus = ["kd", "kd", "dist", "dist", "dkd_ls", "dkd_ls"], [1.0, 4.0, 1.0, 4.0, 2.0, 8.0]
    got = stacked_logit_losses(s, t, taus, names, [1.0] * 6, Y)
    want = [kd_loss(s[0], t[0], 1.0), kd_loss(s[1], t[1], 4.0), dist_loss(s[2], t[2], 1.0),
            dist_loss(s[3], t[3], 4.0), dkd_loss(s[4], t[4], Y, 1.0, 8.0, 2.0, True),
            dkd_loss(s[5], t[5], Y, 1.0, 8.0, 8.0, True)]
    for i, w in enumerate(want):
        assert got[i].item() == pytest.approx(w.item(), rel=1e-10, abs=1e-12), i
