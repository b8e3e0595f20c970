"""MobileNetV2 for CIFAR as used in the KD literature ("mobile_half" of RepDistiller).

Expansion t = 6 and width multiplier 0.5 by default. Layout: 3x3 conv stride 2 + BN + ReLU to
int(32 * w) channels; seven groups of inverted-residual blocks (t, c, n, s) =
(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1), (t, 160, 3, 2),
(t, 320, 1, 1) with c scaled to int(c * w); a 1x1 conv + BN + ReLU to 1280 channels (kept at
1280 for w <= 1); global average pool; linear head. Total stride 16, so 32x32 inputs end at 2x2.

Written for `torch.vmap` over stacked copies: no in-place ops, no `.item()`, no data-dependent
Python branches.
"""

from __future__ import annotations

import torch
from torch import nn

from .head import LogitsLinear
from .resnet import check_image_input, init_conv_bn_
from .sizes import (
    check_expansion,
    check_in_channels,
    check_num_classes,
    check_parameter_budget,
    check_width_mult,
)

# (expansion or None for "use the model's expansion", channels, blocks, first stride)
BLOCK_SETTINGS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Indices of the block groups after which a feature stage is read (stride 2, 4, 8, 16).
STAGE_ENDS = (1, 2, 4, 6)
LAST_CHANNELS = 1280


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to a multiple of `divisor`, never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _last_channels(width_mult: float) -> int:
    return _make_divisible(LAST_CHANNELS * width_mult) if width_mult > 1 else LAST_CHANNELS


def mobilenetv2_parameter_count(
    num_classes: int, in_channels: int, expansion: int = 6, width_mult: float = 0.5
) -> int:
    """Trainable parameters of MobileNetV2(num_classes, in_channels, expansion, width_mult),
    computed without building it (equals count_parameters of the built model)."""
    in_planes = int(32 * width_mult)
    total = 9 * in_channels * in_planes + 2 * in_planes
    for t, c, n, _ in BLOCK_SETTINGS:
        out_planes = int(c * width_mult)
        for _ in range(n):
            hidden = in_planes * (t or expansion)
            total += in_planes * hidden + 2 * hidden  # expand
            total += 9 * hidden + 2 * hidden  # depthwise
            total += hidden * out_planes + 2 * out_planes  # project
            in_planes = out_planes
    last = _last_channels(width_mult)
    return total + in_planes * last + 2 * last + last * num_classes + num_classes


class InvertedResidual(nn.Module):
    """1x1 expand conv-BN-ReLU, 3x3 depthwise conv-BN-ReLU, 1x1 linear projection conv-BN;
    identity residual when stride is 1 and channels are unchanged.

    Input B x in_planes x H x W -> B x out_planes x ceil(H/stride) x ceil(W/stride).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_planes * expansion
        self.use_residual = stride == 1 and in_planes == out_planes
        self.expand = nn.Sequential(
            nn.Conv2d(in_planes, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
        )
        self.project = nn.Sequential(
            nn.Conv2d(hidden, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if self.use_residual:
            return out + x
        return out


class MobileNetV2(nn.Module):
    """MobileNetV2 (CIFAR variant), expansion 6 and width multiplier 0.5 by default.

    forward(x): x is B x in_channels x H x W, result B x num_classes logits. With
    return_features=True: (logits, penultimate, stages). penultimate is the B x 1280 pooled
    output of the final 1x1 conv + BN + ReLU; stages are the outputs of block groups 2, 3, 5
    and 7 (total strides 2, 4, 8, 16; with w = 0.5: 12, 16, 48 and 160 channels).
    `feature_dim` = 1280.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        expansion: int = 6,
        width_mult: float = 0.5,
    ):
        super().__init__()
        num_classes = check_num_classes(num_classes)
        in_channels = check_in_channels(in_channels)
        expansion = check_expansion(expansion)
        width_mult = check_width_mult(width_mult)
        check_parameter_budget(
            mobilenetv2_parameter_count(num_classes, in_channels, expansion, width_mult),
            "mobilenetv2",
        )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.expansion = expansion
        self.width_mult = width_mult
        in_planes = int(32 * width_mult)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, in_planes, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(in_planes),
            nn.ReLU(),
        )
        groups = []
        for t, c, n, s in BLOCK_SETTINGS:
            out_planes = int(c * width_mult)
            blocks = []
            for i in range(n):
                blocks.append(
                    InvertedResidual(in_planes, out_planes, s if i == 0 else 1, t or expansion)
                )
                in_planes = out_planes
            groups.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(groups)
        last = _last_channels(width_mult)
        self.feature_dim = last
        self.head_conv = nn.Sequential(
            nn.Conv2d(in_planes, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU()
        )
        self.fc = LogitsLinear(last, num_classes)
        init_conv_bn_(self)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        check_image_input(x, self.in_channels, "mobilenetv2")
        out = self.stem(x)
        stage_outputs = []
        for index, group in enumerate(self.blocks):
            out = group(out)
            if index in STAGE_ENDS:
                stage_outputs.append(out)
        penultimate = self.head_conv(out).mean(dim=(2, 3))
        logits = self.fc(penultimate)
        if return_features:
            return logits, penultimate, tuple(stage_outputs)
        return logits
