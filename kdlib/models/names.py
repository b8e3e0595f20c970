"""The one parser of architecture names: "resnet20" -> ModelSpec("resnet", depth=20, ...).

Depths and widths in a name are checked with the same bounds as the constructors
(`kdlib.models.sizes`), before anything is built; a bad name raises ValueError naming it,
saying why, and listing the valid names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .resnet import PLAIN_CHANNELS, WIDE_CHANNELS
from .sizes import (
    RESNET_MAX_DEPTH,
    WRN_MAX_DEPTH,
    WRN_MAX_WIDTH,
    check_resnet_depth,
    check_wrn_depth,
    check_wrn_width,
)

_RESNET = re.compile(r"resnet([1-9][0-9]*)(x4)?")
_WRN = re.compile(r"wrn_([1-9][0-9]*)_([1-9][0-9]*)")
# A longer number is out of range anyway; refusing it before int() also avoids int()'s own
# error for strings of more than 4300 digits.
_MAX_DIGITS = 7


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: family ("resnet", "wrn", "mobilenetv2", "mlp") and its sizes."""

    family: str
    depth: int | None = None
    width: int | None = None
    channels: tuple[int, int, int, int] | None = None


def available_models() -> list[str]:
    """Describe the valid `build_model` names, one family (or pattern) per string."""
    return [
        f"resnet{{depth}}: CIFAR ResNet, 8 <= depth <= {RESNET_MAX_DEPTH} with "
        "(depth - 2) % 6 == 0, channels 16/16/32/64 (resnet8, resnet14, resnet20, resnet32, "
        "resnet44, resnet56, resnet110)",
        "resnet{depth}x4: same depths, channels 32/64/128/256 (resnet8x4, resnet32x4)",
        f"wrn_{{depth}}_{{width}}: Wide ResNet, 10 <= depth <= {WRN_MAX_DEPTH} with "
        f"(depth - 4) % 6 == 0, 1 <= width <= {WRN_MAX_WIDTH} (e.g. wrn_16_1, wrn_28_2, "
        "wrn_40_2)",
        "mobilenetv2: CIFAR MobileNetV2 'mobile_half' (expansion 6, width multiplier 0.5)",
        "mlp: vector-input MLP; requires in_features=<int>, optional hidden=(64, 64)",
    ]


def _invalid(name: str, why: str) -> ValueError:
    listing = "\n  ".join(available_models())
    return ValueError(f"unknown or invalid model name {name!r} ({why}); valid names:\n  {listing}")


def _number(name: str, digits: str, what: str, check, maximum: int) -> int:
    if len(digits) > _MAX_DIGITS:
        shown = digits if len(digits) <= 20 else f"{digits[:20]}... ({len(digits)} digits)"
        raise _invalid(name, f"{what} must be <= {maximum}, got {shown}")
    try:
        return check(int(digits), what)
    except ValueError as err:
        raise _invalid(name, str(err)) from None


def parse_model_name(name) -> ModelSpec:
    """Parse and check a `build_model` name; TypeError if not a string, ValueError if invalid."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string such as 'resnet20', got {type(name).__name__}")
    if len(name) > 64:
        raise _invalid(name[:64] + "...", f"{len(name)} characters long")
    match = _RESNET.fullmatch(name)
    if match:
        depth = _number(name, match.group(1), "ResNet depth", check_resnet_depth,
                        RESNET_MAX_DEPTH)
        channels = WIDE_CHANNELS if match.group(2) else PLAIN_CHANNELS
        return ModelSpec("resnet", depth=depth, channels=channels)
    match = _WRN.fullmatch(name)
    if match:
        depth = _number(name, match.group(1), "WRN depth", check_wrn_depth, WRN_MAX_DEPTH)
        width = _number(name, match.group(2), "WRN width", check_wrn_width, WRN_MAX_WIDTH)
        return ModelSpec("wrn", depth=depth, width=width)
    if name in ("mobilenetv2", "mlp"):
        return ModelSpec(name)
    raise _invalid(name, "no such model")
