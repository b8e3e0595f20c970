"""On-device batching: the whole data set lives on the device, batches are index slices, and
augmentation (random crop with zero padding, horizontal flip) runs on the whole batch at once.

Pipeline of a training batch: gather by a permutation index -> float (uint8 / 255) ->
random crop from the image zero-padded by `pad` pixels (the padding is black, as in the KD
literature's RandomCrop(32, padding=4), i.e. applied BEFORE normalization) -> horizontal flip ->
per-channel normalization (x - mean) / std. All random draws come from a CPU torch.Generator,
so the batches are the same on every device for the same seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F

from kdlib._validate import check_finite_tensor, check_int

__all__ = ["Batch", "DeviceData", "EpochPlan", "to_float", "normalize", "crop_flip",
           "augment_batch"]


class Batch(NamedTuple):
    """x: B x ... float32 network input; y: B int64 labels; idx: B int64 sample indices into the
    split (train indices for training batches, so `train_posterior[idx]` lines up)."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor


def _check_tensor(x, name: str, dims: tuple | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if dims is not None and x.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape "
                         f"{tuple(x.shape)}")
    return x


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator (so batches are identical on "
                         f"every device), got one on {generator.device}")
    return generator


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (x / 255); float32/float64 tensors unchanged,
    other float types -> float32. (float64 data trains float64 models, e.g. in exactness tests.)"""
    _check_tensor(x, "x")
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"x must be uint8 or floating point, got {x.dtype}")
    return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel (dim 1) of a float B x C x ... tensor; mean/std are
    sequences (or tensors) of C values, std > 0. mean=std=None returns x unchanged."""
    _check_tensor(x, "x")
    if mean is None and std is None:
        return x
    if mean is None or std is None:
        raise ValueError("mean and std must both be given or both be None")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point (convert uint8 with to_float), got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must be B x C x ..., got shape {tuple(x.shape)}")
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1)
    if len(mean_t) != x.shape[1] or len(std_t) != x.shape[1]:
        raise ValueError(f"mean and std need one value per channel ({x.shape[1]}), got "
                         f"{len(mean_t)} and {len(std_t)}")
    if not bool((std_t > 0).all()):
        raise ValueError(f"std values must be > 0, got {std_t.tolist()}")
    return (x - mean_t.reshape(shape)) / std_t.reshape(shape)


def crop_flip(x: torch.Tensor, pad: int, offsets: torch.Tensor,
              flips: torch.Tensor | None = None) -> torch.Tensor:
    """Deterministic crop + flip of a B x C x H x W batch.

    Sample b is zero-padded by `pad` pixels on every side and the H x W window whose top-left
    corner sits at (offsets[b, 0], offsets[b, 1]) in the padded image is cut out
    (offset (pad, pad) returns the image itself); where flips[b] is True the crop is then
    mirrored along the width. offsets: B x 2 integers in [0, 2 * pad]; flips: B bools or None.
    """
    _check_tensor(x, "x", dims=(4,))
    pad = check_int(pad, "pad", minimum=0)
    _check_tensor(offsets, "offsets")
    b, c, h, w = x.shape
    if tuple(offsets.shape) != (b, 2) or offsets.is_floating_point():
        raise ValueError(f"offsets must be a {b} x 2 integer tensor, got {offsets.dtype} "
                         f"{tuple(offsets.shape)}")
    if len(offsets) and (int(offsets.min()) < 0 or int(offsets.max()) > 2 * pad):
        raise ValueError(f"offsets must lie in [0, {2 * pad}] for pad={pad}, got "
                         f"[{int(offsets.min())}, {int(offsets.max())}]")
    if flips is not None:
        _check_tensor(flips, "flips")
        if tuple(flips.shape) != (b,):
            raise ValueError(f"flips must have shape ({b},), got {tuple(flips.shape)}")
    offsets = offsets.to(device=x.device, dtype=torch.long)
    return _crop_flip(x, pad, offsets, None if flips is None else flips.to(x.device, torch.bool))


def _crop_flip(x: torch.Tensor, pad: int, offsets: torch.Tensor,
               flips: torch.Tensor | None) -> torch.Tensor:
    """crop_flip without checks: offsets (long) and flips (bool) already on x's device."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # B x H
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # B x W
    if flips is not None:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    width = padded.shape[3]
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, width))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def augment_batch(x: torch.Tensor, pad: int, flip: bool,
                  generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding of `pad` pixels, every offset in [0, 2 * pad] equally likely)
    and, if `flip`, a horizontal flip with probability 1/2, for a float B x C x H x W batch.
    The draws come from the CPU `generator`: first the B x 2 offsets, then the B flip bits."""
    _check_tensor(x, "x", dims=(4,))
    pad = check_int(pad, "pad", minimum=0)
    if not isinstance(flip, bool):
        raise TypeError(f"flip must be True or False, got {flip!r}")
    _check_generator(generator)
    b = len(x)
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    flips = torch.randint(0, 2, (b,), generator=generator).bool() if flip else None
    if pad == 0 and flips is None:
        return x
    return crop_flip(x, pad, offsets, flips)


