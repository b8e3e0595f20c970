"""Distillation objectives, one small class per method on a shared base (as in mdistiller).

Every distiller maps (student output, teacher output, labels) to one scalar loss:

    loss = (1 - alpha) * CE(labels, student) + alpha * term(student, teacher)

which is the paper's eq. 2 with the method's term in place of KD. The paper's experiments
use alpha = 1 (no CE term) for both KD and DIST.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from kdlib._validate import check_fraction, check_positive
from kdlib.losses import FitNetHint, dist_loss, kd_loss

LOSSES = ("kd", "dist", "fitnet")


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 (autocast) -> float32; float32 and float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class Distiller(torch.nn.Module):
    """Base: weights the method's term against cross-entropy with `alpha` in [0, 1].

    `needs_features`: the student/teacher outputs passed to `forward` are
    (logits, penultimate, stages) tuples instead of logits.
    """

    needs_features = False

    def __init__(self, temperature: float, alpha: float = 1.0):
        super().__init__()
        self.temperature = check_positive(temperature, "temperature")
        self.alpha = check_fraction(alpha, "alpha")

    def term(self, student, teacher) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, student, teacher, labels) -> torch.Tensor:
        logits = student[0] if self.needs_features else student
        loss = self.alpha * self.term(student, teacher)
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * F.cross_entropy(full_precision(logits), labels)
        return loss


class KD(Distiller):
    """Hinton KD: tau^2 * KL(teacher || student) at temperature tau."""

    def term(self, student, teacher):
        return kd_loss(full_precision(student), full_precision(teacher), self.temperature)


class DIST(Distiller):
    """DIST (Huang et al. 2022): inter- and intra-class Pearson relations at tau."""

    def __init__(self, temperature: float, alpha: float = 1.0, beta: float = 1.0,
                 gamma: float = 1.0):
        super().__init__(temperature, alpha)
        self.beta, self.gamma = beta, gamma

    def term(self, student, teacher):
        return dist_loss(full_precision(student), full_precision(teacher), self.temperature,
                         self.beta, self.gamma)


class FitNet(Distiller):
    """FitNet hints on one middle stage plus KD on the outputs at tau.

    term = KD(tau) + hint_weight * MSE(regressor(student stage), teacher stage).
    The regressor's parameters belong to this module: optimize them with the student.
    """

    needs_features = True

    def __init__(self, temperature: float, student_shape, teacher_shape, alpha: float = 1.0,
                 hint_weight: float = 100.0, stage: int = 1):
        super().__init__(temperature, alpha)
        self.hint = FitNetHint(student_shape, teacher_shape)
        self.hint_weight = check_positive(hint_weight, "hint_weight")
        self.stage = stage

    def term(self, student, teacher):
        s_logits, _, s_stages = student
        t_logits, _, t_stages = teacher
        kd = kd_loss(full_precision(s_logits), full_precision(t_logits), self.temperature)
        hint = self.hint(full_precision(s_stages[self.stage]),
                         full_precision(t_stages[self.stage]))
        return kd + self.hint_weight * hint


class CallableDistiller(Distiller):
    """Wraps a user function fn(student_logits, teacher_logits, temperature) -> scalar."""

    def __init__(self, fn: Callable, temperature: float, alpha: float = 1.0):
        super().__init__(temperature, alpha)
        if not callable(fn):
            raise TypeError(f"loss must be one of {LOSSES} or a callable, got {fn!r}")
        self.fn = fn

    def term(self, student, teacher):
        return self.fn(student, teacher, self.temperature)


def make_distiller(loss, temperature: float, alpha: float = 1.0, **kwargs) -> Distiller:
    """Build the distiller for `loss` ("kd", "dist", "fitnet" or a callable).

    FitNet needs `student_shape` and `teacher_shape` (per-sample stage shapes) in kwargs.
    """
    if callable(loss) and not isinstance(loss, str):
        return CallableDistiller(loss, temperature, alpha)
    if loss == "kd":
        return KD(temperature, alpha)
    if loss == "dist":
        return DIST(temperature, alpha, **kwargs)
    if loss == "fitnet":
        return FitNet(temperature, alpha=alpha, **kwargs)
    raise ValueError(f"loss must be one of {list(LOSSES)} or a callable, got {loss!r}")
