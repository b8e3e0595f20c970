"""Distillation losses: vanilla KD, DKD, DIST, soft cross-entropy and FitNet hints.

Conventions:
    logits are B x C floating tensors (B samples, C classes); temperatures are finite and > 0;
    labels are B integer class indices in [0, C).
    Every loss returns a 0-d tensor, averaged over the batch.

Logit standardization (Sun et al., CVPR 2024, "Logit Standardization in Knowledge
Distillation"): with standardize=True, `kd_loss` and `dkd_loss` first z-score every row of
both the student's and the teacher's logits, (z - mean) / (std + 1e-7) with the unbiased
(n - 1) std, as the authors' code does, then apply softmax(. / tau). The loss is still
multiplied by tau^2 (as the authors' code also does). Standardized rows have unit std, so tau
sets the softness directly: the authors run standardized KD on CIFAR-100 at a base
temperature of 2 (some pairs 3) with a KD weight of 9; kdlib takes tau and the weights as
given and sets no such defaults.

Validation checks shapes, dtypes and scalar arguments only; logit values are never scanned
(these functions run every training step). Wrong shapes or scalar values raise ValueError;
a non-floating tensor dtype (e.g. integer logits) raises TypeError.

Temperatures lie in [MIN_TEMPERATURE, MAX_TEMPERATURE] = [1e-3, 1e3]. In float32, z / tau then
stays finite for any finite logit |z| < 3e35, and tau^2 cannot underflow or overflow the loss;
below ~1e-38 (float32's smallest normal number) 1 / tau is inf and every output is NaN.
16-bit logits (float16, bfloat16) are computed in float32 (float16 overflows at 65504, so
z / tau would overflow for tau = 0.01 and |z| > 655): the loss is then a float32 tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdlib._validate import as_tensor, check_int, check_positive

__all__ = [
    "kd_loss",
    "dkd_loss",
    "dkd_terms",
    "standardize_logits",
    "stacked_logit_losses",
    "STACKED_LOSSES",
    "dist_loss",
    "dist_loss_from_probs",
    "pearson_rows",
    "soft_cross_entropy",
    "FitNetHint",
]

DIST_EPS = 1e-8  # added to the norm product in the Pearson correlation (official DIST code)
MIN_TEMPERATURE = 1e-3  # smallest accepted tau (see the module docstring)
MAX_TEMPERATURE = 1e3  # largest accepted tau: tau^2 = 1e6 still leaves the loss finite
LS_EPS = 1e-7  # added to the row std in logit standardization (the authors' code)
STACKED_LOSSES = ("kd", "kd_ls", "dist", "dkd", "dkd_ls")  # names stacked_logit_losses takes


# ----------------------------------------------------------------------------- checks
def _check_floating(x, name: str) -> torch.Tensor:
    x = as_tensor(x, name)
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must have a floating dtype (float16/32/64, bfloat16), got {x.dtype}"
        )
    return x


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """16-bit floats -> float32 (softmax and Pearson terms overflow or round to 0 in 16 bits)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def check_temperature(value, name: str = "temperature") -> float:
    """A temperature tau in [MIN_TEMPERATURE, MAX_TEMPERATURE] = [1e-3, 1e3], as a float.

    Smaller values make 1 / tau overflow (all-NaN losses), larger ones make tau^2 swamp the
    loss; the paper's temperatures are 1 to 8."""
    tau = check_positive(value, name)
    if not (MIN_TEMPERATURE <= tau <= MAX_TEMPERATURE):
        raise ValueError(f"{name} must be in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] "
                         f"(1 / tau overflows float32 below that range), got {tau:g}")
    return tau


