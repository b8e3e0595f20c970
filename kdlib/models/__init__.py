"""Model zoo: CIFAR ResNets, Wide ResNets, MobileNetV2 ("mobile_half") and MLPs.

    build_model("resnet56", num_classes=100)            # B x 3 x H x W -> B x 100
    build_model("wrn_40_2", 10, in_channels=1)          # 1-channel images (digits)
    build_model("mlp", 3, in_features=2, hidden=(64,))  # B x 2 -> B x 3

Every model returns logits from `model(x)` and `(logits, penultimate, stages)` from
`model(x, return_features=True)`; `model.feature_dim` is the width of `penultimate`. Image
models pool adaptively, so 8x8, 32x32 and 64x64 inputs all work. Forwards are safe under
`torch.vmap` over copies stacked with `torch.func.stack_module_state` (BatchNorm running
statistics update per copy when the buffers are stacked too).
"""

from __future__ import annotations

import re

from torch import nn

from .._validate import check_int
from .mlp import MLP
from .mobilenetv2 import MobileNetV2
from .resnet import PLAIN_CHANNELS, WIDE_CHANNELS, CIFARResNet
from .wrn import WideResNet

__all__ = [
    "CIFARResNet",
    "MLP",
    "MobileNetV2",
    "WideResNet",
    "available_models",
    "build_model",
    "count_parameters",
]

_RESNET = re.compile(r"resnet([1-9][0-9]*)(x4)?")
_WRN = re.compile(r"wrn_([1-9][0-9]*)_([1-9][0-9]*)")


def available_models() -> list[str]:
    """Describe the valid `build_model` names, one family (or pattern) per string."""
    return [
        "resnet{depth}: CIFAR ResNet, depth >= 8 with (depth - 2) % 6 == 0, channels "
        "16/16/32/64 (resnet8, resnet14, resnet20, resnet32, resnet44, resnet56, resnet110)",
        "resnet{depth}x4: same depths, channels 32/64/128/256 (resnet8x4, resnet32x4)",
        "wrn_{depth}_{width}: Wide ResNet, depth >= 10 with (depth - 4) % 6 == 0, width >= 1 "
        "(e.g. wrn_16_1, wrn_28_2, wrn_40_2)",
        "mobilenetv2: CIFAR MobileNetV2 'mobile_half' (expansion 6, width multiplier 0.5)",
        "mlp: vector-input MLP; requires in_features=<int>, optional hidden=(64, 64)",
    ]


def _invalid(name: str, why: str) -> ValueError:
    listing = "\n  ".join(available_models())
    return ValueError(f"unknown or invalid model name {name!r} ({why}); valid names:\n  {listing}")


def _no_kwargs(name: str, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"{name} takes no extra keyword arguments, got {sorted(kwargs)}")


def build_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a freshly initialised model by name (see `available_models()`).

    num_classes >= 2; in_channels >= 1 (ignored by "mlp"). "mlp" needs in_features (int >= 1)
    and accepts hidden (a sequence of ints >= 1, default (64, 64)); the other names take no
    keyword arguments. Raises ValueError for an unknown/invalid name or out-of-range numbers,
    TypeError for wrong types or missing/unexpected keyword arguments.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string such as 'resnet20', got {type(name).__name__}")
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    in_channels = check_int(in_channels, "in_channels", minimum=1)

    match = _RESNET.fullmatch(name)
    if match:
        depth = int(match.group(1))
        if depth < 8 or (depth - 2) % 6 != 0:
            raise _invalid(
                name, f"ResNet depth {depth} does not satisfy depth >= 8, (depth - 2) % 6 == 0"
            )
        _no_kwargs(name, kwargs)
        channels = WIDE_CHANNELS if match.group(2) else PLAIN_CHANNELS
        return CIFARResNet(depth, num_classes, in_channels, channels)

    match = _WRN.fullmatch(name)
    if match:
        depth, width = int(match.group(1)), int(match.group(2))
        if depth < 10 or (depth - 4) % 6 != 0:
            raise _invalid(
                name, f"WRN depth {depth} does not satisfy depth >= 10, (depth - 4) % 6 == 0"
            )
        _no_kwargs(name, kwargs)
        return WideResNet(depth, width, num_classes, in_channels)

    if name == "mobilenetv2":
        _no_kwargs(name, kwargs)
        return MobileNetV2(num_classes, in_channels)

    if name == "mlp":
        unexpected = sorted(set(kwargs) - {"in_features", "hidden"})
        if unexpected:
            raise TypeError(f"mlp accepts in_features= and hidden= only, got {unexpected}")
        if "in_features" not in kwargs:
            raise TypeError("mlp requires in_features=<int >= 1> (the input vector length)")
        in_features = check_int(kwargs["in_features"], "in_features", minimum=1)
        hidden = kwargs.get("hidden", (64, 64))
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden must be a sequence of ints >= 1, got {hidden!r}")
        hidden = tuple(check_int(h, f"hidden[{i}]", minimum=1) for i, h in enumerate(hidden))
        return MLP(in_features, num_classes, hidden)

    raise _invalid(name, "no such model")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter elements (requires_grad=True); buffers are not counted."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
