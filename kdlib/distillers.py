"""Distillation objectives, one small class per method on a shared base (as in mdistiller).

Every distiller maps (student output, teacher output, labels) to one scalar loss:

    loss = (1 - alpha) * CE(labels, student) + alpha * term(student, teacher)

which is the paper's eq. 2 with the method's term in place of KD. The paper's experiments
use alpha = 1 (no CE term) for both KD and DIST.

Loss names: "kd", "kd_ls" (KD on z-scored logits, Sun et al. CVPR 2024), "dist", "dkd"
(Zhao et al. CVPR 2022), "dkd_ls" (DKD on z-scored logits), "fitnet" (KD + hint),
"fitnet_ce" (CE + hint, the hint-only arm); or a callable.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

import torch
import torch.nn.functional as F

from kdlib._validate import check_fraction, check_int, check_positive
from kdlib.losses import FitNetHint, check_temperature, dist_loss, dkd_loss, kd_loss

LOSSES = ("kd", "kd_ls", "dist", "dkd", "dkd_ls", "fitnet", "fitnet_ce")
FITNET_LOSSES = ("fitnet", "fitnet_ce")  # need per-sample stage shapes and a regressor


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 (autocast) -> float32; float32 and float64 unchanged."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class Distiller(torch.nn.Module):
    """Base: weights the method's term against cross-entropy with `alpha` in [0, 1].

    `needs_features`: the student/teacher outputs passed to `forward` are
    (logits, penultimate, stages) tuples instead of logits.
    `options`: the keyword arguments (loss_kwargs) the method takes besides temperature and
    alpha; `make_distiller` refuses any other. `user_options`: those a user may pass to a
    training engine (the rest, e.g. FitNet's stage shapes, the engine fills in).
    `term(student, teacher, labels)` is the method's term; labels are the B class indices.
    """

    needs_features = False
    options: tuple[str, ...] = ()
    user_options: tuple[str, ...] = ()

    def __init__(self, temperature: float, alpha: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.alpha = check_fraction(alpha, "alpha")

    def term(self, student, teacher, labels) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, student, teacher, labels) -> torch.Tensor:
        logits = student[0] if self.needs_features else student
        loss = self.alpha * self.term(student, teacher, labels)
        if self.alpha < 1.0:
            loss = loss + (1.0 - self.alpha) * F.cross_entropy(full_precision(logits), labels)
        return loss


class KD(Distiller):
    """Hinton KD: tau^2 * KL(teacher || student) at temperature tau (loss name "kd")."""

    standardize = False

    def term(self, student, teacher, labels):
        return kd_loss(full_precision(student), full_precision(teacher), self.temperature,
                       self.standardize)


class KDLS(KD):
    """KD on z-scored logits (Sun et al., CVPR 2024; loss name "kd_ls"): see kd_loss."""

    standardize = True


class DIST(Distiller):
    """DIST (Huang et al. 2022): inter- and intra-class Pearson relations at tau."""

    options = ("beta", "gamma")
    user_options = options

    def __init__(self, temperature: float, alpha: float = 1.0, beta: float = 1.0,
                 gamma: float = 1.0):
        super().__init__(temperature, alpha)
        self.beta, self.gamma = (_check_weight(beta, "beta"), _check_weight(gamma, "gamma"))

    def term(self, student, teacher, labels):
        return dist_loss(full_precision(student), full_precision(teacher), self.temperature,
                         self.beta, self.gamma)


class DKD(Distiller):
    """Decoupled KD (Zhao et al., CVPR 2022; loss name "dkd"): see kdlib.losses.dkd_loss.

    term = tckd_weight * TCKD + nckd_weight * NCKD at tau, each times tau^2; tckd_weight and
    nckd_weight are the DKD paper's alpha and beta (renamed: `alpha` here is kdlib's CE
    weight), defaults 1 and 8 as the paper uses on CIFAR-100 (with tau = 4). The official
    code adds the plain CE loss (weight 1) and ramps the DKD term in linearly over the first
    20 epochs (min(epoch / 20, 1)); kdlib combines CE as (1 - alpha) * CE + alpha * term
    like every distiller, and has no warm-up (a distiller does not see the epoch). The
    labels are not value-scanned here (the training engines validate the data set's labels;
    an out-of-range label fails in the index ops).
    """

    options = ("tckd_weight", "nckd_weight")
    user_options = options
    standardize = False

    def __init__(self, temperature: float, alpha: float = 1.0, tckd_weight: float = 1.0,
                 nckd_weight: float = 8.0):
        super().__init__(temperature, alpha)
        self.tckd_weight = _check_weight(tckd_weight, "tckd_weight")
        self.nckd_weight = _check_weight(nckd_weight, "nckd_weight")

    def term(self, student, teacher, labels):
        return dkd_loss(full_precision(student), full_precision(teacher), labels,
                        self.tckd_weight, self.nckd_weight, self.temperature, self.standardize,
                        check_values=False)


class DKDLS(DKD):
    """DKD on z-scored logits (Sun et al., CVPR 2024; loss name "dkd_ls")."""

    standardize = True


class FitNet(Distiller):
    """FitNet hints on one middle stage plus KD on the outputs at tau.

    term = KD(tau) + hint_weight * MSE(regressor(student stage), teacher stage).
    The regressor's parameters belong to this module: optimize them with the student.
    stage: index (>= 0) into the models' stage list; `kdlib.train.distill` checks it against
    the number of stages of both models.
    """

    needs_features = True
    options = ("hint_weight", "stage", "student_shape", "teacher_shape")
    user_options = ("hint_weight", "stage")

    def __init__(self, temperature: float, student_shape, teacher_shape, alpha: float = 1.0,
                 hint_weight: float = 100.0, stage: int = 1):
        super().__init__(temperature, alpha)
        self.hint = FitNetHint(student_shape, teacher_shape)
        self.hint_weight = check_positive(hint_weight, "hint_weight")
        self.stage = check_int(stage, "stage", minimum=0)

    def term(self, student, teacher, labels):
        s_logits, _, s_stages = student
        t_logits, _, t_stages = teacher
        kd = kd_loss(full_precision(s_logits), full_precision(t_logits), self.temperature)
        hint = self.hint(full_precision(s_stages[self.stage]),
                         full_precision(t_stages[self.stage]))
        return kd + self.hint_weight * hint


class FitNetCE(FitNet):
    """The hint-only FitNet arm: cross-entropy on the labels plus the hint, no KD term.

    term = CE(student logits, labels) + hint_weight * MSE(regressor(student stage), teacher
    stage), as the original FitNet (Romero et al., 2015) trains its second stage and as
    feature-KD baselines run it; the temperature is not used. With alpha = 1 (the default)
    the loss is exactly this term.
    """

    def term(self, student, teacher, labels):
        s_logits, _, s_stages = student
        _, _, t_stages = teacher
        ce = F.cross_entropy(full_precision(s_logits), labels)
        hint = self.hint(full_precision(s_stages[self.stage]),
                         full_precision(t_stages[self.stage]))
        return ce + self.hint_weight * hint


class CallableDistiller(Distiller):
    """Wraps a user function fn(student_logits, teacher_logits, temperature) -> scalar.

    Every call checks (shape and dtype only, no value scan) that fn returned a 0-d
    floating tensor; a vector (e.g. a per-sample loss not reduced with .mean()) is refused
    at the first step with a TypeError/ValueError naming the function.
    """

    def __init__(self, fn: Callable, temperature: float, alpha: float = 1.0):
        super().__init__(temperature, alpha)
        if not callable(fn):
            raise TypeError(f"loss must be one of {LOSSES} or a callable, got {fn!r}")
        self.fn = fn

    def term(self, student, teacher, labels):
        value = self.fn(student, teacher, self.temperature)
        name = getattr(self.fn, "__name__", "the loss function")
        if not isinstance(value, torch.Tensor) or not torch.is_floating_point(value):
            raise TypeError(f"loss function {name} must return a floating 0-d torch tensor "
                            f"(a scalar that autograd can differentiate), got "
                            f"{type(value).__name__}"
                            + (f" of dtype {value.dtype}" if isinstance(value, torch.Tensor)
                               else ""))
        if value.dim() != 0:
            raise ValueError(f"loss function {name} must return a scalar (0-d tensor), got "
                             f"shape {tuple(value.shape)}; reduce it, e.g. with .mean()")
        return value


def _check_weight(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number >= 0, got {type(value).__name__}")
    value = float(value)
    if not (value >= 0 and value < float("inf")):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def _distiller_class(loss):
    if callable(loss) and not isinstance(loss, str):
        return CallableDistiller
    classes = {"kd": KD, "kd_ls": KDLS, "dist": DIST, "dkd": DKD, "dkd_ls": DKDLS,
               "fitnet": FitNet, "fitnet_ce": FitNetCE}
    if not isinstance(loss, str) or loss not in classes:
        raise ValueError(f"loss must be one of {list(LOSSES)} or a callable, got {loss!r}")
    return classes[loss]


def check_loss_kwargs(loss, kwargs, allowed: tuple[str, ...] | None = None) -> dict:
    """`kwargs` as a dict if `loss` takes every key, else ValueError naming the allowed ones.

    allowed: the accepted names (default: the distiller's `options`)."""
    cls = _distiller_class(loss)  # refuses unknown losses, also without kwargs
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"loss_kwargs must be a dict or None, got {type(kwargs).__name__}")
    if allowed is None:
        allowed = cls.options
    unknown = sorted(str(k) for k in kwargs if k not in allowed)
    if unknown:
        label = loss if isinstance(loss, str) else getattr(loss, "__name__", "callable")
        takes = f"takes only {list(allowed)}" if allowed else "takes no loss_kwargs"
        raise ValueError(f"loss {label!r} {takes}; got unknown {unknown}")
    return dict(kwargs)


