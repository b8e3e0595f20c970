"""Calibration metrics and temperature scaling.

Conventions (paper eq. 4, Guo et al. 2017):

- confidence = max class probability of a row; a sample is correct when the argmax
  equals its label (ties: the first maximal class).
- Equal-width bins: bin m (1-based, m = 1..M) holds confidences in ((m-1)/M, m/M].
  A confidence of exactly m/M goes in bin m, a confidence of exactly 1.0 in the last bin,
  and a confidence of 0 in the first bin. "Exactly m/M" means equal to m/M rounded to the
  floating dtype of the input (the edges are rounded to that dtype before comparing;
  float16/bfloat16 inputs are upcast to float32 first).
- ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)|; empty bins contribute 0. MCE = max over
  non-empty bins of |acc - conf|. Both are fractions in [0, 1] (the paper prints percent).

Inputs are numpy arrays, torch tensors (any device; the work runs on that device) or nested
lists: `probs` N x C probabilities (rows summing to 1), `logits` N x C real scores,
`labels` N integer class indices in [0, C). Scalar results are Python floats, per-bin and
per-temperature results numpy arrays.

Bounds, checked at entry with a ValueError naming the parameter:
- Every value of probs and logits is finite; labels are integers in [0, C), one per row.
- Temperatures lie in [TEMPERATURE_MIN, TEMPERATURE_MAX] = [1e-3, 1e4]: below 1e-3 the
  factor 1/T (> 1000) turns logits of a few hundred into one-hot rows and, near T = 1e-45,
  1/T is inf in float32 and every probability NaN; above 1e4 every row of realistic logits
  is uniform to float32 precision. Additionally max|logit| / T must be finite in the dtype
  the product is computed in (float32 logits: max|logit| <= 3.4e38 * T).
- n_bins <= MAX_BINS = 10,000 (bins of width 1e-4; beyond that almost every bin holds at
  most one sample of any realistic test set, and classwise_ece keeps C x n_bins sums);
  classwise_ece also needs C * n_bins <= 2**25, and at most MAX_TEMPERATURES = 1,000
  temperatures are swept in one call.
Nothing loops over samples in Python: the work is torch reductions, bucketize and
index_add, in row chunks where an intermediate would be N x C x (number of temperatures).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from kdlib._validate import as_named_tensor, check_choice, check_int, check_positive
from kdlib._validate import check_real as _check_real

__all__ = [
    "MAX_BINS",
    "MAX_TEMPERATURES",
    "BINNINGS",
    "ROW_SUM_TOLERANCE",
    "TEMPERATURE_MAX",
    "TEMPERATURE_MIN",
    "BinnedCalibration",
    "ReliabilityBins",
    "adaptive_ece",
    "adaptive_ece_vs_temperature",
    "binned_calibration",
    "brier_score",
    "classwise_ece",
    "ece",
    "ece_vs_temperature",
    "equal_mass_bins",
    "fit_temperature",
    "mce",
    "nll",
    "nll_vs_temperature",
    "reliability_bins",
    "tempered_softmax",
]

ROW_SUM_TOLERANCE = 1e-3
"""Probability rows must sum to 1 within this absolute tolerance."""

_T_MIN, _T_MAX = 0.05, 20.0

TEMPERATURE_MIN, TEMPERATURE_MAX = 1e-3, 1e4
"""Allowed temperatures (see the module docstring for why)."""
MAX_BINS = 10_000
"""Largest n_bins of the binned metrics."""
MAX_TEMPERATURES = 1_000
"""Most temperatures in one ece_vs_temperature / nll_vs_temperature call."""
_MAX_CLASS_BINS = 2**25  # classwise_ece: C * n_bins sums (two float64 arrays, 256 MB each)
BINNINGS = ("equal_width", "equal_mass")
"""The two binnings of `binned_calibration`: equal-width ((m-1)/M, m/M] bins (the paper's
rule, `reliability_bins`) and equal-mass bins (`equal_mass_bins`, as `adaptive_ece`)."""


# --------------------------------------------------------------------------- validation


def _float_tensor(x, name: str, detach: bool = True) -> torch.Tensor:
    """`x` as a real floating tensor: ints/bools become float32, half types float32.

    Metrics detach from autograd; tempered_softmax keeps the graph (detach=False).
    """
    t = as_named_tensor(x, name)
    if detach:
        t = t.detach()
    if t.dtype.is_complex:
        raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
    if not t.dtype.is_floating_point or t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    return t


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for sums, except on devices without it (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_2d(t: torch.Tensor, name: str, what: str) -> None:
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_classes) of {what}, "
            f"got shape {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples); need at least one sample")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has 0 classes; need at least one class")


def _check_labels(labels, n_samples: int, n_classes: int, device: torch.device, name: str):
    """Labels as an int64 tensor on `device`, validated against n_samples and n_classes."""
    y = as_named_tensor(labels, "labels")
    if y.ndim != 1:
        raise ValueError(
            f"labels must be a 1-D array of class indices, got shape {tuple(y.shape)}"
        )
    if y.shape[0] != n_samples:
        raise ValueError(
            f"length mismatch: {name} has {n_samples} rows but labels has {y.shape[0]} "
            "entries; they must have one label per row"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(
            f"labels must be integer class indices in [0, {n_classes}), got dtype {y.dtype}"
        )
    y = y.to(device=device, dtype=torch.int64)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(
            f"labels must be class indices in [0, {n_classes}) for {n_classes} classes, "
            f"got values in [{lo}, {hi}]"
        )
    return y


def _check_probs(probs, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate an N x C probability matrix and its labels (one pass for sums, one for min)."""
    p = _float_tensor(probs, "probs")
    _check_2d(p, "probs", "probabilities")
    row_sums = p.sum(dim=1)
    # A NaN or inf anywhere in a row makes that row's sum non-finite (or the sum overflows,
    # in which case the row does not sum to 1 either): the precise reason is sorted out below.
    if not bool(torch.isfinite(row_sums).all()):
        bad = int((~torch.isfinite(p)).sum())
        if bad:
            raise ValueError(
                f"probs contains NaN or inf ({bad} entries); all probabilities must be finite"
            )
    off = (row_sums - 1.0).abs() > ROW_SUM_TOLERANCE
    if bool(off.any()):
        i = int(off.nonzero()[0, 0])
        raise ValueError(
            f"{int(off.sum())} of {p.shape[0]} rows of probs do not sum to 1 within "
            f"{ROW_SUM_TOLERANCE} (row {i} sums to {float(row_sums[i]):.6g}). These look like "
            "logits, not probabilities: convert them with tempered_softmax(logits, "
            "temperature) first, or use ece_vs_temperature / nll_vs_temperature for logits"
        )
    low = float(p.min())
    if low < 0:
        raise ValueError(f"probs has negative entries (min {low:.6g}); probabilities must be >= 0")
    y = _check_labels(labels, p.shape[0], p.shape[1], p.device, "probs")
    return p, y


