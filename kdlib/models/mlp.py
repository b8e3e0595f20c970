"""Multilayer perceptron for vector inputs (the GMM toy task and similar)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .._validate import check_int
from .head import LogitsLinear
from .sizes import (
    MAX_FEATURES,
    MAX_HIDDEN_LAYERS,
    check_num_classes,
    check_parameter_budget,
    check_widths,
)


def mlp_parameter_count(in_features: int, num_classes: int, hidden: tuple[int, ...]) -> int:
    """Trainable parameters (weights and biases) of MLP(in_features, num_classes, hidden)."""
    widths = (in_features, *hidden, num_classes)
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


class MLP(nn.Module):
    """Linear-ReLU hidden layers followed by a linear head (PyTorch's default Linear init).

    forward(x): x is B x in_features, result B x num_classes logits. With
    return_features=True: (logits, penultimate, stages) where stages holds each hidden layer's
    post-ReLU activation (B x hidden[i]) and penultimate is the last of them (the head's input;
    with no hidden layers it is x itself and stages is empty). `feature_dim` is the last hidden
    width (in_features when hidden is empty).
    """

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        in_features = check_int(in_features, "in_features", minimum=1, maximum=MAX_FEATURES)
        num_classes = check_num_classes(num_classes)
        hidden = check_widths(hidden, "hidden", MAX_FEATURES, max_len=MAX_HIDDEN_LAYERS)
        check_parameter_budget(mlp_parameter_count(in_features, num_classes, hidden), "mlp")
        self.in_features = in_features
        self.num_classes = num_classes
        self.hidden = tuple(hidden)
        widths = (in_features, *self.hidden)
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        self.feature_dim = widths[-1]
        self.fc = LogitsLinear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"mlp input must be a torch tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"mlp expects input of shape B x {self.in_features}, got {tuple(x.shape)}"
            )
        out = x
        stage_outputs = []
        for layer in self.layers:
            out = F.relu(layer(out))
            stage_outputs.append(out)
        logits = self.fc(out)
        if return_features:
            return logits, out, tuple(stage_outputs)
        return logits
