"""CIFAR ResNets of the KD literature (resnet8 ... resnet110, resnet8x4, resnet32x4).

Layout: 3x3 conv stem to c0 channels + BN + ReLU; three stages of
n = (depth - 2) / 6 basic blocks with strides 1, 2, 2 and widths c1, c2, c3; a 1x1 conv + BN
shortcut wherever a block changes shape; global average pool; linear head.

Every forward is written for `torch.vmap` over stacked copies (`torch.func.stack_module_state`):
no in-place activation ops, no `.item()`, no data-dependent Python branches.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .head import LogitsLinear
from .sizes import (
    MAX_CONV_CHANNELS,
    check_in_channels,
    check_num_classes,
    check_parameter_budget,
    check_resnet_depth,
    check_widths,
)

PLAIN_CHANNELS = (16, 16, 32, 64)
WIDE_CHANNELS = (32, 64, 128, 256)


def init_conv_bn_(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_out, ReLU gain) for every conv; BN weight 1, bias 0. Linear layers
    keep PyTorch's default init. Returns `model` (modified in place)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def check_image_input(x: torch.Tensor, in_channels: int, model_name: str) -> None:
    """Raise ValueError unless `x` is a B x in_channels x H x W tensor (shape check only)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model_name} input must be a torch tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"{model_name} expects input of shape B x {in_channels} x H x W, "
            f"got {tuple(x.shape)}"
        )


def resnet_parameter_count(
    depth: int, num_classes: int, in_channels: int, channels: tuple[int, int, int, int]
) -> int:
    """Trainable parameters of CIFARResNet(depth, num_classes, in_channels, channels),
    computed without building it (equals count_parameters of the built model)."""
    c0, c1, c2, c3 = channels
    total = 9 * in_channels * c0 + 2 * c0
    in_planes = c0
    for planes, stride in ((c1, 1), (c2, 2), (c3, 2)):
        for i in range((depth - 2) // 6):
            total += 9 * in_planes * planes + 9 * planes * planes + 4 * planes
            if (stride if i == 0 else 1) != 1 or in_planes != planes:
                total += in_planes * planes + 2 * planes
            in_planes = planes
    return total + c3 * num_classes + num_classes


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual add and a final ReLU.

    Input B x in_planes x H x W -> output B x planes x ceil(H/stride) x ceil(W/stride).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CIFARResNet(nn.Module):
    """CIFAR ResNet-`depth` with stage widths `channels` = (c0 stem, c1, c2, c3).

    forward(x): x is B x in_channels x H x W (any H, W >= 1; 8, 32 and 64 are tested) and the
    result is B x num_classes logits. With return_features=True the result is
    (logits, penultimate, stages): penultimate is the B x c3 globally pooled feature vector
    fed to the linear head, stages the three stage outputs after their final ReLU,
    B x c1 x H x W, B x c2 x H/2 x W/2, B x c3 x H/4 x W/4 (sizes rounded up).
    `feature_dim` = c3.
    """

    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        channels: tuple[int, int, int, int] = PLAIN_CHANNELS,
    ):
        super().__init__()
        depth = check_resnet_depth(depth)
        num_classes = check_num_classes(num_classes)
        in_channels = check_in_channels(in_channels)
        channels = check_widths(channels, "channels", MAX_CONV_CHANNELS)
        if len(channels) != 4:
            raise ValueError(f"channels must be 4 widths (stem, c1, c2, c3), got {channels}")
        check_parameter_budget(
            resnet_parameter_count(depth, num_classes, in_channels, channels), f"resnet{depth}"
        )
        blocks_per_stage = (depth - 2) // 6
        c0, c1, c2, c3 = channels
        self.depth = depth
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.feature_dim = c3
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, padding=1, bias=False),
            nn.BatchNorm2d(c0),
            nn.ReLU(),
        )
        stages = []
        in_planes = c0
        for planes, stride in ((c1, 1), (c2, 2), (c3, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.fc = LogitsLinear(c3, num_classes)
        init_conv_bn_(self)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        check_image_input(x, self.in_channels, f"resnet{self.depth}")
        out = self.stem(x)
        stage_outputs = []
        for stage in self.stages:
            out = stage(out)
            stage_outputs.append(out)
        penultimate = out.mean(dim=(2, 3))
        logits = self.fc(penultimate)
        if return_features:
            return logits, penultimate, tuple(stage_outputs)
        return logits