def _check_logits(logits, labels=None, *, matrix: bool = True, detach: bool = True,
                  temperature: float | None = None, in_accumulator: bool = False):
    """Validate logits (finite; N x C when `matrix`) and, if given, their labels.

    With `temperature` (the smallest one used), also check that logits / temperature is
    finite in the logits' dtype (or, with `in_accumulator`, in the accumulator dtype).
    """
    z = _float_tensor(logits, "logits", detach=detach)
    if matrix:
        _check_2d(z, "logits", "real scores")
    elif z.ndim == 0 or z.numel() == 0:
        raise ValueError(
            f"logits must have at least one dimension and one entry (softmax runs over the "
            f"last dimension), got shape {tuple(z.shape)}"
        )
    # min and max are both finite exactly when nothing is inf (NaN propagates through both).
    lo, hi = (float(v) for v in torch.aminmax(z.detach()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~torch.isfinite(z)).sum())
        raise ValueError(f"logits contains NaN or inf ({bad} entries); all entries must be finite")
    if temperature is not None:
        dtype = _accumulator_dtype(z.device) if in_accumulator else z.dtype
        _check_scaled_logits(max(-lo, hi), temperature, dtype)
    if labels is None:
        return z
    return z, _check_labels(labels, z.shape[0], z.shape[1], z.device, "logits")