def loss_options(loss, user: bool = False) -> tuple[str, ...]:
    """The loss_kwargs names `loss` takes (user=True: those a user passes to an engine).

    loss: a name in LOSSES or a callable (none). Unknown names raise ValueError."""
    cls = _distiller_class(loss)
    return cls.user_options if user else cls.options


def make_distiller(loss, temperature: float, alpha: float = 1.0, **kwargs) -> Distiller:
    """Build the distiller for `loss` (a name in LOSSES or a callable).

    kwargs: the method's options only (KD, KD-LS and callables: none; DIST: beta, gamma;
    DKD, DKD-LS: tckd_weight, nckd_weight; FitNet: hint_weight, stage and the required
    `student_shape`, `teacher_shape`, per-sample stage shapes); any other name is refused
    (ValueError naming the allowed ones).
    """
    cls = _distiller_class(loss)
    kwargs = check_loss_kwargs(loss, kwargs, cls.options)
    if cls is CallableDistiller:
        return CallableDistiller(loss, temperature, alpha)
    if issubclass(cls, FitNet):
        missing = [k for k in ("student_shape", "teacher_shape") if k not in kwargs]
        if missing:
            raise ValueError(f"fitnet needs {missing} (per-sample stage shapes); "
                             f"kdlib.train.distill fills them in")
        return cls(temperature, alpha=alpha, **kwargs)
    return cls(temperature, alpha, **kwargs)
