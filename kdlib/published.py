"""Load the CIFAR-100 teachers the KD field shares (RepDistiller / mdistiller `cifar_teachers`).

    teacher = load_published("resnet32x4", "ckpt_epoch_240.pth")     # eval mode, on the CPU
    teacher.input_normalization            # PUBLISHED_CIFAR100: the constants it was trained with
    logits = predict_logits(teacher, teacher.input_normalization.on(cifar100))   # N x 100

Accepted files: a training checkpoint `{'epoch', 'model': state_dict, 'accuracy' or 'best_acc',
'optimizer'}` (also the `{'opt', 'model', 'optimizer'}` "last" form), a bare state_dict, and
either one with DataParallel `module.` prefixes. Files are read with `weights_only=True`; the
only non-tensor objects allowed are numpy number scalars (an `accuracy` saved as numpy) and
`argparse.Namespace` (the `opt` entry).

kdlib's CIFAR models hold the same tensors in the same order and shapes as theirs; only the
names differ (one rule-based function per family below). Every name `build_model` accepts for
`resnet{d}`, `resnet{d}x4`, `wrn_{d}_{k}` and `mobilenetv2` (their `MobileNetV2`/`mobile_half`)
is supported; anything else (VGG, ShuffleNet, their bottleneck `ResNet50`, MLPs) is refused.
Their networks average-pool with a fixed window (8 for ResNets/WRNs, 2 for MobileNetV2), which is
the global pool of kdlib's models for 32 x 32 inputs only: the logits agree on 32 x 32 images.

Normalization: the published teachers expect (x / 255 - CIFAR100_MEAN) / CIFAR100_STD with fixed
constants, not kdlib's train-split statistics. The returned model carries them as
`model.input_normalization` (a `Normalization`); `expected_normalization(model, data)` answers
for any model (the attribute if set, else the data set's own statistics).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from kdlib._validate import check_int

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "PUBLISHED_CIFAR100",
    "Normalization",
    "Renormalized",
    "renormalized",
    "expected_normalization",
    "identify_published",
    "load_published",
    "published_key",
    "to_published_state_dict",
]

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


@dataclass(frozen=True)
class Normalization:
    """Per-channel input normalization (x - mean) / std, in units of uint8 / 255.

    name: where the numbers come from ("published-cifar100", "train-split", ...).
    mean, std: one float per channel (std > 0), or both None for "inputs used as is".
    """

    name: str
    mean: tuple | None
    std: tuple | None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty string, got {self.name!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std must both be given or both be None")
        if self.mean is not None:
            mean = tuple(float(m) for m in self.mean)
            std = tuple(float(s) for s in self.std)
            if len(mean) != len(std) or not mean:
                raise ValueError(f"mean and std need one value per channel, got {len(mean)} "
                                 f"and {len(std)}")
            if not all(s > 0 for s in std):
                raise ValueError(f"std values must be > 0, got {std}")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize a float B x C x H x W batch in units of uint8 / 255 (C = len(mean))."""
        from kdlib.batches import normalize

        return normalize(x, self.mean, self.std)

    def on(self, dataset):
        """A copy of a `kdlib.data.Dataset` whose batches use this normalization (the tensors
        are shared, not copied): pass it to `predict_logits`, `distill`, ..."""
        from kdlib.data import Dataset

        if not isinstance(dataset, Dataset):
            raise TypeError(f"dataset must be a kdlib.data.Dataset, got {type(dataset).__name__}")
        return replace(dataset, mean=self.mean, std=self.std)


PUBLISHED_CIFAR100 = Normalization("published-cifar100", CIFAR100_MEAN, CIFAR100_STD)


