"""Shared input checks. Every public kdlib function validates through these so that
errors read the same everywhere: what was wrong, and what is allowed."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np


def as_tensor(x, name: str):
    """Return `x` (numpy array, torch tensor or nested list) as a torch tensor.

    Tensors keep their device; numpy arrays are wrapped without copying where possible.
    """
    import torch  # lazy: light modules (sweep, report) import this file too
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got an object array")
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(x))
        except (ValueError, TypeError) as err:
            raise TypeError(f"{name} must be a numeric array-like; {err}") from err
    raise TypeError(
        f"{name} must be a numpy array or torch tensor, got {type(x).__name__}"
    )


def check_positive(value, name: str) -> float:
    """A finite real number > 0 (temperatures, learning rates); returned as float."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        if type(value).__name__ == "Tensor" and value.numel() == 1:
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number > 0, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer within [minimum, maximum] (inclusive bounds, None = unbounded)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_fraction(value, name: str) -> float:
    """A real number in [0, 1] (weights such as alpha)."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number in [0, 1], got {type(value).__name__}")
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def check_choice(value, name: str, allowed) -> str:
    """One of a fixed set of strings."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_real(value, name: str, minimum: float | None = None,
               maximum: float | None = None) -> float:
    """A finite real number within [minimum, maximum] (inclusive, None = unbounded);
    returned as float. Bools, strings and NaN/inf are refused."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        kind = type(value).__name__
        if kind == "Tensor" and value.numel() == 1:
            value = value.item()  # a Python bool, int or float
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a real number, got {kind} ({value!r})")
    value = float(value)
    low = "-inf" if minimum is None else f"{minimum:g}"
    high = "inf" if maximum is None else f"{maximum:g}"
    allowed = f"[{low}, {high}]"
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in {allowed}, got {value}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be in {allowed}, got {value:g}")
    return value


def as_named_tensor(x, name: str):
    """as_tensor, but every TypeError names `name` (torch's own conversion errors, e.g. for
    numpy string arrays, do not)."""
    try:
        return as_tensor(x, name)
    except TypeError as err:
        if str(err).startswith(name):
            raise
        raise TypeError(f"{name} must be a numeric array; {err}") from err


def check_finite_tensor(x, name: str):
    """Raise ValueError if the floating tensor `x` holds NaN or +-inf (naming how many and
    the first position); integer and bool tensors pass unscanned. Returns `x`.

    One scan of the values (a host sync on CUDA): call it once at entry, not every step."""
    import torch
    if not torch.is_floating_point(x) and not torch.is_complex(x):
        return x
    bad = ~torch.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad:
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} must hold finite values only; it has {n_bad} NaN/inf value(s) of "
            f"{x.numel()}, the first at index {first[0] if len(first) == 1 else first} "
            f"({x[first].item()})")
    return x