def _check_matrix(x, name: str) -> torch.Tensor:
    x = _check_floating(x, name)
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch x classes), got shape {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got {tuple(x.shape)}")
    return x


def _check_pair(a, b, name_a: str, name_b: str) -> tuple[torch.Tensor, torch.Tensor]:
    a = _check_matrix(a, name_a)
    b = _check_matrix(b, name_b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (batch x classes), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a, b


def _check_nonnegative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number >= 0, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


# ----------------------------------------------------------------------------- standardization
def _zscore(z: torch.Tensor) -> torch.Tensor:
    """(z - mean) / (std + LS_EPS) along the last dimension, unbiased std; needs >= 2 entries."""
    return (z - z.mean(dim=-1, keepdim=True)) / (z.std(dim=-1, keepdim=True) + LS_EPS)


def _check_standardizable(x: torch.Tensor, name: str) -> None:
    if x.shape[-1] < 2:
        raise ValueError(f"logit standardization needs at least 2 classes (the unbiased std of "
                         f"one value is undefined), got {name} of shape {tuple(x.shape)}")


def standardize_logits(logits) -> torch.Tensor:
    """Z-score each row (Sun et al., CVPR 2024): (z - mean(z)) / (std(z) + 1e-7).

    logits: B x C floating tensor, C >= 2. std is the unbiased (n - 1) standard deviation of
    the row, as torch.std and the authors' code compute it. Returns B x C (16-bit input in
    float32): every row has mean 0 and std std/(std + 1e-7), i.e. 1 up to the guard; a
    constant row (std 0) maps to zeros instead of dividing by 0.
    """
    z = _check_matrix(logits, "logits")
    _check_standardizable(z, "logits")
    return _zscore(_at_least_float32(z))


# ----------------------------------------------------------------------------- KD
def _kl_rows(log_pt: torch.Tensor, log_ps: torch.Tensor) -> torch.Tensor:
    """KL(pt || ps) along the last dimension from log-probabilities."""
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)


def kd_loss(student_logits, teacher_logits, temperature: float,
            standardize: bool = False) -> torch.Tensor:
    """Hinton KD: tau^2 * KL(softmax(t/tau) || softmax(s/tau)), 'batchmean' reduction.

    student_logits, teacher_logits: B x C floating tensors (same shape).
    temperature: tau, finite and > 0.
    standardize: z-score each row of both first (`standardize_logits`; needs C >= 2), the
    "KD + logit standardization" loss of Sun et al. (CVPR 2024), still times tau^2.
    Returns a 0-d tensor: the KL summed over the C classes, averaged over the B rows
    (not also divided by C), times tau^2. Gradients flow to both inputs; detach the teacher
    yourself if it must not be trained. temperature must lie in [1e-3, 1e3].
    """
    s, t = _check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
    tau = check_temperature(temperature)
    standardize = _check_flag(standardize, "standardize")
    s, t = _at_least_float32(s), _at_least_float32(t)
    if standardize:
        _check_standardizable(s, "student_logits")
        s, t = _zscore(s), _zscore(t)
    log_ps = F.log_softmax(s / tau, dim=1)
    log_pt = F.log_softmax(t / tau, dim=1)
    return _kl_rows(log_pt, log_ps).mean() * tau**2


# ----------------------------------------------------------------------------- DKD
def _non_target_index(y: torch.Tensor, classes: int) -> torch.Tensor:
    """... x (C - 1) column indices of the classes other than y (sync-free, no boolean mask)."""
    j = torch.arange(classes - 1, device=y.device)
    return j + (j >= y.unsqueeze(-1)).long()


def _dkd_rows(a: torch.Tensor, b: torch.Tensor, y: torch.Tensor):
    """Per-row (TCKD, NCKD) without tau^2 from tempered logits a = s/tau (student), b = t/tau.

    a, b: ... x C (C >= 2); y: ... target indices. The binary probabilities are formed in log
    space (log p_target = a_y - lse(a), log p_rest = lse(a without y) - lse(a)), and the
    non-target distribution is the softmax over the C - 1 other columns exactly.
    """
    classes = a.shape[-1]
    yi = y.unsqueeze(-1)
    nt = _non_target_index(y, classes)
    lse_s, lse_t = torch.logsumexp(a, dim=-1), torch.logsumexp(b, dim=-1)
    a_nt, b_nt = a.gather(-1, nt), b.gather(-1, nt)
    lse_s_nt, lse_t_nt = torch.logsumexp(a_nt, dim=-1), torch.logsumexp(b_nt, dim=-1)
    log_bin_s = torch.stack([a.gather(-1, yi).squeeze(-1) - lse_s, lse_s_nt - lse_s], dim=-1)
    log_bin_t = torch.stack([b.gather(-1, yi).squeeze(-1) - lse_t, lse_t_nt - lse_t], dim=-1)
    tckd = _kl_rows(log_bin_t, log_bin_s)
    nckd = _kl_rows(b_nt - lse_t_nt.unsqueeze(-1), a_nt - lse_s_nt.unsqueeze(-1))
    return tckd, nckd


def _check_labels(labels, batch: int, classes: int, scan: bool) -> torch.Tensor:
    y = as_tensor(labels, "labels")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices (int64), got {y.dtype}")
    if tuple(y.shape) != (batch,):
        raise ValueError(f"labels must be a vector of the batch's {batch} class indices, "
                         f"got shape {tuple(y.shape)}")
    if scan and batch:
        lo, hi = (int(v) for v in torch.aminmax(y))
        if lo < 0 or hi >= classes:
            raise ValueError(f"labels must lie in [0, {classes}) (C = {classes} classes), "
                             f"got values in [{lo}, {hi}]")
    return y.long()


def _check_dkd_classes(classes: int) -> None:
    if classes < 2:
        raise ValueError(f"DKD needs at least 2 classes (a target and a non-target one), "
                         f"got C = {classes}")


def dkd_terms(student_logits, teacher_logits, labels, temperature: float,
              standardize: bool = False, *, check_values: bool = True):
    """DKD's two terms (Zhao et al., CVPR 2022), each times tau^2 and averaged over the batch.

    student_logits, teacher_logits: B x C floating tensors, C >= 2; labels: B integer target
    classes in [0, C); temperature: tau in [1e-3, 1e3]; standardize: z-score the rows first
    (as in `kd_loss`). With p = softmax(z / tau) and target class y of each row:
        TCKD = KL((p^T_y, 1 - p^T_y) || (p^S_y, 1 - p^S_y))          (binary)
        NCKD = KL(q^T || q^S),  q_j = p_j / (1 - p_y) for j != y      (C - 1 classes)
    Returns (tckd, nckd): two 0-d tensors, tau^2 * the batch mean of each. Per row,
    KD = TCKD + (1 - p^T_y) * NCKD (the paper's eq. 1). The official code drops the target
    class by subtracting 1000 from its tempered logit; kdlib removes the column exactly (the
    two agree unless z_y / tau exceeds the others by hundreds, which tau = 1e-3 allows).
    check_values: scan the label values (one host sync on a GPU); engines that validated
    the data set's labels pass False. Shapes and dtypes are always checked.
    """
    s, t = _check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
    tau = check_temperature(temperature)
    standardize = _check_flag(standardize, "standardize")
    check_values = _check_flag(check_values, "check_values")
    batch, classes = s.shape
    _check_dkd_classes(classes)
    y = _check_labels(labels, batch, classes, check_values).to(s.device)
    s, t = _at_least_float32(s), _at_least_float32(t)
    if standardize:
        s, t = _zscore(s), _zscore(t)
    tckd, nckd = _dkd_rows(s / tau, t / tau, y)
    return tckd.mean() * tau**2, nckd.mean() * tau**2


def dkd_loss(student_logits, teacher_logits, labels, alpha: float, beta: float,
             temperature: float, standardize: bool = False, *,
             check_values: bool = True) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): alpha * TCKD + beta * NCKD, each times tau^2.

    student_logits, teacher_logits: B x C floating tensors, C >= 2; labels: B integer target
    classes in [0, C); alpha, beta: weights >= 0 (the paper uses alpha = 1, beta = 8 on
    CIFAR-100, tau = 4); temperature: tau in [1e-3, 1e3]; standardize: z-score the rows of
    both first (Sun et al., CVPR 2024, as their DKD code does). TCKD and NCKD are as in
    `dkd_terms`. Returns a 0-d tensor, averaged over the batch.
    """
    alpha = _check_nonnegative(alpha, "alpha")
    beta = _check_nonnegative(beta, "beta")
    tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, temperature, standardize,
                           check_values=check_values)
    return alpha * tckd + beta * nckd


# ----------------------------------------------------------------------------- DIST
def pearson_rows(a, b, eps: float = DIST_EPS) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b` (official DIST form).

    a, b: N x M floating tensors. Returns N values: the cosine similarity of the row-centred
    vectors, <a_c, b_c> / (|a_c| |b_c| + eps). A constant row gives 0.
    """
    a, b = _check_pair(a, b, "a", "b")
    eps = _check_nonnegative(eps, "eps")
    a_c = a - a.mean(dim=1, keepdim=True)
    b_c = b - b.mean(dim=1, keepdim=True)
    return (a_c * b_c).sum(dim=1) / (a_c.norm(dim=1) * b_c.norm(dim=1) + eps)