def _check_temperature(value, name: str) -> float:
    """One temperature in [TEMPERATURE_MIN, TEMPERATURE_MAX], as a Python float."""
    value = check_positive(value, name)  # type, finiteness and sign first
    try:
        return _check_real(value, name, TEMPERATURE_MIN, TEMPERATURE_MAX)
    except ValueError as err:
        raise ValueError(
            f"{err} (below 1e-3 the factor 1/T turns logits into one-hot rows and near "
            "1e-38 it overflows float32; above 1e4 every row is uniform)"
        ) from None


def _check_scaled_logits(max_abs: float, temperature: float, dtype: torch.dtype) -> None:
    """Refuse logits whose largest magnitude divided by `temperature` overflows `dtype`."""
    limit = torch.finfo(dtype).max
    if max_abs / temperature > limit:
        raise ValueError(
            f"logits / temperature overflows {dtype}: max |logit| = {max_abs:.3g} and "
            f"temperature = {temperature:g}; need temperature >= {max_abs / limit:.3g} "
            "(or smaller logits)"
        )


def _check_temperatures(temperatures) -> list[float]:
    """A non-empty 1-D sequence of at most MAX_TEMPERATURES temperatures in
    [TEMPERATURE_MIN, TEMPERATURE_MAX], as Python floats."""
    if isinstance(temperatures, torch.Tensor):
        temperatures = temperatures.detach().cpu().tolist()
    if isinstance(temperatures, (str, bytes)):
        raise TypeError("temperatures must be a 1-D sequence of numbers > 0, got a string")
    # dtype=object keeps each element's own type, so check_positive can refuse bools.
    arr = np.asarray(temperatures, dtype=object)
    if arr.ndim != 1:
        raise TypeError(
            f"temperatures must be a 1-D sequence of numbers > 0, got shape {arr.shape}; "
            "for a single temperature pass [T]"
        )
    if arr.size == 0:
        raise ValueError("temperatures is empty; give at least one temperature > 0")
    if arr.size > MAX_TEMPERATURES:
        raise ValueError(
            f"temperatures holds {arr.size} values; at most {MAX_TEMPERATURES} per call"
        )
    return [_check_temperature(t, f"temperatures[{i}]") for i, t in enumerate(arr.tolist())]


def _check_n_bins(n_bins) -> int:
    return check_int(n_bins, "n_bins", minimum=1, maximum=MAX_BINS)


# --------------------------------------------------------------------------- binning


