"""Student-teacher fidelity (Stanton et al. 2021): top-1 agreement and mean KL.

Inputs are N x C logits (numpy, torch or nested lists of floats; N >= 1, C >= 1), the same
shape for student and teacher, every entry finite; they are compared in float32 on the
student's device. Temperatures lie in [1e-3, 1e4] like those of `kdlib.calibration`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlib._validate import as_named_tensor, check_positive, check_real
from kdlib.calibration import TEMPERATURE_MAX, TEMPERATURE_MIN


def _logits(x, name: str) -> torch.Tensor:
    t = as_named_tensor(x, name)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point logits, got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must be N x C with N, C >= 1, got shape {tuple(t.shape)}")
    return t.detach().float()


def _pair(student_logits, teacher_logits):
    """Both logit matrices as float32 on the student's device, plus their max |entry|."""
    s = _logits(student_logits, "student_logits")
    t = _logits(teacher_logits, "teacher_logits")
    if s.shape != t.shape:
        raise ValueError(
            f"student and teacher logits must both be N x C with the same shape, got "
            f"student_logits {tuple(s.shape)} and teacher_logits {tuple(t.shape)}"
        )
    t = t.to(s.device)
    max_abs = 0.0
    for name, z in (("student_logits", s), ("teacher_logits", t)):
        lo, hi = (float(v) for v in torch.aminmax(z))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = int((~torch.isfinite(z)).sum())
            raise ValueError(f"{name} contains NaN or inf ({bad} entries); all must be finite")
        max_abs = max(max_abs, -lo, hi)
    return s, t, max_abs


def agreement(student_logits, teacher_logits) -> float:
    """Fraction in [0, 1] of samples where student and teacher argmax agree (N x C inputs)."""
    s, t, _ = _pair(student_logits, teacher_logits)
    return float((s.argmax(1) == t.argmax(1)).float().mean())


def mean_kl(teacher_logits, student_logits, temperature: float = 1.0) -> float:
    """Mean over samples of KL(softmax(t/T) || softmax(s/T)) in nats (N x C inputs,
    T in [1e-3, 1e4] with max |logit| / T finite in float32)."""
    temperature = check_positive(temperature, "temperature")
    temperature = check_real(temperature, "temperature", TEMPERATURE_MIN, TEMPERATURE_MAX)
    s, t, max_abs = _pair(student_logits, teacher_logits)
    if max_abs / temperature > torch.finfo(torch.float32).max:
        raise ValueError(
            f"logits / temperature overflows float32: max |logit| = {max_abs:.3g}, "
            f"temperature = {temperature:g}"
        )
    log_t = F.log_softmax(t / temperature, dim=1)
    log_s = F.log_softmax(s / temperature, dim=1)
    return float((log_t.exp() * (log_t - log_s)).sum(1).mean())


def confidence_exaggeration(student_logits, teacher_logits) -> float:
    """Fraction of samples where the student's max probability exceeds the teacher's."""
    s, t, _ = _pair(student_logits, teacher_logits)
    return float((s.softmax(1).amax(1) > t.softmax(1).amax(1)).float().mean())