def dist_loss_from_probs(
    student_probs, teacher_probs, beta: float = 1.0, gamma: float = 1.0
) -> torch.Tensor:
    """DIST relation terms on probabilities, without the tau^2 factor.

    student_probs, teacher_probs: B x C floating tensors (rows are usually softmax outputs,
    but any real values are accepted). Returns beta * L_inter + gamma * L_intra with
        L_inter = 1 - mean over the B rows of pearson(row of ps, row of pt),
        L_intra = 1 - mean over the C columns of pearson(column of ps, column of pt).
    Each term lies in [0, 2]. With B = 1 every column is constant, so L_intra is exactly 1
    (no gradient): use batches of at least 2 samples.
    """
    ps, pt = _check_pair(student_probs, teacher_probs, "student_probs", "teacher_probs")
    beta = _check_nonnegative(beta, "beta")
    gamma = _check_nonnegative(gamma, "gamma")
    inter = 1.0 - pearson_rows(ps, pt).mean()
    intra = 1.0 - pearson_rows(ps.transpose(0, 1), pt.transpose(0, 1)).mean()
    return beta * inter + gamma * intra


def dist_loss(
    student_logits,
    teacher_logits,
    temperature: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> torch.Tensor:
    """DIST (Huang et al. 2022): tau^2 * (beta * L_inter + gamma * L_intra).

    student_logits, teacher_logits: B x C floating tensors (same shape).
    temperature: tau in [1e-3, 1e3], applied as softmax(z / tau) to both. beta, gamma:
    weights >= 0. L_inter and L_intra are as in `dist_loss_from_probs`. Returns a 0-d tensor.
    """
    s, t = _check_pair(student_logits, teacher_logits, "student_logits", "teacher_logits")
    tau = check_temperature(temperature)
    s, t = _at_least_float32(s), _at_least_float32(t)
    beta = _check_nonnegative(beta, "beta")
    gamma = _check_nonnegative(gamma, "gamma")
    ps = F.softmax(s / tau, dim=1)
    pt = F.softmax(t / tau, dim=1)
    return dist_loss_from_probs(ps, pt, beta, gamma) * tau**2


# ----------------------------------------------------------------------------- soft CE
def soft_cross_entropy(logits, target_probs) -> torch.Tensor:
    """Cross-entropy against a probability target: mean over rows of -sum_c q_c log softmax(z)_c.

    logits: B x C floating tensor. target_probs: B x C floating tensor of class probabilities
    (rows are expected to sum to 1; not checked). With one-hot targets this equals the usual
    cross-entropy; in general it equals H(q) + KL(q || softmax(z)). Returns a 0-d tensor.
    """
    z, q = _check_pair(logits, target_probs, "logits", "target_probs")
    return -(q * F.log_softmax(z, dim=1)).sum(dim=1).mean()


# ----------------------------------------------------------------------------- FitNet
def _check_shape(shape, name: str) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, Sequence) or isinstance(shape, str) or len(shape) not in (1, 3):
        raise ValueError(f"{name} must be a per-sample shape (C, H, W) or (D,), got {shape!r}")
    return tuple(check_int(v, f"{name}[{i}]", minimum=1) for i, v in enumerate(shape))