def expected_normalization(model: nn.Module, dataset) -> Normalization:
    """The normalization `model` expects on `dataset`: `model.input_normalization` when set
    (published teachers), otherwise the data set's own train-split statistics (kdlib models)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    own = getattr(model, "input_normalization", None)
    if own is not None:
        if not isinstance(own, Normalization):
            raise TypeError(f"model.input_normalization must be a Normalization, got "
                            f"{type(own).__name__}")
        return own
    if not hasattr(dataset, "mean") or not hasattr(dataset, "std"):
        raise TypeError(f"dataset must be a kdlib.data.Dataset, got {type(dataset).__name__}")
    return Normalization("train-split", dataset.mean, dataset.std)


# --- key mapping: kdlib name -> their name, one rule-based function per family -------------

_STAGE = re.compile(r"stages\.(\d+)\.(\d+)\.(.+)")


def _resnet_key(key: str) -> str:
    """stem.0/1 -> conv1/bn1; stages.I.J.* -> layer{I+1}.J.* with shortcut -> downsample."""
    if key.startswith("stem.0."):
        return "conv1." + key[len("stem.0."):]
    if key.startswith("stem.1."):
        return "bn1." + key[len("stem.1."):]
    match = _STAGE.fullmatch(key)
    if match:
        stage, block, rest = match.groups()
        if rest.startswith("shortcut."):
            rest = "downsample." + rest[len("shortcut."):]
        return f"layer{int(stage) + 1}.{block}.{rest}"
    if key.startswith("fc."):
        return key
    raise ValueError(f"no published name for CIFARResNet key {key!r}")


def _wrn_key(key: str) -> str:
    """stem -> conv1; stages.I.J.* -> block{I+1}.layer.J.* with shortcut -> convShortcut;
    final_bn -> bn1."""
    if key.startswith("stem."):
        return "conv1." + key[len("stem."):]
    if key.startswith("final_bn."):
        return "bn1." + key[len("final_bn."):]
    match = _STAGE.fullmatch(key)
    if match:
        stage, block, rest = match.groups()
        if rest.startswith("shortcut."):
            rest = "convShortcut." + rest[len("shortcut."):]
        return f"block{int(stage) + 1}.layer.{block}.{rest}"
    if key.startswith("fc."):
        return key
    raise ValueError(f"no published name for WideResNet key {key!r}")


_MBV2_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.(expand|depthwise|project)\.(\d+)\.(.+)")
_MBV2_OFFSET = {"expand": 0, "depthwise": 3, "project": 6}  # index in their one `conv` Sequential


def _mobilenetv2_key(key: str) -> str:
    """stem -> conv1; blocks.I.J.{expand,depthwise,project}.K -> blocks.I.J.conv.{K, 3+K, 6+K};
    head_conv -> conv2; fc -> classifier.0."""
    if key.startswith("stem."):
        return "conv1." + key[len("stem."):]
    if key.startswith("head_conv."):
        return "conv2." + key[len("head_conv."):]
    if key.startswith("fc."):
        return "classifier.0." + key[len("fc."):]
    match = _MBV2_BLOCK.fullmatch(key)
    if match:
        group, block, part, index, rest = match.groups()
        return f"blocks.{group}.{block}.conv.{_MBV2_OFFSET[part] + int(index)}.{rest}"
    raise ValueError(f"no published name for MobileNetV2 key {key!r}")


_ALIASES = {"MobileNetV2": "mobilenetv2", "mobile_half": "mobilenetv2"}
_FAMILIES = (
    (re.compile(r"resnet[0-9]+(x4)?"), _resnet_key),
    (re.compile(r"wrn_[0-9]+_[0-9]+"), _wrn_key),
    (re.compile(r"mobilenetv2"), _mobilenetv2_key),
)
SUPPORTED = ("resnet{depth} (resnet8 ... resnet110), resnet{depth}x4 (resnet8x4, resnet32x4), "
             "wrn_{depth}_{width} (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2), "
             "mobilenetv2 (their MobileNetV2 / mobile_half)")


def _mapper(arch) -> tuple[str, callable]:
    """(kdlib name, key-mapping function) for a supported architecture name."""
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a string such as 'resnet32x4', got {type(arch).__name__}")
    name = _ALIASES.get(arch, arch)
    for pattern, mapper in _FAMILIES:
        if pattern.fullmatch(name):
            return name, mapper
    raise ValueError(f"no published layout for architecture {arch!r}; supported: {SUPPORTED}")


def published_key(arch: str, key: str) -> str:
    """The RepDistiller/mdistiller name of kdlib state_dict key `key` of architecture `arch`."""
    _, mapper = _mapper(arch)
    if not isinstance(key, str):
        raise TypeError(f"key must be a string, got {type(key).__name__}")
    return mapper(key)


def to_published_state_dict(arch: str, state_dict: Mapping) -> dict:
    """A kdlib `arch` state_dict renamed to the RepDistiller/mdistiller layout (same tensors,
    same order), e.g. to share a kdlib teacher with code of the field."""
    _, mapper = _mapper(arch)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    return {mapper(key): value for key, value in state_dict.items()}


# --- reading files -------------------------------------------------------------------------

def _numpy_scalar_globals() -> list:
    """What unpickling a numpy number scalar needs (both numpy 1.x and 2.x module names)."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"),
               (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for kind in ("Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32",
                     "UInt64", "Float16", "Float32", "Float64"):
            cls = getattr(dtypes, f"{kind}DType", None)
            if cls is not None:
                allowed.append(cls)
    return allowed


def _read(path: str):
    """torch.load with weights_only=True, numpy scalars and argparse.Namespace allowed."""
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals() + [argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # torch.load raises many types for a file that is not its own
        text = str(err)
        detail = re.search(r"WeightsUnpickler error:(.*?)(Please use|Check the documentation|$)",
                           text, re.S)
        detail = " ".join(detail.group(1).split()) if detail else text[:200]
        if "Unsupported global" in detail or "allowlisted" in detail:
            raise ValueError(
                f"{path}: refused by torch.load(weights_only=True): it holds objects other "
                f"than tensors, numbers, numpy scalars and argparse.Namespace ({detail})"
            ) from err
        raise ValueError(f"{path}: not a readable torch file ({type(err).__name__}: "
                         f"{detail})") from err


def _number(value):
    """A float from a number or one-element tensor/array; None otherwise."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    return None


def _unwrap(obj, path: str) -> tuple[dict, dict]:
    """(state_dict with any `module.` prefix removed, metadata) of a loaded file."""
    meta = {"form": "state_dict", "epoch": None, "accuracy": None, "module_prefix": False}
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state_dict or a dict with a 'model' entry, got "
                         f"{type(obj).__name__}")
    if isinstance(obj.get("model"), Mapping):
        meta["form"] = "checkpoint"
        epoch = _number(obj.get("epoch"))
        meta["epoch"] = None if epoch is None else int(epoch)
        meta["accuracy"] = _number(obj.get("accuracy", obj.get("best_acc")))
        obj = obj["model"]
    if not obj:
        raise ValueError(f"{path}: the state_dict is empty")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: expected a state_dict (names -> tensors) or a dict with a "
                         f"'model' entry; non-tensor entries: {_few(not_tensors)}")
    state = dict(obj)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        meta["module_prefix"] = True
    return state, meta


# --- recognizing what a file holds ---------------------------------------------------------

def _count(state: Mapping, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.fullmatch(k))})


def identify_published(state_dict: Mapping) -> tuple[str | None, int | None]:
    """(kdlib architecture name or None, number of classes or None) of a state_dict in the
    RepDistiller/mdistiller layout, read from its key names and shapes; `module.` prefixes
    are ignored. None where the layout is not one kdlib can load."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    state = {k[len("module."):] if k.startswith("module.") else k: v
             for k, v in state_dict.items() if isinstance(k, str)}

    def shape(key, dim):
        value = state.get(key)
        if isinstance(value, torch.Tensor) and value.dim() > dim:
            return int(value.shape[dim])
        return None

    if "layer1.0.conv1.weight" in state and "layer1.0.conv3.weight" not in state:
        n = _count(state, r"layer1\.(\d+)\.conv1\.weight")
        suffix = {16: "", 32: "x4"}.get(shape("conv1.weight", 0))
        arch = None if suffix is None else f"resnet{6 * n + 2}{suffix}"
        return arch, shape("fc.weight", 0)
    if "block1.layer.0.conv1.weight" in state:
        n = _count(state, r"block1\.layer\.(\d+)\.conv1\.weight")
        width = shape("fc.weight", 1)
        arch = f"wrn_{6 * n + 4}_{width // 64}" if width and width % 64 == 0 else None
        return arch, shape("fc.weight", 0)
    if "classifier.0.weight" in state and "blocks.0.0.conv.0.weight" in state:
        arch = "mobilenetv2" if shape("conv1.0.weight", 0) == 16 else None
        return arch, shape("classifier.0.weight", 0)
    return None, None


def _few(keys, limit: int = 5) -> str:
    keys = list(keys)
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _mismatch(path, arch, num_classes, state, missing, unexpected, shapes) -> ValueError:
    guess, classes = identify_published(state)
    if guess is not None:
        looks = f"it looks like a {guess} with {classes} classes"
    else:
        looks = "its keys match no layout kdlib can load"
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches ({_few(shapes)})")
    return ValueError(f"{path}: not a {arch} with {num_classes} classes in the "
                      f"RepDistiller/mdistiller layout ({looks}): {'; '.join(parts)}. "
                      f"Nothing was loaded.")


def load_published(arch: str, path, num_classes: int = 100) -> nn.Module:
    """A kdlib `arch` model holding the weights of a RepDistiller/mdistiller CIFAR file.

    arch: a kdlib name (see SUPPORTED; "MobileNetV2" and "mobile_half" mean "mobilenetv2").
    path: a checkpoint, a bare state_dict, either with `module.` prefixes (see module doc).
    num_classes: rows of the file's linear head (100 for the CIFAR-100 teachers).
    Every tensor of the model must be in the file with the same shape and the file must hold
    nothing else (BatchNorm `num_batches_tracked` counters, unused at eval time, may be absent
    and are then 0); otherwise ValueError naming the keys, and nothing is loaded.
    Returns the model in eval mode on the CPU, with `input_normalization` = PUBLISHED_CIFAR100
    and `published_meta` = {"arch", "path", "form", "epoch", "accuracy", "module_prefix"}
    (accuracy as stored in the file, in percent for RepDistiller/mdistiller; None if absent).
    """
    from kdlib.models import build_model

    name, mapper = _mapper(arch)
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no published checkpoint at {path!r}")
    model = build_model(name, num_classes)
    state, meta = _unwrap(_read(path), path)

    own = model.state_dict()
    theirs = {mapper(key): key for key in own}          # their name -> kdlib name
    if len(theirs) != len(own):
        raise RuntimeError(f"the {name} key mapping is not one-to-one")
    missing = [k for k in theirs if k not in state
               and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in theirs]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs {name} {tuple(own[theirs[k]].shape)}"
              for k in theirs if k in state and state[k].shape != own[theirs[k]].shape]
    if missing or unexpected or shapes:
        raise _mismatch(path, name, num_classes, state, missing, unexpected, shapes)

    mapped = {kd: state[k] if k in state else torch.zeros_like(own[kd])
              for k, kd in theirs.items()}
    model.load_state_dict(mapped, strict=True)
    model.eval()
    model.input_normalization = PUBLISHED_CIFAR100
    model.published_meta = {"arch": name, "path": path, **meta}
    return model