def _check_values(dataset) -> None:
    """Refuse NaN/inf inputs or posteriors and labels outside [0, num_classes), once, before
    anything trains on them (a NaN input would otherwise surface only as NaN metrics)."""
    num_classes = getattr(dataset, "num_classes", None)
    for split in ("train", "test"):
        check_finite_tensor(getattr(dataset, f"{split}_x"), f"data.{split}_x")
        post = getattr(dataset, f"{split}_posterior", None)
        if post is not None:
            check_finite_tensor(post, f"data.{split}_posterior")
        y = getattr(dataset, f"{split}_y")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise TypeError(f"data.{split}_y must hold integer class indices, got {y.dtype}")
        if num_classes is not None and len(y):
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(f"data.{split}_y must lie in [0, {num_classes}), got "
                                 f"[{lo}, {hi}]")


def _in_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """x in channels_last memory format when asked and x is a 4-D image batch."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 \
        else x


class EpochPlan:
    """One epoch of training batches whose random draws are already on the device
    (`DeviceData.epoch_plan`). len(plan) batches; plan[i] or iteration -> Batch."""

    def __init__(self, data, perm, bounds, pad, offsets, flips, channels_last):
        self.data, self.perm, self.bounds = data, perm, bounds
        self.pad, self.offsets, self.flips = pad, offsets, flips
        self.channels_last = channels_last

    def __len__(self) -> int:
        return len(self.bounds)

    def __getitem__(self, i: int) -> Batch:
        a, b = self.bounds[i]
        d = self.data
        idx = self.perm[a:b]
        x = to_float(d.train_x.index_select(0, idx))
        if self.offsets is not None:
            flips = None if self.flips is None else self.flips[a:b]
            x = _crop_flip(x, self.pad, self.offsets[a:b], flips)
        x = _in_format(d._normalize(x), self.channels_last)
        return Batch(x, d.train_y.index_select(0, idx), idx)

    def __iter__(self) -> Iterator[Batch]:
        return (self[i] for i in range(len(self)))


class DeviceData:
    """A `kdlib.data.Dataset` moved to `device` once; yields normalized batches from there.

    Attributes: train_x, train_y, test_x, test_y, train_posterior, test_posterior (tensors on
    the device, images kept uint8 until batched), dataset, device. The constructor refuses
    NaN/inf inputs or posteriors and out-of-range labels (one scan, at construction).
    """

    def __init__(self, dataset, device="cpu"):
        for attr in ("train_x", "train_y", "test_x", "test_y", "mean", "std", "augment"):
            if not hasattr(dataset, attr):
                raise TypeError(f"dataset must be a kdlib.data.Dataset, got "
                                f"{type(dataset).__name__} without {attr!r}")
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"device must be a string like 'cpu'/'cuda' or a torch.device, got "
                            f"{type(device).__name__}")
        try:
            self.device = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"unknown device {device!r}; use e.g. 'cpu' or 'cuda:0'") from err
        _check_values(dataset)
        self.dataset = dataset
        self.train_x = dataset.train_x.to(self.device)
        self.train_y = dataset.train_y.to(self.device)
        self.test_x = dataset.test_x.to(self.device)
        self.test_y = dataset.test_y.to(self.device)
        post = dataset.train_posterior, dataset.test_posterior
        self.train_posterior = None if post[0] is None else post[0].to(self.device)
        self.test_posterior = None if post[1] is None else post[1].to(self.device)
        self._mean = None if dataset.mean is None else torch.tensor(
            dataset.mean, dtype=torch.float32, device=self.device)
        self._std = None if dataset.std is None else torch.tensor(
            dataset.std, dtype=torch.float32, device=self.device)
        if (self._mean is None) != (self._std is None):
            raise ValueError("dataset mean and std must both be given or both be None")
        if self._std is not None:
            if self._mean.shape != self._std.shape:
                raise ValueError(f"dataset mean and std need one value per channel each, got "
                                 f"{len(self._mean)} and {len(self._std)}")
            std = dataset.std if isinstance(dataset.std, (list, tuple)) else list(
                torch.as_tensor(dataset.std).reshape(-1).tolist())
            if not all(float(v) > 0 for v in std):
                raise ValueError(f"dataset std values must be > 0, got {list(std)}")
            if self.train_x.dim() < 2 or len(self._mean) != self.train_x.shape[1]:
                raise ValueError(f"dataset mean and std need one value per channel "
                                 f"({tuple(self.train_x.shape[1:2])}), got {len(self._mean)}")
        self._norm: dict = {}  # dtype -> (mean, std) shaped for broadcasting

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    @property
    def num_test(self) -> int:
        return len(self.test_y)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train_x.shape[1:])

    def steps_per_epoch(self, batch_size: int, drop_last: bool = False,
                        drop_single: bool = False) -> int:
        """Number of training batches per epoch (see `train_batches` for the flags)."""
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if drop_last:
            return self.num_train // batch_size
        if drop_single and batch_size > 1 and self.num_train % batch_size == 1:
            return self.num_train // batch_size
        return -(-self.num_train // batch_size)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """normalize() with the dataset's mean/std, checked once at construction (no
        per-batch value scan): the same values as normalize(x, mean, std)."""
        if self._mean is None:
            return x
        key = x.dtype
        if key not in self._norm:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            self._norm[key] = (self._mean.to(x.dtype).reshape(shape),
                               self._std.to(x.dtype).reshape(shape))
        mean, std = self._norm[key]
        return (x - mean) / std

    def train_batches(self, batch_size: int, generator: torch.Generator, augment: bool = True,
                      drop_last: bool = False, drop_single: bool = False) -> Iterator[Batch]:
        """One epoch of shuffled training batches (a permutation drawn from the CPU
        `generator`). Augmented when `augment` and the dataset's `augment` are both True.

        drop_last: drop any final batch shorter than batch_size. drop_single: drop the final
        batch only when it holds a single sample (BatchNorm cannot train on one sample: its
        batch variance is 0, and with a 1 x 1 feature map torch refuses it); that sample is
        simply not seen this epoch (the next epoch draws a new permutation). The engine sets
        it for models with BatchNorm layers. Nothing is drawn from `generator` for a dropped
        batch, so runs stay deterministic and resumable. All of the epoch's random draws
        are made at the first batch (`epoch_plan`).
        """
        plan = self.epoch_plan(batch_size, generator, augment, drop_last, drop_single)
        return iter(plan)

    def epoch_plan(self, batch_size: int, generator: torch.Generator, augment: bool = True,
                   drop_last: bool = False, drop_single: bool = False,
                   channels_last: bool = False) -> EpochPlan:
        """One epoch's batches with every random draw made now: the permutation, then per
        batch its B x 2 crop offsets and B flip bits, from the CPU `generator` in the order
        train_batches has always drawn them (so the batches are identical), uploaded to
        the device in one copy each. Iterating the plan then makes no host-device copy
        and no value check (mean/std were checked at construction). channels_last: 4-D
        batches in that memory format (for CUDA convolutions)."""
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        _check_generator(generator)
        for value, label in ((augment, "augment"), (drop_last, "drop_last"),
                             (drop_single, "drop_single"), (channels_last, "channels_last")):
            if not isinstance(value, bool):
                raise TypeError(f"{label} must be True or False, got {value!r}")
        augment = augment and bool(self.dataset.augment)
        n = self.num_train
        perm = torch.randperm(n, generator=generator)
        stop = min(self.steps_per_epoch(batch_size, drop_last, drop_single) * batch_size, n)
        bounds = [(a, min(a + batch_size, stop)) for a in range(0, stop, batch_size)]
        offsets = flips = None
        pad = 0
        if augment:
            pad = check_int(self.dataset.pad, "dataset.pad", minimum=0)
            flip = bool(self.dataset.flip)
            offs, bits = [], []
            for a, b in bounds:
                offs.append(torch.randint(0, 2 * pad + 1, (b - a, 2), generator=generator))
                if flip:
                    bits.append(torch.randint(0, 2, (b - a,), generator=generator).bool())
            offsets = torch.cat(offs) if offs else torch.zeros(0, 2, dtype=torch.long)
            flips = torch.cat(bits) if flip and bits else None
            if pad == 0 and flips is None:
                offsets = None  # augment_batch returns such a batch unchanged
            else:
                offsets = self._upload(offsets)
                flips = None if flips is None else self._upload(flips)
        return EpochPlan(self, self._upload(perm), bounds, pad, offsets, flips, channels_last)

    def _upload(self, t: torch.Tensor) -> torch.Tensor:
        """A CPU tensor on the device; to CUDA from pinned memory without blocking the host
        (the caching host allocator keeps the pinned copy alive until the copy is done)."""
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def test_batches(self, batch_size: int, channels_last: bool = False) -> Iterator[Batch]:
        """The test split in order, normalized, never augmented. channels_last: 4-D images
        in channels_last memory format (as the training batches of epoch_plan)."""
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if not isinstance(channels_last, bool):
            raise TypeError(f"channels_last must be True or False, got {channels_last!r}")
        return self._test_epoch(batch_size, channels_last)

    def _test_epoch(self, batch_size, channels_last):
        for start in range(0, self.num_test, batch_size):
            stop = min(start + batch_size, self.num_test)
            idx = torch.arange(start, stop, device=self.device)
            x = _in_format(self._normalize(to_float(self.test_x[start:stop])), channels_last)
            yield Batch(x, self.test_y[start:stop], idx)

    def __repr__(self) -> str:
        return (f"DeviceData({self.dataset.name!r}, device={self.device}, "
                f"train={self.num_train}, test={self.num_test})")