class FitNetHint(nn.Module):
    """FitNet hint loss: a learned regressor maps the student feature to the teacher's shape.

    student_shape, teacher_shape: per-sample shapes, both (C, H, W) (conv feature maps) or
    both (D,) (vectors). Conv: 1x1 conv (no bias) + BatchNorm to the teacher's channels, then
    adaptive average pooling when the teacher's map is smaller in both dimensions, otherwise
    bilinear interpolation to the teacher's (H, W). Vectors: a Linear layer.

    forward(student_feat, teacher_feat) with B x student_shape and B x teacher_shape tensors
    returns the MSE (mean over all B * prod(teacher_shape) elements) between the regressed
    student feature and the detached teacher feature, as a 0-d tensor.
    """

    def __init__(self, student_shape, teacher_shape):
        super().__init__()
        self.student_shape = _check_shape(student_shape, "student_shape")
        self.teacher_shape = _check_shape(teacher_shape, "teacher_shape")
        if len(self.student_shape) != len(self.teacher_shape):
            raise ValueError(
                "student_shape and teacher_shape must both be (C, H, W) or both be (D,), "
                f"got {self.student_shape} and {self.teacher_shape}"
            )
        if len(self.student_shape) == 3:
            cs, ct = self.student_shape[0], self.teacher_shape[0]
            self.regressor = nn.Sequential(
                nn.Conv2d(cs, ct, kernel_size=1, bias=False), nn.BatchNorm2d(ct)
            )
        else:
            self.regressor = nn.Linear(self.student_shape[0], self.teacher_shape[0])

    def _check_feat(self, feat, shape: tuple[int, ...], name: str) -> torch.Tensor:
        feat = _check_floating(feat, name)
        if feat.dim() != len(shape) + 1 or tuple(feat.shape[1:]) != shape:
            raise ValueError(
                f"{name} must have shape (B, {', '.join(map(str, shape))}) as declared, "
                f"got {tuple(feat.shape)}"
            )
        return feat

    def regress(self, student_feat) -> torch.Tensor:
        """Map a B x student_shape feature to B x teacher_shape."""
        s = self._check_feat(student_feat, self.student_shape, "student_feat")
        out = self.regressor(s)
        if len(self.teacher_shape) == 3:
            size = self.teacher_shape[1:]
            hw = tuple(out.shape[2:])
            if hw != size:
                if hw[0] >= size[0] and hw[1] >= size[1]:
                    out = F.adaptive_avg_pool2d(out, size)
                else:
                    out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out

    def forward(self, student_feat, teacher_feat) -> torch.Tensor:
        t = self._check_feat(teacher_feat, self.teacher_shape, "teacher_feat")
        s = self._check_feat(student_feat, self.student_shape, "student_feat")
        if s.shape[0] != t.shape[0]:
            raise ValueError(
                "student_feat and teacher_feat must have the same batch size, "
                f"got {s.shape[0]} and {t.shape[0]}"
            )
        return F.mse_loss(self.regress(s), t.detach().to(s.dtype))