def _edges(n_bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Bin edges m/M, m = 0..M, computed in float64 and rounded to `dtype`."""
    return (torch.arange(n_bins + 1, dtype=torch.float64, device=device) / n_bins).to(dtype)


def _bin_index(values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """0-based equal-width bin of each value with the ((m-1)/M, m/M] rule.

    bucketize(right=False) returns i with inner[i-1] < v <= inner[i], so a value equal to
    an inner edge m/M lands in 0-based bin m-1; values <= 0 go to bin 0, values >= 1 to M-1.
    """
    inner = _edges(n_bins, values.dtype, values.device)[1:-1].contiguous()
    return torch.bucketize(values.contiguous(), inner, right=False)


def _confidences(p: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max probability per row and whether its argmax equals the label (both length N)."""
    conf, pred = torch.max(p, dim=1)
    return conf, pred == y


def _binned_sums(
    bins: torch.Tensor, conf: torch.Tensor, correct: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin sample count, summed confidence and summed correctness (float64 sums)."""
    acc = _accumulator_dtype(conf.device)
    count = torch.bincount(bins, minlength=n_bins)
    sum_conf = torch.zeros(n_bins, dtype=acc, device=conf.device)
    sum_conf.index_add_(0, bins, conf.to(acc))
    sum_correct = torch.zeros(n_bins, dtype=acc, device=conf.device)
    sum_correct.index_add_(0, bins, correct.to(acc))
    return count, sum_conf, sum_correct


def _equal_width_sums(probs, labels, n_bins):
    n_bins = _check_n_bins(n_bins)
    p, y = _check_probs(probs, labels)
    conf, correct = _confidences(p, y)
    return _binned_sums(_bin_index(conf, n_bins), conf, correct, n_bins)


_CHUNK_ELEMENTS = {"cpu": 1 << 19}  # ~2-4 MB intermediates stay in cache
_CHUNK_ELEMENTS_DEFAULT = 1 << 26  # accelerators


def _chunk_rows(n_rows: int, elements_per_row: int, device: torch.device) -> Iterator[slice]:
    """Row slices whose intermediates hold about _CHUNK_ELEMENTS elements."""
    budget = _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS_DEFAULT)
    step = max(1, budget // max(1, elements_per_row))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram (equal-width bins, ((m-1)/M, m/M]).

    edges: (n_bins + 1,) float64, 0, 1/M, ..., 1.
    confidence: (n_bins,) mean confidence per bin; NaN for an empty bin.
    accuracy: (n_bins,) fraction correct per bin; NaN for an empty bin.
    count: (n_bins,) int64 number of samples per bin (0 for an empty bin).
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def n_bins(self) -> int:
        return int(self.count.shape[0])


def reliability_bins(probs, labels, n_bins: int = 15) -> ReliabilityBins:
    """Reliability-diagram statistics of N x C `probs` against N `labels`.

    Empty bins have count 0 and NaN mean confidence and accuracy (so plots skip them).
    """
    count, sum_conf, sum_correct = _equal_width_sums(probs, labels, n_bins)
    n_bins = count.shape[0]
    c = count.cpu().numpy().astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(c > 0, sum_conf.cpu().numpy() / c, np.nan)
        acc = np.where(c > 0, sum_correct.cpu().numpy() / c, np.nan)
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    return ReliabilityBins(edges=edges, confidence=conf, accuracy=acc, count=c)


def ece(probs, labels, n_bins: int = 15) -> float:
    """Expected calibration error (fraction in [0, 1]) of (N, C) `probs` against (N,) `labels`,
    with `n_bins` equal-width bins ((m-1)/M, m/M]; empty bins contribute 0."""
    count, sum_conf, sum_correct = _equal_width_sums(probs, labels, n_bins)
    n = int(count.sum())
    return float((sum_correct - sum_conf).abs().sum() / n)


def mce(probs, labels, n_bins: int = 15) -> float:
    """Maximum calibration error: max over non-empty equal-width bins of |acc - conf|."""
    count, sum_conf, sum_correct = _equal_width_sums(probs, labels, n_bins)
    full = count > 0
    gaps = (sum_correct[full] - sum_conf[full]).abs() / count[full]
    return float(gaps.max())


def adaptive_ece(probs, labels, n_bins: int = 15) -> float:
    """ECE with equal-mass bins (fraction in [0, 1]).

    Samples are sorted by confidence (stable: ties keep their input order) and the sample of
    rank r (0-based) goes to bin floor(r * n_bins / N), so bin sizes differ by at most one.
    With N < n_bins some bins are empty and contribute 0.
    """
    n_bins = _check_n_bins(n_bins)
    p, y = _check_probs(probs, labels)
    conf, correct = _confidences(p, y)
    n = conf.shape[0]
    order = torch.sort(conf, stable=True).indices
    bins = torch.arange(n, device=conf.device, dtype=torch.int64) * n_bins // n
    _, sum_conf, sum_correct = _binned_sums(bins, conf[order], correct[order], n_bins)
    return float((sum_correct - sum_conf).abs().sum() / n)


@dataclass(frozen=True)
class BinnedCalibration:
    """Per-bin statistics of a reliability diagram, for either binning (`BINNINGS`).

    edges: (n_bins + 1,) float64, nondecreasing, in [0, 1]. Equal width: m/M. Equal mass
        (for plotting; membership is by rank): from the smallest to the largest confidence,
        interior edge m halfway between the largest confidence of bin m-1 and the smallest
        of bin m.
    confidence, accuracy: (n_bins,) mean confidence and fraction correct; NaN if empty.
    count: (n_bins,) int64 samples per bin.
    binning: "equal_width" or "equal_mass".
    `ece` and `mce` (fractions in [0, 1]) equal `ece`/`mce` (equal width) or `adaptive_ece`
    (equal mass) of the same inputs.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    binning: str = "equal_width"

    @property
    def n_bins(self) -> int:
        return int(self.count.shape[0])

    @property
    def ece(self) -> float:
        """sum over bins of count/N * |accuracy - confidence| (empty bins add 0)."""
        full = self.count > 0
        n = self.count.sum()
        gaps = np.abs(self.accuracy[full] - self.confidence[full])
        return float((self.count[full] / n * gaps).sum())

    @property
    def mce(self) -> float:
        """max over non-empty bins of |accuracy - confidence|."""
        full = self.count > 0
        return float(np.abs(self.accuracy[full] - self.confidence[full]).max())


def equal_mass_bins(probs, labels, n_bins: int = 15) -> BinnedCalibration:
    """Equal-mass reliability bins of N x C `probs` against N `labels`.

    Samples are sorted by confidence (stable) and the sample of rank r (0-based) goes to
    bin floor(r * n_bins / N), as in `adaptive_ece`, so the result's `ece` equals
    adaptive_ece. With N < n_bins some bins are empty (count 0, NaN statistics, a
    zero-width slot at the neighbour's edge).
    """
    n_bins = _check_n_bins(n_bins)
    p, y = _check_probs(probs, labels)
    conf_t, correct_t = _confidences(p, y)
    conf = conf_t.double().cpu().numpy()
    correct = correct_t.cpu().numpy()
    n = conf.shape[0]
    order = np.argsort(conf, kind="stable")
    conf, correct = conf[order], correct[order].astype(np.float64)
    bins = np.arange(n, dtype=np.int64) * n_bins // n
    count = np.bincount(bins, minlength=n_bins).astype(np.int64)
    sum_conf = np.bincount(bins, weights=conf, minlength=n_bins)
    sum_correct = np.bincount(bins, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, sum_correct / np.maximum(count, 1), np.nan)
    edges = np.empty(n_bins + 1)
    edges[0], edges[-1] = conf[0], conf[-1]
    starts = np.concatenate([[0], np.cumsum(count)])  # first rank of each bin
    for m in range(1, n_bins):
        # Halfway between the last sample before bin m and the first one from bin m on.
        lo = conf[starts[m] - 1] if starts[m] > 0 else conf[0]
        hi = conf[starts[m]] if starts[m] < n else conf[-1]
        edges[m] = 0.5 * (lo + hi)
    edges = np.maximum.accumulate(np.clip(edges, 0.0, 1.0))
    return BinnedCalibration(edges, mean_conf, acc, count, "equal_mass")


def binned_calibration(probs, labels, n_bins: int = 15,
                       binning: str = "equal_width") -> BinnedCalibration:
    """Reliability statistics of N x C `probs` against N `labels` with `n_bins` bins of
    `binning` ("equal_width": `reliability_bins`; "equal_mass": `equal_mass_bins`)."""
    if check_choice(binning, "binning", BINNINGS) == "equal_mass":
        return equal_mass_bins(probs, labels, n_bins)
    rb = reliability_bins(probs, labels, n_bins)
    return BinnedCalibration(rb.edges, rb.confidence, rb.accuracy, rb.count, binning)


def classwise_ece(probs, labels, n_bins: int = 15) -> float:
    """Class-wise ECE (Kull et al. 2019), a fraction in [0, 1].

    For each class k the column p[:, k] is binned with the equal-width rule and compared with
    the indicator [label == k]: ECE_k = sum_m |B_mk|/N * |mean(label == k) - mean(p_k)| over
    bin m; the result is the mean of ECE_k over the C classes.
    """
    n_bins = _check_n_bins(n_bins)
    p, y = _check_probs(probs, labels)
    n, n_classes = p.shape
    if n_classes * n_bins > _MAX_CLASS_BINS:
        raise ValueError(
            f"n_bins * n_classes must be <= {_MAX_CLASS_BINS} (class-wise sums), got "
            f"{n_bins} * {n_classes}; use n_bins <= {_MAX_CLASS_BINS // n_classes}"
        )
    acc = _accumulator_dtype(p.device)
    offsets = torch.arange(n_classes, device=p.device) * n_bins
    sum_p = torch.zeros(n_classes * n_bins, dtype=acc, device=p.device)
    sum_y = torch.zeros_like(sum_p)
    classes = torch.arange(n_classes, device=p.device)
    for rows in _chunk_rows(n, n_classes, p.device):
        pc = p[rows]
        flat = (_bin_index(pc, n_bins) + offsets).reshape(-1)
        sum_p.index_add_(0, flat, pc.reshape(-1).to(acc))
        sum_y.index_add_(0, flat, (y[rows, None] == classes).reshape(-1).to(acc))
    return float((sum_y - sum_p).abs().sum() / (n * n_classes))


def brier_score(probs, labels) -> float:
    """Multi-class Brier score: mean over samples of sum over classes of (p - onehot)^2.

    This is the original (Brier 1950) convention, in [0, 2]; some libraries divide by the
    number of classes as well, which this function does not.
    """
    p, y = _check_probs(probs, labels)
    acc = _accumulator_dtype(p.device)
    total = torch.zeros((), dtype=acc, device=p.device)
    for rows in _chunk_rows(p.shape[0], p.shape[1], p.device):
        d = p[rows].to(acc, copy=True)
        d[torch.arange(d.shape[0], device=d.device), y[rows]] -= 1.0
        total += (d * d).sum()
    return float(total / p.shape[0])


def nll(probs, labels) -> float:
    """Mean negative log-likelihood of the labels, in nats (natural log), >= 0.

    The probability of the true class is clamped below at the smallest positive normal
    number of the input's dtype (float32: 1.18e-38, so a zero probability costs 87.3 nats).
    """
    p, y = _check_probs(probs, labels)
    p_true = p.gather(1, y[:, None]).squeeze(1).clamp_min(torch.finfo(p.dtype).tiny)
    return float(-torch.log(p_true.to(_accumulator_dtype(p.device))).mean())


# --------------------------------------------------------------------------- temperature


def _inverse_temperatures(temps: list[float], dtype: torch.dtype, device: torch.device):
    """1/T per temperature, shape (K, 1, 1), rounded to `dtype`."""
    inv = torch.tensor([1.0 / t for t in temps], dtype=torch.float64, device=device)
    return inv.to(dtype).reshape(-1, 1, 1)


def tempered_softmax(logits, temperature) -> torch.Tensor:
    """softmax(logits / temperature) over the last dimension, as a float torch tensor.

    Same shape and device as `logits`; float32 unless the logits are float64; differentiable
    (the autograd graph is kept). The scaling is computed as logits * (1/T) so that
    ece_vs_temperature reproduces it bit for bit.
    """
    t = _check_temperature(temperature, "temperature")
    z = _check_logits(logits, matrix=False, detach=False, temperature=t)
    inv = _inverse_temperatures([t], z.dtype, z.device).reshape(())
    return torch.softmax(z * inv, dim=-1)


def ece_vs_temperature(logits, labels, temperatures, n_bins: int = 15) -> np.ndarray:
    """ECE of softmax(logits / T) for each T in `temperatures`: float64 array, shape (K,).

    All temperatures are processed together on row chunks of the N x C logits; equal to
    [ece(tempered_softmax(logits, T), labels, n_bins) for T in temperatures].
    """
    n_bins = _check_n_bins(n_bins)
    temps = _check_temperatures(temperatures)
    z, y = _check_logits(logits, labels, temperature=min(temps))
    n, n_classes = z.shape
    k = len(temps)
    acc = _accumulator_dtype(z.device)
    inv = _inverse_temperatures(temps, z.dtype, z.device)
    offsets = torch.arange(k, device=z.device)[:, None] * n_bins
    sum_gap = torch.zeros(k * n_bins, dtype=acc, device=z.device)
    for rows in _chunk_rows(n, k * n_classes, z.device):
        conf, pred = torch.max(torch.softmax(z[rows] * inv, dim=-1), dim=-1)  # (K, r)
        flat = (_bin_index(conf, n_bins) + offsets).reshape(-1)
        # |sum correct - sum conf| per bin needs both sums over all chunks: accumulate the
        # signed difference, which is additive over chunks.
        sum_gap.index_add_(0, flat, ((pred == y[rows]).to(acc) - conf.to(acc)).reshape(-1))
    return (sum_gap.abs().reshape(k, n_bins).sum(dim=1) / n).cpu().numpy()


def adaptive_ece_vs_temperature(logits, labels, temperatures,
                                n_bins: int = 15) -> np.ndarray:
    """Equal-mass ECE (`adaptive_ece`) of softmax(logits / T) for each T: float64 array,
    shape (K,)."""
    n_bins = _check_n_bins(n_bins)
    temps = _check_temperatures(temperatures)
    z, y = _check_logits(logits, labels, temperature=min(temps))
    return np.array([adaptive_ece(tempered_softmax(z, t), y, n_bins) for t in temps])


def nll_vs_temperature(logits, labels, temperatures) -> np.ndarray:
    """Mean NLL (nats) of softmax(logits / T) for each T: float64 array, shape (K,).

    Computed from log_softmax in float64 (no clamping needed), all temperatures together.
    """
    temps = _check_temperatures(temperatures)
    z, y = _check_logits(logits, labels, temperature=min(temps), in_accumulator=True)
    n, n_classes = z.shape
    acc = _accumulator_dtype(z.device)
    inv = _inverse_temperatures(temps, acc, z.device)
    total = torch.zeros(len(temps), dtype=acc, device=z.device)
    for rows in _chunk_rows(n, len(temps) * n_classes, z.device):
        logp = torch.log_softmax(z[rows].to(acc) * inv, dim=-1)  # (K, r, C)
        idx = y[rows].reshape(1, -1, 1).expand(len(temps), -1, 1)
        total -= logp.gather(2, idx).squeeze(2).sum(dim=1)
    return (total / n).cpu().numpy()


def _nll_slope_curvature(z: torch.Tensor, y: torch.Tensor, beta: float) -> tuple[float, float]:
    """First and second derivative in beta = 1/T of the mean NLL of softmax(beta * z).

    d/dbeta = mean(E_p[z] - z_y) and d2/dbeta2 = mean(Var_p[z]) >= 0 (the NLL is convex).
    """
    acc = _accumulator_dtype(z.device)
    slope = torch.zeros((), dtype=acc, device=z.device)
    curvature = torch.zeros((), dtype=acc, device=z.device)
    for rows in _chunk_rows(z.shape[0], z.shape[1], z.device):
        zc = z[rows].to(acc)
        p = torch.softmax(zc * beta, dim=-1)
        mean_z = (p * zc).sum(dim=1)
        slope += (mean_z - zc.gather(1, y[rows, None]).squeeze(1)).sum()
        curvature += (p * (zc - mean_z[:, None]) ** 2).sum()
    n = z.shape[0]
    return float(slope) / n, float(curvature) / n


def fit_temperature(logits, labels, *, t_min: float = _T_MIN, t_max: float = _T_MAX) -> float:
    """Temperature T in [t_min, t_max] minimizing the mean NLL of softmax(logits / T).

    Safeguarded Newton on beta = 1/T, where the NLL is convex: each step keeps a bracket
    [1/t_max, 1/t_min] on the root of dNLL/dbeta and falls back to geometric bisection when
    Newton would leave it. Returns t_max (t_min) when the NLL still falls at the bracket's
    end (e.g. t_min for separable data with all predictions right), and 1.0 when every row of
    logits is constant (the NLL does not depend on T). Always a finite float > 0.
    """
    t_min = _check_temperature(t_min, "t_min")
    t_max = _check_temperature(t_max, "t_max")
    if not t_min < t_max:
        raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")
    z, y = _check_logits(logits, labels, temperature=t_min, in_accumulator=True)
    # The Newton steps also square differences of logits in the accumulator dtype.
    max_abs, limit = float(z.abs().max()), torch.finfo(_accumulator_dtype(z.device)).max
    if 2 * max_abs > math.sqrt(limit):
        raise ValueError(
            f"logits too large to fit a temperature: max |logit| = {max_abs:.3g}, allowed "
            f"<= {math.sqrt(limit) / 2:.3g} (the NLL's curvature squares logit differences)"
        )
    if float((z.amax(dim=1) - z.amin(dim=1)).max()) == 0.0:
        return min(max(1.0, t_min), t_max)
    lo, hi = 1.0 / t_max, 1.0 / t_min
    if _nll_slope_curvature(z, y, lo)[0] >= 0:
        return t_max
    if _nll_slope_curvature(z, y, hi)[0] <= 0:
        return t_min
    beta = min(max(1.0, lo), hi)
    for _ in range(200):
        slope, curvature = _nll_slope_curvature(z, y, beta)
        if slope == 0:
            break
        if slope > 0:
            hi = beta
        else:
            lo = beta
        step = beta - slope / curvature if curvature > 0 else math.nan
        if not lo < step < hi:
            step = math.sqrt(lo * hi)
        done = abs(step - beta) <= 1e-12 * beta or hi - lo <= 1e-12 * hi
        beta = step
        if done:
            break
    return 1.0 / beta
