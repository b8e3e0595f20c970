"""The logits head (kdlib.models.head.LogitsLinear): fp32 logits under autocast, else nn.Linear."""

import pytest
import torch
import torch.nn.functional as F

from kdlib.models import build_model
from kdlib.models.head import LogitsLinear
from kdlib.wide import WideModels

ARCHS = [("resnet8", {"in_channels": 1}), ("wrn_16_1", {"in_channels": 1}),
         ("mobilenetv2", {"in_channels": 1}), ("mlp", {"in_features": 64, "hidden": (32,)})]


def _input(arch):
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 64, generator=g) if arch == "mlp" else \
        torch.randn(6, 1, 8, 8, generator=g)


@pytest.mark.parametrize("arch, kwargs", ARCHS)
def test_logits_are_float32_under_bf16_autocast(arch, kwargs):
    torch.manual_seed(0)
    model = build_model(arch, 10, **kwargs).eval()
    assert type(model.fc) is LogitsLinear
    x = _input(arch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, feats, _ = model(x, return_features=True)
    assert logits.dtype == torch.float32
    # the head's product in fp32 on the (bf16) features the body produced
    want = F.linear(feats.float(), model.fc.weight, model.fc.bias)
    assert torch.equal(logits, want)
    # a plain Linear head would have returned bf16 logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.linear(feats, model.fc.weight, model.fc.bias)
    assert plain.dtype == torch.bfloat16


def test_without_autocast_the_head_is_exactly_linear():
    torch.manual_seed(0)
    head = LogitsLinear(7, 3)
    plain = torch.nn.Linear(7, 3)
    plain.load_state_dict(head.state_dict())
    x = torch.randn(5, 7, dtype=torch.float64)
    assert torch.equal(head.double()(x), plain.double()(x))
    assert list(head.state_dict()) == ["weight", "bias"]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float64 stays float64
        assert head(x).dtype == torch.float64


def test_the_wide_head_of_logits_heads_is_full_precision():
    torch.manual_seed(0)
    models = [build_model("resnet8", 10, in_channels=1) for _ in range(2)]
    wide = WideModels(models)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = wide(_input("resnet8"))
    assert out.dtype == torch.float32 and out.shape == (2, 6, 10)