# ----------------------------------------------------------------------------- stacked
def _pearson_last(a: torch.Tensor, b: torch.Tensor, eps: float = DIST_EPS) -> torch.Tensor:
    """pearson_rows along the last dimension of same-shape tensors of any rank."""
    a_c = a - a.mean(dim=-1, keepdim=True)
    b_c = b - b.mean(dim=-1, keepdim=True)
    return (a_c * b_c).sum(dim=-1) / (a_c.norm(dim=-1) * b_c.norm(dim=-1) + eps)


def _stacked_vector(values, name: str, k: int, device, dtype) -> torch.Tensor:
    try:
        v = torch.as_tensor(values, dtype=dtype, device=device).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be {k} numbers (a list or a tensor), got "
                        f"{type(values).__name__}: {err}") from err
    if len(v) != k:
        raise ValueError(f"{name} needs one entry per student (K = {k}), got {len(v)}")
    return v


def _stacked_inputs(student_logits, teacher_logits, temperatures, alphas, labels,
                    check_values):
    """Checked (s, t, tau, alpha, y) of the stacked losses: K x B x C, K x B x C, K, K, B."""
    s = _check_floating(student_logits, "student_logits")
    if s.dim() != 3 or min(s.shape) < 1:
        raise ValueError(f"student_logits must be K x B x C with K, B, C >= 1, got shape "
                         f"{tuple(s.shape)}")
    t = _check_floating(teacher_logits, "teacher_logits")
    if t.dim() == 2:
        t = t.unsqueeze(0).expand_as(s) if t.shape == s.shape[1:] else t
    if t.shape != s.shape:
        raise ValueError(f"teacher_logits must be B x C or K x B x C matching the students "
                         f"{tuple(s.shape)}, got {tuple(teacher_logits.shape)}")
    if not isinstance(check_values, bool):
        raise TypeError(f"check_values must be True or False, got {check_values!r}")
    s, t = _at_least_float32(s), _at_least_float32(t)
    k, batch, classes = s.shape
    tau = _stacked_vector(temperatures, "temperatures", k, s.device, s.dtype)
    alpha = _stacked_vector(alphas, "alphas", k, s.device, s.dtype)
    y = _check_labels(labels, batch, classes, check_values).to(s.device)
    if check_values:
        for i, v in enumerate(tau.tolist()):
            check_temperature(v, f"temperatures[{i}]")
        for i, v in enumerate(alpha.tolist()):
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"alphas[{i}] must be in [0, 1], got {v}")
    return s, t, tau, alpha, y


