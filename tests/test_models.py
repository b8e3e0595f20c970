"""Tests for kdlib.models: sizes, shapes, features, name validation, vmap stacking, init."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.nn import functional as F

from kdlib.models import (
    CIFARResNet,
    MobileNetV2,
    WideResNet,
    available_models,
    build_model,
    count_parameters,
)

# Parameter counts (100-class head) as the field's model code prints them (RepDistiller,
# mdistiller), in millions, and the exact counts of this code.
PUBLISHED_SIZES = {  # as printed, in millions
    "resnet14": "0.18",
    "resnet20": "0.28",
    "resnet32": "0.47",
    "resnet56": "0.86",
    "resnet110": "1.7",
    "wrn_16_1": "0.18",
    "wrn_22_1": "0.28",
    "wrn_28_1": "0.38",
    "wrn_28_2": "1.5",
    "wrn_28_3": "3.3",
    "wrn_28_4": "5.9",
    "wrn_40_2": "2.3",
    "mobilenetv2": "0.8",
}
EXACT_SIZES = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_22_1": 278_132,
    "wrn_28_1": 375_348,
    "wrn_28_2": 1_479_220,
    "wrn_28_3": 3_311_412,
    "wrn_28_4": 5_872_180,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "mobilenetv2": 812_836,
}


def _size(name: str) -> int:
    return count_parameters(build_model(name, 100))


@pytest.mark.parametrize("name", sorted(EXACT_SIZES))
def test_exact_parameter_counts(name):
    assert _size(name) == EXACT_SIZES[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZES))
def test_parameter_counts_match_reference(name):
    count, printed = _size(name), PUBLISHED_SIZES[name]
    ref = float(printed) * 1e6
    # the exact count, in millions, rounds to the printed figure at its printed precision
    decimals = len(printed.split(".")[1])
    assert round(count / 1e6, decimals) == pytest.approx(float(printed))
    # resnet110 is 1.737M (1x1 conv+BN shortcuts, 100-class head): 2.15% above the rounded
    # "1.7M"; every other model is within 2%.
    tolerance = 0.022 if name == "resnet110" else 0.02
    assert abs(count - ref) / ref <= tolerance


def test_resnet110_count_by_hand():
    # stem 3*16*9 + BN 32; stage k with c channels: 18 blocks of 2 convs c*c*9 + 2 BN (4c),
    # the first block of stages 2, 3 has conv1 (c/2)*c*9 and a 1x1 shortcut (c/2)*c + BN 2c.
    stem = 3 * 16 * 9 + 32
    stage1 = 18 * (2 * 16 * 16 * 9 + 4 * 16)
    stage2 = 16 * 32 * 9 + 32 * 32 * 9 + 4 * 32 + 16 * 32 + 2 * 32 + 17 * (2 * 32 * 32 * 9 + 128)
    stage3 = 32 * 64 * 9 + 64 * 64 * 9 + 4 * 64 + 32 * 64 + 2 * 64 + 17 * (2 * 64 * 64 * 9 + 256)
    head = 64 * 100 + 100
    assert _size("resnet110") == stem + stage1 + stage2 + stage3 + head


def test_mlp_parameter_count_and_frozen_parameters():
    model = build_model("mlp", 3, in_features=2, hidden=(64, 64))
    assert count_parameters(model) == (2 * 64 + 64) + (64 * 64 + 64) + (64 * 3 + 3)
    model.fc.weight.requires_grad_(False)
    assert count_parameters(model) == (2 * 64 + 64) + (64 * 64 + 64) + 3


def _ceil_div(h: int, d: int) -> int:
    return -(-h // d)


def _expected_stage_shapes(name: str, h: int) -> list[tuple[int, int, int]]:
    if name.startswith("resnet"):
        c = (64, 128, 256) if name.endswith("x4") else (16, 32, 64)
        return [(c[i], _ceil_div(h, 2**i), _ceil_div(h, 2**i)) for i in range(3)]
    if name.startswith("wrn"):
        k = int(name.split("_")[2])
        return [(16 * k * 2**i, _ceil_div(h, 2**i), _ceil_div(h, 2**i)) for i in range(3)]
    assert name == "mobilenetv2"
    stages = ((12, 2), (16, 4), (48, 8), (160, 16))  # (channels, total stride)
    return [(c, _ceil_div(h, s), _ceil_div(h, s)) for c, s in stages]


FEATURE_DIMS = {"resnet8": 64, "resnet8x4": 256, "wrn_10_1": 64, "wrn_16_2": 128,
                "mobilenetv2": 1280}
SHAPE_CASES = [
    ("resnet8", 8), ("resnet8", 32), ("resnet8", 64),
    ("resnet8x4", 8), ("resnet8x4", 32),
    ("wrn_10_1", 8), ("wrn_10_1", 32), ("wrn_10_1", 64),
    ("wrn_16_2", 8), ("wrn_16_2", 32),
    ("mobilenetv2", 8), ("mobilenetv2", 32), ("mobilenetv2", 64),
]


@pytest.mark.parametrize("name,size", SHAPE_CASES)
def test_image_model_shapes_and_features(name, size):
    in_channels = 1 if size == 8 else 3  # 8x8 stands for the 1-channel digits
    torch.manual_seed(0)
    model = build_model(name, 7, in_channels=in_channels).eval()
    x = torch.randn(2, in_channels, size, size)
    with torch.no_grad():
        logits = model(x)
        logits_f, penultimate, stages = model(x, return_features=True)
    assert logits.shape == (2, 7)
    assert torch.equal(logits, logits_f)
    assert model.feature_dim == FEATURE_DIMS[name]
    assert penultimate.shape == (2, model.feature_dim)
    assert isinstance(stages, tuple)
    assert [tuple(s.shape) for s in stages] == [
        (2, *shape) for shape in _expected_stage_shapes(name, size)
    ]
    # the head is a linear map of the penultimate vector
    torch.testing.assert_close(logits, model.fc(penultimate))
    # how the penultimate vector derives from the last stage (documented per family)
    if isinstance(model, CIFARResNet):
        torch.testing.assert_close(penultimate, stages[-1].mean(dim=(2, 3)))
        assert all(bool((s >= 0).all()) for s in stages)  # post-ReLU stage outputs
    elif isinstance(model, WideResNet):
        activated = F.relu(model.final_bn(stages[-1]))
        torch.testing.assert_close(penultimate, activated.mean(dim=(2, 3)))
        assert any(bool((s < 0).any()) for s in stages)  # pre-activation residual stream
    else:
        assert isinstance(model, MobileNetV2)
        assert bool((penultimate >= 0).all())


def test_mlp_shapes_and_features():
    torch.manual_seed(0)
    model = build_model("mlp", 4, in_features=2, hidden=(64, 32))
    x = torch.randn(5, 2)
    logits, penultimate, stages = model(x, return_features=True)
    assert logits.shape == (5, 4)
    assert model.feature_dim == 32
    assert [tuple(s.shape) for s in stages] == [(5, 64), (5, 32)]
    assert torch.equal(penultimate, stages[-1])
    assert bool((stages[0] >= 0).all()) and bool((stages[1] >= 0).all())
    torch.testing.assert_close(logits, model.fc(penultimate))
    torch.testing.assert_close(model(x), logits)
    # no hidden layer: logistic regression, the features are the inputs themselves
    linear = build_model("mlp", 3, in_features=2, hidden=())
    logits, penultimate, stages = linear(x, return_features=True)
    assert stages == () and torch.equal(penultimate, x) and linear.feature_dim == 2
    torch.testing.assert_close(logits, x @ linear.fc.weight.T + linear.fc.bias)


@pytest.mark.parametrize(
    "bad",
    ["resnet13", "wrn_29_1", "foo", "resnet2", "resnet", "resnet08", "ResNet20", "resnet20 ",
     "wrn_4_1", "wrn_28_0", "wrn_28", "mobilenetv3", "mlp2", ""],
)
def test_invalid_names_raise_with_listing(bad):
    with pytest.raises(ValueError) as info:
        build_model(bad, 10, in_features=2)
    message = str(info.value)
    assert repr(bad) in message
    for entry in available_models():
        assert entry in message


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet8", 1)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("resnet8", 10, in_channels=0)
    with pytest.raises(TypeError, match="num_classes"):
        build_model("resnet8", 10.0)
    with pytest.raises(TypeError, match="name"):
        build_model(None, 10)
    with pytest.raises(TypeError, match="in_features"):
        build_model("mlp", 10)
    with pytest.raises(ValueError, match="in_features"):
        build_model("mlp", 10, in_features=0)
    with pytest.raises(ValueError, match=r"hidden\[1\]"):
        build_model("mlp", 10, in_features=2, hidden=(8, 0))
    with pytest.raises(TypeError, match="hidden"):
        build_model("mlp", 10, in_features=2, hidden=8)
    with pytest.raises(TypeError, match="depth"):
        build_model("mlp", 10, in_features=2, depth=3)
    with pytest.raises(TypeError, match="hidden"):
        build_model("resnet8", 10, hidden=(3,))
    with pytest.raises(TypeError, match="Module"):
        count_parameters("resnet8")


def test_forward_rejects_wrong_input_shapes():
    model = build_model("resnet8", 10)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        model(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        model(torch.randn(3, 8, 8))
    mlp = build_model("mlp", 3, in_features=2)
    with pytest.raises(ValueError, match="B x 2"):
        mlp(torch.randn(4, 3))


def test_available_models_describes_each_family():
    text = available_models()
    assert isinstance(text, list) and all(isinstance(t, str) for t in text)
    joined = " ".join(text)
    for token in ["resnet8", "resnet110", "resnet8x4", "resnet32x4", "wrn_{depth}_{width}",
                  "mobilenetv2", "mlp", "in_features"]:
        assert token in joined


def test_same_seed_same_weights_other_seed_different():
    def weights(seed):
        torch.manual_seed(seed)
        return build_model("wrn_10_2", 10).state_dict()

    a, b, c = weights(3), weights(3), weights(4)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.weight"], c["stem.weight"])
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_init_kaiming_convs_and_unit_batchnorm():
    torch.manual_seed(0)
    model = build_model("resnet32x4", 100)
    weight = model.stages[2][1].conv2.weight  # 256 x 256 x 3 x 3
    expected_std = math.sqrt(2.0 / (256 * 3 * 3))  # Kaiming normal, fan_out, ReLU gain
    assert weight.std().item() == pytest.approx(expected_std, rel=0.01)
    assert abs(weight.mean().item()) < 5 * expected_std / math.sqrt(weight.numel())
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))


@pytest.mark.parametrize("name", ["resnet8", "wrn_10_1", "mobilenetv2", "mlp"])
def test_no_inplace_modules(name):
    model = build_model(name, 10, in_features=2) if name == "mlp" else build_model(name, 10)
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def _stack(models):
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    return params, buffers, vmap(forward, in_dims=(0, 0, None))


def _seeded(name, seed, **kwargs):
    torch.manual_seed(seed)
    return build_model(name, 10, **kwargs)


def test_vmap_stacked_resnet8_train_forward_buffers_and_grads():
    models = [_seeded("resnet8", seed) for seed in (0, 1, 2)]
    alone = [copy.deepcopy(m) for m in models]
    torch.manual_seed(123)
    x = torch.randn(8, 3, 16, 16)
    y = torch.randint(0, 10, (8,))
    params, buffers, stacked_forward = _stack(models)

    logits = stacked_forward(params, buffers, x)  # 3 x 8 x 10, train-mode BN
    assert logits.shape == (3, 8, 10)
    single_logits = [m.train()(x) for m in alone]
    for i in range(3):
        torch.testing.assert_close(logits[i], single_logits[i], atol=1e-5, rtol=0)

    # running statistics updated per copy, equal to each model run alone
    bn_keys = [k for k in buffers if k.endswith(("running_mean", "running_var"))]
    assert len(bn_keys) == 2 * 9  # stem BN + 2 per block x 3 blocks + 2 shortcut BNs
    alone_states = [m.state_dict() for m in alone]
    for key in bn_keys:
        for i in range(3):
            torch.testing.assert_close(buffers[key][i], alone_states[i][key], atol=1e-6, rtol=1e-5)
    stem_mean = buffers["stem.1.running_mean"]
    assert stem_mean.abs().sum() > 0  # moved away from its initial zeros
    assert not torch.allclose(stem_mean[0], stem_mean[1])  # each copy has its own stats
    nbt = [k for k in buffers if k.endswith("num_batches_tracked")]
    assert all(torch.equal(buffers[k], torch.ones(3, dtype=torch.long)) for k in nbt)

    # one backward through the stacked forward: per-copy gradients equal the single ones
    loss = sum(F.cross_entropy(logits[i], y) for i in range(3))
    loss.backward()
    for i in range(3):
        F.cross_entropy(single_logits[i], y).backward()
    for name, stacked in params.items():
        assert stacked.grad is not None and torch.isfinite(stacked.grad).all(), name
        for i in range(3):
            expected = dict(alone[i].named_parameters())[name].grad
            torch.testing.assert_close(stacked.grad[i], expected, atol=1e-5, rtol=1e-4)
    fc_grad = params["fc.weight"].grad
    assert not torch.allclose(fc_grad[0], fc_grad[1])


@pytest.mark.parametrize("name", ["wrn_10_1", "mobilenetv2", "mlp"])
def test_vmap_stacked_other_families_match_single_runs(name):
    # float64: at 8x8 MobileNetV2's last BNs normalise over only 4 values per channel, which
    # amplifies float32 reduction-order rounding (vmap's batched kernels sum in another order)
    # to ~5e-3 in the logits; in float64 the stacked and single runs agree to 1e-12.
    kwargs = {"in_features": 5} if name == "mlp" else {}
    models = [_seeded(name, seed, **kwargs).double() for seed in (0, 1)]
    alone = [copy.deepcopy(m) for m in models]
    torch.manual_seed(7)
    shape = (4, 5) if name == "mlp" else (4, 3, 8, 8)
    x = torch.randn(*shape, dtype=torch.float64)
    params, buffers, stacked_forward = _stack(models)
    logits = stacked_forward(params, buffers, x)
    assert not torch.allclose(logits[0], logits[1])
    for i in range(2):
        torch.testing.assert_close(logits[i], alone[i](x), atol=1e-12, rtol=0)
        state = alone[i].state_dict()
        for key, value in buffers.items():
            torch.testing.assert_close(value[i], state[key], atol=1e-12, rtol=0)


def test_vmap_functional_grad_with_per_copy_batches():
    # the other stacking style: vmap(grad_and_value(loss)) with a different batch per copy
    models = [_seeded("resnet8", seed) for seed in (0, 1)]
    alone = [copy.deepcopy(m) for m in models]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    torch.manual_seed(5)
    x = torch.randn(2, 6, 3, 8, 8)
    y = torch.randint(0, 10, (2, 6))

    def loss_fn(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    grads, losses = vmap(grad_and_value(loss_fn))(params, buffers, x, y)
    for i in range(2):
        loss = F.cross_entropy(alone[i](x[i]), y[i])
        loss.backward()
        torch.testing.assert_close(losses[i], loss.detach(), atol=1e-5, rtol=0)
        for name, param in alone[i].named_parameters():
            torch.testing.assert_close(grads[name][i], param.grad, atol=1e-5, rtol=1e-4)
        state = alone[i].state_dict()
        for key, value in buffers.items():
            torch.testing.assert_close(value[i], state[key], atol=1e-6, rtol=1e-5)


def test_parameter_counts_are_computed_exactly_before_building():
    from kdlib.models import MLP, CIFARResNet, MobileNetV2, WideResNet
    from kdlib.models.mlp import mlp_parameter_count
    from kdlib.models.mobilenetv2 import mobilenetv2_parameter_count
    from kdlib.models.resnet import WIDE_CHANNELS, resnet_parameter_count
    from kdlib.models.wrn import wrn_parameter_count

    assert resnet_parameter_count(20, 7, 2, WIDE_CHANNELS) == count_parameters(
        CIFARResNet(20, 7, 2, WIDE_CHANNELS))
    assert wrn_parameter_count(16, 3, 13, 1) == count_parameters(WideResNet(16, 3, 13, 1))
    assert mobilenetv2_parameter_count(5, 3, 3, 1.5) == count_parameters(
        MobileNetV2(5, 3, 3, 1.5))
    assert mlp_parameter_count(3, 4, (5, 6)) == count_parameters(MLP(3, 4, (5, 6))) == 84
    # the deepest allowed ResNet, counted without building it (measured once: 19,424,026)
    assert resnet_parameter_count(1202, 10, 3, (16, 16, 32, 64)) == 19_424_026


def test_parse_model_name_is_the_one_parser():
    from kdlib.models import ModelSpec, parse_model_name

    assert parse_model_name("resnet1202") == ModelSpec("resnet", 1202, None, (16, 16, 32, 64))
    assert parse_model_name("resnet8x4").channels == (32, 64, 128, 256)
    assert parse_model_name("wrn_1000_32") == ModelSpec("wrn", 1000, 32)
    assert parse_model_name("mlp") == ModelSpec("mlp")
    for bad in ("resnet1208", "wrn_1006_1", "wrn_16_33"):
        with pytest.raises(ValueError, match="<="):
            parse_model_name(bad)
    with pytest.raises(TypeError, match="name"):
        parse_model_name(20)
