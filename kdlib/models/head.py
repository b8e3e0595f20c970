"""The logits head of every kdlib model: a Linear layer that stays in float32 under autocast.

Under bf16 autocast (training on CUDA) a plain nn.Linear returns bf16 logits: 8 bits of
mantissa, a relative error of up to 2^-8 = 0.4% per logit, which moves softmax confidences
across ECE bins and perturbs temperature-scaled KD targets. LogitsLinear is nn.Linear (same
parameters, state_dict keys and checkpoints; identical results without autocast) whose
product runs in float32 when autocast is on, so losses and calibration metrics see fp32
logits. Its cost is one small matmul in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LogitsLinear(nn.Linear):
    """nn.Linear(in_features, out_features) computed in float32 under autocast.

    forward: ... x in_features -> ... x out_features; float32 under autocast (float64 inputs
    stay float64), otherwise exactly nn.Linear.forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(x.device.type, enabled=False):
            bias = None if self.bias is None else self.bias.to(dtype)
            return F.linear(x.to(dtype), self.weight.to(dtype), bias)