def _stacked_ce(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    k, _, classes = s.shape
    return F.cross_entropy(s.reshape(-1, classes), y.repeat(k),
                           reduction="none").view(k, -1).mean(dim=1)


def _stacked_dist(ps: torch.Tensor, pt: torch.Tensor, beta: float, gamma: float):
    inter = 1.0 - _pearson_last(ps, pt).mean(dim=1)
    intra = 1.0 - _pearson_last(ps.transpose(1, 2), pt.transpose(1, 2)).mean(dim=1)
    return beta * inter + gamma * intra


def stacked_kd_dist(student_logits, teacher_logits, temperatures, is_dist, alphas, labels,
                    beta: float = 1.0, gamma: float = 1.0, *,
                    check_values: bool = True) -> torch.Tensor:
    """The losses of K students at once (one stacked step), each KD or DIST at its own tau.

    student_logits: K x B x C; teacher_logits: B x C (shared) or K x B x C; temperatures,
    alphas: K-vectors (tau in [1e-3, 1e3], alpha in [0, 1]); is_dist: K booleans (False =
    KD); labels: B integer class indices in [0, C); beta, gamma: DIST weights >= 0.
    Returns the K-vector
        alpha_k * term_k + (1 - alpha_k) * CE_k,
    where term_k is `kd_loss` or `dist_loss` at tau_k: the same values the per-student
    functions give, computed in a handful of batched ops (16-bit logits in float32).
    check_values: scan the values of temperatures, alphas and labels (one host sync when they
    live on a GPU); training engines that checked them once at entry pass False. Shapes and
    dtypes are always checked. `stacked_logit_losses` also takes kd_ls, dkd and dkd_ls.
    """
    beta = _check_nonnegative(beta, "beta")
    gamma = _check_nonnegative(gamma, "gamma")
    if isinstance(is_dist, torch.Tensor) and is_dist.dtype != torch.bool:
        raise TypeError(f"is_dist must be K booleans (True = DIST, False = KD), got a "
                        f"{is_dist.dtype} tensor")
    if not isinstance(is_dist, torch.Tensor) and any(
            not isinstance(v, (bool, np.bool_)) for v in np.asarray(is_dist, dtype=object).ravel()):
        raise TypeError(f"is_dist must be K booleans (True = DIST, False = KD), got {is_dist!r}")
    s, t, tau, alpha, y = _stacked_inputs(student_logits, teacher_logits, temperatures, alphas,
                                          labels, check_values)
    k, batch, _ = s.shape
    dist_mask = _stacked_vector(is_dist, "is_dist", k, s.device, torch.bool)
    tau3 = tau.view(k, 1, 1)
    log_ps = F.log_softmax(s / tau3, dim=-1)
    log_pt = F.log_softmax(t / tau3, dim=-1)
    kd = _kl_rows(log_pt, log_ps).mean(dim=1)
    dist = _stacked_dist(log_ps.exp(), log_pt.exp(), beta, gamma)
    term = torch.where(dist_mask, dist, kd) * tau**2
    return alpha * term + (1.0 - alpha) * _stacked_ce(s, y)


def _check_loss_names(losses, k: int) -> tuple[str, ...]:
    if isinstance(losses, str) or not isinstance(losses, Sequence):
        raise TypeError(f"losses must be a sequence of K loss names from {list(STACKED_LOSSES)}"
                        f", got {losses!r}")
    names = tuple(losses)
    if len(names) != k:
        raise ValueError(f"losses needs one entry per student (K = {k}), got {len(names)}")
    for i, name in enumerate(names):
        if not isinstance(name, str) or name not in STACKED_LOSSES:
            raise ValueError(f"losses[{i}] must be one of {list(STACKED_LOSSES)}, got {name!r}")
    return names


# (loss names, device) -> ([(name, slice or index tensor)], inverse permutation): built once
# per stack, so a step sends nothing to the device.
_FAMILY_CACHE: dict = {}


def _loss_families(names: tuple, device) -> tuple[list, torch.Tensor]:
    """([(name, members)] in first-appearance order, inverse): members is a slice when that
    loss's members are consecutive (a view, no copy), else a LongTensor on `device`; inverse
    puts the losses, concatenated loss by loss, back in member order. Cached."""
    key = (names, str(device))
    if key not in _FAMILY_CACHE:
        families, grouped = [], []
        for name in dict.fromkeys(names):
            idx = [i for i, n in enumerate(names) if n == name]
            grouped += idx
            families.append((name, slice(idx[0], idx[-1] + 1)
                             if idx == list(range(idx[0], idx[-1] + 1))
                             else torch.tensor(idx, dtype=torch.long, device=device)))
        inverse = [0] * len(names)
        for pos, i in enumerate(grouped):
            inverse[i] = pos
        _FAMILY_CACHE[key] = (families, torch.tensor(inverse, dtype=torch.long, device=device))
    return _FAMILY_CACHE[key]


def _members(z: torch.Tensor, members) -> torch.Tensor:
    """Rows `members` (a slice: a view; an index tensor: a copy) of a K x ... tensor."""
    return z[members] if isinstance(members, slice) else z.index_select(0, members)


def stacked_logit_losses(student_logits, teacher_logits, temperatures, losses, alphas, labels,
                         *, beta: float = 1.0, gamma: float = 1.0, tckd_weight: float = 1.0,
                         nckd_weight: float = 8.0, check_values: bool = True) -> torch.Tensor:
    """The losses of K students at once, each with its own logit loss and tau.

    student_logits: K x B x C; teacher_logits: B x C (shared) or K x B x C; temperatures,
    alphas: K-vectors (tau in [1e-3, 1e3], alpha in [0, 1]); losses: K names from
    STACKED_LOSSES ("kd", "kd_ls", "dist", "dkd", "dkd_ls"; "_ls" = logit standardization);
    labels: B integer class indices in [0, C); beta, gamma: DIST weights >= 0; tckd_weight,
    nckd_weight: DKD's alpha and beta (>= 0). Returns the K-vector
        alpha_k * term_k + (1 - alpha_k) * CE_k,
    term_k being `kd_loss`, `dist_loss` or `dkd_loss` at tau_k (standardize=True for the
    "_ls" names): the values the per-student functions give, in batched ops. Each loss is
    computed on its own members only (a slice when they are consecutive, as in a sweep;
    else an index built once per stack), so the names are never sent to the device (no
    host sync) and the loss costs about what one loss over all K costs. Measured (1 CPU
    thread, forward + backward): K=33, B=128, C=100 with 3 losses 33.5 -> 11.9 ms; K=55,
    B=64, C=10 with 5 losses 13.5 -> 5.5 ms, against computing every loss for every member;
    bit-identical. check_values: as in `stacked_kd_dist`; "_ls" and DKD need C >= 2.
    """
    beta = _check_nonnegative(beta, "beta")
    gamma = _check_nonnegative(gamma, "gamma")
    tckd_weight = _check_nonnegative(tckd_weight, "tckd_weight")
    nckd_weight = _check_nonnegative(nckd_weight, "nckd_weight")
    s, t, tau, alpha, y = _stacked_inputs(student_logits, teacher_logits, temperatures, alphas,
                                          labels, check_values)
    k, batch, classes = s.shape
    names = _check_loss_names(losses, k)
    if any(n.endswith("_ls") for n in names):
        _check_standardizable(s, "student_logits")
    if any(n.startswith("dkd") for n in names):
        _check_dkd_classes(classes)
    families, inverse = _loss_families(names, s.device)
    term_parts = []  # t is K x B x C here (_stacked_inputs expands a shared teacher)
    for name, members in families:
        a, b, tau3 = (_members(z, members) for z in (s, t, tau))
        tau3 = tau3.view(-1, 1, 1)
        if name.endswith("_ls"):
            a, b = _zscore(a), _zscore(b)
        a, b = a / tau3, b / tau3
        if name == "dist":
            part = _stacked_dist(F.softmax(a, dim=-1), F.softmax(b, dim=-1), beta, gamma)
        elif name.startswith("kd"):
            part = _kl_rows(F.log_softmax(b, dim=-1), F.log_softmax(a, dim=-1)).mean(1)
        else:
            tckd, nckd = _dkd_rows(a, b, y.expand(a.shape[0], batch))
            part = tckd_weight * tckd.mean(1) + nckd_weight * nckd.mean(1)
        term_parts.append(part)
    term = term_parts[0] if len(term_parts) == 1 else \
        torch.cat(term_parts).index_select(0, inverse)
    return alpha * term * tau**2 + (1.0 - alpha) * _stacked_ce(s, y)
