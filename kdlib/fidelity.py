"""Student-teacher fidelity (Stanton et al. 2021): top-1 agreement and mean KL."""

from __future__ import annotations

import torch.nn.functional as F

from kdlib._validate import as_tensor, check_positive


def _pair(student_logits, teacher_logits):
    s = as_tensor(student_logits, "student_logits")
    t = as_tensor(teacher_logits, "teacher_logits")
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(
            f"student and teacher logits must both be N x C with the same shape, got "
            f"{tuple(s.shape)} and {tuple(t.shape)}"
        )
    if s.shape[0] == 0:
        raise ValueError("logits are empty (N = 0)")
    if not (s.is_floating_point() and t.is_floating_point()):
        raise TypeError("logits must be floating point")
    return s.float(), t.float().to(s.device)


def agreement(student_logits, teacher_logits) -> float:
    """Fraction in [0, 1] of samples where student and teacher argmax agree (N x C inputs)."""
    s, t = _pair(student_logits, teacher_logits)
    return float((s.argmax(1) == t.argmax(1)).float().mean())


def mean_kl(teacher_logits, student_logits, temperature: float = 1.0) -> float:
    """Mean over samples of KL(softmax(t/T) || softmax(s/T)) in nats (N x C inputs, T > 0)."""
    s, t = _pair(student_logits, teacher_logits)
    temperature = check_positive(temperature, "temperature")
    log_t = F.log_softmax(t / temperature, dim=1)
    log_s = F.log_softmax(s / temperature, dim=1)
    return float((log_t.exp() * (log_t - log_s)).sum(1).mean())


def confidence_exaggeration(student_logits, teacher_logits) -> float:
    """Fraction of samples where the student's max probability exceeds the teacher's."""
    s, t = _pair(student_logits, teacher_logits)
    return float((s.softmax(1).amax(1) > t.softmax(1).amax(1)).float().mean())
