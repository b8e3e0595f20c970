"""Wide ResNets WRN-depth-width (Zagoruyko & Komodakis), CIFAR layout of the KD literature.

n = (depth - 4) / 6 pre-activation blocks per stage, channels 16 (stem), 16k, 32k, 64k,
strides 1, 2, 2, a 1x1 conv shortcut (no BN) where a block changes shape, final BN + ReLU,
global average pool, linear head. No dropout.

Written for `torch.vmap` over stacked copies: no in-place ops, no `.item()`, no data-dependent
Python branches.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .head import LogitsLinear
from .resnet import check_image_input, init_conv_bn_
from .sizes import (
    check_in_channels,
    check_num_classes,
    check_parameter_budget,
    check_wrn_depth,
    check_wrn_width,
)


def wrn_parameter_count(depth: int, width: int, num_classes: int, in_channels: int) -> int:
    """Trainable parameters of WideResNet(depth, width, num_classes, in_channels), computed
    without building it (equals count_parameters of the built model)."""
    total = 9 * in_channels * 16
    in_planes = 16
    for planes, stride in zip((16 * width, 32 * width, 64 * width), (1, 2, 2), strict=True):
        for i in range((depth - 4) // 6):
            total += 2 * in_planes + 9 * in_planes * planes + 2 * planes + 9 * planes * planes
            if (stride if i == 0 else 1) != 1 or in_planes != planes:
                total += in_planes * planes
            in_planes = planes
    return total + 2 * in_planes + in_planes * num_classes + num_classes


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut.

    When the shape changes, the shortcut is a 1x1 conv applied to the activated input
    relu(bn1(x)) (as in the original WRN code); otherwise it is the raw input x.
    Input B x in_planes x H x W -> B x out_planes x ceil(H/stride) x ceil(W/stride).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.has_conv_shortcut = stride != 1 or in_planes != out_planes
        if self.has_conv_shortcut:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(F.relu(self.bn2(out)))
        residual = self.shortcut(activated) if self.has_conv_shortcut else x
        return out + residual


class WideResNet(nn.Module):
    """WRN-`depth`-`width`.

    forward(x): x is B x in_channels x H x W, result B x num_classes logits. With
    return_features=True: (logits, penultimate, stages). penultimate is the B x 64k pooled
    vector after the final BN + ReLU (the head's input). stages are the three stage outputs
    taken on the residual stream, i.e. PRE-activation (before any BN/ReLU, as every block of a
    pre-activation network emits them): B x 16k x H x W, B x 32k x H/2 x W/2,
    B x 64k x H/4 x W/4. So penultimate == relu(final_bn(stages[-1])).mean((2, 3)).
    `feature_dim` = 64k.
    """

    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        depth = check_wrn_depth(depth)
        width = check_wrn_width(width)
        num_classes = check_num_classes(num_classes)
        in_channels = check_in_channels(in_channels)
        check_parameter_budget(
            wrn_parameter_count(depth, width, num_classes, in_channels), f"wrn_{depth}_{width}"
        )
        blocks_per_stage = (depth - 4) // 6
        self.depth = depth
        self.width = width
        self.in_channels = in_channels
        self.num_classes = num_classes
        widths = (16 * width, 32 * width, 64 * width)
        self.feature_dim = widths[-1]
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages = []
        in_planes = 16
        for planes, stride in zip(widths, (1, 2, 2), strict=True):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(PreActBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.final_bn = nn.BatchNorm2d(widths[-1])
        self.fc = LogitsLinear(widths[-1], num_classes)
        init_conv_bn_(self)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        check_image_input(x, self.in_channels, f"wrn_{self.depth}_{self.width}")
        out = self.stem(x)
        stage_outputs = []
        for stage in self.stages:
            out = stage(out)
            stage_outputs.append(out)
        penultimate = F.relu(self.final_bn(out)).mean(dim=(2, 3))
        logits = self.fc(penultimate)
        if return_features:
            return logits, penultimate, tuple(stage_outputs)
        return logits
