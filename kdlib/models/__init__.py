"""Model zoo: CIFAR ResNets, Wide ResNets, MobileNetV2 ("mobile_half") and MLPs.

    build_model("resnet56", num_classes=100)            # B x 3 x H x W -> B x 100
    build_model("wrn_40_2", 10, in_channels=1)          # 1-channel images (digits)
    build_model("mlp", 3, in_features=2, hidden=(64,))  # B x 2 -> B x 3

Every model returns logits from `model(x)` and `(logits, penultimate, stages)` from
`model(x, return_features=True)`; `model.feature_dim` is the width of `penultimate`. Image
models pool adaptively, so 8x8, 32x32 and 64x64 inputs all work. Forwards are safe under
`torch.vmap` over copies stacked with `torch.func.stack_module_state` (BatchNorm running
statistics update per copy when the buffers are stacked too).

Names are parsed in one place (`names.parse_model_name`); every size of every constructor
is bounded (`sizes`: e.g. ResNet depth <= 1202, WRN width <= 32, num_classes <= 100,000,
at most 500 M parameters), checked before anything is allocated.
"""

from __future__ import annotations

from torch import nn

from kdlib.published import load_published  # imports kdlib.models only when called

from .mlp import MLP
from .mobilenetv2 import MobileNetV2
from .names import ModelSpec, available_models, parse_model_name
from .resnet import CIFARResNet
from .sizes import check_in_channels
from .wrn import WideResNet

__all__ = [
    "CIFARResNet",
    "MLP",
    "MobileNetV2",
    "ModelSpec",
    "WideResNet",
    "available_models",
    "build_model",
    "count_parameters",
    "load_published",
    "parse_model_name",
]


def _no_kwargs(name: str, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"{name} takes no extra keyword arguments, got {sorted(kwargs)}")


def build_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a freshly initialised model by name (see `available_models()`).

    2 <= num_classes <= 100,000; 1 <= in_channels <= 1,024 (ignored by "mlp"). "mlp" needs
    in_features (int in [1, 1,000,000]) and accepts hidden (at most 100 ints in
    [1, 1,000,000], default (64, 64)); the other names take no keyword arguments. Raises
    ValueError for an unknown/invalid name, out-of-range numbers or a model of more than
    500 M parameters (all before allocating), TypeError for wrong types or missing/unexpected
    keyword arguments.
    """
    spec = parse_model_name(name)
    if spec.family == "mlp":
        unexpected = sorted(set(kwargs) - {"in_features", "hidden"})
        if unexpected:
            raise TypeError(f"mlp accepts in_features= and hidden= only, got {unexpected}")
        if "in_features" not in kwargs:
            raise TypeError("mlp requires in_features=<int >= 1> (the input vector length)")
        check_in_channels(in_channels)  # unused by an MLP, but still a sane value
        return MLP(kwargs["in_features"], num_classes, kwargs.get("hidden", (64, 64)))
    _no_kwargs(name, kwargs)
    if spec.family == "resnet":
        return CIFARResNet(spec.depth, num_classes, in_channels, spec.channels)
    if spec.family == "wrn":
        return WideResNet(spec.depth, spec.width, num_classes, in_channels)
    return MobileNetV2(num_classes, in_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter elements (requires_grad=True); buffers are not counted."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