class Renormalized(nn.Module):
    """`model` fed batches normalized for another network: forward(x) with x normalized by
    `source` (e.g. a data set's train-split statistics) runs ``model`` on the same images
    normalized by `target` (the constants `model` was trained with):
    ``model((x * source.std + source.mean - target.mean) / target.std)``, per channel.

    Exact for every pixel, padding included (kdlib pads the raw image before normalizing).
    x: B x C x H x W float; returns the model's output unchanged.
    """

    def __init__(self, model: nn.Module, source: Normalization, target: Normalization):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        for label, norm in (("source", source), ("target", target)):
            if not isinstance(norm, Normalization) or norm.mean is None:
                raise TypeError(f"{label} must be a Normalization with mean and std, "
                                f"got {norm!r}")
        if len(source.mean) != len(target.mean):
            raise ValueError(f"source and target differ in channels: {len(source.mean)} vs "
                             f"{len(target.mean)}")
        self.model = model
        self.source, self.target = source, target
        s_std = torch.tensor(source.std, dtype=torch.float64)
        s_mean = torch.tensor(source.mean, dtype=torch.float64)
        t_std = torch.tensor(target.std, dtype=torch.float64)
        t_mean = torch.tensor(target.mean, dtype=torch.float64)
        # x' = x * scale + shift, both per channel (1 x C x 1 x 1)
        self.register_buffer("scale", (s_std / t_std).float().view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).float().view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, x, *args, **kwargs):
        return self.model(x * self.scale.to(x.dtype) + self.shift.to(x.dtype), *args, **kwargs)


def renormalized(model: nn.Module, dataset) -> nn.Module:
    """`model` ready for batches of `dataset` (normalized with its train-split statistics):
    wrapped in `Renormalized` when ``model.input_normalization`` differs from them (published
    teachers), else `model` itself."""
    expected = expected_normalization(model, dataset)
    if expected.mean is None or getattr(dataset, "mean", None) is None:
        return model
    source = Normalization("train-split", dataset.mean, dataset.std)
    if tuple(expected.mean) == tuple(source.mean) and tuple(expected.std) == tuple(source.std):
        return model
    return Renormalized(model, source, expected)
